// Erlang binding of the relay shim (relay/client/relay_shim.h) for dist_relay
// mode. A library of its own, beside macula_nif: it shares no state with
// the inner endpoint, only its loopback port number.
//
// Every function validates its arguments (badarg names the argument) and
// returns at once; the shim's threads report with messages to the owner:
//   {macula_relay, Tag, {identified, RelayName}}
//   {macula_relay, Tag, {tunnel_ready, Request, Tunnel, Port}}
//   {macula_relay, Tag, {tunnel_failed, Request, Reason}}
//   {macula_relay, Tag, {tunnel_incoming, Tunnel, SourceNode, Port}}
//   {macula_relay, Tag, {tunnel_closed, Tunnel, Reason}}
//   {macula_relay, Tag, {node_list, Request, [{Node, Relay}], More}}
//   {macula_relay, Tag, {request_failed, Request, Reason}}
//   {macula_relay, Tag, {closed, Why}}      Why as macula_nif's close reasons
// Names and reasons are binaries; Tag is the integer given to open/1.
#include <erl_nif.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "nif_terms.h"
#include "relay_shim.h"

namespace macula {
namespace {

using nif::atom;
using nif::badarg;
using nif::binary;
using nif::get_string;
using nif::map_string;
using relay::RelayShim;

ErlNifResourceType* g_shim_type;

// Every shim opened and not yet destroyed, for the atexit handler. Never
// destroyed itself: static destructors may run before that handler.
struct LiveShims {
  std::mutex mu;
  std::vector<std::weak_ptr<RelayShim>> shims;

  void add(const std::shared_ptr<RelayShim>& shim) {
    std::lock_guard lock(mu);
    std::erase_if(shims, [](const auto& w) { return w.expired(); });
    shims.push_back(shim);
  }
  std::vector<std::shared_ptr<RelayShim>> all() {
    std::lock_guard lock(mu);
    std::vector<std::shared_ptr<RelayShim>> out;
    for (auto& w : shims)
      if (auto s = w.lock()) out.push_back(std::move(s));
    return out;
  }
};
LiveShims& live_shims() {
  static auto* live = new LiveShims;
  return *live;
}

// erlang:halt() and init:stop() end in exit(), which runs this (see
// macula_nif's handler, which closes the node's own connections).
constexpr uint64_t kExitCloseLimitMs = 200;

// One deadline for all shims. The shims are kept (leaked) so that no
// destructor, which joins threads, runs inside exit().
void close_shims_at_exit() {
  auto* shims = new std::vector<std::shared_ptr<RelayShim>>(live_shims().all());
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kExitCloseLimitMs);
  for (auto& shim : *shims) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    shim->close_for_exit(uint64_t(left.count()));
  }
}

bool map_port(ErlNifEnv* env, ERL_NIF_TERM map, const char* key, uint16_t& out) {
  ERL_NIF_TERM v;
  unsigned n;
  if (!enif_get_map_value(env, map, atom(env, key), &v) || !enif_get_uint(env, v, &n) ||
      n == 0 || n > 65535)
    return false;
  out = uint16_t(n);
  return true;
}

ERL_NIF_TERM close_reason(ErlNifEnv* env, const CloseInfo& info) {
  return nif::close_reason(env, info, true);
}

// Sends {macula_relay, Tag, Event} from the shim's threads.
class NifShimEvents : public relay::RelayShimEvents {
 public:
  NifShimEvents(ErlNifPid owner, uint64_t tag) : owner_(owner), tag_(tag) {}

  void identified(const std::string& relay) override {
    emit([&](ErlNifEnv* e) { return enif_make_tuple2(e, atom(e, "identified"), binary(e, relay)); });
  }
  void tunnel_ready(uint64_t request, uint32_t tunnel, uint16_t port) override {
    emit([&](ErlNifEnv* e) {
      return enif_make_tuple4(e, atom(e, "tunnel_ready"), enif_make_uint64(e, request),
                              enif_make_uint(e, tunnel), enif_make_uint(e, port));
    });
  }
  void tunnel_failed(uint64_t request, const std::string& reason) override {
    emit([&](ErlNifEnv* e) {
      return enif_make_tuple3(e, atom(e, "tunnel_failed"), enif_make_uint64(e, request),
                              binary(e, reason));
    });
  }
  void tunnel_incoming(uint32_t tunnel, const std::string& source, uint16_t port) override {
    emit([&](ErlNifEnv* e) {
      return enif_make_tuple4(e, atom(e, "tunnel_incoming"), enif_make_uint(e, tunnel),
                              binary(e, source), enif_make_uint(e, port));
    });
  }
  void tunnel_closed(uint32_t tunnel, const std::string& reason) override {
    emit([&](ErlNifEnv* e) {
      return enif_make_tuple3(e, atom(e, "tunnel_closed"), enif_make_uint(e, tunnel),
                              binary(e, reason));
    });
  }
  void node_list(uint64_t request, const std::vector<relay::NodeEntry>& nodes,
                 bool more) override {
    emit([&](ErlNifEnv* e) {
      ERL_NIF_TERM list = enif_make_list(e, 0);
      for (auto it = nodes.rbegin(); it != nodes.rend(); ++it)
        list = enif_make_list_cell(
            e, enif_make_tuple2(e, binary(e, it->node), binary(e, it->relay)), list);
      return enif_make_tuple4(e, atom(e, "node_list"), enif_make_uint64(e, request), list,
                              atom(e, more ? "true" : "false"));
    });
  }
  void request_failed(uint64_t request, const std::string& reason) override {
    emit([&](ErlNifEnv* e) {
      return enif_make_tuple3(e, atom(e, "request_failed"), enif_make_uint64(e, request),
                              binary(e, reason));
    });
  }
  void closed(const CloseInfo& info) override {
    emit([&](ErlNifEnv* e) { return enif_make_tuple2(e, atom(e, "closed"), close_reason(e, info)); });
  }

 private:
  template <class Build>
  void emit(Build build) {
    ErlNifEnv* env = enif_alloc_env();
    ERL_NIF_TERM msg = enif_make_tuple3(env, atom(env, "macula_relay"),
                                        enif_make_uint64(env, tag_), build(env));
    enif_send(nullptr, &owner_, env, msg);
    enif_free_env(env);
  }

  ErlNifPid owner_;
  const uint64_t tag_;
};

// close/1 may race the garbage collector's destructor: the shim is
// swapped out under a lock and destroyed outside it.
struct ShimResource {
  std::mutex mu;
  std::shared_ptr<RelayShim> shim;

  std::shared_ptr<RelayShim> get() {
    std::lock_guard lock(mu);
    return shim;
  }
  std::shared_ptr<RelayShim> take() {
    std::lock_guard lock(mu);
    return std::move(shim);
  }
};

void shim_dtor(ErlNifEnv*, void* obj) { static_cast<ShimResource*>(obj)->~ShimResource(); }

// The owner died: nobody will read the shim's events. The relay connection
// closes now; the threads end with the resource.
void shim_down(ErlNifEnv*, void* obj, ErlNifPid*, ErlNifMonitor*) {
  if (auto shim = static_cast<ShimResource*>(obj)->get()) shim->close();
}

std::shared_ptr<RelayShim> get_shim(ErlNifEnv* env, ERL_NIF_TERM t) {
  void* p;
  if (!enif_get_resource(env, t, g_shim_type, &p)) return nullptr;
  return static_cast<ShimResource*>(p)->get();
}

bool parse_shim_config(ErlNifEnv* env, ERL_NIF_TERM m, relay::RelayShimConfig& c,
                       const char*& bad) {
  std::string relay_ip;
  uint16_t relay_port = 0, inner_port = 0;
  c.endpoint.bind_ip = "0.0.0.0";
  if (!map_string(env, m, "relay_ip", relay_ip, true)) return bad = "relay_ip", false;
  if (!map_port(env, m, "relay_port", relay_port)) return bad = "relay_port", false;
  if (!make_address(relay_ip, relay_port, c.client.relay)) return bad = "relay_ip", false;
  if (!map_string(env, m, "relay_host", c.client.relay_host, false)) return bad = "relay_host", false;
  if (!map_string(env, m, "node", c.client.node_name, true) || !relay::valid_name(c.client.node_name))
    return bad = "node", false;
  if (!map_string(env, m, "secret", c.client.realm_secret, true) || c.client.realm_secret.empty())
    return bad = "secret", false;
  if (!map_port(env, m, "inner_port", inner_port)) return bad = "inner_port", false;
  make_address("127.0.0.1", inner_port, c.inner);
  if (!map_string(env, m, "bind", c.endpoint.bind_ip, false)) return bad = "bind", false;
  if (!map_string(env, m, "cert_dir", c.endpoint.tls.cert_dir, false)) return bad = "cert_dir", false;
  if (!map_string(env, m, "certfile", c.endpoint.tls.certfile, false)) return bad = "certfile", false;
  if (!map_string(env, m, "keyfile", c.endpoint.tls.keyfile, false)) return bad = "keyfile", false;
  // The relay proves the realm secret; in CA mode its certificate must
  // also chain to the CA and be valid for relay_host.
  if (!map_string(env, m, "cacertfile", c.endpoint.tls.cacertfile, false))
    return bad = "cacertfile", false;
  c.endpoint.tls.mode = c.endpoint.tls.cacertfile.empty() ? TrustMode::kCookie : TrustMode::kCa;
  return true;
}

// open(#{relay_ip, relay_port, relay_host, node, secret, inner_port, tag,
//        bind, cert_dir, certfile, keyfile, cacertfile}) -> {ok, Shim} | {error, Text}
// Events go to the calling process.
ERL_NIF_TERM open(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  if (!enif_is_map(env, argv[0])) return badarg(env, "options");
  relay::RelayShimConfig c;
  const char* bad = nullptr;
  if (!parse_shim_config(env, argv[0], c, bad)) return badarg(env, bad);
  ERL_NIF_TERM v;
  ErlNifUInt64 tag;
  if (!enif_get_map_value(env, argv[0], atom(env, "tag"), &v) || !enif_get_uint64(env, v, &tag))
    return badarg(env, "tag");
  ErlNifPid self;
  enif_self(env, &self);
  std::string error;
  auto shim = RelayShim::open(c, std::make_shared<NifShimEvents>(self, tag), error);
  if (!shim)
    return nif::error_tuple(env, error);
  auto* res = static_cast<ShimResource*>(enif_alloc_resource(g_shim_type, sizeof(ShimResource)));
  new (res) ShimResource();
  res->shim = std::move(shim);
  live_shims().add(res->shim);
  enif_monitor_process(env, res, &self, nullptr);
  ERL_NIF_TERM t = enif_make_resource(env, res);
  enif_release_resource(res);
  return enif_make_tuple2(env, atom(env, "ok"), t);
}

// tunnel(Shim, TargetNode) -> Request (an integer >= 1)
ERL_NIF_TERM tunnel(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto shim = get_shim(env, argv[0]);
  std::string target;
  if (!shim) return badarg(env, "shim");
  if (!get_string(env, argv[1], target) || !relay::valid_name(target)) return badarg(env, "target");
  return enif_make_uint64(env, shim->request_tunnel(target));
}

// list_nodes(Shim, After) -> Request (0: the relay connection is gone).
// After: a binary, <<>> for the first page.
ERL_NIF_TERM list_nodes(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto shim = get_shim(env, argv[0]);
  std::string after;
  if (!shim) return badarg(env, "shim");
  if (!get_string(env, argv[1], after) || after.size() > relay::kMaxNameSize)
    return badarg(env, "after");
  return enif_make_uint64(env, shim->list_nodes(after));
}

// close_tunnel(Shim, Tunnel) -> ok
ERL_NIF_TERM close_tunnel(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto shim = get_shim(env, argv[0]);
  unsigned t;
  if (!shim) return badarg(env, "shim");
  if (!enif_get_uint(env, argv[1], &t)) return badarg(env, "tunnel");
  shim->close_tunnel(t);
  return atom(env, "ok");
}

// close(Shim) -> ok: the relay connection ends, the tunnels with it. A
// dirty call: it joins the shim's threads.
ERL_NIF_TERM close(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  void* p;
  if (!enif_get_resource(env, argv[0], g_shim_type, &p)) return badarg(env, "shim");
  std::shared_ptr<RelayShim> shim = static_cast<ShimResource*>(p)->take();
  shim.reset();
  return atom(env, "ok");
}

// stats(Shim) -> #{packets_out, packets_in, dropped_busy, dropped_other, tunnels}
ERL_NIF_TERM stats(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto shim = get_shim(env, argv[0]);
  if (!shim) return badarg(env, "shim");
  relay::RelayShimStats s = shim->stats();
  ERL_NIF_TERM keys[] = {atom(env, "packets_out"), atom(env, "packets_in"),
                         atom(env, "dropped_busy"), atom(env, "dropped_other"),
                         atom(env, "tunnels")};
  ERL_NIF_TERM vals[] = {enif_make_uint64(env, s.packets_out), enif_make_uint64(env, s.packets_in),
                         enif_make_uint64(env, s.dropped_busy), enif_make_uint64(env, s.dropped_other),
                         enif_make_uint64(env, s.tunnels)};
  ERL_NIF_TERM map;
  enif_make_map_from_arrays(env, keys, vals, 5, &map);
  return map;
}

int load(ErlNifEnv* env, void**, ERL_NIF_TERM) {
  if (std::atexit(close_shims_at_exit) != 0) return 1;
  auto flags = ErlNifResourceFlags(ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER);
  ErlNifResourceTypeInit init{};
  init.dtor = shim_dtor;
  init.down = shim_down;
  g_shim_type = enif_open_resource_type_x(env, "macula_relay_shim", &init, flags, nullptr);
  return g_shim_type ? 0 : 1;
}

ErlNifFunc nif_funcs[] = {
    {"open", 1, open, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"tunnel", 2, tunnel, 0},
    {"close_tunnel", 2, close_tunnel, 0},
    {"list_nodes", 2, list_nodes, 0},
    {"close", 1, close, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"stats", 1, stats, 0},
};

}  // namespace
}  // namespace macula

ERL_NIF_INIT(macula_relay_nif, macula::nif_funcs, macula::load, nullptr, nullptr, nullptr)
