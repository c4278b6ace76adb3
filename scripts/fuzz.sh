#!/usr/bin/env bash
# Runs the libFuzzer targets (built by `make build` when clang is there)
# longer than ctest does, at the lowest CPU priority, two at a time:
#   scripts/fuzz.sh SECONDS [TARGET...]     (default: every target)
# Targets: relay_protocol cbor dist_route framing cookie_proof node_name
# relay_config. Each keeps its corpus in build/fuzz/corpus-TARGET (seeded
# from the ctest seeds) and writes build/fuzz/long-TARGET.log; crashes land
# in build/fuzz/ as crash-* files. Prints executions, coverage and CPU
# seconds per target.
#   FUZZ_JOBS=N       targets at a time (default 2)
#   FUZZ_CPU=S        stop a target once it has had S seconds of CPU
#                     (SIGINT, libFuzzer then prints its final stats);
#                     SECONDS stays the bound in wall time. On a shared
#                     machine this makes "an hour of fuzzing" an hour of
#                     the fuzzer's own CPU, not of waiting for it.
#   FUZZ_TIMEOUT=S    seconds one input may take before it counts as a hang
#                     (default 10). At nice 19 on a busy machine a fuzzer
#                     can get no CPU for longer than that, and libFuzzer
#                     then reports a "timeout" for an input that runs in
#                     milliseconds: raise it there, and replay any
#                     crash-*-timeout-* file alone before believing it.
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

# CPU seconds (user + system) process $1 has had so far.
cpu_of() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%d", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null
}

# Interrupts process $1 once it has had $2 seconds of CPU; ends with it.
stop_at_cpu() {
  local pid=$1 budget=$2 used
  while kill -0 "$pid" 2>/dev/null; do
    used=$(cpu_of "$pid")
    if [ -n "$used" ] && (( used >= budget )); then kill -INT "$pid"; return; fi
    sleep 5
  done
}

run() {
  local t=$1 bin=$dir/macula_$1_fuzzer
  [ -x "$bin" ] || { echo "$t: no $bin (clang with libFuzzer needed)"; return 1; }
  mkdir -p "$dir/corpus-$t"
  local pid rc start=$SECONDS cpu=0 used
  (cd "$dir" && ASAN_OPTIONS=detect_leaks=1 exec nice -n 19 "./macula_${t}_fuzzer" \
       "corpus-$t" "$OLDPWD/$(seeds_of "$t")" -max_total_time="$secs" \
       -max_len="$(max_len_of "$t")" -rss_limit_mb=1024 -timeout="${FUZZ_TIMEOUT:-10}" \
       -print_final_stats=1 -artifact_prefix="crash-$t-" > "long-$t.log" 2>&1) &
  pid=$!
  [ -n "${FUZZ_CPU:-}" ] && stop_at_cpu "$pid" "$FUZZ_CPU" &
  # the CPU figure is read while the process lives (its last sample)
  while kill -0 "$pid" 2>/dev/null; do
    used=$(cpu_of "$pid"); [ -n "$used" ] && cpu=$used
    sleep 5
  done
  wait "$pid"; rc=$?
  # 72: libFuzzer's exit after SIGINT, i.e. the CPU budget was reached
  [ "$rc" -eq 72 ] && grep -aq 'run interrupted' "$dir/long-$t.log" && rc=0
  local execs cov
  execs=$(grep -a -oP 'stat::number_of_executed_units: \K\d+' "$dir/long-$t.log")
  cov=$(grep -a -E '^#[0-9]+' "$dir/long-$t.log" | tail -1 | grep -a -oP 'cov: \d+ ft: \d+')
  echo "$t: exit $rc, ${execs:-?} executions in $((SECONDS - start)) s (${cpu} s of CPU), $cov"
  return $rc
}

failed=0
jobs_max=${FUZZ_JOBS:-2}
for t in "${targets[@]}"; do
  while (( $(jobs -rp | wc -l) >= jobs_max )); do wait -n || failed=1; done
  run "$t" &
done
while (( $(jobs -rp | wc -l) > 0 )); do wait -n || failed=1; done
exit $failed
