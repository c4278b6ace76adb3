#!/usr/bin/env bash
# Runs every test: the C++ core's GoogleTest suite, then the Erlang Common
# Test suites (real nodes over -proto_dist macula). Prints one summary line.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

echo "== C++ core tests (ctest)"
ctest --test-dir build --output-on-failure -j2 2>&1 | tee build/ctest.log | tail -n 15
cxx_pass=$(grep -oP '\d+(?=% tests passed)' build/ctest.log >/dev/null; grep -oP '(?<=tests passed, )\d+(?= tests failed out of )' build/ctest.log || echo 0)
cxx_total=$(grep -oP '(?<=tests failed out of )\d+' build/ctest.log || echo 0)
cxx_fail=$(( cxx_total - $(grep -oP '\d+(?= tests failed out of)' build/ctest.log | head -1 || echo 0) ))
cxx_failed=$(grep -oP '\d+(?= tests failed out of)' build/ctest.log | head -1 || echo 0)
cxx_passed=$(( cxx_total - cxx_failed ))

echo "== Erlang tests (common_test)"
mkdir -p logs
suites=$(ls apps/macula/test/*_SUITE.erl 2>/dev/null | xargs -n1 basename 2>/dev/null | sed 's/\.erl$//' | paste -sd' ' -)
erl_passed=0; erl_failed=0; erl_skipped=0
if [ -n "$suites" ]; then
  ct_run -noshell -dir apps/macula/test -logdir logs -pa "$root/apps/macula/ebin" \
         -include "$root/apps/macula/src" -suite $suites 2>&1 | tee logs/ct.out | \
         grep -E "^(TEST COMPLETE|Testing|%%%|.*FAILED|.*failed)" | tail -n 40
  line=$(grep "TEST COMPLETE" logs/ct.out | tail -1)
  erl_passed=$(echo "$line" | grep -oP '\d+(?= ok)' || echo 0)
  erl_failed=$(echo "$line" | grep -oP '\d+(?= failed)' || echo 0)
  erl_skipped=$(echo "$line" | grep -oP '\d+(?= skipped)' | paste -sd+ - | bc 2>/dev/null || echo 0)
  [ -n "$line" ] || erl_failed=$((erl_failed + 1))
fi

passed=$(( cxx_passed + ${erl_passed:-0} ))
failed=$(( cxx_failed + ${erl_failed:-0} ))
echo
echo "C++: $cxx_passed passed, $cxx_failed failed; Erlang: ${erl_passed:-0} passed, ${erl_failed:-0} failed, ${erl_skipped:-0} skipped"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
