#!/usr/bin/env bash
# Benchmark: macula (Erlang distribution over QUIC) against inet_tcp_dist
# and inet_tls_dist (TLS 1.3), measured in the same run on 127.0.0.1.
# Called by `make bench` (after `make build`). Prints a markdown table and
# writes it to build/bench.md. Exits non-zero if any carrier failed.
#
# Settings (environment):
#   BENCH_CARRIERS      carriers to run, default "macula inet_tcp inet_tls"
#   BENCH_CASE_SECONDS  sending time bound of each stream case, default 8
#   BENCH_STEPS         measurements to run, comma-separated (connect, setup,
#                       rtt, stream_64, stream_4k, stream_1m), default all
#   BENCH_PORT_BASE     macula nodes use UDP ports BASE+1 and BASE+2 (47100)
#   BENCH_ERL_FLAGS     extra emulator flags for every node, default
#                       "+sbwt none +sbwtdcpu none +sbwtdio none" so that
#                       scheduler busy-waiting is not counted as CPU work
#   BENCH_TIMEOUT       hard limit for the loopback run in seconds, default 330
#   BENCH_NETNS         1 (default): then run scripts/bench-netns.sh (root)
#                       and append its table to build/bench.md
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

carriers=${BENCH_CARRIERS:-"macula inet_tcp inet_tls"}
export BENCH_CASE_SECONDS=${BENCH_CASE_SECONDS:-8}
export BENCH_PORT_BASE=${BENCH_PORT_BASE:-47100}
export BENCH_ERL_FLAGS=${BENCH_ERL_FLAGS-"+sbwt none +sbwtdcpu none +sbwtdio none"}
timeout_s=${BENCH_TIMEOUT:-330}
out="$root/build/bench.md"

if [ ! -f "$root/ebin/macula.app" ] || [ ! -f "$root/priv/macula_nif.so" ]; then
  echo "bench: macula is not built; run 'make build' first" >&2
  exit 1
fi

tmp=$(mktemp -d /tmp/macula-bench.XXXXXX)
pidfile="$tmp/pids"
: >"$pidfile"
driver=""
started_epmd=0

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$driver" ] && kill -0 "$driver" 2>/dev/null; then
    kill "$driver" 2>/dev/null || true
  fi
  # every node the driver started wrote its OS pid here; a pid is only
  # killed while it is still one of our nodes (its command line names our
  # temporary directory), never a process that reused the number
  while read -r p; do
    [ -n "$p" ] || continue
    if tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF "$tmp/ebin"; then
      kill "$p" 2>/dev/null || true
      sleep 0.2
      if kill -0 "$p" 2>/dev/null; then kill -9 "$p" 2>/dev/null || true; fi
    fi
  done <"$pidfile"
  if [ "$started_epmd" = 1 ]; then
    epmd -kill >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Refuse to run on a port another process holds (e.g. a test run's node).
for p in $((BENCH_PORT_BASE + 1)) $((BENCH_PORT_BASE + 2)); do
  if ss -Hlun "sport = :$p" 2>/dev/null | grep -q .; then
    echo "bench: UDP port $p is in use; set BENCH_PORT_BASE to another value" >&2
    exit 1
  fi
done

# epmd, for the inet_tcp and inet_tls baselines
if ! epmd -names >/dev/null 2>&1; then
  epmd -daemon -address 127.0.0.1
  started_epmd=1
  for _ in $(seq 50); do epmd -names >/dev/null 2>&1 && break; sleep 0.1; done
fi

# Throwaway CA and node certificate (ECDSA P-256) for inet_tls_dist, valid
# for 127.0.0.1; both nodes use the same certificate. inet_tls_dist checks
# the host part of the node name as a DNS name, hence DNS:127.0.0.1 too.
tls="$tmp/tls"
mkdir -p "$tls"
(
  cd "$tls"
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
  openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=macula bench CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.pem 2>/dev/null
  openssl ecparam -name prime256v1 -genkey -noout -out node.key 2>/dev/null
  openssl req -new -key node.key -subj "/CN=127.0.0.1" -out node.csr 2>/dev/null
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=IP:127.0.0.1,DNS:127.0.0.1,DNS:localhost" >node.ext
  openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days 2 \
    -extfile node.ext -out node.pem 2>/dev/null
) || { echo "bench: could not create the TLS certificates with openssl" >&2; exit 1; }
cat >"$tmp/ssl_dist.conf" <<EOF
[{server, [{certfile, "$tls/node.pem"}, {keyfile, "$tls/node.key"},
           {cacertfile, "$tls/ca.pem"}, {verify, verify_peer},
           {fail_if_no_peer_cert, true}, {versions, ['tlsv1.3']}]},
 {client, [{certfile, "$tls/node.pem"}, {keyfile, "$tls/node.key"},
           {cacertfile, "$tls/ca.pem"}, {verify, verify_peer},
           {versions, ['tlsv1.3']}]}].
EOF

# The bench module, compiled outside the source tree.
mkdir -p "$tmp/ebin"
erlc -Wall -o "$tmp/ebin" "$root/bench/macula_bench.erl"

export BENCH_MACULA_EBIN="$root/ebin"
export BENCH_TLS_OPTFILE="$tmp/ssl_dist.conf"
export BENCH_TMP="$tmp"
BENCH_CLK_TCK=$(getconf CLK_TCK)
export BENCH_CLK_TCK
# a node that crashes leaves its dump under build/, not in the source tree
export ERL_CRASH_DUMP="$root/build/bench_erl_crash.dump"

echo "== macula bench: carriers: $carriers (up to ${BENCH_CASE_SECONDS}s per stream case)"
set +e
# shellcheck disable=SC2086
timeout --signal=TERM --kill-after=10 "$timeout_s" \
  erl -noshell -noinput -pa "$tmp/ebin" -run macula_bench main \
      "$tmp/ebin" "$out" "$pidfile" $carriers &
driver=$!
wait "$driver"
rc=$?
driver=""
set -e
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  echo "bench: FAILED: did not finish within ${timeout_s}s" >&2
elif [ "$rc" -ne 0 ]; then
  echo "bench: FAILED (exit $rc); see the errors above" >&2
fi
if [ "${BENCH_NETNS:-1}" = 1 ]; then
  if "$root/scripts/bench-netns.sh"; then
    { echo; cat "$root/build/bench-netns.md"; } >>"$out"
  else
    rc=1
  fi
fi
exit "$rc"
