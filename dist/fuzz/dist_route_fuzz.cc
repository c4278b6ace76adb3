// Fuzz target for the distribution frame router (dist_route.h): the
// payload of every frame a connected peer sends goes through route_of().
//
// Properties, beyond "no crash, no sanitizer report":
// - the iovec form routes a frame as the contiguous form routes its first
//   1024 bytes (the head it looks at), however the frame is cut, and
//   counts the frame header in `size`;
// - a route is self-consistent: continuations key on their sequence,
//   only a flow opens a sequence, only a continuation closes one.
#include <sys/uio.h>

#include <cstdint>
#include <cstdlib>
#include <vector>

#include "dist_route.h"
#include "framing.h"

using namespace macula;

namespace {

constexpr size_t kHead = 1024;  // what route_of(iovecs) reads

void check(bool ok) {
  if (!ok) abort();
}

bool same(const OrderKey& a, const OrderKey& b) {
  return a.kind == b.kind && a.key == b.key && a.opens_sequence == b.opens_sequence &&
         a.closes_sequence == b.closes_sequence && a.sequence == b.sequence;
}

void check_consistent(const OrderKey& r) {
  using K = OrderKey::Kind;
  if (r.kind == K::kContinuation) check(r.key == r.sequence && !r.opens_sequence);
  if (r.kind != K::kFlow) check(!r.opens_sequence);
  if (r.kind != K::kContinuation) check(!r.closes_sequence);
  if (r.kind == K::kBarrier) check(r.key == 0);
}

// The frame cut into up to four iovecs at places taken from its bytes.
std::vector<iovec> cut(const uint8_t* data, size_t size) {
  std::vector<iovec> iov;
  size_t at = 0;
  for (int i = 0; i < 3 && at < size; ++i) {
    size_t len = size > 1 ? 1 + (data[(at * 7 + i) % size] * 13) % size : size;
    len = std::min(len, size - at);
    iov.push_back({const_cast<uint8_t*>(data + at), len});
    at += len;
  }
  if (at < size) iov.push_back({const_cast<uint8_t*>(data + at), size - at});
  return iov;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  OrderKey whole = route_of(in);
  check_consistent(whole);
  OrderKey head = route_of(in.first(std::min(size, kHead)));
  std::vector<iovec> iov = cut(data, size);
  OrderKey pieces = route_of(std::span<const iovec>(iov));
  check(same(pieces, head));
  check(pieces.size == kFrameHeaderSize + size);
  if (size <= kHead) check(same(whole, head));
  return 0;
}
