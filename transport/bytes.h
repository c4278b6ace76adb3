// Owned byte buffers passed between the core and its users.
#pragma once

#include <cstddef>
#include <cstdint>
#include <sys/uio.h>

#include <memory>
#include <vector>

namespace macula {

// A heap buffer with its length. Move-only; the owner frees it.
struct Bytes {
  std::unique_ptr<uint8_t[]> data;
  size_t size = 0;

  Bytes() = default;
  explicit Bytes(size_t n) : data(n ? new uint8_t[n] : nullptr), size(n) {}
};

// Bytes to send as a list of spans; `owner` keeps the memory behind them
// alive until the chunk is acknowledged and dropped (for Erlang binaries:
// an environment holding references to them, so nothing is copied).
struct OutChunk {
  std::vector<iovec> iov;  // no empty entries
  size_t size = 0;
  std::shared_ptr<void> owner;

  static OutChunk from_bytes(Bytes bytes) {
    OutChunk c;
    c.size = bytes.size;
    if (bytes.size) c.iov.push_back({bytes.data.get(), bytes.size});
    c.owner = std::shared_ptr<uint8_t[]>(bytes.data.release());
    return c;
  }
};

}  // namespace macula
