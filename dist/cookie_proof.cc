#include "cookie_proof.h"

#include <algorithm>

#include "node_name.h"

namespace macula {

Proof make_cookie_proof(std::span<const uint8_t> exporter, char role,
                        std::string_view node, std::string_view cookie) {
  return make_session_proof(exporter, std::string_view(&role, 1), node, cookie);
}

bool parse_proof_frame(std::span<const uint8_t> frame, ProofFrame& out) {
  const size_t head = kProofTag.size() + std::tuple_size_v<Proof>;
  if (frame.size() <= head || !std::equal(kProofTag.begin(), kProofTag.end(), frame.begin()))
    return false;
  std::string_view node(reinterpret_cast<const char*>(frame.data()) + head, frame.size() - head);
  NodeName parsed;
  // The port only matters for names without one; any valid value does.
  if (parse_node_name(node, 1, parsed) != NameError::kNone) return false;
  std::copy_n(frame.begin() + long(kProofTag.size()), out.proof.size(), out.proof.begin());
  out.node = std::string(node);
  return true;
}

std::vector<uint8_t> encode_proof_frame(const Proof& proof, std::string_view node) {
  std::vector<uint8_t> out(kProofTag.begin(), kProofTag.end());
  out.insert(out.end(), proof.begin(), proof.end());
  out.insert(out.end(), node.begin(), node.end());
  return out;
}

}  // namespace macula
