#!/usr/bin/env bash
# Two nodes on loopback talk Erlang distribution over QUIC: ping, an rpc
# call and a 10 MB message round trip, then both stop.
set -euo pipefail
cd "$(dirname "$0")/.."
ebin=$(pwd)/ebin
export MACULA_DIST_CERT_DIR=${MACULA_DIST_CERT_DIR:-$(mktemp -d)/certs}
A=${DEMO_PORT_A:-14433}@127.0.0.1
B=${DEMO_PORT_B:-14434}@127.0.0.1
cookie=demo_$RANDOM$RANDOM
node() { erl -noshell -pa "$ebin" -proto_dist macula -no_epmd -start_epmd false -setcookie "$cookie" "$@"; }

echo "Starting $A (QUIC listener on UDP ${A%@*})"
node -name "$A" -eval 'receive after 60000 -> halt(1) end.' &
pid_a=$!
trap 'kill $pid_a 2>/dev/null || true' EXIT
sleep 1

echo "Starting $B and talking to $A"
node -name "$B" -eval "
  A = '$A',
  io:format(\"ping ~p -> ~p~n\", [A, net_adm:ping(A)]),
  io:format(\"connected nodes: ~p~n\", [nodes()]),
  io:format(\"rpc erlang:system_info(otp_release) on ~p: ~p~n\",
            [A, rpc:call(A, erlang, system_info, [otp_release])]),
  Echo = spawn(A, fun() -> receive {From, Bin} -> From ! {self(), Bin} end end),
  Msg = crypto:strong_rand_bytes(10000000),
  T0 = erlang:monotonic_time(microsecond),
  Echo ! {self(), Msg},
  receive {Echo, Back} -> ok end,
  Ms = (erlang:monotonic_time(microsecond) - T0) / 1000,
  io:format(\"10 MB message round trip: ~s in ~.1f ms~n\",
            [case Back =:= Msg of true -> \"identical\"; false -> \"CORRUPTED\" end, Ms]),
  io:format(\"transport: ~p~n\", [macula:info()]),
  rpc:call(A, init, stop, []),
  init:stop()."
wait $pid_a || true
echo "Both nodes stopped."
