// The daemon's parts: settings, logs, metrics text and HTTP, and the real
// macula-relay binary started as a child process.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <regex>
#include <thread>

#include "metrics_http.h"
#include "relay_client.h"
#include "relay_config.h"
#include "relay_log.h"
#include "relay_metrics.h"
#include "test_util.h"

namespace macula::relay {
namespace {

using namespace std::chrono_literals;

bool parse_args(std::vector<const char*> args, DaemonConfig& c, std::string& error) {
  args.insert(args.begin(), "macula-relay");
  return parse_command_line(int(args.size()), args.data(), c, error);
}

TEST(RelayConfig, DefaultsMatchTheDocumentation) {
  DaemonConfig c;
  EXPECT_EQ(c.port, 4434);
  EXPECT_EQ(c.bind, "::");
  EXPECT_EQ(c.metrics_port, 0);
  EXPECT_EQ(c.server.max_tunnels_per_node, 64u);
  EXPECT_EQ(c.server.max_bytes_in_flight_per_node, 4u << 20);
}

TEST(RelayConfig, FileThenFlagsEachOverridingTheOneBefore) {
  test::TempDir dir;
  test::write_file(dir.file("relay.conf"),
                   "# a comment\n"
                   "port = 5000\n"
                   "  max-tunnels-per-node=7   # trailing comment\n"
                   "\n"
                   "peer = relay2.example:4434\n"
                   "peer = [2001:db8::1]:4434\n"
                   "name = r1\n");
  DaemonConfig c;
  std::string error;
  std::string conf = dir.file("relay.conf");
  ASSERT_TRUE(parse_args({"--port", "6000", "--config", conf.c_str(),
                          "--max-bytes-in-flight-per-node=1000000", "--bind", "127.0.0.1"},
                         c, error))
      << error;
  EXPECT_EQ(c.port, 6000);  // the flag wins, wherever --config stands
  EXPECT_EQ(c.server.max_tunnels_per_node, 7u);
  EXPECT_EQ(c.server.max_bytes_in_flight_per_node, 1000000u);
  EXPECT_EQ(c.bind, "127.0.0.1");
  EXPECT_EQ(c.server.name, "r1");
  EXPECT_EQ(c.peers, (std::vector<std::string>{"relay2.example:4434", "[2001:db8::1]:4434"}));
}

TEST(RelayConfig, ErrorsNameTheSettingAndLine) {
  DaemonConfig c;
  std::string error;
  EXPECT_FALSE(parse_args({"--port", "70000"}, c, error));
  EXPECT_EQ(error, "bad value for port: '70000'");
  EXPECT_FALSE(parse_args({"--colour", "red"}, c, error));
  EXPECT_EQ(error, "unknown setting colour");
  EXPECT_FALSE(parse_args({"--port"}, c, error));
  EXPECT_EQ(error, "--port needs a value");
  EXPECT_FALSE(parse_args({"stray"}, c, error));
  EXPECT_EQ(error, "unexpected argument stray");
  EXPECT_FALSE(parse_args({"--max-tunnels-per-node", "0"}, c, error));
  EXPECT_FALSE(parse_args({"--max-bytes-in-flight-per-node", "100"}, c, error));
  EXPECT_FALSE(parse_args({"--peer", "nohost"}, c, error));
  EXPECT_FALSE(parse_args({"--name", "has space"}, c, error));
  EXPECT_FALSE(parse_args({"--config", "/nonexistent/relay.conf"}, c, error));
  EXPECT_EQ(error, "cannot read config file /nonexistent/relay.conf");
  EXPECT_FALSE(apply_config_text(c, "port = 1\nport 2\n", error));
  EXPECT_EQ(error, "line 2: expected key = value");
  EXPECT_FALSE(apply_config_text(c, "port = x\n", error));
  EXPECT_EQ(error, "line 1: bad value for port: 'x'");
  EXPECT_TRUE(parse_args({"--help"}, c, error));
  EXPECT_TRUE(c.help);
}

TEST(RelayConfig, OversizedFileIsRefused) {
  test::TempDir dir;
  test::write_file(dir.file("big.conf"), std::string(70000, '#'));
  DaemonConfig c;
  std::string error, path = dir.file("big.conf");
  EXPECT_FALSE(parse_args({"--config", path.c_str()}, c, error));
  EXPECT_EQ(error, "config file " + path + " is larger than 64 KB");
}

// Random lines made of the parser's own vocabulary: it accepts or names
// a line, and never crashes.
TEST(RelayConfig, RandomTextNeverCrashesTheParser) {
  const char* words[] = {"port", "=", " ", "#", "\n", "peer", "[::1]:1", "4434", "-1",
                         "99999999999999999999", "name", "\t", "max-tunnels-per-node",
                         "bind", "x", "\r\n", "==", "0x10", "\xff"};
  std::mt19937 rng(5);
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string text;
    for (int k = 0, n = int(rng() % 12); k < n; ++k) text += words[rng() % std::size(words)];
    DaemonConfig c;
    std::string error;
    if (apply_config_text(c, text, error)) ++accepted;
    else ASSERT_EQ(error.rfind("line ", 0), 0u) << error;
  }
  EXPECT_GT(accepted, 0);
}

TEST(RelayConfig, RealmSecretIsRequiredAndLongEnough) {
  test::TempDir dir;
  DaemonConfig c;
  std::string error;
  EXPECT_FALSE(load_realm_secret(c, error));
  EXPECT_NE(error.find("--realm-secret-file is required"), std::string::npos);
  c.realm_secret_file = dir.file("short");
  test::write_file(c.realm_secret_file, "short\n");
  EXPECT_FALSE(load_realm_secret(c, error));
  EXPECT_NE(error.find("shorter than 16 bytes"), std::string::npos);
  c.realm_secret_file = dir.file("huge");
  test::write_file(c.realm_secret_file, std::string(5000, 's'));
  EXPECT_FALSE(load_realm_secret(c, error));
  EXPECT_NE(error.find("larger than 4 KB"), std::string::npos);
  c.realm_secret_file = dir.file("good");
  test::write_file(c.realm_secret_file, "  0123456789abcdef-long-enough\n");
  ASSERT_TRUE(load_realm_secret(c, error)) << error;
  EXPECT_EQ(c.server.realm_secret, "0123456789abcdef-long-enough");
  EXPECT_EQ(check(c), "");
  c.certfile = "cert.pem";
  EXPECT_EQ(check(c), "--certfile and --keyfile go together");
}

TEST(RelayLog, OneLinePerEventWithEscapedValues) {
  EXPECT_EQ(log_line("info", "node_identified", {{"name", "alice@host"}, {"conn", "3"}}),
            "level=info event=node_identified name=alice@host conn=3");
  EXPECT_EQ(log_value("a b"), "\"a b\"");
  EXPECT_EQ(log_value(""), "\"\"");
  EXPECT_EQ(log_value("x\ny=\"z\""), "\"x\\x0ay=\\\"z\\\"\"");
  std::vector<std::string> lines;
  Logger log([&](const std::string& l) { lines.push_back(l); });
  log.warn("evt", {{"k", "v"}});
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(std::regex_match(lines[0], std::regex(
      R"(ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=warn event=evt k=v)")))
      << lines[0];
}

TEST(RelayMetricsText, PrometheusFormatWithKnownLabelsAtZero) {
  RelayMetrics m;
  m.connections = 3;
  m.nodes = 2;
  m.bytes_forwarded = 12345;
  m.drops["congested"] = 4;
  m.rejections["name_taken"] = 1;
  m.bad_frames["control"] = 2;
  EndpointStats e;
  e.dropped_packets = 9;
  std::string t = render_prometheus(m, e);
  for (const char* line : {
           "# TYPE macula_relay_connections gauge\nmacula_relay_connections 3\n",
           "macula_relay_nodes 2\n",
           "# TYPE macula_relay_bytes_forwarded_total counter\n"
           "macula_relay_bytes_forwarded_total 12345\n",
           "macula_relay_drops_total{reason=\"congested\"} 4\n",
           "macula_relay_drops_total{reason=\"unknown_tunnel\"} 0\n",
           "macula_relay_rejections_total{reason=\"name_taken\"} 1\n",
           "macula_relay_rejections_total{reason=\"bad_proof\"} 0\n",
           "macula_relay_bad_frames_total{kind=\"control\"} 2\n",
           "macula_relay_bad_frames_total{kind=\"data\"} 0\n",
           "macula_relay_udp_dropped_total 9\n"})
    EXPECT_NE(t.find(line), std::string::npos) << line;
  // Every sample line is `name[{labels}] value`.
  std::regex sample(R"(^[a-z_]+(\{[a-z]+="[a-z_]+"\})? \d+$)");
  size_t start = 0;
  while (start < t.size()) {
    size_t end = t.find('\n', start);
    std::string line = t.substr(start, end - start);
    if (line[0] != '#') {
      EXPECT_TRUE(std::regex_match(line, sample)) << line;
    }
    start = end + 1;
  }
}

TEST(RelayMetricsHttp, AnswersGetMetricsOnly) {
  auto render = [] { return std::string("x 1\n"); };
  std::string r = http_response("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", render);
  EXPECT_EQ(r.rfind("HTTP/1.0 200 OK\r\n", 0), 0u);
  EXPECT_NE(r.find("Content-Type: text/plain; version=0.0.4"), std::string::npos);
  EXPECT_NE(r.find("Content-Length: 4\r\n"), std::string::npos);
  EXPECT_EQ(r.substr(r.size() - 4), "x 1\n");
  EXPECT_EQ(http_response("GET /other HTTP/1.0\r\n\r\n", render).rfind("HTTP/1.0 404", 0), 0u);
  EXPECT_EQ(http_response("POST /metrics HTTP/1.0\r\n\r\n", render).rfind("HTTP/1.0 405", 0), 0u);
  EXPECT_EQ(http_response("garbage", render).rfind("HTTP/1.0 400", 0), 0u);
}

std::string http_get(uint16_t port, const std::string& request) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    send(fd, request.data(), request.size(), MSG_NOSIGNAL);
    char buf[4096];
    ssize_t n;
    while ((n = recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, size_t(n));
  }
  close(fd);
  return out;
}

TEST(RelayMetricsHttp, ServesOverTcpAndSurvivesSilentClients) {
  std::string error;
  auto http = MetricsHttp::open("127.0.0.1", 0, [] { return std::string("up 1\n"); }, error);
  ASSERT_TRUE(http) << error;
  // A client that connects and says nothing is dropped after the timeout.
  int idle = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(http->port());
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(idle, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  std::string r = http_get(http->port(), "GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_NE(r.find("\r\n\r\nup 1\n"), std::string::npos) << r;
  close(idle);
  // A request over the size bound gets no answer, and the server goes on.
  EXPECT_EQ(http_get(http->port(), std::string(20000, 'A')), "");
  EXPECT_NE(http_get(http->port(), "GET /metrics HTTP/1.0\r\n\r\n").find("up 1"),
            std::string::npos);
}

// ---- the binary ----

class Lines {
 public:
  void add(const std::string& l) {
    std::lock_guard g(mu_);
    lines_.push_back(l);
    cv_.notify_all();
  }
  // The first line matching `re`, waiting up to `t`.
  std::optional<std::smatch> wait(const std::regex& re, std::chrono::milliseconds t) {
    std::unique_lock g(mu_);
    std::optional<std::smatch> m;
    cv_.wait_for(g, t, [&] {
      for (const std::string& l : lines_) {
        std::smatch x;
        if (std::regex_search(l, x, re)) {
          m = x;
          return true;
        }
      }
      return false;
    });
    return m;
  }
  std::string all() {
    std::lock_guard g(mu_);
    std::string s;
    for (auto& l : lines_) s += l + "\n";
    return s;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> lines_;
};

uint16_t free_tcp_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

struct Child {
  pid_t pid = -1;
  std::thread reader;
  Lines stderr_lines;  // stdout too

  void start(const std::vector<std::string>& args) {
    int pipefd[2];
    ASSERT_EQ(pipe2(pipefd, O_CLOEXEC), 0);
    pid = fork();
    if (pid == 0) {
      dup2(pipefd[1], 1);
      dup2(pipefd[1], 2);
      std::vector<char*> argv;
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(pipefd[1]);
    reader = std::thread([this, fd = pipefd[0]] {
      std::string buf;
      char c[512];
      ssize_t n;
      while ((n = read(fd, c, sizeof c)) > 0) {
        buf.append(c, size_t(n));
        for (size_t nl; (nl = buf.find('\n')) != std::string::npos; buf.erase(0, nl + 1))
          stderr_lines.add(buf.substr(0, nl));
      }
      close(fd);
    });
  }
  int wait_exit() {
    int status = 0;
    for (int i = 0; i < 500; ++i) {
      if (waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        reader.join();
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(10ms);
    }
    return -1;
  }
  ~Child() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    if (reader.joinable()) reader.join();
  }
};

class Recorder : public RelayClientEvents {
 public:
  void identified(const Identified& relay) override { set(relay_, relay.relay); }
  void tunnel_ok(uint64_t, uint32_t) override {}
  void tunnel_error(uint64_t, const std::string&) override {}
  void tunnel_incoming(uint32_t, const std::string&) override {}
  void tunnel_closed(uint32_t, const std::string&) override {}
  void packet(uint32_t, std::span<const uint8_t>) override {}
  void closed(const CloseInfo& info) override { set(close_, info.text); }
  std::string wait(std::string Recorder::*field) {
    std::unique_lock g(mu_);
    cv_.wait_for(g, 10s, [&] { return !(this->*field).empty(); });
    return this->*field;
  }
  std::string relay_, close_;

 private:
  void set(std::string& f, const std::string& v) {
    std::lock_guard g(mu_);
    f = v;
    cv_.notify_all();
  }
  std::mutex mu_;
  std::condition_variable cv_;
};

TEST(RelayDaemon, HelpAndBadFlagsExitAtOnce) {
  Child help;
  help.start({MACULA_RELAY_BIN, "--help"});
  EXPECT_EQ(help.wait_exit(), 0);
  EXPECT_TRUE(help.stderr_lines.wait(std::regex("^usage: macula-relay"), 1s));
  Child bad;
  bad.start({MACULA_RELAY_BIN, "--port", "nope"});
  EXPECT_EQ(bad.wait_exit(), 2);
  EXPECT_TRUE(bad.stderr_lines.wait(std::regex("bad value for port"), 1s));
  Child no_secret;
  no_secret.start({MACULA_RELAY_BIN, "--port", "0"});
  EXPECT_EQ(no_secret.wait_exit(), 1);
  EXPECT_TRUE(no_secret.stderr_lines.wait(
      std::regex("event=relay_failed .*realm-secret-file is required"), 1s));
}

TEST(RelayDaemon, ServesNodesAndMetricsAndStopsCleanlyOnSigterm) {
  test::TempDir dir;
  test::write_file(dir.file("secret"), "daemon-test-secret-0123456789\n");
  chmod(dir.file("secret").c_str(), 0644);  // whatever the umask: expect the warning
  uint16_t mport = free_tcp_port();
  Child relay;
  relay.start({MACULA_RELAY_BIN, "--bind", "127.0.0.1", "--port", "0", "--name", "r-test",
               "--cert-dir", dir.file("certs"), "--realm-secret-file", dir.file("secret"),
               "--metrics-port", std::to_string(mport)});
  auto started = relay.stderr_lines.wait(
      std::regex(R"(event=relay_started name=r-test address=127\.0\.0\.1:(\d+))"), 10s);
  ASSERT_TRUE(started) << relay.stderr_lines.all();
  uint16_t port = uint16_t(std::stoi((*started)[1]));
  EXPECT_TRUE(relay.stderr_lines.wait(std::regex("level=warn event=realm_secret_exposed"), 1s));

  EndpointConfig ec;
  ec.bind_ip = "127.0.0.1";
  ec.tls.cert_dir = dir.file("node");
  std::string error;
  auto ep = Endpoint::open(relay_client_endpoint_config(ec), nullptr, error);
  ASSERT_TRUE(ep) << error;
  auto events = std::make_shared<Recorder>();
  RelayClientConfig cc{"alice@host", "daemon-test-secret-0123456789", {}, "127.0.0.1"};
  make_address("127.0.0.1", port, cc.relay);
  auto client = RelayClient::connect(*ep, cc, events);
  EXPECT_EQ(events->wait(&Recorder::relay_), "r-test");
  EXPECT_TRUE(relay.stderr_lines.wait(std::regex("event=node_identified .*name=alice@host"), 5s));

  std::string metrics = http_get(mport, "GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_NE(metrics.find("\nmacula_relay_nodes 1\n"), std::string::npos) << metrics;

  kill(relay.pid, SIGTERM);
  EXPECT_EQ(events->wait(&Recorder::close_), "relay_shutdown");
  EXPECT_EQ(relay.wait_exit(), 0);
  EXPECT_TRUE(relay.stderr_lines.wait(std::regex("event=relay_stopping signal=SIGTERM"), 1s));
  EXPECT_TRUE(relay.stderr_lines.wait(std::regex("event=relay_stopped"), 1s))
      << relay.stderr_lines.all();
}

// Two daemons: the second is given the first as --peer; both log the
// link, and the first's metrics count it.
TEST(RelayDaemon, PeersLinkUpAndBadPeersAreRefused) {
  test::TempDir dir;
  test::write_file(dir.file("secret"), "daemon-test-secret-0123456789\n");
  chmod(dir.file("secret").c_str(), 0600);
  uint16_t mport = free_tcp_port();
  auto start = [&](Child& c, const std::string& name, std::vector<std::string> extra) {
    std::vector<std::string> args = {MACULA_RELAY_BIN, "--bind", "127.0.0.1", "--port", "0",
                                     "--name", name, "--cert-dir", dir.file(name),
                                     "--realm-secret-file", dir.file("secret")};
    args.insert(args.end(), extra.begin(), extra.end());
    c.start(args);
    return c.stderr_lines.wait(
        std::regex(R"(event=relay_started name=\S+ address=127\.0\.0\.1:(\d+))"), 10s);
  };
  Child a, b;
  auto a_started = start(a, "r-a", {"--metrics-port", std::to_string(mport)});
  ASSERT_TRUE(a_started) << a.stderr_lines.all();
  ASSERT_TRUE(start(b, "r-b", {"--peer", "127.0.0.1:" + (*a_started)[1].str()}))
      << b.stderr_lines.all();
  EXPECT_TRUE(a.stderr_lines.wait(std::regex("event=peer_linked .*relay=r-b"), 10s))
      << a.stderr_lines.all();
  EXPECT_TRUE(b.stderr_lines.wait(std::regex("event=peer_linked .*relay=r-a"), 10s))
      << b.stderr_lines.all();
  std::string metrics = http_get(mport, "GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_NE(metrics.find("\nmacula_relay_peers 1\n"), std::string::npos) << metrics;

  // (A host name that does not resolve is refused the same way, exit 1;
  // not tested here: the machine's resolver may take long to say so.)
  Child bad;
  bad.start({MACULA_RELAY_BIN, "--realm-secret-file", dir.file("secret"), "--peer", "host:x"});
  EXPECT_EQ(bad.wait_exit(), 2);
  EXPECT_TRUE(bad.stderr_lines.wait(std::regex("bad value for peer"), 1s)) << bad.stderr_lines.all();
}

}  // namespace
}  // namespace macula::relay
