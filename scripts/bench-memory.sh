#!/usr/bin/env bash
# Memory of idle connections: one hub node, N leaf nodes connect to it and
# stay idle; prints the hub's resident memory and Erlang memory per
# connection, for macula and inet_tcp in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_LEAVES:-50}
ebin=$(pwd)/ebin
tmp=$(mktemp -d)
export MACULA_DIST_CERT_DIR=$tmp/certs
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

hub_eval='
  Rss = fun() -> {ok, S} = file:read_file("/proc/" ++ os:getpid() ++ "/status"),
                 [L] = [L || L <- binary:split(S, <<"\n">>, [global]), binary:match(L, <<"VmRSS">>) =/= nomatch],
                 [_, Kb | _] = string:lexemes(binary_to_list(L), " \t"), list_to_integer(Kb) * 1024 end,
  erlang:garbage_collect(), timer:sleep(500),
  R0 = Rss(), E0 = erlang:memory(total),
  io:format("ready~n"),
  N = list_to_integer(os:getenv("LEAVES")),
  Deadline = erlang:monotonic_time(millisecond) + 120000,
  Wait = fun W() -> case length(nodes(connected)) >= N orelse erlang:monotonic_time(millisecond) > Deadline of
                      true -> ok; false -> timer:sleep(200), W() end end,
  Wait(), timer:sleep(3000), [erlang:garbage_collect(P) || P <- processes()], timer:sleep(500),
  R1 = Rss(), E1 = erlang:memory(total),
  io:format("result ~p ~p ~p~n", [length(nodes(connected)), (R1 - R0) div N, (E1 - E0) div N]),
  halt().'

run() {  # run PROTO HUB_NAME LEAF_NAME_FN
  local proto=$1 hub=$2; shift 2
  local args=(-noshell -pa "$ebin" -setcookie memcookie)
  [ "$proto" = macula ] && args+=(-proto_dist macula -no_epmd -start_epmd false)
  LEAVES=$N erl "${args[@]}" -name "$hub" -eval "$hub_eval" > "$tmp/hub.out" 2>&1 &
  local hubpid=$!
  pids+=("$hubpid")
  for _ in $(seq 100); do grep -qs ready "$tmp/hub.out" && break; sleep 0.1; done
  for i in $(seq "$N"); do
    local leaf
    leaf=$("$@" "$i")
    erl "${args[@]}" -hidden -name "$leaf" -eval "P = fun R() -> case net_adm:ping('$hub') of pong -> ok; pang -> timer:sleep(500), R() end end, P(), receive after infinity -> ok end." >/dev/null 2>&1 &
    pids+=("$!")
    disown  # killed below: no "Killed" line per leaf
  done
  wait "$hubpid" || true
  read -r _ conns rss erlmem < <(grep result "$tmp/hub.out")
  printf "| %s | %s | %s | %s |\n" "$proto" "$conns" "$((rss / 1024))" "$((erlmem / 1024))"
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  pids=()
}

macula_leaf() { echo "$((47300 + $1))@127.0.0.1"; }
tcp_leaf() { echo "memleaf$1@127.0.0.1"; }
pgrep -x epmd >/dev/null || epmd -daemon

echo "| carrier | idle connections to the hub | hub RSS per connection (KiB) | hub Erlang memory per connection (KiB) |"
echo "|---|---:|---:|---:|"
run macula 47300@127.0.0.1 macula_leaf
run inet_tcp memhub@127.0.0.1 tcp_leaf
