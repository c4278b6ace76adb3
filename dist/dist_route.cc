#include "dist_route.h"

#include "framing.h"

#include <algorithm>
#include <cstring>
#include <optional>

namespace macula {
namespace {

// External term format tags and distribution header bytes.
constexpr uint8_t kVersion = 131, kHeader = 'D', kFragmentHeader = 'E',
                  kFragmentCont = 'F', kPassThrough = 'p';
constexpr uint8_t kSmallInt = 97, kInt = 98, kSmallBig = 110, kAtom = 100,
                  kSmallAtom = 115, kAtomUtf8 = 118, kSmallAtomUtf8 = 119,
                  kNewPid = 88, kPid = 103, kNewerRef = 90, kNewRef = 114,
                  kSmallTuple = 104;

// Control message operations and the tuple element naming the sender.
// Elements count from 1 as in erlang:element/2 (1 is the operation).
int sender_element(uint8_t op) {
  switch (op) {
    case 1: case 3: case 4: case 6: case 7: case 8: case 13: case 16:
    case 18: case 19: case 20: case 21: case 22: case 23: case 24:
    case 25: case 26: case 27: case 28: case 33: case 34:
      return 2;  // {Op, FromPid, ...}
    case 29: case 30: case 35: case 36:
      return 3;  // SPAWN_REQUEST, UNLINK_ID(_ACK): {Op, Id, FromPid, ...}
    case 37:
      // ALTACT_SIG_SEND (OTP 28): {37, Flags, SenderPid, To[, Token]}.
      // It replaces ALIAS_SEND (gen_server replies to aliases) and carries
      // priority messages and sends to names and aliases: ordered, like
      // every other signal, only after what its sender sent before.
      return 3;
    case 31: case 32:
      // SPAWN_REPLY is a signal from the new process: order it with what
      // that process sends next. On failure the result is an atom and the
      // frame is a barrier (rare).
      return 5;
    default:
      return 0;  // SEND/SEND_TT carry no sender
  }
}

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> b) : b_(b) {}

  std::optional<uint64_t> u(size_t n) {
    if (pos_ + n > b_.size()) return std::nullopt;
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v = (v << 8) | b_[pos_ + i];
    pos_ += n;
    return v;
  }
  bool skip(size_t n) {
    if (pos_ + n > b_.size()) return false;
    pos_ += n;
    return true;
  }

  bool skip_atom() {
    auto tag = u(1);
    if (!tag) return false;
    std::optional<uint64_t> len;
    if (*tag == kAtom || *tag == kAtomUtf8) len = u(2);
    else if (*tag == kSmallAtom || *tag == kSmallAtomUtf8) len = u(1);
    return len && skip(*len);
  }

  // A pid's identity on its node: (number, serial). Creation is left out:
  // all senders are local processes.
  std::optional<uint64_t> pid() {
    auto tag = u(1);
    if (!tag || (*tag != kNewPid && *tag != kPid) || !skip_atom()) return std::nullopt;
    auto num = u(4), serial = u(4);
    if (!num || !serial || !skip(*tag == kNewPid ? 4 : 1)) return std::nullopt;
    return (*num << 32) | *serial;
  }

  // A non-negative integer that fits a SMALL_INTEGER_EXT or INTEGER_EXT.
  std::optional<uint64_t> small_integer() {
    auto tag = u(1);
    if (tag == kSmallInt) return u(1);
    if (tag != kInt) return std::nullopt;
    auto v = u(4);
    if (!v || (*v & 0x80000000u)) return std::nullopt;
    return v;
  }

  // Skips the terms that come before the sender in control messages.
  bool skip_term() {
    auto tag = u(1);
    if (!tag) return false;
    switch (*tag) {
      case kSmallInt: return skip(1);
      case kInt: return skip(4);
      case kSmallBig: { auto n = u(1); return n && skip(1 + *n); }
      case kNewPid: case kPid: --pos_; return pid().has_value();
      case kNewerRef: case kNewRef: {
        auto words = u(2);
        return words && skip_atom() && skip((*tag == kNewerRef ? 4 : 1) + 4 * *words);
      }
      default: --pos_; return skip_atom();
    }
  }

 private:
  std::span<const uint8_t> b_;
  size_t pos_ = 0;
};

// OTP 28's ALTACT_SIG_SEND flag of a priority signal (EEP 76; erts
// dist.h, ERTS_DOP_ALTACT_SIG_FLG_PRIO).
constexpr uint64_t kAltactPriority = 1;
constexpr uint8_t kAltactSigSend = 37;

struct Sender {
  uint64_t pid = 0;
  bool priority = false;
};

// Reads the control message tuple at the reader's position.
std::optional<Sender> sender_of(Reader& r) {
  auto tag = r.u(1), arity = r.u(1), int_tag = r.u(1), op = r.u(1);
  if (!tag || *tag != kSmallTuple || !arity || !int_tag || *int_tag != kSmallInt || !op)
    return std::nullopt;
  int elem = sender_element(uint8_t(*op));
  if (elem == 0 || uint64_t(elem) > *arity) return std::nullopt;
  Sender out;
  for (int i = 2; i < elem; ++i) {
    if (i == 2 && *op == kAltactSigSend) {
      auto flags = r.small_integer();
      if (!flags) return std::nullopt;
      out.priority = (*flags & kAltactPriority) != 0;
    } else if (!r.skip_term()) {
      return std::nullopt;
    }
  }
  auto pid = r.pid();
  if (!pid) return std::nullopt;
  out.pid = *pid;
  return out;
}

OrderKey process_route(std::optional<Sender> sender) {
  OrderKey out;
  if (sender) {
    out.kind = OrderKey::Kind::kFlow;
    out.key = sender->pid;
    out.priority = sender->priority;
  }
  return out;
}

}  // namespace

OrderKey route_of(std::span<const uint8_t> head) {
  Reader r(head);
  auto first = r.u(1);
  if (first == kPassThrough) {
    if (r.u(1) != kVersion) return {};
    return process_route(sender_of(r));
  }
  auto type = r.u(1);
  if (first != kVersion || !type) return {};
  if (*type == kHeader) {
    if (r.u(1) != 0) return {};  // atom cache refs: not self-contained
    return process_route(sender_of(r));
  }
  if (*type != kFragmentHeader && *type != kFragmentCont) return {};
  auto seq = r.u(8), frag = r.u(8);
  if (!seq || !frag || *frag == 0) return {};
  if (*type == kFragmentCont) {
    OrderKey out;
    out.kind = OrderKey::Kind::kContinuation;
    out.key = out.sequence = *seq;
    out.closes_sequence = *frag == 1;
    return out;
  }
  if (r.u(1) != 0) return {};
  OrderKey out = process_route(sender_of(r));
  if (out.kind == OrderKey::Kind::kFlow && *frag > 1) {
    out.opens_sequence = true;
    out.sequence = *seq;
  }
  return out;
}

std::optional<uint64_t> pid_key(std::span<const uint8_t> ext) {
  Reader r(ext);
  if (r.u(1) != kVersion) return std::nullopt;
  return r.pid();
}

OrderKey route_of(std::span<const iovec> frame) {
  // Control messages with long node names reach a few hundred bytes; a
  // frame whose header does not fit here is routed as a barrier.
  constexpr size_t kHeadMax = 1024;
  uint8_t buf[kHeadMax];
  size_t total = 0, copied = 0;
  for (const iovec& v : frame) total += v.iov_len;
  std::span<const uint8_t> head;
  if (!frame.empty() && frame[0].iov_len >= std::min(total, kHeadMax)) {
    // At most kHeadMax either way, so a frame routes the same however
    // it is cut.
    head = {static_cast<const uint8_t*>(frame[0].iov_base), std::min(frame[0].iov_len, kHeadMax)};
  } else {
    for (const iovec& v : frame) {
      size_t n = std::min(v.iov_len, kHeadMax - copied);
      std::memcpy(buf + copied, v.iov_base, n);
      copied += n;
      if (copied == kHeadMax) break;
    }
    head = {buf, copied};
  }
  OrderKey out = route_of(head);
  out.size = kFrameHeaderSize + total;
  return out;
}

}  // namespace macula
