#!/usr/bin/env bash
# macula as a dependency, in releases: builds examples/erlang_release with
# rebar3 (macula from a clean git clone of this repository's HEAD, by tag)
# and examples/elixir_mix with mix (macula by path, the same clean clone),
# offline; boots two nodes of each release over macula; calls a gen_server
# across them, and runs the release tools' commands against the running
# nodes (ping/pid, rpc, eval, remote_console/remote through a pty, stop).
# Prints one "ok"/"FAIL" line per check and "releases: N passed, M failed".
# Binds UDP ports 24601-24602 and 24611-24612 on 127.0.0.1: run it under
# the test lock (flock /tmp/macula-test.lock), as run-tests.sh does.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
passed=0; failed=0
tmp=$(mktemp -d /tmp/macula-releases.XXXXXX)

start=$(date +%s)
# Each line starts with the seconds since the start.
ok()   { printf '%4ds ok   %s\n' $(( $(date +%s) - start )) "$*"; passed=$((passed + 1)); }
fail() { printf '%4ds FAIL %s\n' $(( $(date +%s) - start )) "$*"; failed=$((failed + 1)); }
# check NAME OUTPUT PATTERN: the command's output must match PATTERN.
check() {
  if grep -qE -- "$3" <<<"$2"; then ok "$1"; else fail "$1: got: $(head -c 400 <<<"$2")"; fi
}
# At exit, nodes a failed check left running: the processes whose
# command line names this run's own temporary directory, ended by pid.
cleanup() {
  local pid
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [ "$pid" = "$$" ] && continue
    { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$tmp/" && kill "$pid" 2>/dev/null
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
now() { date +%s; }

# Bounded wait until "$@" succeeds (30 tries, 1 s apart).
wait_for() {
  for _ in $(seq 30); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  return 1
}

# A remote shell needs a terminal (without one OTP starts a plain local
# shell): script(1) gives it one; the input lines come from a pipe.
# The expression prints a marker the input does not contain.
# ^G q leaves the shell and stops the helper node only (q(). would stop
# the node the shell is connected to).
quit_shell() { printf '\007'; sleep 1; echo q; sleep 2; }
remote_shell() {  # COMMAND...
  { sleep 4; echo 'io:format("~s~s~n", [lists:reverse("ETOMER"), node()]).'; sleep 2; quit_shell; } |
    timeout 30 script -qfec "$*" /dev/null 2>&1
}
remote_shell_ex() {  # COMMAND... (IEx syntax)
  { sleep 5; echo 'IO.puts(String.reverse("ETOMER") <> Atom.to_string(node()))'; sleep 2; quit_shell; } |
    timeout 30 script -qfec "$*" /dev/null 2>&1
}

# A clean copy: HEAD as committed, tagged, as a user would fetch it.
git clone -q --bare "$root" "$tmp/macula.git" || { echo "FAIL clone"; exit 1; }
git -C "$tmp/macula.git" tag release-test "$(git rev-parse HEAD)"
git clone -q "$tmp/macula.git" "$tmp/macula" || { echo "FAIL clone"; exit 1; }
export MACULA_DIST_CERT_DIR="$tmp/certs"
# Offline: the only dependency is macula, from the local clone (hex.pm is
# never asked; REBAR_OFFLINE would refuse even a file:// git fetch).
export HEX_OFFLINE=1 MIX_ENV=prod

# ---- rebar3: examples/erlang_release ------------------------------------
t0=$(now)
cp -r "$tmp/macula/examples/erlang_release" "$tmp/erl"
if (cd "$tmp/erl" && MACULA_GIT="file://$tmp/macula.git" MACULA_TAG=release-test \
      rebar3 release) >"$tmp/rebar3.log" 2>&1; then
  ok "rebar3 release (macula by git tag, NIF built by its compile step): $(( $(now) - t0 )) s"
else
  fail "rebar3 release: $(tail -n 20 "$tmp/rebar3.log")"
fi

if [ -x "$tmp/erl/_build/default/rel/greeter/bin/greeter" ]; then
  export USE_NODETOOL=1 COOKIE=release_test_$RANDOM
  A=24601@127.0.0.1; B=24602@127.0.0.1
  for n in a b; do
    cp -r "$tmp/erl/_build/default/rel/greeter" "$tmp/rel-$n"
  done
  ga() { NODE_NAME=$A "$tmp/rel-a/bin/greeter" "$@"; }
  gb() { NODE_NAME=$B "$tmp/rel-b/bin/greeter" "$@"; }
  t0=$(now)
  ga daemon; gb daemon
  if wait_for ga ping && wait_for gb ping; then
    ok "rebar3: two release nodes up (embedded mode, daemon), ping: $(( $(now) - t0 )) s"
  else
    fail "rebar3: nodes did not answer ping: $(tail -n 5 "$tmp"/rel-a/log/erlang.log.1 2>&1)"
  fi
  check "rebar3: embedded mode" "$(ga eval 'code:get_mode().')" '^embedded$'
  check "rebar3: eval calls greeter on the other node" \
    "$(gb eval "greeter:hello('$A', <<\"b\">>).")" "\{hello,<<\"b\">>,from,'$A'\}"
  check "rebar3: rpc (net_kernel connected B to A)" \
    "$(ga rpc erlang nodes)" "'$B'"
  check "rebar3: rpc with arguments" \
    "$(ga rpc greeter count "['$A']")" '^1$'
  check "rebar3: remote_console" "$(remote_shell env NODE_NAME=$B USE_NODETOOL=1 \
    COOKIE=$COOKIE MACULA_DIST_CERT_DIR=$MACULA_DIST_CERT_DIR "$tmp/rel-b/bin/greeter" remote_console)" \
    "REMOTE$B"
  check "rebar3: stop" "$(ga stop && gb stop && echo stopped)" 'stopped'
  sleep 2
  check "rebar3: stopped nodes do not answer" "$(ga ping; gb ping)" 'not (running|responding)'
  unset USE_NODETOOL COOKIE
fi

# ---- mix: examples/elixir_mix -------------------------------------------
t0=$(now)
cp -r "$tmp/macula/examples/elixir_mix" "$tmp/ex"
# macula by path: the clone rebar3 fetched has its NIF built already,
# so this does not build it a second time.
macula_dep="$tmp/erl/_build/default/lib/macula"
[ -d "$macula_dep" ] || macula_dep="$tmp/macula"
sed -i "s#Path.expand(\"../..\", __DIR__)#\"$macula_dep\"#" "$tmp/ex/mix.exs"
if (cd "$tmp/ex" && mix deps.get && mix release --overwrite) >"$tmp/mix.log" 2>&1; then
  ok "mix release (macula by path): $(( $(now) - t0 )) s"
else
  fail "mix release: $(tail -n 20 "$tmp/mix.log")"
fi

if [ -x "$tmp/ex/_build/prod/rel/greeter_ex/bin/greeter_ex" ]; then
  A=24611@127.0.0.1; B=24612@127.0.0.1
  for n in a b; do
    cp -r "$tmp/ex/_build/prod/rel/greeter_ex" "$tmp/mix-$n"
  done
  ea() { RELEASE_NODE=$A "$tmp/mix-a/bin/greeter_ex" "$@"; }
  eb() { RELEASE_NODE=$B "$tmp/mix-b/bin/greeter_ex" "$@"; }
  t0=$(now)
  ea daemon; eb daemon
  if wait_for ea pid && wait_for eb pid; then
    ok "mix: two release nodes up (embedded mode, daemon), pid: $(( $(now) - t0 )) s"
  else
    fail "mix: nodes did not answer: $(tail -n 5 "$tmp"/mix-a/tmp/log/erlang.log.1 2>&1)"
  fi
  check "mix: embedded mode" "$(ea rpc 'IO.puts(:code.get_mode())')" '^embedded$'
  check "mix: Node.connect/1" "$(eb rpc "IO.inspect(Node.connect(:\"$A\"))")" '^true$'
  check "mix: GenServer call across" \
    "$(eb rpc "IO.inspect(Greeter.hello(:\"$A\", \"b\"))")" "\{:hello, \"b\", :from, :\"$A\"\}"
  check "mix: :rpc.call across" \
    "$(eb rpc "IO.inspect(:rpc.call(:\"$A\", Greeter, :count, [:\"$A\"]))")" '^1$'
  check "mix: rpc sees the connection" "$(ea rpc 'IO.inspect(Node.list())')" "\"$B\""
  check "mix: remote" "$(remote_shell_ex env RELEASE_NODE=$B \
    MACULA_DIST_CERT_DIR=$MACULA_DIST_CERT_DIR "$tmp/mix-b/bin/greeter_ex" remote)" "REMOTE$B"
  ea stop; eb stop; sleep 2
  check "mix: stopped nodes do not answer" "$(ea pid 2>&1; eb pid 2>&1)" 'nodedown'
fi

echo "releases: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
