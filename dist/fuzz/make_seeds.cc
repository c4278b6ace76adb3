// Writes the seed corpora of the distribution binding's fuzz targets into
// the directory given, one subdirectory per target (dist_route,
// cookie_proof, node_name), from the encoders where there are some, so the
// seeds follow the protocols.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cookie_proof.h"

using namespace macula;
using Buf = std::vector<uint8_t>;

namespace {

std::string g_root;

void write(const std::string& target, const std::string& name, const uint8_t* p, size_t n) {
  std::filesystem::create_directories(g_root + "/" + target);
  std::ofstream(g_root + "/" + target + "/" + name, std::ios::binary)
      .write(reinterpret_cast<const char*>(p), std::streamsize(n));
}
void write(const std::string& target, const std::string& name, const Buf& b) {
  write(target, name, b.data(), b.size());
}
void write(const std::string& target, const std::string& name, const std::string& s) {
  write(target, name, reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// Distribution frames as the VM writes them (external term format).
void put(Buf& b, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i) b.push_back(uint8_t(v >> (8 * i)));
}
void atom(Buf& b, const std::string& name) {
  b.push_back(119);  // SMALL_ATOM_UTF8_EXT
  b.push_back(uint8_t(name.size()));
  b.insert(b.end(), name.begin(), name.end());
}
void pid(Buf& b, uint32_t num) {
  b.push_back(88);  // NEW_PID_EXT
  atom(b, "4433@127.0.0.1");
  put(b, num, 4);
  put(b, 0, 4);
  put(b, 0x5de35bae, 4);
}
void ref(Buf& b) {
  b.push_back(90);  // NEWER_REFERENCE_EXT, 3 words
  put(b, 3, 2);
  atom(b, "4433@127.0.0.1");
  put(b, 1, 4);
  put(b, 7, 4);
  put(b, 8, 4);
  put(b, 9, 4);
}
Buf control(Buf head, uint8_t arity, uint8_t op) {
  head.insert(head.end(), {104, arity, 97, op});
  return head;
}

void dist_route_seeds() {
  Buf send_sender = control({131, 'D', 0}, 3, 22);
  pid(send_sender, 54);
  pid(send_sender, 9);
  send_sender.insert(send_sender.end(), {131, 107, 0, 2, 'h', 'i'});
  write("dist_route", "send_sender", send_sender);
  Buf reg_send = control({131, 'D', 0}, 4, 6);
  pid(reg_send, 77);
  atom(reg_send, "");
  atom(reg_send, "rex");
  write("dist_route", "reg_send", reg_send);
  Buf spawn = control({131, 'D', 0}, 6, 29);
  ref(spawn);
  pid(spawn, 12);
  pid(spawn, 13);
  write("dist_route", "spawn_request", spawn);
  Buf first = {131, 'E'};
  put(first, 42, 8);
  put(first, 3, 8);
  first.push_back(0);
  first = control(first, 3, 22);
  pid(first, 5);
  pid(first, 6);
  write("dist_route", "first_fragment", first);
  Buf cont = {131, 'F'};
  put(cont, 42, 8);
  put(cont, 1, 8);
  cont.insert(cont.end(), 64, 0x55);
  write("dist_route", "last_fragment", cont);
  Buf pass = control({'p', 131}, 3, 2);
  atom(pass, "");
  pid(pass, 3);
  write("dist_route", "pass_through", pass);
}

Buf proof_input(char role, const Buf& exporter, const std::string& node,
                const std::string& cookie, const Buf& frame) {
  Buf in = {uint8_t(role == 'C')};
  for (const std::string& field :
       {std::string(exporter.begin(), exporter.end()), node, cookie}) {
    in.push_back(uint8_t(field.size()));
    in.insert(in.end(), field.begin(), field.end());
  }
  in.insert(in.end(), frame.begin(), frame.end());
  return in;
}

void cookie_proof_seeds() {
  Buf exporter(32, 0x11);
  std::string node = "4433@127.0.0.1", cookie = "macula_cookie";
  Proof p = make_cookie_proof(exporter, 'C', node, cookie);
  write("cookie_proof", "valid", proof_input('C', exporter, node, cookie, encode_proof_frame(p, node)));
  Proof q = make_cookie_proof(exporter, 'S', "b@[::1]", "other");
  write("cookie_proof", "other_cookie",
        proof_input('S', exporter, "b@[::1]", cookie, encode_proof_frame(q, "b@[::1]")));
  write("cookie_proof", "bare_proof", proof_input('C', exporter, node, cookie, Buf(p.begin(), p.end())));
}

void node_name_seeds() {
  const char* names[] = {"4433@127.0.0.1", "a@localhost", "b@[::1]", "1@::1", "65535@10.0.0.9",
                         "x_y-z@relay.example.com", "a@::ffff:192.0.2.1", "fe80::1%lo",
                         "192.0.2.7", "n@a.b.c.d.e.f"};
  int i = 0;
  for (const char* n : names) write("node_name", "name" + std::to_string(i++), std::string(n));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  g_root = argv[1];
  dist_route_seeds();
  cookie_proof_seeds();
  node_name_seeds();
  return 0;
}
