#!/usr/bin/env bash
# One macula-relay under many simulated nodes (build/macula-relay-scale):
# memory per connected node, idle CPU, forwarded packets per second and CPU
# with busy tunnels, all on 127.0.0.1. Writes build/bench-relay-scale.md.
# Called by `make bench`.
#   SCALE_NODES (1000)  SCALE_TUNNELS (100)  SCALE_SECONDS (10)
#   SCALE_PORT (47600)
set -euo pipefail
cd "$(dirname "$0")/.."
for b in build/macula-relay build/macula-relay-scale; do
  [ -x "$b" ] || { echo "bench-relay-scale: $b not built; run 'make build' first" >&2; exit 1; }
done
echo "== One relay, ${SCALE_NODES:-1000} nodes, ${SCALE_TUNNELS:-100} busy tunnels"
build/macula-relay-scale build/macula-relay "${SCALE_NODES:-1000}" "${SCALE_TUNNELS:-100}" \
  "${SCALE_SECONDS:-10}" "${SCALE_PORT:-47600}" | tee build/bench-relay-scale.md
