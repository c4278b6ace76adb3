// Erlang binding of the transport: thin by design. Every function
// validates its arguments (badarg names the argument), queues work for the
// endpoint's I/O thread, or does it at once on this scheduler if a
// try-lock gets the endpoint's loop lock (transport/loop_owner.h), and
// returns; it never waits for the lock. The transport reports back with
// messages, sent by the loop-lock holder: the I/O thread, or the scheduler
// that reads the socket (the driver, macula_drv.cc):
//   {macula_accept, EndpointPort, Conn}        to the acceptor
//   {macula_connected, ConnId}                 to the control pid
//   {macula_ctl, ConnId, Binary}               to the control pid
//   {macula_data, ConnId, [Binary], Credit}    to the data pid
//   {macula_writable, ConnId}                  to the pid that got `busy`
//   {macula_closed, ConnId, Reason}            to the control and data pids
//   {macula_migrate_count, Ref, N}             to the caller of migrate/4, then
//   {macula_migrated, Ref, ConnId, Result, {Ip, Port}}  once per client connection
#include <erl_nif.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "cookie_proof.h"
#include "endpoint.h"
#include "endpoint_readers.h"
#include "dist_route.h"
#include "framing.h"
#include "nif_terms.h"
#include "node_name.h"
#include "priority_table.h"

namespace macula {
namespace {

using nif::atom;
using nif::badarg;
using nif::binary;
using nif::error_tuple;
using nif::get_string;
using nif::map_string;
using nif::map_uint64;

ErlNifResourceType* g_endpoint_type;
ErlNifResourceType* g_conn_type;

constexpr unsigned kMaxFramesPerSend = 4096;
// Non-tick control frames a peer may send over a connection's life: the
// cookie proof and the distribution handshake need a handful, after that
// only ticks come. More is a peer trying to fill our memory.
constexpr size_t kDistControlFrames = 64;

// Frames are copied into ordinary binaries: the VM's decoder makes
// sub-binaries that point into the binary given to dist_ctrl_put_data, and
// those must lie inside its own storage (a resource binary breaks that).
ERL_NIF_TERM frame_term(ErlNifEnv* env, Bytes& frame) {
  return binary(env, frame.data.get(), frame.size);
}

// One process-independent environment per thread for outgoing messages.
// On a scheduler (the driver's ready_input) the VM takes a NULL caller
// environment as well: it then sends as from no process.
struct MessageEnv {
  ErlNifEnv* env = enif_alloc_env();
  ~MessageEnv() { enif_free_env(env); }
};

void send_to(const ErlNifPid& pid, ERL_NIF_TERM (*build)(ErlNifEnv*, void*), void* arg) {
  thread_local MessageEnv m;
  ERL_NIF_TERM msg = build(m.env, arg);
  enif_send(nullptr, &pid, m.env, msg);
  enif_clear_env(m.env);
}

ERL_NIF_TERM close_reason(ErlNifEnv* env, const CloseInfo& info) {
  return nif::close_reason(env, info, false);
}

// Routes one connection's events to its Erlang processes.
class NifConnEvents : public ConnectionEvents {
 public:
  NifConnEvents(uint64_t id, ErlNifPid ctl, ErlNifPid data)
      : id_(id), ctl_(ctl), data_(data) {}

  void set_writable_pid(const ErlNifPid& pid) {
    std::lock_guard lock(mu_);
    writable_ = pid;
  }

  void connected() override { send_simple(ctl_, "macula_connected"); }

  void control_frame(Bytes frame) override {
    struct Arg { uint64_t id; Bytes* f; } a{id_, &frame};
    send_to(ctl_, [](ErlNifEnv* env, void* p) {
      auto* a = static_cast<Arg*>(p);
      return enif_make_tuple3(env, atom(env, "macula_ctl"), enif_make_uint64(env, a->id),
                              frame_term(env, *a->f));
    }, &a);
  }

  void data_frames(std::vector<Bytes>& frames, uint64_t credit) override {
    struct Arg { uint64_t id; std::vector<Bytes>* fs; uint64_t credit; } a{id_, &frames, credit};
    send_to(data_, [](ErlNifEnv* env, void* p) {
      auto* a = static_cast<Arg*>(p);
      ERL_NIF_TERM list = enif_make_list(env, 0);
      for (size_t i = a->fs->size(); i-- > 0;)
        list = enif_make_list_cell(env, frame_term(env, (*a->fs)[i]), list);
      return enif_make_tuple4(env, atom(env, "macula_data"), enif_make_uint64(env, a->id),
                              list, enif_make_uint64(env, a->credit));
    }, &a);
  }

  void writable() override {
    ErlNifPid pid;
    {
      std::lock_guard lock(mu_);
      pid = writable_;
    }
    send_simple(pid, "macula_writable");
  }

  void closed(const CloseInfo& info) override {
    struct Arg { uint64_t id; const CloseInfo* info; } a{id_, &info};
    auto build = [](ErlNifEnv* env, void* p) {
      auto* a = static_cast<Arg*>(p);
      return enif_make_tuple3(env, atom(env, "macula_closed"), enif_make_uint64(env, a->id),
                              close_reason(env, *a->info));
    };
    send_to(ctl_, build, &a);
    if (enif_compare_pids(&ctl_, &data_) != 0) send_to(data_, build, &a);
  }

 private:
  void send_simple(const ErlNifPid& pid, const char* tag) {
    struct Arg { const char* tag; uint64_t id; } a{tag, id_};
    send_to(pid, [](ErlNifEnv* env, void* p) {
      auto* a = static_cast<Arg*>(p);
      return enif_make_tuple2(env, atom(env, a->tag), enif_make_uint64(env, a->id));
    }, &a);
  }

  const uint64_t id_;
  const ErlNifPid ctl_, data_;
  std::mutex mu_;
  ErlNifPid writable_{};
};

struct ConnResource {
  std::shared_ptr<ConnectionHandle> handle;
  std::shared_ptr<NifConnEvents> events;
  bool monitored = false;
};

struct EndpointResource;

// Hands accepted connections to the acceptor process.
class NifEndpointEvents : public EndpointEvents {
 public:
  void set_acceptor(const ErlNifPid& pid) {
    std::lock_guard lock(mu_);
    acceptor_ = pid;
    has_acceptor_ = true;
  }
  void set_port(uint16_t port) { port_ = port; }

  // To the acceptor too, which logs it (rate-limited: macula_log_limit).
  void handshake_failed(const Address& remote, const CloseInfo& why) override;

  void accepted(std::shared_ptr<ConnectionHandle> handle) override {
    ErlNifPid pid;
    {
      std::lock_guard lock(mu_);
      if (!has_acceptor_) {
        handle->close(0, "not accepting");
        return;
      }
      pid = acceptor_;
    }
    struct Arg { uint16_t port; std::shared_ptr<ConnectionHandle>* h; } a{port_, &handle};
    send_to(pid, [](ErlNifEnv* env, void* p) {
      auto* a = static_cast<Arg*>(p);
      auto* res = static_cast<ConnResource*>(enif_alloc_resource(g_conn_type, sizeof(ConnResource)));
      new (res) ConnResource{*a->h, nullptr, false};
      ERL_NIF_TERM t = enif_make_resource(env, res);
      enif_release_resource(res);
      return enif_make_tuple3(env, atom(env, "macula_accept"), enif_make_uint(env, a->port), t);
    }, &a);
  }

 private:
  std::mutex mu_;
  ErlNifPid acceptor_{};
  bool has_acceptor_ = false;
  uint16_t port_ = 0;
};

ERL_NIF_TERM address_term(ErlNifEnv* env, const Address& a);

void NifEndpointEvents::handshake_failed(const Address& remote, const CloseInfo& why) {
  ErlNifPid pid;
  {
    std::lock_guard lock(mu_);
    if (!has_acceptor_) return;
    pid = acceptor_;
  }
  struct Arg { uint16_t port; const Address* remote; const CloseInfo* why; } a{port_, &remote, &why};
  send_to(pid, [](ErlNifEnv* env, void* p) {
    auto* a = static_cast<Arg*>(p);
    return enif_make_tuple4(env, atom(env, "macula_handshake_failed"), enif_make_uint(env, a->port),
                            address_term(env, *a->remote), close_reason(env, *a->why));
  }, &a);
}

struct EndpointResource {
  std::shared_ptr<Endpoint> endpoint;
  std::shared_ptr<NifEndpointEvents> events;
  uint64_t reader_id = 0;
};

void endpoint_dtor(ErlNifEnv*, void* obj) {
  auto* res = static_cast<EndpointResource*>(obj);
  readers::remove(res->reader_id);
  res->~EndpointResource();
}

void conn_dtor(ErlNifEnv*, void* obj) {
  auto* res = static_cast<ConnResource*>(obj);
  // Nobody can reach the connection any more: close it.
  if (res->handle) res->handle->close(0, "released");
  res->~ConnResource();
}

void conn_down(ErlNifEnv*, void* obj, ErlNifPid*, ErlNifMonitor*) {
  auto* res = static_cast<ConnResource*>(obj);
  if (res->handle) res->handle->close(0, "owner down");
}

bool get_endpoint(ErlNifEnv* env, ERL_NIF_TERM t, EndpointResource*& out) {
  void* p;
  if (!enif_get_resource(env, t, g_endpoint_type, &p)) return false;
  out = static_cast<EndpointResource*>(p);
  return out->endpoint != nullptr;
}

bool get_conn(ErlNifEnv* env, ERL_NIF_TERM t, ConnResource*& out) {
  void* p;
  if (!enif_get_resource(env, t, g_conn_type, &p)) return false;
  out = static_cast<ConnResource*>(p);
  return true;
}

// ---- endpoint ----

bool parse_cc(ErlNifEnv* env, ERL_NIF_TERM map, ngtcp2_cc_algo& cc) {
  ERL_NIF_TERM v;
  if (!enif_get_map_value(env, map, atom(env, "cc"), &v)) return true;
  if (enif_is_identical(v, atom(env, "cubic"))) cc = NGTCP2_CC_ALGO_CUBIC;
  else if (enif_is_identical(v, atom(env, "reno"))) cc = NGTCP2_CC_ALGO_RENO;
  else if (enif_is_identical(v, atom(env, "bbr"))) cc = NGTCP2_CC_ALGO_BBR;
  else if (enif_is_identical(v, atom(env, "bbr2"))) cc = NGTCP2_CC_ALGO_BBR2;
  else return false;
  return true;
}

bool parse_mode(ErlNifEnv* env, ERL_NIF_TERM map, TrustMode& mode) {
  ERL_NIF_TERM v;
  if (!enif_get_map_value(env, map, atom(env, "trust"), &v)) return true;
  char name[16];
  if (!enif_get_atom(env, v, name, sizeof name, ERL_NIF_LATIN1)) return false;
  std::string s(name);
  if (s == "cookie") mode = TrustMode::kCookie;
  else if (s == "ca") mode = TrustMode::kCa;
  else if (s == "insecure") mode = TrustMode::kInsecure;
  else return false;
  return true;
}

// open_endpoint(#{ip, port, accept, trust, cert_dir, cacertfile, certfile,
//                 keyfile, idle_timeout_ms, send_high_water, keep_alive_ms, ...})
ERL_NIF_TERM open_endpoint(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  if (!enif_is_map(env, argv[0])) return badarg(env, "options");
  EndpointConfig c;
  uint64_t port = 0, accept = 1;
  ERL_NIF_TERM m = argv[0];
  if (!map_string(env, m, "ip", c.bind_ip)) return badarg(env, "ip");
  if (!map_uint64(env, m, "port", port) || port > 65535) return badarg(env, "port");
  if (!map_uint64(env, m, "accept", accept)) return badarg(env, "accept");
  if (!parse_mode(env, m, c.tls.mode)) return badarg(env, "trust");
  if (!parse_cc(env, m, c.cc_algo)) return badarg(env, "cc");
  if (!map_string(env, m, "cert_dir", c.tls.cert_dir)) return badarg(env, "cert_dir");
  if (!map_string(env, m, "cacertfile", c.tls.cacertfile)) return badarg(env, "cacertfile");
  if (!map_string(env, m, "certfile", c.tls.certfile)) return badarg(env, "certfile");
  if (!map_string(env, m, "keyfile", c.tls.keyfile)) return badarg(env, "keyfile");
  if (!map_uint64(env, m, "idle_timeout_ms", c.idle_timeout_ms)) return badarg(env, "idle_timeout_ms");
  if (!map_uint64(env, m, "handshake_timeout_ms", c.handshake_timeout_ms)) return badarg(env, "handshake_timeout_ms");
  if (!map_uint64(env, m, "send_high_water", c.send_high_water)) return badarg(env, "send_high_water");
  if (!map_uint64(env, m, "send_low_water", c.send_low_water)) return badarg(env, "send_low_water");
  if (!map_uint64(env, m, "busy_poll_us", c.busy_poll_us)) return badarg(env, "busy_poll_us");
  if (!map_uint64(env, m, "keep_alive_ms", c.keep_alive_ms)) return badarg(env, "keep_alive_ms");
  if (!map_uint64(env, m, "auth_timeout_ms", c.auth_timeout_ms)) return badarg(env, "auth_timeout_ms");
  c.port = uint16_t(port);
  c.accept = accept != 0;
  c.max_control_frames = kDistControlFrames;
  c.priority_stream = true;  // macula:set_priority/2 and OTP 28's priority signals
  auto events = std::make_shared<NifEndpointEvents>();
  std::string error;
  auto ep = Endpoint::open(c, events, error);
  if (!ep) return error_tuple(env, error);
  events->set_port(ep->port());
  auto* res = static_cast<EndpointResource*>(enif_alloc_resource(g_endpoint_type, sizeof(EndpointResource)));
  new (res) EndpointResource{std::move(ep), events};
  res->reader_id = readers::add(res->endpoint);
  ERL_NIF_TERM t = enif_make_resource(env, res);
  enif_release_resource(res);
  return enif_make_tuple2(env, atom(env, "ok"), t);
}

ERL_NIF_TERM set_acceptor(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  EndpointResource* ep;
  ErlNifPid pid;
  if (!get_endpoint(env, argv[0], ep)) return badarg(env, "endpoint");
  if (!enif_get_local_pid(env, argv[1], &pid)) return badarg(env, "pid");
  ep->events->set_acceptor(pid);
  return atom(env, "ok");
}

ERL_NIF_TERM endpoint_info(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  EndpointResource* ep;
  if (!get_endpoint(env, argv[0], ep)) return badarg(env, "endpoint");
  EndpointStats s = ep->endpoint->stats();
  const char* mode = ep->endpoint->trust_mode() == TrustMode::kCa ? "ca"
                   : ep->endpoint->trust_mode() == TrustMode::kInsecure ? "insecure" : "cookie";
  ERL_NIF_TERM keys[] = {atom(env, "port"), atom(env, "connections"), atom(env, "accepted"),
                         atom(env, "dropped_packets"), atom(env, "stateless_resets"), atom(env, "trust"),
                         atom(env, "follows_address_changes"), atom(env, "reader_id"),
                         atom(env, "ignored_unreachable"), atom(env, "failed_handshakes"),
                         atom(env, "half_open"), atom(env, "retries"), atom(env, "bad_tokens"),
                         atom(env, "evicted_half_open"), atom(env, "validated"),
                         atom(env, "bytes_sent"), atom(env, "bytes_received"),
                         atom(env, "lost_packets"), atom(env, "migrations"),
                         atom(env, "failed_migrations")};
  ERL_NIF_TERM vals[] = {enif_make_uint(env, ep->endpoint->port()), enif_make_uint64(env, s.connections),
                         enif_make_uint64(env, s.accepted), enif_make_uint64(env, s.dropped_packets),
                         enif_make_uint64(env, s.stateless_resets), atom(env, mode),
                         atom(env, ep->endpoint->watching_addresses() ? "true" : "false"),
                         enif_make_uint64(env, ep->reader_id),
                         enif_make_uint64(env, s.ignored_unreachable),
                         enif_make_uint64(env, s.failed_handshakes),
                         enif_make_uint64(env, s.admission.half_open),
                         enif_make_uint64(env, s.admission.retries),
                         enif_make_uint64(env, s.admission.bad_tokens),
                         enif_make_uint64(env, s.admission.evicted),
                         enif_make_uint64(env, s.admission.validated),
                         enif_make_uint64(env, s.traffic.bytes_sent),
                         enif_make_uint64(env, s.traffic.bytes_received),
                         enif_make_uint64(env, s.traffic.lost_packets),
                         enif_make_uint64(env, s.traffic.migrations),
                         enif_make_uint64(env, s.traffic.failed_migrations)};
  ERL_NIF_TERM map;
  enif_make_map_from_arrays(env, keys, vals, sizeof keys / sizeof keys[0], &map);
  return map;
}

// ---- connections ----

ERL_NIF_TERM new_conn_term(ErlNifEnv* env, std::shared_ptr<ConnectionHandle> h,
                           std::shared_ptr<NifConnEvents> events, const ErlNifPid& owner) {
  auto* res = static_cast<ConnResource*>(enif_alloc_resource(g_conn_type, sizeof(ConnResource)));
  new (res) ConnResource{std::move(h), std::move(events), false};
  ErlNifPid p = owner;
  res->monitored = enif_monitor_process(env, res, &p, nullptr) == 0;
  ERL_NIF_TERM t = enif_make_resource(env, res);
  enif_release_resource(res);
  return t;
}

// dial(Endpoint, Ip, Port, Host, ControlPid, DataPid) -> {ok, Conn, Id} | {error, Text}
ERL_NIF_TERM dial(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  EndpointResource* ep;
  std::string ip, host;
  unsigned port;
  ErlNifPid ctl, data;
  if (!get_endpoint(env, argv[0], ep)) return badarg(env, "endpoint");
  if (!get_string(env, argv[1], ip)) return badarg(env, "ip");
  if (!enif_get_uint(env, argv[2], &port) || port == 0 || port > 65535) return badarg(env, "port");
  if (!get_string(env, argv[3], host)) return badarg(env, "host");
  if (!enif_get_local_pid(env, argv[4], &ctl)) return badarg(env, "control_pid");
  if (!enif_get_local_pid(env, argv[5], &data)) return badarg(env, "data_pid");
  Address remote;
  if (!make_address(ip, uint16_t(port), remote)) return badarg(env, "ip");
  std::shared_ptr<NifConnEvents> events;
  auto h = ep->endpoint->dial(remote, host, [&](uint64_t id) {
    events = std::make_shared<NifConnEvents>(id, ctl, data);
    return events;
  });
  ERL_NIF_TERM t = new_conn_term(env, h, events, data);
  return enif_make_tuple3(env, atom(env, "ok"), t, enif_make_uint64(env, h->id()));
}

// attach(Conn, ControlPid, DataPid) -> Id: for accepted connections.
ERL_NIF_TERM attach(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnResource* c;
  ErlNifPid ctl, data;
  if (!get_conn(env, argv[0], c) || !c->handle) return badarg(env, "conn");
  if (!enif_get_local_pid(env, argv[1], &ctl)) return badarg(env, "control_pid");
  if (!enif_get_local_pid(env, argv[2], &data)) return badarg(env, "data_pid");
  if (c->events) return badarg(env, "conn");
  c->events = std::make_shared<NifConnEvents>(c->handle->id(), ctl, data);
  c->monitored = enif_monitor_process(env, c, &data, nullptr) == 0;
  c->handle->attach(c->events);
  return enif_make_uint64(env, c->handle->id());
}

ERL_NIF_TERM send_status(ErlNifEnv* env, SendStatus s) {
  return atom(env, s == SendStatus::kOk ? "ok" : s == SendStatus::kBusy ? "busy" : "closed");
}

// The frames are referenced, not copied: `owner` (a private environment)
// holds the binaries until the peer acknowledges them. Distribution data
// comes as lists of binaries; handshake frames are arbitrary iolists,
// which are flattened into a new binary in that environment (`flat`
// holds their spans). False if an element is not iodata.
bool pin_frames(ErlNifEnv* env, ERL_NIF_TERM list, ErlNifEnv* owner,
                std::vector<iovec>& flat, std::vector<std::span<const iovec>>& frames) {
  ERL_NIF_TERM head;
  for (size_t i = 0; enif_get_list_cell(env, list, &head, &list); ++i) {
    ERL_NIF_TERM term = enif_make_copy(owner, head), tail;
    ErlNifIOVec* iov = nullptr;
    ErlNifBinary bin;
    if (enif_inspect_iovec(owner, ~size_t(0) >> 1, term, &tail, &iov) &&
        enif_is_empty_list(owner, tail)) {
      frames[i] = {reinterpret_cast<const iovec*>(iov->iov), size_t(iov->iovcnt)};
    } else if (enif_inspect_iolist_as_binary(owner, term, &bin)) {
      flat[i] = {bin.data, bin.size};
      frames[i] = {&flat[i], 1};
    } else {
      return false;
    }
  }
  return true;
}

// send(Conn, control | data, [IoData]) -> ok | busy | closed. Each list
// element becomes one frame. After `busy`, the caller gets
// {macula_writable, Id} when the queue has drained.
ERL_NIF_TERM send(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnResource* c;
  if (!get_conn(env, argv[0], c) || !c->handle || !c->events) return badarg(env, "conn");
  Channel ch;
  if (enif_is_identical(argv[1], atom(env, "data"))) ch = Channel::kData;
  else if (enif_is_identical(argv[1], atom(env, "control"))) ch = Channel::kControl;
  else return badarg(env, "channel");
  unsigned n;
  if (!enif_get_list_length(env, argv[2], &n) || n == 0 || n > kMaxFramesPerSend)
    return badarg(env, "frames");
  std::shared_ptr<ErlNifEnv> owner(enif_alloc_env(), enif_free_env);
  std::vector<iovec> flat(n);
  std::vector<std::span<const iovec>> frames(n);
  if (!pin_frames(env, argv[2], owner.get(), flat, frames)) return badarg(env, "frames");
  // Data frames are ordered by sending process (see dist_route.h); the
  // header is parsed here, on the scheduler, to keep the I/O thread free.
  std::vector<OrderKey> routes;
  if (ch == Channel::kData) {
    routes.reserve(n);
    auto* prio = static_cast<PriorityTable*>(enif_priv_data(env));
    uint64_t high = 0;
    for (auto frame : frames) {
      routes.push_back(route_of(frame));
      OrderKey& r = routes.back();
      if (r.kind == OrderKey::Kind::kFlow && prio->contains(r.key)) r.priority = true;
      high += r.priority;
    }
    if (high) prio->count_frames(high);
  }
  OutChunk chunk = frame_chunk(frames, owner);
  ErlNifPid self;
  enif_self(env, &self);
  c->events->set_writable_pid(self);
  return send_status(env, c->handle->send(ch, std::move(chunk), n, std::move(routes)));
}

// set_priority(Pid, high | normal) -> ok | {error, too_many | not_alive}:
// the local process's distribution signals go on each connection's
// priority stream (high) or not (normal); see priority_table.h.
ERL_NIF_TERM set_priority(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ErlNifPid pid;
  if (!enif_get_local_pid(env, argv[0], &pid)) return badarg(env, "pid");
  auto* table = static_cast<PriorityTable*>(enif_priv_data(env));
  if (enif_is_identical(argv[1], atom(env, "normal"))) {
    table->unmark(env, pid);
    return atom(env, "ok");
  }
  if (!enif_is_identical(argv[1], atom(env, "high"))) return badarg(env, "priority");
  switch (table->mark(env, pid)) {
    case PriorityTable::MarkResult::kOk: return atom(env, "ok");
    case PriorityTable::MarkResult::kFull:
      return enif_make_tuple2(env, atom(env, "error"), atom(env, "too_many"));
    case PriorityTable::MarkResult::kNotAlive: break;
  }
  return enif_make_tuple2(env, atom(env, "error"), atom(env, "not_alive"));
}

// priority(Pid) -> high | normal
ERL_NIF_TERM priority(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ErlNifPid pid;
  if (!enif_get_local_pid(env, argv[0], &pid)) return badarg(env, "pid");
  auto* table = static_cast<PriorityTable*>(enif_priv_data(env));
  return atom(env, table->marked(env, pid) ? "high" : "normal");
}

// priority_info() -> #{processes, limit, frames}
ERL_NIF_TERM priority_info(ErlNifEnv* env, int, const ERL_NIF_TERM[]) {
  auto* table = static_cast<PriorityTable*>(enif_priv_data(env));
  ERL_NIF_TERM keys[] = {atom(env, "processes"), atom(env, "limit"), atom(env, "frames")};
  ERL_NIF_TERM vals[] = {enif_make_uint64(env, table->size()),
                         enif_make_uint64(env, kMaxPriorityProcesses),
                         enif_make_uint64(env, table->frames())};
  ERL_NIF_TERM map;
  enif_make_map_from_arrays(env, keys, vals, 3, &map);
  return map;
}

// tick(Conn): an empty frame on the control stream; never waits for data.
ERL_NIF_TERM tick(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnResource* c;
  if (!get_conn(env, argv[0], c) || !c->handle) return badarg(env, "conn");
  return send_status(env, c->handle->send(Channel::kControl, tick_frame(), 1));
}

ERL_NIF_TERM consumed(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnResource* c;
  ErlNifUInt64 credit;
  if (!get_conn(env, argv[0], c) || !c->handle) return badarg(env, "conn");
  if (!enif_get_uint64(env, argv[1], &credit)) return badarg(env, "credit");
  c->handle->consumed(credit);
  return atom(env, "ok");
}

// authenticated(Conn) -> ok: the peer's cookie proof (and in CA mode its
// certificate's host) checked out; the transport opens its windows.
ERL_NIF_TERM authenticated(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnResource* c;
  if (!get_conn(env, argv[0], c) || !c->handle) return badarg(env, "conn");
  c->handle->authenticate();
  return atom(env, "ok");
}

// close(Conn, AppCode, Reason)
ERL_NIF_TERM close_conn(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnResource* c;
  ErlNifUInt64 code;
  std::string reason;
  if (!get_conn(env, argv[0], c) || !c->handle) return badarg(env, "conn");
  if (!enif_get_uint64(env, argv[1], &code)) return badarg(env, "code");
  if (!get_string(env, argv[2], reason)) return badarg(env, "reason");
  c->handle->close(code, reason);
  return atom(env, "ok");
}

// getstat(Conn) -> {ok, FramesIn, FramesOut, QueuedBytes}
ERL_NIF_TERM getstat(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnResource* c;
  if (!get_conn(env, argv[0], c) || !c->handle) return badarg(env, "conn");
  ConnectionStats s = c->handle->stats();
  return enif_make_tuple4(env, atom(env, "ok"), enif_make_uint64(env, s.frames_in),
                          enif_make_uint64(env, s.frames_out), enif_make_uint64(env, s.queued_bytes));
}

ERL_NIF_TERM conn_id(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnResource* c;
  if (!get_conn(env, argv[0], c) || !c->handle) return badarg(env, "conn");
  return enif_make_uint64(env, c->handle->id());
}

ERL_NIF_TERM address_term(ErlNifEnv* env, const Address& a) {
  if (a.len == 0) return atom(env, "undefined");
  std::string ip = a.ip_string();
  return enif_make_tuple2(env, binary(env, ip.data(), ip.size()),
                          enif_make_uint(env, a.port()));
}

// conn_info(Conn) -> #{role, local, remote, migrations, failed_migrations,
//   migrating, srtt_us, min_rtt_us, latest_rtt_us, lost_packets, pto_count,
//   cwnd, bytes_sent, bytes_received}; local and remote are {IpBin, Port}
//   (undefined before the first packet).
ERL_NIF_TERM conn_info(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnResource* c;
  if (!get_conn(env, argv[0], c) || !c->handle) return badarg(env, "conn");
  PathInfo p = c->handle->path();
  auto u64 = [&](uint64_t v) { return enif_make_uint64(env, v); };
  ERL_NIF_TERM keys[] = {atom(env, "id"), atom(env, "role"), atom(env, "local"), atom(env, "remote"),
                         atom(env, "migrations"), atom(env, "failed_migrations"),
                         atom(env, "migrating"), atom(env, "srtt_us"), atom(env, "min_rtt_us"),
                         atom(env, "latest_rtt_us"), atom(env, "lost_packets"),
                         atom(env, "pto_count"), atom(env, "cwnd"), atom(env, "bytes_sent"),
                         atom(env, "bytes_received")};
  ERL_NIF_TERM vals[] = {u64(c->handle->id()),
                         atom(env, c->handle->role() == Role::kClient ? "client" : "server"),
                         address_term(env, p.local), address_term(env, p.remote),
                         u64(p.migrations), u64(p.failed_migrations),
                         atom(env, p.migrating ? "true" : "false"), u64(p.smoothed_rtt_ns / 1000),
                         u64(p.min_rtt_ns / 1000), u64(p.latest_rtt_ns / 1000),
                         u64(p.lost_packets), u64(p.pto_count), u64(p.cwnd), u64(p.bytes_sent),
                         u64(p.bytes_received)};
  ERL_NIF_TERM map;
  enif_make_map_from_arrays(env, keys, vals, sizeof keys / sizeof keys[0], &map);
  return map;
}

// Reports a migration request's progress to the caller's pid.
struct MigrateReply {
  ErlNifPid pid;
  ErlNifEnv* env = enif_alloc_env();  // holds the caller's Ref
  ERL_NIF_TERM ref;
  ~MigrateReply() { enif_free_env(env); }

  void counted(size_t n) {
    struct Arg { MigrateReply* r; size_t n; } a{this, n};
    send_to(pid, [](ErlNifEnv* e, void* p) {
      auto* a = static_cast<Arg*>(p);
      return enif_make_tuple3(e, atom(e, "macula_migrate_count"),
                              enif_make_copy(e, a->r->ref), enif_make_uint64(e, a->n));
    }, &a);
  }
  void done(uint64_t id, const MigrationOutcome& o) {
    struct Arg { MigrateReply* r; uint64_t id; const MigrationOutcome* o; } a{this, id, &o};
    send_to(pid, [](ErlNifEnv* e, void* p) {
      auto* a = static_cast<Arg*>(p);
      return enif_make_tuple5(e, atom(e, "macula_migrated"), enif_make_copy(e, a->r->ref),
                              enif_make_uint64(e, a->id),
                              atom(e, migration_result_name(a->o->result)),
                              address_term(e, a->o->local));
    }, &a);
  }
};

// migrate(Endpoint, auto | IpString, Pid, Ref) -> ok. Moves the endpoint's
// client connections to the IP (one of this host's), or with `auto` to the
// source address the routing table prefers for each peer. Pid receives
// {macula_migrate_count, Ref, N}, then N {macula_migrated, ...} messages.
ERL_NIF_TERM migrate(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  EndpointResource* ep;
  Address local;
  std::string ip;
  if (!get_endpoint(env, argv[0], ep)) return badarg(env, "endpoint");
  if (!enif_is_identical(argv[1], atom(env, "auto")) &&
      (!get_string(env, argv[1], ip) || !make_address(ip, 0, local)))
    return badarg(env, "ip");
  auto reply = std::make_shared<MigrateReply>();
  if (!enif_get_local_pid(env, argv[2], &reply->pid)) return badarg(env, "pid");
  if (!enif_is_ref(env, argv[3])) return badarg(env, "ref");
  reply->ref = enif_make_copy(reply->env, argv[3]);
  ep->endpoint->migrate(local, [reply](size_t n) { reply->counted(n); },
                        [reply](uint64_t id, const MigrationOutcome& o) { reply->done(id, o); });
  return atom(env, "ok");
}

// peer_address(Conn) -> {IpString, Port}
ERL_NIF_TERM peer_address(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnResource* c;
  if (!get_conn(env, argv[0], c) || !c->handle) return badarg(env, "conn");
  std::string s = c->handle->remote().to_string();
  size_t colon = s.rfind(':');
  std::string ip = s.substr(0, colon);
  if (!ip.empty() && ip.front() == '[') ip = ip.substr(1, ip.size() - 2);
  return enif_make_tuple2(env, binary(env, ip.data(), ip.size()),
                          enif_make_uint(env, c->handle->remote().port()));
}

bool get_role(ErlNifEnv* env, ERL_NIF_TERM t, char& role) {
  if (enif_is_identical(t, atom(env, "client"))) role = 'C';
  else if (enif_is_identical(t, atom(env, "server"))) role = 'S';
  else return false;
  return true;
}

// proof_frame(Conn, client | server, NodeName, Cookie) -> binary(): the
// first control frame of this side (cookie_proof.h).
ERL_NIF_TERM proof_frame(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnResource* c;
  char role;
  std::string node, cookie;
  if (!get_conn(env, argv[0], c) || !c->handle) return badarg(env, "conn");
  if (!get_role(env, argv[1], role)) return badarg(env, "role");
  if (!get_string(env, argv[2], node)) return badarg(env, "node");
  if (!get_string(env, argv[3], cookie)) return badarg(env, "cookie");
  std::vector<uint8_t> exporter = c->handle->exporter();
  if (exporter.empty()) return badarg(env, "conn");
  std::vector<uint8_t> f = encode_proof_frame(make_cookie_proof(exporter, role, node, cookie), node);
  return binary(env, f.data(), f.size());
}

// parse_proof_frame(Frame) -> {ok, Proof, NodeName} | error: the peer's
// first control frame, before anything about it is proven.
ERL_NIF_TERM parse_proof_frame(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ErlNifBinary bin;
  if (!enif_inspect_binary(env, argv[0], &bin)) return badarg(env, "frame");
  ProofFrame f;
  if (!parse_proof_frame({bin.data, bin.size}, f)) return atom(env, "error");
  return enif_make_tuple3(env, atom(env, "ok"), binary(env, f.proof.data(), f.proof.size()),
                          binary(env, f.node.data(), f.node.size()));
}

// check_cookie_proof(Conn, Role, NodeName, Cookie, Proof) -> boolean()
ERL_NIF_TERM check_cookie_proof(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnResource* c;
  char role;
  std::string node, cookie;
  ErlNifBinary proof;
  if (!get_conn(env, argv[0], c) || !c->handle) return badarg(env, "conn");
  if (!get_role(env, argv[1], role)) return badarg(env, "role");
  if (!get_string(env, argv[2], node)) return badarg(env, "node");
  if (!get_string(env, argv[3], cookie)) return badarg(env, "cookie");
  if (!enif_inspect_binary(env, argv[4], &proof)) return badarg(env, "proof");
  std::vector<uint8_t> exporter = c->handle->exporter();
  if (exporter.empty()) return badarg(env, "conn");
  Proof expected = make_cookie_proof(exporter, role, node, cookie);
  bool ok = proof_matches(expected, {proof.data, proof.size});
  return atom(env, ok ? "true" : "false");
}

// peer_cert_matches(Conn, Host) -> boolean()
ERL_NIF_TERM peer_cert_matches(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnResource* c;
  std::string host;
  if (!get_conn(env, argv[0], c) || !c->handle) return badarg(env, "conn");
  if (!get_string(env, argv[1], host)) return badarg(env, "host");
  return atom(env, certificate_matches_host(c->handle->peer_certificate(), host) ? "true" : "false");
}

// parse_node_name(Name, DefaultPort) -> {ok, {Name, Host, Port, Kind}} | {error, Text}
ERL_NIF_TERM parse_node_name(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  std::string text;
  unsigned port;
  if (!get_string(env, argv[0], text)) return badarg(env, "name");
  // A default port of 0: `name@host` nodes have no fixed port (they are
  // found through EPMD).
  if (!enif_get_uint(env, argv[1], &port) || port > 65535)
    return badarg(env, "default_port");
  NodeName n;
  NameError e = parse_node_name(text, uint16_t(port), n);
  if (e != NameError::kNone) return error_tuple(env, name_error_text(e));
  const char* kind = n.host_kind == HostKind::kIpv4 ? "ipv4"
                   : n.host_kind == HostKind::kIpv6 ? "ipv6" : "dns";
  return enif_make_tuple2(
      env, atom(env, "ok"),
      enif_make_tuple4(env, binary(env, n.name.data(), n.name.size()),
                       binary(env, n.host.data(), n.host.size()),
                       enif_make_uint(env, n.port), atom(env, kind)));
}

// erlang:halt() and init:stop() end in exit(), which runs this; a crash
// dump, abort or kill -9 does not, and the peers learn it from ICMP or a
// stateless reset instead. Bounded: the exit must never hang.
constexpr uint64_t kExitCloseLimitMs = 200;

void close_endpoints_at_exit() {
  for (auto& ep : readers::all()) ep->close_for_exit(kExitCloseLimitMs);
}

int load(ErlNifEnv* env, void** priv, ERL_NIF_TERM) {
  // Once per library load (glibc ties the handler to this library: it
  // also runs when the library is unloaded, by then with no endpoints).
  if (std::atexit(close_endpoints_at_exit) != 0) return 1;
  auto flags = ErlNifResourceFlags(ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER);
  g_endpoint_type = enif_open_resource_type(env, nullptr, "macula_endpoint", endpoint_dtor, flags, nullptr);
  ErlNifResourceTypeInit conn_init{};
  conn_init.dtor = conn_dtor;
  conn_init.down = conn_down;
  g_conn_type = enif_open_resource_type_x(env, "macula_conn", &conn_init, flags, nullptr);
  *priv = PriorityTable::create(env);
  return g_endpoint_type && g_conn_type && *priv ? 0 : 1;
}

ErlNifFunc nif_funcs[] = {
    {"open_endpoint", 1, open_endpoint, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"set_acceptor", 2, set_acceptor, 0},
    {"endpoint_info", 1, endpoint_info, 0},
    {"dial", 6, dial, 0},
    {"attach", 3, attach, 0},
    {"send", 3, send, 0},
    {"tick", 1, tick, 0},
    {"set_priority", 2, set_priority, 0},
    {"priority", 1, priority, 0},
    {"priority_info", 0, priority_info, 0},
    {"consumed", 2, consumed, 0},
    {"close", 3, close_conn, 0},
    {"authenticated", 1, authenticated, 0},
    {"getstat", 1, getstat, 0},
    {"conn_id", 1, conn_id, 0},
    {"peer_address", 1, peer_address, 0},
    {"conn_info", 1, conn_info, 0},
    {"migrate", 4, migrate, 0},
    {"proof_frame", 4, proof_frame, 0},
    {"parse_proof_frame", 1, parse_proof_frame, 0},
    {"check_cookie_proof", 5, check_cookie_proof, 0},
    {"peer_cert_matches", 2, peer_cert_matches, 0},
    {"parse_node_name", 2, parse_node_name, 0},
};

}  // namespace

}  // namespace macula

ERL_NIF_INIT(macula_nif, macula::nif_funcs, macula::load, nullptr, nullptr, nullptr)
