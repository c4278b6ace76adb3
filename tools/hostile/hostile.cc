// macula-hostile: a stranger attacking a macula node or relay, for the
// tests that bound what such a peer can cost. Deliberately built on
// ngtcp2 and GnuTLS directly, not on macula's core, so the tests do not
// share the stack they attack.
//
//   macula-hostile push  HOST:PORT [--conns N] [--seconds S]
//       Completes TLS with a throwaway self-signed certificate and, never
//       sending a cookie proof, writes as fast as the peer lets it: length-
//       prefixed 64 KB frames on every unidirectional stream it may open,
//       and empty frames (ticks) on the control stream.
//   macula-hostile flood HOST:PORT [--rate R] [--seconds S] [--ports P] [--distinct K]
//       Generates K client Initials (each a new connection ID) and sends
//       them round-robin at R per second from P source ports: a handshake
//       flood whose senders never answer.
//   macula-hostile relay HOST:PORT [--conns N] [--seconds S]
//       Holds N connections to a relay that never identify (no realm
//       secret); a connection the relay closes is opened again.
//
// Prints one summary line per run on stdout ("key=value ..."); exit 0
// unless the arguments or the local set-up were wrong.
#include <arpa/inet.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netdb.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace {

constexpr char kPriority[] =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:"
    "+CHACHA20-POLY1305:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:"
    "%DISABLE_TLS13_COMPAT_MODE";
constexpr size_t kFrame = 64 * 1024;

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "macula-hostile: %s\n", why.c_str());
  std::exit(2);
}

struct Options {
  std::string mode, host;
  uint16_t port = 0;
  int conns = 8;
  int seconds = 10;
  int rate = 3000;
  int ports = 256;
  int distinct = 8192;
  std::string alpn;
};

// A throwaway self-signed ECDSA certificate: anyone can make one.
gnutls_certificate_credentials_t make_credentials() {
  gnutls_x509_privkey_t key;
  gnutls_x509_crt_t crt;
  gnutls_x509_privkey_init(&key);
  if (gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
                                   GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0) < 0)
    die("cannot generate a key");
  gnutls_x509_crt_init(&crt);
  gnutls_x509_crt_set_version(crt, 3);
  unsigned char serial[8];
  gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof serial);
  serial[0] &= 0x7f;
  gnutls_x509_crt_set_serial(crt, serial, sizeof serial);
  time_t t = time(nullptr);
  gnutls_x509_crt_set_activation_time(crt, t - 3600);
  gnutls_x509_crt_set_expiration_time(crt, t + 86400);
  gnutls_x509_crt_set_dn(crt, "CN=hostile", nullptr);
  gnutls_x509_crt_set_key(crt, key);
  if (gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0) < 0) die("cannot sign");
  gnutls_certificate_credentials_t cred;
  gnutls_certificate_allocate_credentials(&cred);
  if (gnutls_certificate_set_x509_key(cred, &crt, 1, key) < 0) die("cannot use the key");
  return cred;
}

sockaddr_storage resolve(const std::string& host, uint16_t port, socklen_t& len) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_DGRAM;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0 || !res)
    die("cannot resolve " + host);
  sockaddr_storage ss{};
  std::memcpy(&ss, res->ai_addr, res->ai_addrlen);
  len = res->ai_addrlen;
  freeaddrinfo(res);
  return ss;
}

// A UDP socket connected to the target, on a fresh source port.
int open_socket(const sockaddr_storage& to, socklen_t tolen, sockaddr_storage& local,
                socklen_t& locallen) {
  int fd = socket(to.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) die(std::string("socket: ") + strerror(errno));
  int buf = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&to), tolen) != 0)
    die(std::string("connect: ") + strerror(errno));
  locallen = sizeof local;
  getsockname(fd, reinterpret_cast<sockaddr*>(&local), &locallen);
  return fd;
}

// One QUIC client connection with its own socket.
struct Client {
  int fd = -1;
  sockaddr_storage local{}, remote{};
  socklen_t locallen = 0, remotelen = 0;
  ngtcp2_conn* conn = nullptr;
  gnutls_session_t session = nullptr;
  ngtcp2_crypto_conn_ref ref{};
  bool handshake = false, closed = false;
  std::string close_reason;
  std::vector<int64_t> streams;  // unidirectional, ours
  int64_t control = -1;
  uint64_t acked = 0;
  uint64_t offered = 0;

  ~Client() {
    if (conn) ngtcp2_conn_del(conn);
    if (session) gnutls_deinit(session);
    if (fd >= 0) close(fd);
  }
  ngtcp2_path path() {
    return {{reinterpret_cast<sockaddr*>(&local), locallen},
            {reinterpret_cast<sockaddr*>(&remote), remotelen}, nullptr};
  }
};

ngtcp2_conn* get_conn(ngtcp2_crypto_conn_ref* ref) {
  return static_cast<Client*>(ref->user_data)->conn;
}

void rand_cb(uint8_t* dest, size_t len, const ngtcp2_rand_ctx*) {
  gnutls_rnd(GNUTLS_RND_RANDOM, dest, len);
}

int new_cid_cb(ngtcp2_conn*, ngtcp2_cid* cid, uint8_t* token, size_t cidlen, void*) {
  cid->datalen = cidlen;
  gnutls_rnd(GNUTLS_RND_RANDOM, cid->data, cidlen);
  gnutls_rnd(GNUTLS_RND_RANDOM, token, NGTCP2_STATELESS_RESET_TOKENLEN);
  return 0;
}

int handshake_cb(ngtcp2_conn*, void* ud) {
  static_cast<Client*>(ud)->handshake = true;
  return 0;
}

int acked_cb(ngtcp2_conn*, int64_t, uint64_t, uint64_t len, void* ud, void*) {
  static_cast<Client*>(ud)->acked += len;
  return 0;
}

int stream_data_cb(ngtcp2_conn* conn, uint32_t, int64_t id, uint64_t, const uint8_t*,
                   size_t len, void*, void*) {
  // Whatever the peer sends, we take: keep its windows open.
  ngtcp2_conn_extend_max_stream_offset(conn, id, len);
  ngtcp2_conn_extend_max_offset(conn, len);
  return 0;
}

ngtcp2_callbacks callbacks() {
  ngtcp2_callbacks cb{};
  cb.client_initial = ngtcp2_crypto_client_initial_cb;
  cb.recv_retry = ngtcp2_crypto_recv_retry_cb;
  cb.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
  cb.encrypt = ngtcp2_crypto_encrypt_cb;
  cb.decrypt = ngtcp2_crypto_decrypt_cb;
  cb.hp_mask = ngtcp2_crypto_hp_mask_cb;
  cb.update_key = ngtcp2_crypto_update_key_cb;
  cb.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
  cb.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
  cb.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
  cb.version_negotiation = ngtcp2_crypto_version_negotiation_cb;
  cb.rand = rand_cb;
  cb.get_new_connection_id = new_cid_cb;
  cb.handshake_completed = handshake_cb;
  cb.acked_stream_data_offset = acked_cb;
  cb.recv_stream_data = stream_data_cb;
  return cb;
}

std::unique_ptr<Client> start_client(const Options& o, gnutls_certificate_credentials_t cred,
                                     const sockaddr_storage& to, socklen_t tolen) {
  auto c = std::make_unique<Client>();
  c->remote = to;
  c->remotelen = tolen;
  c->fd = open_socket(to, tolen, c->local, c->locallen);
  ngtcp2_cid dcid, scid;
  dcid.datalen = 18;
  scid.datalen = 17;
  gnutls_rnd(GNUTLS_RND_RANDOM, dcid.data, dcid.datalen);
  gnutls_rnd(GNUTLS_RND_RANDOM, scid.data, scid.datalen);
  ngtcp2_settings s;
  ngtcp2_settings_default(&s);
  s.initial_ts = now_ns();
  s.handshake_timeout = 30ull * NGTCP2_SECONDS;
  ngtcp2_transport_params p;
  ngtcp2_transport_params_default(&p);
  p.initial_max_data = 64 << 20;
  p.initial_max_stream_data_bidi_local = 16 << 20;
  p.initial_max_stream_data_bidi_remote = 16 << 20;
  p.initial_max_stream_data_uni = 16 << 20;
  p.initial_max_streams_uni = 16;
  p.initial_max_streams_bidi = 0;
  p.max_idle_timeout = 60ull * NGTCP2_SECONDS;
  ngtcp2_callbacks cb = callbacks();
  ngtcp2_path path = c->path();
  if (ngtcp2_conn_client_new(&c->conn, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &cb, &s, &p,
                             nullptr, c.get()) != 0)
    die("ngtcp2_conn_client_new failed");
  gnutls_init(&c->session, GNUTLS_CLIENT | GNUTLS_NO_END_OF_EARLY_DATA);
  gnutls_priority_set_direct(c->session, kPriority, nullptr);
  gnutls_credentials_set(c->session, GNUTLS_CRD_CERTIFICATE, cred);
  gnutls_datum_t alpn{(unsigned char*)o.alpn.data(), unsigned(o.alpn.size())};
  gnutls_alpn_set_protocols(c->session, &alpn, 1, GNUTLS_ALPN_MANDATORY);
  if (ngtcp2_crypto_gnutls_configure_client_session(c->session) != 0)
    die("cannot configure the TLS session");
  c->ref.get_conn = get_conn;
  c->ref.user_data = c.get();
  gnutls_session_set_ptr(c->session, &c->ref);
  ngtcp2_conn_set_tls_native_handle(c->conn, c->session);
  return c;
}

void note_close(Client& c) {
  if (c.closed) return;
  c.closed = true;
  ngtcp2_connection_close_error ccerr;
  ngtcp2_conn_get_connection_close_error(c.conn, &ccerr);
  c.close_reason = ccerr.reasonlen ? std::string(reinterpret_cast<char*>(ccerr.reason),
                                                 ccerr.reasonlen)
                                   : "code " + std::to_string(ccerr.error_code);
}

void read_client(Client& c) {
  uint8_t buf[65536];
  for (int i = 0; i < 64 && !c.closed; ++i) {
    ssize_t n = recv(c.fd, buf, sizeof buf, 0);
    if (n <= 0) return;
    ngtcp2_path path = c.path();
    ngtcp2_pkt_info pi{};
    int rv = ngtcp2_conn_read_pkt(c.conn, &path, &pi, buf, size_t(n), now_ns());
    if (rv != 0) {
      if (rv == NGTCP2_ERR_DRAINING || rv == NGTCP2_ERR_CLOSING)
        note_close(c);
      else {
        c.closed = true;
        c.close_reason = ngtcp2_strerror(rv);
      }
    }
  }
}

// Opens what the peer allows: the control stream and every
// unidirectional stream.
void open_streams(Client& c) {
  if (c.control < 0) ngtcp2_conn_open_bidi_stream(c.conn, &c.control, nullptr);
  int64_t id;
  while (ngtcp2_conn_open_uni_stream(c.conn, &id, nullptr) == 0) c.streams.push_back(id);
}

// Writes up to `max` packets: handshake, ACKs, and in push mode the
// endless data. Returns the number of packets written.
size_t write_client(Client& c, bool push, size_t max) {
  static std::vector<uint8_t> frame = [] {
    std::vector<uint8_t> f(kFrame, 0);
    uint32_t n = kFrame - 4;
    f[0] = uint8_t(n >> 24);
    f[1] = uint8_t(n >> 16);
    f[2] = uint8_t(n >> 8);
    f[3] = uint8_t(n);
    return f;
  }();
  static const uint8_t ticks[1024] = {};  // empty frames: a zero length
  uint8_t buf[1500];
  uint64_t now = now_ns();
  size_t turn = 0, i = 0;
  for (; i < max && !c.closed; ++i) {
    int64_t sid = -1;
    ngtcp2_vec vec{};
    size_t nvec = 0;
    if (push && c.handshake) {
      open_streams(c);
      size_t n = c.streams.size() + 1;
      size_t pick = turn++ % n;
      if (pick == c.streams.size()) {
        sid = c.control;
        vec = {const_cast<uint8_t*>(ticks), sizeof ticks};
      } else {
        sid = c.streams[pick];
        vec = {frame.data(), frame.size()};
      }
      nvec = sid >= 0 ? 1 : 0;
    }
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_pkt_info pi{};
    ngtcp2_ssize datalen = -1;
    ngtcp2_ssize n = ngtcp2_conn_writev_stream(c.conn, &ps.path, &pi, buf, sizeof buf, &datalen,
                                               0, nvec ? sid : -1, nvec ? &vec : nullptr,
                                               nvec, now);
    if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED || n == NGTCP2_ERR_STREAM_SHUT_WR) {
      // This stream is shut: try the others, then only ACKs.
      n = ngtcp2_conn_write_pkt(c.conn, &ps.path, &pi, buf, sizeof buf, now);
    }
    if (n < 0) {
      c.closed = true;
      c.close_reason = ngtcp2_strerror(int(n));
      return i;
    }
    if (datalen > 0) c.offered += uint64_t(datalen);
    if (n == 0) return i;
    send(c.fd, buf, size_t(n), 0);
  }
  return i;
}

void on_timer(Client& c) {
  if (c.closed) return;
  uint64_t now = now_ns();
  if (ngtcp2_conn_get_expiry(c.conn) > now) return;
  int rv = ngtcp2_conn_handle_expiry(c.conn, now);
  if (rv != 0) {
    c.closed = true;
    c.close_reason = ngtcp2_strerror(rv);
  }
}

int run_clients(const Options& o, bool push) {
  gnutls_certificate_credentials_t cred = make_credentials();
  socklen_t tolen;
  sockaddr_storage to = resolve(o.host, o.port, tolen);
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < o.conns; ++i) clients.push_back(start_client(o, cred, to, tolen));
  uint64_t end = now_ns() + uint64_t(o.seconds) * 1000000000ull;
  uint64_t opened = uint64_t(o.conns), established = 0, closed_total = 0, acked = 0;
  uint64_t offered = 0;
  std::map<std::string, uint64_t> reasons;
  std::vector<bool> counted(clients.size(), false);
  bool busy = false;
  while (now_ns() < end) {
    std::vector<pollfd> fds;
    for (auto& c : clients) fds.push_back({c->fd, POLLIN, 0});
    // Flat out while the peer takes data; otherwise wait a little.
    poll(fds.data(), fds.size(), busy ? 0 : 2);
    busy = false;
    for (size_t i = 0; i < clients.size(); ++i) {
      Client& c = *clients[i];
      if (fds[i].revents & POLLIN) read_client(c);
      on_timer(c);
      if (write_client(c, push, push ? 64 : 8) > 2) busy = true;
      if (c.handshake && !counted[i]) {
        counted[i] = true;
        ++established;
      }
      if (c.closed) {
        ++closed_total;
        ++reasons[c.close_reason];
        acked += c.acked;
        offered += c.offered;
        // Keep the pressure on: a closed slot is taken again.
        clients[i] = start_client(o, cred, to, tolen);
        counted[i] = false;
        ++opened;
      }
    }
  }
  size_t open_now = 0, data_streams = 0;
  for (auto& c : clients) {
    acked += c->acked;
    offered += c->offered;
    if (c->handshake && !c->closed) ++open_now;
    data_streams += c->streams.size();
  }
  std::printf("mode=%s opened=%llu established=%llu open_at_end=%zu closed=%llu "
              "data_streams_at_end=%zu bytes_offered=%llu bytes_acked=%llu",
              push ? "push" : "relay", (unsigned long long)opened,
              (unsigned long long)established, open_now, (unsigned long long)closed_total,
              data_streams, (unsigned long long)offered, (unsigned long long)acked);
  for (auto& [why, n] : reasons) std::printf(" close[%s]=%llu", why.c_str(), (unsigned long long)n);
  std::printf("\n");
  return 0;
}

// One client Initial for a fresh connection ID, as a real client's first
// packet would look.
std::vector<uint8_t> make_initial(const Options& o, gnutls_certificate_credentials_t cred,
                                  const sockaddr_storage& to, socklen_t tolen) {
  auto c = start_client(o, cred, to, tolen);
  uint8_t buf[1500];
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi{};
  ngtcp2_ssize n = ngtcp2_conn_write_pkt(c->conn, &ps.path, &pi, buf, sizeof buf, now_ns());
  if (n <= 0) die("cannot write an Initial");
  return std::vector<uint8_t>(buf, buf + n);
}

int run_flood(const Options& o) {
  gnutls_certificate_credentials_t cred = make_credentials();
  socklen_t tolen;
  sockaddr_storage to = resolve(o.host, o.port, tolen);
  std::vector<std::vector<uint8_t>> initials;
  for (int i = 0; i < o.distinct; ++i) initials.push_back(make_initial(o, cred, to, tolen));
  std::vector<int> fds;
  for (int i = 0; i < o.ports; ++i) {
    sockaddr_storage local;
    socklen_t locallen;
    fds.push_back(open_socket(to, tolen, local, locallen));
  }
  uint64_t start = now_ns(), end = start + uint64_t(o.seconds) * 1000000000ull;
  uint64_t sent = 0, replies = 0, retries = 0, reply_bytes = 0;
  uint8_t buf[65536];
  while (true) {
    uint64_t now = now_ns();
    if (now >= end) break;
    uint64_t due = (now - start) * uint64_t(o.rate) / 1000000000ull;
    for (; sent < due; ++sent) {
      const std::vector<uint8_t>& pkt = initials[sent % initials.size()];
      send(fds[sent % fds.size()], pkt.data(), pkt.size(), 0);
    }
    // What comes back: Retry packets (long header type 3) or handshakes.
    for (int fd : fds) {
      ssize_t n;
      while ((n = recv(fd, buf, sizeof buf, 0)) > 0) {
        ++replies;
        reply_bytes += uint64_t(n);
        if ((buf[0] & 0xf0) == 0xf0) ++retries;
      }
    }
    usleep(1000);
  }
  std::printf("mode=flood sent=%llu distinct=%zu ports=%zu replies=%llu retries=%llu "
              "reply_bytes=%llu seconds=%d rate=%d\n",
              (unsigned long long)sent, initials.size(), fds.size(), (unsigned long long)replies,
              (unsigned long long)retries, (unsigned long long)reply_bytes, o.seconds, o.rate);
  return 0;
}

int int_arg(const char* v, const char* name, int lo, int hi) {
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  if (!end || *end || n < lo || n > hi)
    die(std::string("bad value for ") + name + ": " + v + " (" + std::to_string(lo) + ".." +
        std::to_string(hi) + ")");
  return int(n);
}

Options parse(int argc, char** argv) {
  if (argc < 3) die("usage: macula-hostile push|flood|relay HOST:PORT [options]");
  Options o;
  o.mode = argv[1];
  if (o.mode != "push" && o.mode != "flood" && o.mode != "relay") die("unknown mode " + o.mode);
  std::string target = argv[2];
  size_t colon = target.rfind(':');
  if (colon == std::string::npos) die("target must be HOST:PORT, got " + target);
  o.host = target.substr(0, colon);
  if (!o.host.empty() && o.host.front() == '[') o.host = o.host.substr(1, o.host.size() - 2);
  o.port = uint16_t(int_arg(target.c_str() + colon + 1, "port", 1, 65535));
  o.alpn = o.mode == "relay" ? "macula-relay" : "macula-dist";
  for (int i = 3; i < argc; i += 2) {
    std::string k = argv[i];
    if (i + 1 >= argc) die("missing value for " + k);
    const char* v = argv[i + 1];
    if (k == "--conns") o.conns = int_arg(v, "--conns", 1, 10000);
    else if (k == "--seconds") o.seconds = int_arg(v, "--seconds", 1, 3600);
    else if (k == "--rate") o.rate = int_arg(v, "--rate", 1, 1000000);
    else if (k == "--ports") o.ports = int_arg(v, "--ports", 1, 4096);
    else if (k == "--distinct") o.distinct = int_arg(v, "--distinct", 1, 1000000);
    else if (k == "--alpn") o.alpn = v;
    else die("unknown option " + k);
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  setvbuf(stdout, nullptr, _IOLBF, 0);
  if (o.mode == "flood") return run_flood(o);
  return run_clients(o, o.mode == "push");
}
