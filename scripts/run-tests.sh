#!/usr/bin/env bash
# Runs every test: the C++ core's GoogleTest suite, then the Erlang Common
# Test suites (real nodes over -proto_dist macula), then the examples built
# as rebar3 and mix releases (scripts/test-releases.sh). Prints one summary line.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

echo "== C++ core tests (ctest)"
ctest --test-dir build --output-on-failure -j2 2>&1 | tee build/ctest.log | tail -n 15
cxx_total=$(grep -oP '(?<=tests failed out of )\d+' build/ctest.log | head -1)
cxx_total=${cxx_total:-0}
cxx_failed=$(grep -oP '\d+(?= tests failed out of)' build/ctest.log | head -1)
cxx_failed=${cxx_failed:-1}
cxx_passed=$(( cxx_total - cxx_failed ))

echo "== Erlang tests (common_test)"
mkdir -p logs
suites=$(ls test/*_SUITE.erl 2>/dev/null | xargs -n1 basename 2>/dev/null | sed 's/\.erl$//' | paste -sd' ' -)
erl_passed=0; erl_failed=0; erl_skipped=0
if [ -n "$suites" ]; then
  ct_run -noshell -sname "macula_ct_$$" -dir test -logdir logs -pa "$root/ebin" \
         -include "$root/src" -suite $suites 2>&1 | tee logs/ct.out | \
         grep -E "^(TEST COMPLETE|Testing|%%%|.*FAILED|.*failed)" | tail -n 40
  # ct_run prints one "TEST COMPLETE, N ok, M failed[, K skipped] of T test
  # cases" line per suite: add them up. A suite without that line (it did
  # not compile or did not run) counts as one failure; skipped cases count
  # as failures too (the suites skip nothing on purpose, so a skip means an
  # init_per_* crashed).
  sum() { grep "TEST COMPLETE" logs/ct.out | grep -oP "\d+(?= $1)" | awk '{s+=$1} END {print s+0}'; }
  erl_passed=$(sum ok)
  erl_failed=$(sum failed)
  erl_skipped=$(sum skipped)
  n_suites=$(echo "$suites" | wc -w)
  n_complete=$(grep -c "TEST COMPLETE" logs/ct.out)
  [ "$n_complete" -ge "$n_suites" ] || erl_failed=$((erl_failed + n_suites - n_complete))
  erl_failed=$((erl_failed + erl_skipped))
fi

echo "== Releases (rebar3 and mix, examples/)"
scripts/test-releases.sh 2>&1 | tee logs/releases.out
rel_passed=$(sed -n 's/^releases: \([0-9]*\) passed, [0-9]* failed$/\1/p' logs/releases.out)
rel_failed=$(sed -n 's/^releases: [0-9]* passed, \([0-9]*\) failed$/\1/p' logs/releases.out)
rel_passed=${rel_passed:-0}
# No summary line: the script did not finish, which counts as a failure.
rel_failed=${rel_failed:-1}

passed=$(( cxx_passed + ${erl_passed:-0} + rel_passed ))
failed=$(( cxx_failed + ${erl_failed:-0} + rel_failed ))
echo
echo "C++: $cxx_passed passed, $cxx_failed failed; Erlang: ${erl_passed:-0} passed, ${erl_failed:-0} failed, ${erl_skipped:-0} skipped; releases: $rel_passed passed, $rel_failed failed"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
