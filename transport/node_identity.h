// The node's own key and self-signed certificate for zero-config mode.
#pragma once

#include <string>

namespace macula {

struct IdentityFiles {
  std::string key_path;
  std::string cert_path;
};

// Returns the key and certificate under `dir`, creating the directory
// (0700), an ECDSA P-256 key (0600) and a self-signed certificate when
// they do not exist. Safe against another node creating them at the same
// time. On failure returns false with `error` naming the path.
bool ensure_identity(const std::string& dir, IdentityFiles& out,
                     std::string& error);

}  // namespace macula
