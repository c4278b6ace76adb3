// The thread-safe face of one QUIC connection: what callers on any thread
// (Erlang schedulers, tests) may do with it. The connection itself is
// worked on only under the endpoint's loop lock (loop_owner.h); the handle
// queues commands for it, and send() writes them itself when a try-lock
// gets that lock (bounded work; never waiting for it). Results come back
// through ConnectionEvents. Methods under "lock holder's side" need the
// loop lock; the rest may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "bytes.h"
#include "order_key.h"
#include "path_info.h"
#include "tls_context.h"
#include "udp_socket.h"

namespace macula {

// Each connection carries two kinds of frames: control (one ordered stream,
// always written first: for Erlang the cookie proof, the distribution
// handshake and ticks) and data (spread over several streams by ordering
// key).
enum class Channel : uint8_t { kControl = 0, kData = 1 };

struct CloseInfo {
  enum class Kind {
    kLocal,             // this side called close()
    kPeer,              // the peer closed (code = its application code)
    kIdleTimeout,
    kHandshakeTimeout,
    kTlsAlert,          // code = alert number (42 bad cert, 120 no ALPN...)
    kProtocol,          // QUIC error or a framing violation
    kUnreachable,       // ICMP: nothing listens at the peer's address
    kAuthTimeout,       // the peer was not authenticated in time
    kEndpointStopped,
  };
  Kind kind = Kind::kLocal;
  uint64_t code = 0;
  std::string text;
};

const char* close_kind_name(CloseInfo::Kind kind);

// Implemented by the user of the transport. Called by the holder of the
// endpoint's loop lock (the I/O thread, or a thread in Endpoint::read_now;
// never inside send()), in order, never after closed(). Keep handlers
// short: the lock is held. They may call the handle's methods.
class ConnectionEvents {
 public:
  virtual ~ConnectionEvents() = default;
  // Client side: the handshake is confirmed and the server's certificate
  // passed the trust mode's checks. (Accepted connections are announced
  // through EndpointEvents instead.)
  virtual void connected() = 0;
  // One non-empty frame from the control stream (ticks are only counted).
  virtual void control_frame(Bytes frame) = 0;
  // Frames from the data stream, in order. Pass `credit` to consumed()
  // once they are processed: until then the peer's window stays closed.
  virtual void data_frames(std::vector<Bytes>& frames, uint64_t credit) = 0;
  // The send queue went below its low-water mark after send() said kBusy.
  virtual void writable() = 0;
  // The connection is gone; nothing more will be called.
  virtual void closed(const CloseInfo& info) = 0;
};

class LoopOwner;

enum class SendStatus { kOk, kBusy, kClosed };

struct ConnectionStats {
  uint64_t frames_in = 0;    // frames received, ticks included
  uint64_t frames_out = 0;   // frames queued by send(), ticks included
  uint64_t queued_bytes = 0; // queued and not yet acknowledged by the peer
};

class ConnectionHandle {
 public:
  // `credit_wake`: returned credit wakes the I/O thread once this much
  // has gathered (below it, the next packet in collects it).
  ConnectionHandle(uint64_t id, Role role, std::shared_ptr<LoopOwner> loop,
                   uint64_t high_water, uint64_t low_water, uint64_t credit_wake);

  uint64_t id() const { return id_; }
  Role role() const { return role_; }

  // Queues already framed bytes (`nframes` frames) on `channel`. kOk:
  // queued. kBusy: queued, but the queue is above its high-water mark;
  // wait for writable() before sending more. kClosed: dropped.
  // On the data channel, `routes` (one ordering key per frame, in order,
  // sizes adding up to the chunk's) lets frames of different flows use
  // different streams; without them the chunk's frames keep one order.
  SendStatus send(Channel channel, OutChunk framed, uint32_t nframes,
                  std::vector<OrderKey> routes = {});
  SendStatus send(Channel channel, Bytes framed, uint32_t nframes) {
    return send(channel, OutChunk::from_bytes(std::move(framed)), nframes);
  }
  // Returns receive credit handed out with data_frames().
  void consumed(uint64_t credit);
  // Closes with an application error code; the peer learns it at once.
  void close(uint64_t app_code, std::string reason);
  // The peer proved who it is (the cookie proof, the relay's identify):
  // it gets its data streams and full windows. Any thread; once is enough.
  void authenticate();
  // Sets who receives events (accepted connections start without one;
  // what arrived meanwhile is delivered on attach).
  void attach(std::shared_ptr<ConnectionEvents> events);

  ConnectionStats stats() const;
  // Valid once connected (client) or accepted (server).
  std::vector<uint8_t> exporter() const;
  std::vector<uint8_t> peer_certificate() const;
  Address remote() const;
  // The latest snapshot of the connection's path and transport figures.
  PathInfo path() const;

  // ---- The lock holder's side (the connection) ----
  struct Send {
    Channel channel;
    OutChunk chunk;
    std::vector<OrderKey> routes;
  };
  struct Inbox {
    std::vector<Send> sends;
    uint64_t credit = 0;
    bool close = false;
    bool authenticate = false;
    uint64_t close_code = 0;
    std::string close_reason;
    std::shared_ptr<ConnectionEvents> attach;
  };
  Inbox take_inbox();
  // Only the sends; the rest waits for take_inbox().
  std::vector<Send> take_sends();
  // The credit returned since the last take.
  uint64_t take_credit();
  void set_established(std::vector<uint8_t> exporter,
                       std::vector<uint8_t> peer_cert, const Address& remote);
  void set_closed();
  void set_path(const PathInfo& info);
  void count_frames_in(uint64_t n) { frames_in_ += n; }
  // Bytes left the queue; true if writable() should be fired now.
  bool release(uint64_t bytes);

 private:
  void wake();

  const uint64_t id_;
  const Role role_;
  const std::shared_ptr<LoopOwner> loop_;
  const uint64_t high_water_, low_water_, credit_wake_;
  std::atomic<uint64_t> frames_in_{0}, frames_out_{0}, queued_{0};
  std::atomic<bool> want_writable_{false};
  std::atomic<bool> closed_{false};

  mutable std::mutex mu_;
  Inbox inbox_;
  bool wake_pending_ = false;
  std::vector<uint8_t> exporter_, peer_cert_;
  Address remote_;
  PathInfo path_;
};

}  // namespace macula
