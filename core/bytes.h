// Owned byte buffers passed between the core and its users.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace macula {

// A heap buffer with its length. Move-only; the owner frees it.
struct Bytes {
  std::unique_ptr<uint8_t[]> data;
  size_t size = 0;

  Bytes() = default;
  explicit Bytes(size_t n) : data(n ? new uint8_t[n] : nullptr), size(n) {}
};

}  // namespace macula
