// Tells the I/O loop when this host's addresses or routes change, from a
// non-blocking rtnetlink socket (RTM_NEWADDR, RTM_DELADDR, RTM_NEWROUTE,
// RTM_DELROUTE) that the loop polls with the rest of its descriptors.
// Used only by the endpoint's I/O thread (it alone polls this socket).
#pragma once

#include <cstdint>
#include <string>

namespace macula {

struct AddressChanges {
  uint32_t addresses_added = 0;
  uint32_t addresses_removed = 0;
  uint32_t routes_changed = 0;

  bool any() const { return addresses_added || addresses_removed || routes_changed; }
};

class AddressWatch {
 public:
  AddressWatch() = default;
  ~AddressWatch();
  AddressWatch(const AddressWatch&) = delete;
  AddressWatch& operator=(const AddressWatch&) = delete;

  // Subscribes to address and route changes of both families. False, with
  // `error` set, if the kernel refused (then fd() stays -1).
  bool open(std::string& error);
  int fd() const { return fd_; }

  // Reads every pending notification (never blocks) and counts what
  // changed. An overflowing socket (ENOBUFS: events were lost) counts as
  // a route change, so the caller re-checks everything.
  AddressChanges drain();

 private:
  int fd_ = -1;
};

}  // namespace macula
