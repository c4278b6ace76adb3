#!/usr/bin/env bash
# Benchmark of the relay modes next to direct mode, on 127.0.0.1: starts
# two macula-relays linked to each other, then bench/macula_relay_bench.erl
# (two direct nodes, two nodes through one relay, two nodes at different
# relays of the mesh). Prints a markdown table and writes it to
# build/bench-relay.md. Called by `make bench` after the other benches.
#
# Settings (environment):
#   BENCH_RELAY_PORT  the first relay's UDP port (the second uses the next
#                     one), default 47434
#   BENCH_SECONDS     duration of the 1 MB stream per path, default 5
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
relay_bin="$root/build/macula-relay"
if [ ! -x "$relay_bin" ] || [ ! -f "$root/priv/macula_relay_nif.so" ]; then
  echo "bench-relay: not built; run 'make build' first" >&2
  exit 1
fi

tmp=$(mktemp -d /tmp/macula-bench-relay.XXXXXX)
relay_pids=()
cleanup() {
  for pid in "${relay_pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then kill "$pid"; fi
  done
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

export BENCH_RELAY_PORT=${BENCH_RELAY_PORT:-47434}
export BENCH_SECONDS=${BENCH_SECONDS:-5}
export BENCH_SECRET="$tmp/realm.secret"
export BENCH_TMP="$tmp" BENCH_EBIN="$root/ebin" BENCH_DIR="$tmp"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$BENCH_SECRET"
chmod 600 "$BENCH_SECRET"

port2=$((BENCH_RELAY_PORT + 1))
"$relay_bin" --realm-secret-file "$BENCH_SECRET" --bind 127.0.0.1 --port "$BENCH_RELAY_PORT" \
  --cert-dir "$tmp/relay-cert" --name bench-relay --peer "127.0.0.1:$port2" >"$tmp/relay.log" 2>&1 &
relay_pids+=($!)
"$relay_bin" --realm-secret-file "$BENCH_SECRET" --bind 127.0.0.1 --port "$port2" \
  --cert-dir "$tmp/relay-cert-2" --name bench-relay-2 --peer "127.0.0.1:$BENCH_RELAY_PORT" \
  >"$tmp/relay-2.log" 2>&1 &
relay_pids+=($!)
erlc -o "$tmp" bench/macula_relay_bench.erl
erl -noshell -pa "$tmp" -pa "$BENCH_EBIN" -eval 'macula_relay_bench:main()' | tee "$tmp/out"
sed -n '/^| path/,$p' "$tmp/out" >"$root/build/bench-relay.md"
