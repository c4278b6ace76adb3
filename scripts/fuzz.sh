#!/usr/bin/env bash
# Runs the libFuzzer targets (built by `make build` when clang is there)
# longer than ctest does, at the lowest CPU priority, two at a time:
#   scripts/fuzz.sh SECONDS [TARGET...]     (default: every target)
# Targets: relay_protocol cbor dist_route framing cookie_proof node_name
# relay_config. Each keeps its corpus in build/fuzz/corpus-TARGET (seeded
# from the ctest seeds) and writes build/fuzz/long-TARGET.log; crashes land
# in build/fuzz/ as crash-* files. Prints executions and coverage per target.
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(relay_protocol cbor dist_route framing cookie_proof node_name relay_config)
dir=build/fuzz

seeds_of() {
  case $1 in
    relay_protocol|cbor) echo build/relay/fuzz-seeds ;;
    relay_config) echo relay/server/fuzz/corpus ;;
    framing) echo transport/fuzz/corpus ;;
    *) echo "build/dist/fuzz-seeds/$1" ;;
  esac
}
max_len_of() {
  case $1 in
    relay_protocol|cbor) echo 4200 ;; framing) echo 8192 ;; node_name) echo 600 ;;
    cookie_proof) echo 1024 ;; *) echo 2048 ;;
  esac
}

run() {
  local t=$1 bin=$dir/macula_$1_fuzzer
  [ -x "$bin" ] || { echo "$t: no $bin (clang with libFuzzer needed)"; return 1; }
  mkdir -p "$dir/corpus-$t"
  (cd "$dir" && ASAN_OPTIONS=detect_leaks=1 nice -n 19 "./macula_${t}_fuzzer" "corpus-$t" \
       "$OLDPWD/$(seeds_of "$t")" -max_total_time="$secs" -max_len="$(max_len_of "$t")" \
       -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 -artifact_prefix="crash-$t-" \
       > "long-$t.log" 2>&1)
  local rc=$?
  local execs cov
  execs=$(grep -oP 'stat::number_of_executed_units: \K\d+' "$dir/long-$t.log")
  cov=$(grep -E '^#[0-9]+' "$dir/long-$t.log" | tail -1 | grep -oP 'cov: \d+ ft: \d+')
  echo "$t: exit $rc, ${execs:-?} executions in ${secs}s, $cov"
  return $rc
}

failed=0
for ((i = 0; i < ${#targets[@]}; i += 2)); do
  run "${targets[i]}" & a=$!
  if ((i + 1 < ${#targets[@]})); then run "${targets[i+1]}" & b=$!; wait $b || failed=1; fi
  wait $a || failed=1
done
exit $failed
