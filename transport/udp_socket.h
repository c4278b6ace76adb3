// A non-blocking UDP socket with batched I/O: GSO (UDP_SEGMENT) on send,
// GRO (UDP_GRO) and recvmmsg on receive. Used only by whoever holds the
// endpoint's loop lock (loop_owner.h); its fd may be polled elsewhere.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace macula {

struct Address {
  sockaddr_storage storage{};
  socklen_t len = 0;

  const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&storage); }
  sockaddr* sa() { return reinterpret_cast<sockaddr*>(&storage); }
  uint16_t port() const;
  std::string to_string() const;  // "1.2.3.4:5" or "[::1]:5"
  std::string ip_string() const;  // "1.2.3.4" (v4-mapped shown as v4) or "::1"
  bool operator==(const Address& o) const;
  // Same IP, ports ignored (v4-mapped and plain v4 differ: compare
  // addresses of one socket family).
  bool same_ip(const Address& o) const;
  // The wildcard address (0.0.0.0 or ::), or no address at all.
  bool unspecified() const;
  Address with_port(uint16_t port) const;
};

// Parses an IP literal (v4 or v6, no brackets) and a port.
bool make_address(const std::string& ip, uint16_t port, Address& out);

// One datagram (or a GRO super-datagram split back) as received.
struct Datagram {
  const uint8_t* data;
  size_t size;
  Address from;
  // Where it was sent to: one of our addresses with our port (from
  // IP_PKTINFO); the socket's bound address if the kernel did not say.
  Address to;
};

class UdpSocket {
 public:
  UdpSocket() = default;
  ~UdpSocket();
  UdpSocket(const UdpSocket&) = delete;
  UdpSocket& operator=(const UdpSocket&) = delete;

  // Binds to ip:port ("::" is dual-stack any; port 0 picks one). On failure
  // returns false and sets `error` to a sentence naming the address.
  bool open(const std::string& ip, uint16_t port, std::string& error);

  int fd() const { return fd_; }
  const Address& local() const { return local_; }

  // Maps an IPv4 address to the socket's family (v4-mapped on a v6 socket).
  Address to_socket_family(const Address& a) const;

  // Sends `count` packets of `segment` bytes each (the last may be shorter)
  // laid out back to back in `data`, to `to`, with one GSO send when
  // possible. Returns false if the kernel refused (would block or error).
  bool send(const Address& to, const uint8_t* data, size_t total,
            size_t segment);
  // The same from the source address `from` (IP_PKTINFO), so replies
  // leave from the address the peer wrote to and a connection keeps the
  // local address of its path. An unspecified `from` lets the kernel pick.
  bool send(const Address& from, const Address& to, const uint8_t* data,
            size_t total, size_t segment);

  // Sends refused because of the path (source address gone, no route,
  // network down) since the last call; resets the count. A sign that a
  // connection's local address stopped working.
  uint64_t take_path_errors();

  // Receives what is queued (never blocks); appends datagrams that point
  // into the socket's own buffers, valid until the next call. False if
  // the queue was drained (fewer messages than one call takes).
  bool receive(std::vector<Datagram>& out);

  // An ICMP "port unreachable" for a datagram this socket sent.
  struct Refusal {
    Address to;  // where the refused datagram was going
    // Its first bytes, as the ICMP error quoted them (a QUIC header and
    // the connection ID, when the sender quoted that much).
    uint8_t head[64];
    size_t head_len = 0;
  };
  // Reads the socket's error queue up to the next ICMP "port
  // unreachable"; true and `out` set if there was one, false when the
  // queue is empty (other errors are skipped).
  bool next_refused(Refusal& out);
  // True (once) if receive() met a pending socket error since the last
  // call: the error queue holds something for next_refused(). Lets a
  // reader that does not poll for errors (a scheduler) drain it.
  bool take_error_hint() { return std::exchange(error_hint_, false); }

 private:
  int fd_ = -1;
  Address local_;
  bool gso_ = true;
  bool gro_ = false;
  uint64_t path_errors_ = 0;
  bool error_hint_ = false;
  std::vector<uint8_t> rx_buf_;
  std::vector<Address> rx_from_;
  std::vector<size_t> rx_seg_;
};

}  // namespace macula
