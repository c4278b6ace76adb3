#include "dist_route.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace macula {
namespace {

using Buf = std::vector<uint8_t>;

void put(Buf& b, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i) b.push_back(uint8_t(v >> (8 * i)));
}
void atom(Buf& b, const std::string& name) {
  b.push_back(119);  // SMALL_ATOM_UTF8_EXT
  b.push_back(uint8_t(name.size()));
  b.insert(b.end(), name.begin(), name.end());
}
void pid(Buf& b, uint32_t num, uint32_t serial) {
  b.push_back(88);  // NEW_PID_EXT
  atom(b, "5601@localhost");
  put(b, num, 4);
  put(b, serial, 4);
  put(b, 0x5de35bae, 4);
}
void ref(Buf& b) {
  b.push_back(90);  // NEWER_REFERENCE_EXT, 3 words
  put(b, 3, 2);
  atom(b, "5601@localhost");
  put(b, 1, 4);
  put(b, 7, 4); put(b, 8, 4); put(b, 9, 4);
}
void small_int(Buf& b, uint8_t v) { b.push_back(97); b.push_back(v); }
Buf header() { return {131, 'D', 0}; }
void tuple(Buf& b, uint8_t arity, uint8_t op) {
  b.push_back(104);
  b.push_back(arity);
  small_int(b, op);
}

uint64_t key(uint32_t num, uint32_t serial) { return (uint64_t(num) << 32) | serial; }

TEST(DistRoute, SendSenderIsRoutedByItsSender) {
  Buf b = header();
  tuple(b, 3, 22);
  pid(b, 54, 0);
  pid(b, 9, 1);
  OrderKey r = route_of(b);
  EXPECT_EQ(r.kind, OrderKey::Kind::kFlow);
  EXPECT_EQ(r.key, key(54, 0));
  EXPECT_FALSE(r.opens_sequence);
}

TEST(DistRoute, RegSendLinkExitMonitorUseTheSecondElement) {
  for (uint8_t op : {6, 1, 3, 8, 19, 20, 24, 33}) {
    Buf b = header();
    tuple(b, 4, op);
    pid(b, 77, 3);
    atom(b, "");
    atom(b, "rex");
    OrderKey r = route_of(b);
    EXPECT_EQ(r.kind, OrderKey::Kind::kFlow) << int(op);
    EXPECT_EQ(r.key, key(77, 3)) << int(op);
  }
}

TEST(DistRoute, SpawnRequestSkipsTheRequestId) {
  Buf b = header();
  tuple(b, 6, 29);
  ref(b);
  pid(b, 12, 0);
  pid(b, 13, 0);
  OrderKey r = route_of(b);
  EXPECT_EQ(r.kind, OrderKey::Kind::kFlow);
  EXPECT_EQ(r.key, key(12, 0));
}

TEST(DistRoute, SpawnReplyFollowsTheNewProcess) {
  Buf b = header();
  tuple(b, 5, 31);
  ref(b);
  pid(b, 12, 0);   // the parent
  small_int(b, 0); // flags
  pid(b, 40, 2);   // the new process
  OrderKey r = route_of(b);
  EXPECT_EQ(r.kind, OrderKey::Kind::kFlow);
  EXPECT_EQ(r.key, key(40, 2));
}

TEST(DistRoute, FailedSpawnReplyAndNamedMonitorExitAreBarriers) {
  Buf spawn = header();
  tuple(spawn, 5, 31);
  ref(spawn);
  pid(spawn, 12, 0);
  small_int(spawn, 0);
  atom(spawn, "badarg");
  EXPECT_EQ(route_of(spawn).kind, OrderKey::Kind::kBarrier);

  Buf down = header();
  tuple(down, 5, 21);
  atom(down, "registered_name");  // monitored by name: the pid is unknown
  pid(down, 3, 0);
  ref(down);
  EXPECT_EQ(route_of(down).kind, OrderKey::Kind::kBarrier);
}

TEST(DistRoute, UnlinkIdUsesTheThirdElement) {
  Buf b = header();
  tuple(b, 4, 35);
  b.insert(b.end(), {110, 2, 0, 0x34, 0x12});  // SMALL_BIG_EXT id
  pid(b, 5, 6);
  pid(b, 7, 8);
  OrderKey r = route_of(b);
  EXPECT_EQ(r.kind, OrderKey::Kind::kFlow);
  EXPECT_EQ(r.key, key(5, 6));
}

TEST(DistRoute, FragmentsOpenAndCloseASequence) {
  Buf first = {131, 'E'};
  put(first, 0x4800000093ull, 8);
  put(first, 4, 8);
  first.push_back(0);
  tuple(first, 4, 6);
  pid(first, 9, 0);
  OrderKey r = route_of(first);
  EXPECT_EQ(r.kind, OrderKey::Kind::kFlow);
  EXPECT_EQ(r.key, key(9, 0));
  EXPECT_TRUE(r.opens_sequence);
  EXPECT_EQ(r.sequence, 0x4800000093ull);

  for (uint64_t frag : {3, 2, 1}) {
    Buf cont = {131, 'F'};
    put(cont, 0x4800000093ull, 8);
    put(cont, frag, 8);
    cont.insert(cont.end(), 100, 1);
    OrderKey c = route_of(cont);
    EXPECT_EQ(c.kind, OrderKey::Kind::kContinuation);
    EXPECT_EQ(c.key, 0x4800000093ull);
    EXPECT_EQ(c.closes_sequence, frag == 1);
  }
}

TEST(DistRoute, SingleFragmentDoesNotOpenASequence) {
  Buf b = {131, 'E'};
  put(b, 1, 8);
  put(b, 1, 8);
  b.push_back(0);
  tuple(b, 3, 22);
  pid(b, 1, 1);
  EXPECT_FALSE(route_of(b).opens_sequence);
}

TEST(DistRoute, AtomCacheRefsTruncationAndGarbageAreBarriers) {
  Buf cached = {131, 'D', 1, 0x08, 0x01};
  EXPECT_EQ(route_of(cached).kind, OrderKey::Kind::kBarrier);
  Buf full = header();
  tuple(full, 3, 22);
  pid(full, 54, 0);
  for (size_t n = 0; n < 3 + 4 + 1 + 2 + 14 + 8; ++n) {
    Buf cut(full.begin(), full.begin() + n);
    EXPECT_EQ(route_of(cut).kind, OrderKey::Kind::kBarrier) << n;
  }
  for (int seed = 0; seed < 2000; ++seed) {
    Buf junk(size_t(seed % 64));
    for (size_t i = 0; i < junk.size(); ++i) junk[i] = uint8_t(seed * 31 + i * 17);
    route_of(junk);  // must not crash or read out of bounds (ASan build)
  }
  EXPECT_EQ(route_of(Buf{}).kind, OrderKey::Kind::kBarrier);
}

TEST(DistRoute, PassThroughHeaderIsUnderstood) {
  Buf b = {'p', 131};
  tuple(b, 3, 22);
  pid(b, 2, 3);
  OrderKey r = route_of(b);
  EXPECT_EQ(r.kind, OrderKey::Kind::kFlow);
  EXPECT_EQ(r.key, key(2, 3));
}

TEST(DistRoute, IovecFormGathersASplitHeaderAndCountsTheFrame) {
  Buf b = header();
  tuple(b, 3, 22);
  pid(b, 54, 0);
  pid(b, 9, 1);
  b.insert(b.end(), 1000, 7);
  std::vector<iovec> v = {{b.data(), 5}, {b.data() + 5, 11}, {b.data() + 16, b.size() - 16}};
  OrderKey r = route_of(std::span<const iovec>(v));
  EXPECT_EQ(r.kind, OrderKey::Kind::kFlow);
  EXPECT_EQ(r.key, key(54, 0));
  EXPECT_EQ(r.size, 4 + b.size());
}

// Found by the fuzzer: a frame whose header runs past the 1 KiB the router
// reads was routed by all of its first iovec when that one was long, and
// as a barrier when the same bytes came cut into pieces.
TEST(DistRoute, IovecFormReadsTheSameHeadHoweverTheFrameIsCut) {
  Buf b = header();
  tuple(b, 6, 29);  // SPAWN_REQUEST: routed by the pid after the request id
  b.push_back(90);  // a request id whose node name runs past the head
  put(b, 1, 2);
  b.push_back(118);  // ATOM_UTF8_EXT, 1100 bytes
  put(b, 1100, 2);
  b.insert(b.end(), 1100, 'a');
  put(b, 1, 4);
  put(b, 7, 4);
  pid(b, 12, 0);
  pid(b, 13, 0);
  std::span<const uint8_t> whole(b);
  OrderKey head = route_of(whole.first(1024));
  std::vector<iovec> one = {{b.data(), b.size()}};
  std::vector<iovec> two = {{b.data(), 7}, {b.data() + 7, b.size() - 7}};
  OrderKey a = route_of(std::span<const iovec>(one));
  OrderKey c = route_of(std::span<const iovec>(two));
  EXPECT_EQ(a.kind, head.kind);
  EXPECT_EQ(a.key, head.key);
  EXPECT_EQ(c.kind, head.kind);
  EXPECT_EQ(c.key, head.key);
  EXPECT_EQ(a.size, 4 + b.size());
}

// Every control message of OTP 25-28 (erts dist.h, the distribution
// protocol documentation), built in its real shape: the ordering key is
// its sender's pid, or a barrier when the message names no sending pid.
struct Element {
  enum Kind { kPid, kAtom, kRef, kInt, kMfa, kList } kind;
  uint32_t num = 0;  // the pid's number (serial 1), or the integer
};
struct ControlMessage {
  const char* name;
  uint8_t op;
  std::vector<Element> elements;  // after the operation
  int sender;                     // index of the sending pid in elements, -1: none
};

void element(Buf& b, const Element& e) {
  switch (e.kind) {
    case Element::kPid: pid(b, e.num, 1); break;
    case Element::kAtom: atom(b, "reason"); break;
    case Element::kRef: ref(b); break;
    case Element::kInt: small_int(b, uint8_t(e.num)); break;
    case Element::kMfa:
      b.insert(b.end(), {104, 3});
      atom(b, "m"); atom(b, "f"); small_int(b, 0);
      break;
    case Element::kList: b.push_back(106); break;  // NIL_EXT
  }
}

Buf control_frame(const ControlMessage& m) {
  Buf b = header();
  tuple(b, uint8_t(1 + m.elements.size()), m.op);
  for (const Element& e : m.elements) element(b, e);
  return b;
}

TEST(DistRoute, EveryControlMessageOfOtp25To28) {
  using E = Element;
  const E from{E::kPid, 501}, to{E::kPid, 502}, name{E::kAtom}, ref_{E::kRef},
      token{E::kAtom}, reason{E::kAtom}, unused{E::kAtom}, id{E::kInt, 9};
  const std::vector<ControlMessage> all = {
      {"LINK", 1, {from, to}, 0},
      {"SEND", 2, {unused, to}, -1},
      {"EXIT", 3, {from, to, reason}, 0},
      {"UNLINK", 4, {from, to}, 0},
      {"NODE_LINK", 5, {}, -1},
      {"REG_SEND", 6, {from, unused, name}, 0},
      {"GROUP_LEADER", 7, {from, to}, 0},
      {"EXIT2", 8, {from, to, reason}, 0},
      {"SEND_TT", 12, {unused, to, token}, -1},
      {"EXIT_TT", 13, {from, to, token, reason}, 0},
      {"REG_SEND_TT", 16, {from, unused, name, token}, 0},
      {"EXIT2_TT", 18, {from, to, token, reason}, 0},
      {"MONITOR_P", 19, {from, to, ref_}, 0},
      {"DEMONITOR_P", 20, {from, name, ref_}, 0},
      {"MONITOR_P_EXIT", 21, {from, to, ref_, reason}, 0},
      {"SEND_SENDER", 22, {from, to}, 0},
      {"SEND_SENDER_TT", 23, {from, to, token}, 0},
      {"PAYLOAD_EXIT", 24, {from, to}, 0},
      {"PAYLOAD_EXIT_TT", 25, {from, to, token}, 0},
      {"PAYLOAD_EXIT2", 26, {from, to}, 0},
      {"PAYLOAD_EXIT2_TT", 27, {from, to, token}, 0},
      {"PAYLOAD_MONITOR_P_EXIT", 28, {from, to, ref_}, 0},
      {"SPAWN_REQUEST", 29, {ref_, from, to, {E::kMfa}, {E::kList}}, 1},
      {"SPAWN_REQUEST_TT", 30, {ref_, from, to, {E::kMfa}, {E::kList}, token}, 1},
      // The reply is routed by the new process (its fourth element).
      {"SPAWN_REPLY", 31, {ref_, to, {E::kInt, 0}, from}, 3},
      {"SPAWN_REPLY_TT", 32, {ref_, to, {E::kInt, 0}, from, token}, 3},
      {"ALIAS_SEND", 33, {from, ref_}, 0},
      {"ALIAS_SEND_TT", 34, {from, ref_, token}, 0},
      {"UNLINK_ID", 35, {id, from, to}, 1},
      {"UNLINK_ID_ACK", 36, {id, from, to}, 1},
      // OTP 28, flags: 1 PRIO, 2 TOKEN, 4 ALIAS, 8 NAME, 16 EXIT.
      {"ALTACT_SIG_SEND to a pid", 37, {{E::kInt, 0}, from, to}, 1},
      {"ALTACT_SIG_SEND to an alias", 37, {{E::kInt, 4}, from, ref_}, 1},
      {"ALTACT_SIG_SEND to a name, priority", 37, {{E::kInt, 9}, from, name}, 1},
      {"ALTACT_SIG_SEND with a token", 37, {{E::kInt, 6}, from, ref_, token}, 1},
      {"ALTACT_SIG_SEND exit to an alias", 37, {{E::kInt, 20}, from, ref_}, 1},
  };
  for (const ControlMessage& m : all) {
    OrderKey r = route_of(control_frame(m));
    if (m.sender < 0) {
      EXPECT_EQ(r.kind, OrderKey::Kind::kBarrier) << m.name;
    } else {
      EXPECT_EQ(r.kind, OrderKey::Kind::kFlow) << m.name;
      EXPECT_EQ(r.key, key(m.elements[size_t(m.sender)].num, 1)) << m.name;
    }
    EXPECT_FALSE(r.opens_sequence) << m.name;
    // Only OTP 28's priority flag asks for the priority stream.
    bool prio = m.op == 37 && (m.elements[0].num & 1);
    EXPECT_EQ(r.priority, prio) << m.name;
  }
}

// EEP 76 priority signals, in each shape OTP 28 sends them: the flag as
// SMALL_INTEGER_EXT or INTEGER_EXT, pass-through, and as the first
// fragment of a big priority message (its continuations follow the flow).
TEST(DistRoute, Otp28PrioritySignalsAskForThePriorityStream) {
  for (uint32_t flags : {1u, 3u, 5u, 7u, 9u, 17u, 0x101u}) {
    Buf b = header();
    tuple(b, 4, 37);
    if (flags < 256) {
      small_int(b, uint8_t(flags));
    } else {
      b.push_back(98);  // INTEGER_EXT
      put(b, flags, 4);
    }
    pid(b, 42, 7);
    ref(b);
    OrderKey r = route_of(b);
    EXPECT_EQ(r.kind, OrderKey::Kind::kFlow) << flags;
    EXPECT_EQ(r.key, key(42, 7)) << flags;
    EXPECT_TRUE(r.priority) << flags;
  }
  Buf pass = {'p', 131};
  tuple(pass, 4, 37);
  small_int(pass, 1);
  pid(pass, 42, 7);
  atom(pass, "name");
  EXPECT_TRUE(route_of(pass).priority);
  Buf frag = {131, 'E'};
  put(frag, 77, 8);  // sequence
  put(frag, 3, 8);   // fragments
  frag.push_back(0);
  tuple(frag, 4, 37);
  small_int(frag, 5);
  pid(frag, 42, 7);
  ref(frag);
  OrderKey f = route_of(frag);
  EXPECT_TRUE(f.priority);
  EXPECT_TRUE(f.opens_sequence);
  EXPECT_EQ(f.sequence, 77u);
}

TEST(DistRoute, BadOrNegativeAltactFlagsAreBarriers) {
  for (Buf flag : {Buf{98, 0xff, 0xff, 0xff, 0xff}, Buf{100, 0, 1, 'x'}, Buf{97}}) {
    Buf b = header();
    tuple(b, 4, 37);
    b.insert(b.end(), flag.begin(), flag.end());
    pid(b, 42, 7);
    ref(b);
    EXPECT_EQ(route_of(b).kind, OrderKey::Kind::kBarrier);
  }
}

TEST(DistRoute, PidKeyMatchesTheSendersFlowKey) {
  Buf ext = {131};
  pid(ext, 300, 2);
  EXPECT_EQ(pid_key(ext), key(300, 2));
  Buf b = header();
  tuple(b, 3, 22);
  pid(b, 300, 2);
  pid(b, 9, 1);
  EXPECT_EQ(route_of(b).key, *pid_key(ext));
  EXPECT_FALSE(pid_key(Buf{131, 100, 0, 1, 'x'}).has_value());
  EXPECT_FALSE(pid_key(Buf{}).has_value());
}

// Operations no OTP release up to 28 defines are barriers.
TEST(DistRoute, UnknownOperationsAreBarriers) {
  for (uint8_t op : {0, 9, 10, 11, 14, 15, 17, 38, 127, 255}) {
    Buf b = header();
    tuple(b, 3, op);
    pid(b, 1, 1);
    pid(b, 2, 1);
    EXPECT_EQ(route_of(b).kind, OrderKey::Kind::kBarrier) << int(op);
  }
}

}  // namespace
}  // namespace macula
