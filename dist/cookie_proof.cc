#include "cookie_proof.h"

namespace macula {

Proof make_cookie_proof(std::span<const uint8_t> exporter, char role,
                        std::string_view node, std::string_view cookie) {
  return make_session_proof(exporter, std::string_view(&role, 1), node, cookie);
}

}  // namespace macula
