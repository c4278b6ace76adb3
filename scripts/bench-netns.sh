#!/usr/bin/env bash
# The network half of `make bench`: macula, inet_tcp_dist and inet_tls_dist
# between two network namespaces over a veth pair with MTU 1500, and the
# head-of-line case (64-byte round trips while another process streams
# 8 MB messages, over 20 ms delay + 1 % loss each way). Runs the cases of
# macula_netns_SUITE that measure, which create and remove their own
# namespaces; needs root. Writes build/bench-netns.md and prints it.
#
# Settings (environment): MACULA_HOL_SECONDS (default 30) per carrier.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out="$root/build/bench-netns.md"

if [ "$(id -u)" -ne 0 ]; then
  echo "bench-netns: needs root (ip netns); skipped" >&2
  exit 1
fi
rm -f "$out"
mkdir -p "$root/build/bench-logs"
echo "== macula bench over network namespaces (veth MTU 1500, delay/loss bridge)"
MACULA_NETNS_REPORT="$out" ct_run -noshell -sname macula_bench_ct \
  -dir test -logdir "$root/build/bench-logs" \
  -pa "$root/ebin" -include "$root/src" \
  -suite macula_netns_SUITE \
  -case mtu1500_basic inet_tcp_basic inet_tls_basic delay_loss hol_under_bulk \
  2>&1 | grep -E "TEST COMPLETE|FAILED" || true
if [ ! -s "$out" ]; then
  echo "bench-netns: FAILED: no results (logs in build/bench-logs)" >&2
  exit 1
fi
cat "$out"
