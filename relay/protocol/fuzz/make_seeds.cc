// Writes one seed file per control message and a tunnel frame into the
// directory given: the fuzz corpus (core/fuzz/corpus) is made with it.
#include <fstream>
#include <string>

#include "relay_protocol.h"

using namespace macula::relay;

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  std::string dir = argv[1];
  macula::Proof p;
  p.fill(0xab);
  const Message all[] = {Identify{1, 1, "alice@host", p},
                         Identified{1, "relay-1", p, 65535, 64},
                         RequestError{2, "already_identified", "alice@host"},
                         TunnelRequest{3, "bob@host"},
                         TunnelOk{3, 77},
                         TunnelError{4, "unknown_target", "ghost@host"},
                         TunnelNotify{77, "alice@host"},
                         TunnelClose{77, "closed"},
                         PeerIdentify{1, 1, "relay-2", p},
                         PeerIdentified{1, "relay-1", p},
                         NodeUp{"alice@host"},
                         NodeDown{"alice@host"},
                         PeerTunnel{78, "alice@host", "bob@host"},
                         PeerTunnelOk{78, 79},
                         PeerTunnelError{78, "unknown_target", "bob@host"},
                         ListNodes{5, "alice@host"},
                         NodeList{5, {{"bob@host", "relay-1"}, {"carol@host", "relay-2"}}, true}};
  for (const Message& m : all) {
    std::vector<uint8_t> b = encode(m);
    std::ofstream(dir + "/" + message_name(m), std::ios::binary)
        .write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  }
  macula::Bytes f = encode_tunnel_frame(77, std::vector<uint8_t>{1, 2, 3, 4, 5});
  std::ofstream(dir + "/tunnel_frame", std::ios::binary)
      .write(reinterpret_cast<const char*>(f.data.get()) + 4, std::streamsize(f.size - 4));
  return 0;
}
