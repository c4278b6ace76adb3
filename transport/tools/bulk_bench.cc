// Raw core throughput: two endpoints in one process on loopback, one
// connection, N frames of S bytes on the data channel, credit returned at
// once. Prints MB/s. Used to profile the core without the Erlang VM.
#include <algorithm>
#include <chrono>
#include <string>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "endpoint.h"
#include "framing.h"

using namespace macula;

struct Sink : ConnectionEvents {
  std::mutex mu;
  std::condition_variable cv;
  bool up = false;
  bool echo = false;
  uint64_t frames = 0, bytes = 0;
  std::shared_ptr<ConnectionHandle> handle;
  void connected() override { std::lock_guard l(mu); up = true; cv.notify_all(); }
  void control_frame(Bytes) override {}
  void data_frames(std::vector<Bytes>& fs, uint64_t credit) override {
    std::lock_guard l(mu);
    for (auto& f : fs) bytes += f.size;
    frames += fs.size();
    if (handle) handle->consumed(credit);
    if (echo && handle)
      for (auto& f : fs) {
        iovec v{f.data.get(), f.size};
        std::span<const iovec> one(&v, 1);
        handle->send(Channel::kData, encode_frames(std::span<const std::span<const iovec>>(&one, 1)), 1);
      }
    cv.notify_all();
  }
  void writable() override { std::lock_guard l(mu); cv.notify_all(); }
  void closed(const CloseInfo& i) override { std::fprintf(stderr, "closed: %s %s\n", close_kind_name(i.kind), i.text.c_str()); }
};

struct Acceptor : EndpointEvents {
  std::shared_ptr<Sink> sink = std::make_shared<Sink>();
  void accepted(std::shared_ptr<ConnectionHandle> h) override {
    sink->handle = h;
    h->attach(sink);
  }
};

int main(int argc, char** argv) {
  size_t n = argc > 1 ? atoi(argv[1]) : 500, size = argc > 2 ? atoi(argv[2]) : 1000000;
  bool rtt = argc > 3 && std::string(argv[3]) == "rtt";
  EndpointConfig sc, cc;
  sc.bind_ip = cc.bind_ip = "127.0.0.1";
  sc.tls.cert_dir = cc.tls.cert_dir = "/tmp/macula-bench-certs";
  cc.accept = false;
  auto acc = std::make_shared<Acceptor>();
  std::string err;
  auto server = Endpoint::open(sc, acc, err);
  auto client = Endpoint::open(cc, nullptr, err);
  if (!server || !client) { std::fprintf(stderr, "%s\n", err.c_str()); return 1; }
  auto csink = std::make_shared<Sink>();
  Address to;
  make_address("127.0.0.1", server->port(), to);
  auto h = client->dial(to, "127.0.0.1", [&](uint64_t) { return csink; });
  { std::unique_lock l(csink->mu); csink->cv.wait(l, [&] { return csink->up; }); }
  std::vector<uint8_t> payload(size, 7);
  if (rtt) {
    // Ping-pong: the server echoes each data frame back.
    auto& s = *acc->sink;
    s.echo = true;
    std::vector<double> us;
    for (size_t i = 0; i < n; ++i) {
      iovec v{payload.data(), payload.size()};
      std::span<const iovec> one(&v, 1);
      uint64_t before;
      { std::lock_guard l(csink->mu); before = csink->frames; }
      auto t = std::chrono::steady_clock::now();
      h->send(Channel::kData, encode_frames(std::span<const std::span<const iovec>>(&one, 1)), 1);
      std::unique_lock l(csink->mu);
      csink->cv.wait(l, [&] { return csink->frames > before; });
      us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t).count());
    }
    std::sort(us.begin(), us.end());
    std::printf("rtt p50 %.1f us p99 %.1f us\n", us[us.size() / 2], us[us.size() * 99 / 100]);
    return 0;
  }
  iovec v{payload.data(), payload.size()};
  std::span<const iovec> one(&v, 1);
  if (getenv("WARM_SMALL")) {
    // Many small frames first, as a busy node would.
    std::vector<uint8_t> small(64, 1);
    iovec sv{small.data(), small.size()};
    std::vector<std::span<const iovec>> batch(100, std::span<const iovec>(&sv, 1));
    for (int i = 0; i < 30000; ++i) {
      if (h->send(Channel::kData, encode_frames(batch), 100) == SendStatus::kBusy) {
        std::unique_lock l(csink->mu);
        csink->cv.wait_for(l, std::chrono::milliseconds(50));
      }
    }
    auto& s = *acc->sink;
    std::unique_lock l(s.mu);
    s.cv.wait(l, [&] { return s.frames >= 3000000; });
    s.frames = 0;
    std::printf("small frames done\n");
  }
  auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < n; ++i) {
    Bytes b = encode_frames(std::span<const std::span<const iovec>>(&one, 1));
    if (h->send(Channel::kData, std::move(b), 1) == SendStatus::kBusy) {
      std::unique_lock l(csink->mu);
      csink->cv.wait_for(l, std::chrono::milliseconds(50));
    }
  }
  auto& s = *acc->sink;
  { std::unique_lock l(s.mu); s.cv.wait(l, [&] { return s.frames >= n; }); }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%zu x %zu bytes in %.3f s = %.1f MB/s\n", n, size, secs, n * size / secs / 1e6);
  return 0;
}
