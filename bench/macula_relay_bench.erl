%% @doc The relay modes against direct mode, on 127.0.0.1 in the same run:
%% the round trip of a 64-byte message and the rate of a stream of 1 MB
%% messages, between two nodes connected directly, through one macula-relay
%% (dist_relay mode), and across a mesh of two relays (relay mode: a at
%% one, b at the other). The relays, run by scripts/bench-relay.sh, are at
%% 127.0.0.1:$BENCH_RELAY_PORT and the port after it, linked to each
%% other. Prints a markdown table.
-module(macula_relay_bench).

-export([main/0]).
%% run on the nodes
-export([echo/0, sink/1, rtt/2, stream/3]).

-define(RTT_N, 5000).
-define(MB, (1024 * 1024)).
-define(WINDOW, 8).  % 1 MB messages in flight

main() ->
    Cfg = #{ebin => os:getenv("BENCH_EBIN"), dir => os:getenv("BENCH_DIR"),
            tmp => os:getenv("BENCH_TMP"), relay_port => os:getenv("BENCH_RELAY_PORT"),
            secret => os:getenv("BENCH_SECRET"),
            seconds => list_to_integer(os:getenv("BENCH_SECONDS", "5"))},
    Rows = [measure(Mode, Cfg) || Mode <- [direct, dist_relay, relay]],
    io:format("~n| path | 64 B round trip p50 | p99 | 1 MB messages |~n"
              "|---|---|---|---|~n"),
    [io:format("| ~s | ~p us | ~p us | ~p MB/s |~n", [label(M), P50, P99, Rate])
     || {M, P50, P99, Rate} <- Rows],
    halt(0).

label(relay) -> "relay (across 2 relays)";
label(Mode) -> atom_to_list(Mode).

measure(Mode, Cfg) ->
    {PA, _} = start(Mode, "a", 47201, Cfg),
    {PB, NB} = start(Mode, "b", 47202, Cfg),
    Mode =:= relay andalso check_relays([{PA, "bench-relay"}, {PB, "bench-relay-2"}]),
    pong = peer:call(PA, net_adm, ping, [NB], 30000),
    {P50, P99} = peer:call(PA, ?MODULE, rtt, [NB, ?RTT_N], 120000),
    Rate = peer:call(PA, ?MODULE, stream, [NB, maps:get(seconds, Cfg), ?WINDOW], 120000),
    [peer:stop(P) || P <- [PA, PB]],
    {Mode, P50, P99, Rate}.

start(Mode, Name, Port, Cfg = #{tmp := Tmp}) ->
    %% Each path has its own node names: a relay may still hold the names
    %% of the previous path's nodes for a few seconds.
    NodeName = case Mode of
                   direct -> integer_to_list(Port);
                   dist_relay -> Name;
                   relay -> "mesh_" ++ Name
               end,
    {ok, Peer, Node} =
        peer:start_link(#{name => NodeName, host => "127.0.0.1", longnames => true,
                          connection => standard_io, wait_boot => 30000,
                          args => ["-pa", maps:get(ebin, Cfg), "-pa", maps:get(dir, Cfg),
                                   "-proto_dist", "macula", "-no_epmd",
                                   "-start_epmd", "false", "-setcookie", "bench"
                                   | mode_args(Mode, Name, Cfg)],
                          env => [{"MACULA_DIST_CERT_DIR", filename:join(Tmp, "cert_" ++ Name)}]}),
    Mode =/= direct andalso wait_identified(Peer, 300),
    {Peer, Node}.

%% The mesh path is measured only if a and b are at different relays.
check_relays(Expected) ->
    [case [N || #{state := identified, name := N} <- peer:call(P, macula, relays, [])] of
         [Want] -> ok;
         Other -> error({not_at_relay, Want, Other})
     end || {P, Name} <- Expected, Want <- [list_to_binary(Name)]],
    ok.

mode_args(direct, _, _) ->
    [];
mode_args(dist_relay, _, Cfg) ->
    relay_args("dist_relay", relay(0, Cfg), Cfg);
mode_args(relay, "a", Cfg) ->
    relay_args("relay", relay(0, Cfg) ++ "," ++ relay(1, Cfg), Cfg);
mode_args(relay, "b", Cfg) ->
    relay_args("relay", relay(1, Cfg) ++ "," ++ relay(0, Cfg), Cfg).

relay(I, #{relay_port := Port}) ->
    "127.0.0.1:" ++ integer_to_list(list_to_integer(Port) + I).

relay_args(Mode, Relays, #{secret := Secret}) ->
    ["-macula_dist_mode", Mode, "-macula_dist_relays", Relays,
     "-macula_dist_realm_secret_file", Secret].

wait_identified(_Peer, 0) ->
    error(not_registered_at_relay);
wait_identified(Peer, N) ->
    case [R || R = #{state := identified} <- peer:call(Peer, macula, relays, [])] of
        [_] -> ok;
        [] -> timer:sleep(100), wait_identified(Peer, N - 1)
    end.

%%% On the nodes

echo() ->
    receive
        {From, Msg} -> From ! {self(), Msg}, echo();
        stop -> ok
    end.

%% p50 and p99 of N sequential 64-byte round trips, in microseconds.
rtt(Node, N) ->
    Echo = spawn(Node, ?MODULE, echo, []),
    Msg = binary:copy(<<"r">>, 64),
    [one_trip(Echo, Msg) || _ <- lists:seq(1, 200)],  % warm-up
    Ts = lists:sort([one_trip(Echo, Msg) || _ <- lists:seq(1, N)]),
    Echo ! stop,
    {lists:nth(N div 2, Ts), lists:nth(N * 99 div 100, Ts)}.

one_trip(Echo, Msg) ->
    T0 = erlang:monotonic_time(microsecond),
    Echo ! {self(), Msg},
    receive {Echo, _} -> erlang:monotonic_time(microsecond) - T0 end.

%% MB/s of 1 MB messages sent for about Seconds, at most Window unacknowledged.
stream(Node, Seconds, Window) ->
    Sink = spawn(Node, ?MODULE, sink, [self()]),
    Bin = crypto:strong_rand_bytes(?MB),
    T0 = erlang:monotonic_time(microsecond),
    Until = T0 + Seconds * 1000000,
    [Sink ! {data, Bin} || _ <- lists:seq(1, Window)],
    N = pump(Sink, Bin, Until, Window),
    Us = erlang:monotonic_time(microsecond) - T0,
    Sink ! stop,
    round(N * 1000000 / Us).

pump(Sink, Bin, Until, Sent) ->
    receive {ack, Sink} -> ok end,
    case erlang:monotonic_time(microsecond) < Until of
        true -> Sink ! {data, Bin}, pump(Sink, Bin, Until, Sent + 1);
        false -> drain(Sink, ?WINDOW - 1), Sent
    end.

drain(_Sink, 0) -> ok;
drain(Sink, K) -> receive {ack, Sink} -> drain(Sink, K - 1) end.

sink(From) ->
    receive
        {data, _} -> From ! {ack, self()}, sink(From);
        stop -> ok
    end.
