// A driver (macula_drv.so, which links the NIF's library) whose one job is
// to have the VM poll the endpoint's socket like its own sockets. A driver's fd that stays
// selected moves to the schedulers' own pollset: the scheduler that sleeps
// in poll() is the thread the packet wakes, and it reads the socket itself
// (Endpoint::read_now). The frames go to their input process on that same
// scheduler, and a reply written at once (Endpoint::send_now) leaves from
// it too: no thread hand-off on a round trip, as with inet_tcp. A NIF's
// enif_select gets no such thing (the VM's poller thread wakes a
// scheduler), hence a driver.
//
// erl_ddll:load_driver(PrivDir, "macula_drv"), then
// open_port({spawn_driver, "macula_drv ReaderId"}, []) with the endpoint's
// reader_id (macula_nif:endpoint_info/1; see endpoint_readers.h). While the
// port lives it reads; when it closes, reading returns to the endpoint's
// I/O thread. ready_input runs on a scheduler: it takes the loop lock only
// with a try-lock and reads a bounded number of batches (Endpoint::read_now).
#include <erl_driver.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#include "endpoint.h"
#include "endpoint_readers.h"

namespace macula {

namespace {

// Reads per wake-up before the scheduler moves on; the fd stays readable
// and selected, so the rest comes at the next poll.
constexpr int kReadsPerEvent = 4;

struct Reader {
  ErlDrvPort port;
  int fd;  // a duplicate: the VM may hold it past the endpoint's own
  std::shared_ptr<Endpoint> endpoint;
};

ErlDrvEvent event_of(int fd) { return reinterpret_cast<ErlDrvEvent>(intptr_t(fd)); }

ErlDrvData start(ErlDrvPort port, char* command) {
  const char* id = command;
  while (*id && *id != ' ') ++id;  // past the driver's name
  std::shared_ptr<Endpoint> ep = readers::find(std::strtoull(id, nullptr, 10));
  if (!ep) return ERL_DRV_ERROR_BADARG;
  int fd = dup(ep->socket_fd());
  if (fd < 0) return ERL_DRV_ERROR_ERRNO;
  auto* r = new (driver_alloc(sizeof(Reader))) Reader{port, fd, std::move(ep)};
  if (driver_select(port, event_of(fd), ERL_DRV_READ | ERL_DRV_USE, 1) != 0) {
    close(fd);
    r->~Reader();
    driver_free(r);
    return ERL_DRV_ERROR_GENERAL;
  }
  r->endpoint->set_caller_reads(true);
  return reinterpret_cast<ErlDrvData>(r);
}

void stop(ErlDrvData data) {
  auto* r = reinterpret_cast<Reader*>(data);
  r->endpoint->set_caller_reads(false);
  driver_select(r->port, event_of(r->fd), ERL_DRV_READ | ERL_DRV_USE, 0);
  r->~Reader();
  driver_free(r);
}

void ready_input(ErlDrvData data, ErlDrvEvent) {
  auto* r = reinterpret_cast<Reader*>(data);
  for (int i = 0; i < kReadsPerEvent; ++i)
    if (r->endpoint->read_now() != Endpoint::ReadResult::kMore) break;
}

// The VM no longer polls the fd: it may be closed.
void stop_select(ErlDrvEvent event, void*) { close(int(intptr_t(event))); }

ErlDrvEntry make_entry() {
  ErlDrvEntry e{};
  e.start = start;
  e.stop = stop;
  e.ready_input = ready_input;
  e.driver_name = const_cast<char*>("macula_drv");
  e.extended_marker = int(ERL_DRV_EXTENDED_MARKER);
  e.major_version = ERL_DRV_EXTENDED_MAJOR_VERSION;
  e.minor_version = ERL_DRV_EXTENDED_MINOR_VERSION;
  e.driver_flags = ERL_DRV_FLAG_USE_PORT_LOCKING;
  e.stop_select = stop_select;
  return e;
}

ErlDrvEntry entry = make_entry();

}  // namespace
}  // namespace macula

extern "C" DRIVER_INIT(macula_drv) { return &macula::entry; }
