%% @doc Connection migration and NAT rebinding over real links: a node
%% whose address changes keeps its connections. Each case builds its own
%% network namespaces, runs a client node C and a server node S, starts a
%% workload, changes the network under it, and checks what arrived:
%%
%%   mclm_c (node C)                 mclm_r (router)               mclm_s (node S)
%%     mclmC0 10.198.1.2/24 <-veth-> mclmR0 10.198.1.1
%%     mclmC1 (10.198.2.2/24) <----> mclmR1 10.198.2.1
%%                                   mclmR2 10.198.9.1 <-veth-> mclmS0 10.198.9.2/24
%%
%% The router masquerades 10.198.1.0/24 (nftables, fully-random ports), so
%% C starts behind a NAT. C dials S: C holds the client end (the one that
%% may migrate), S the server end.
%%
%% Workload, all sequence-numbered and checked at the receiver: a stream
%% C -> S and a stream S -> C (4 x 64 KB every 5 ms each) and a ping-pong
%% C <-> S. Each receiver reports messages lost or out of order and the
%% longest gap between two arrivals: the interruption.
%%
%% Scenarios:
%%   baseline        nothing happens: the gaps the machine shows anyway.
%%   nat_rebinding   the router's conntrack table is flushed three times:
%%                   the NAT maps C to new random ports (S sees a new peer
%%                   address; macula's server end follows it after path
%%                   validation).
%%   address_change  C's address moves: 10.198.1.2 is deleted from mclmC0,
%%                   10.198.2.2 is added on mclmC1 with the default route
%%                   (macula's client end migrates, told by netlink).
%%   dead_new_path   10.198.2.2 appears on mclmC1 and the default route
%%                   moves there, but the router drops everything from
%%                   10.198.2.0/24: the path through the new address is
%%                   dead. macula tries it, the validation fails, traffic
%%                   never leaves the old path; then macula:migrate/1 to
%%                   the dead address is refused the same way.
%%
%% Each scenario runs with macula (asserted: no nodedown, nothing lost or
%% reordered, interruption bounded) and with inet_tcp_dist (recorded: what
%% happened). The suite ends with a side-by-side table; every result is
%% also one line "MIGRATION_RESULT ..." in the log.
%%
%% Only namespace addresses and loopback carry traffic. Needs root; without
%% it every case fails (it does not skip).
-module(macula_migration_SUITE).

-include_lib("common_test/include/ct.hrl").

-import(macula_netns, [need_netns/1, ip/0, cmd/2, must/2, netns_exists/1, kill_all_in/1, start_epmd/1]).

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([api/1, baseline/1, nat_rebinding/1, address_change/1, dead_new_path/1,
         inet_tcp_baseline/1, inet_tcp_nat_rebinding/1, inet_tcp_address_change/1,
         inet_tcp_dead_new_path/1]).
%% run on the nodes
-export([stream_start/1, sender_stop/1, sink_init/0, sink_report/2,
         pingpong_start/1, ping_stop/1, pong_loop/0]).

-define(NS_C, "mclm_c").
-define(NS_R, "mclm_r").
-define(NS_S, "mclm_s").
-define(NAMESPACES, [?NS_C, ?NS_R, ?NS_S]).
-define(C_OLD, "10.198.1.2").
-define(C_NEW, "10.198.2.2").
-define(S_IP, "10.198.9.2").
-define(TICKTIME, "8").
-define(BURST, 4).             % messages per sender tick
-define(MSG_SIZE, 65536).
-define(SEND_EVERY, 5).        % ms
-define(PONG_TIMEOUT, 10000).  % ms; a pong later than that counts as lost
-define(BASELINE, 1500).       % ms of workload before the event
%% macula's interruption must stay below this (ms); far above what it
%% does, far below net_ticktime: catches a stall, not noise
-define(MAX_INTERRUPTION, 5000).

suite() ->
    [{timetrap, {minutes, 3}}].

all() ->
    [api, baseline, nat_rebinding, address_change, dead_new_path,
     inet_tcp_baseline, inet_tcp_nat_rebinding, inet_tcp_address_change, inet_tcp_dead_new_path].

%%% ------------------------------------------------------------------
%%% Set-up: namespaces per test case

init_per_suite(Config0) ->
    Config = macula_ct:init_suite(Config0, 14101),
    file:delete(results_file(Config)),
    Config.

end_per_suite(Config) ->
    macula_ct:end_suite(Config),
    remove_namespaces(),
    report(Config),
    [] = [NS || NS <- ?NAMESPACES, netns_exists(NS)],
    ok.

init_per_testcase(_Case, Config) ->
    try setup(Config) of
        ok -> Config
    catch
        Class:Reason:Stack ->
            ct:pal("network namespace set-up failed: ~p:~p~n~p", [Class, Reason, Stack]),
            catch remove_namespaces(),
            [{netns_error, {Class, Reason}} | Config]
    end.

end_per_testcase(_Case, _Config) ->
    macula_ct:stop_all(),
    remove_namespaces(),
    ok.

setup(Config) ->
    remove_namespaces(),
    [must(ip(), ["netns", "add", NS]) || NS <- ?NAMESPACES],
    [must(ip(), ["-n", NS, "link", "set", "lo", "up"]) || NS <- ?NAMESPACES],
    [must(ip(), ["link", "add", A, "netns", NA, "type", "veth", "peer", "name", B,
                 "netns", NB])
     || {A, NA, B, NB} <- [{"mclmC0", ?NS_C, "mclmR0", ?NS_R},
                           {"mclmC1", ?NS_C, "mclmR1", ?NS_R},
                           {"mclmR2", ?NS_R, "mclmS0", ?NS_S}]],
    [must(ip(), ["-n", NS, "addr", "add", Addr, "dev", Dev])
     || {NS, Dev, Addr} <- [{?NS_C, "mclmC0", ?C_OLD ++ "/24"},
                            {?NS_R, "mclmR0", "10.198.1.1/24"},
                            {?NS_R, "mclmR1", "10.198.2.1/24"},
                            {?NS_R, "mclmR2", "10.198.9.1/24"},
                            {?NS_S, "mclmS0", ?S_IP ++ "/24"}]],
    [must(ip(), ["-n", NS, "link", "set", Dev, "up"])
     || {NS, Dev} <- [{?NS_C, "mclmC0"}, {?NS_C, "mclmC1"}, {?NS_R, "mclmR0"},
                      {?NS_R, "mclmR1"}, {?NS_R, "mclmR2"}, {?NS_S, "mclmS0"}]],
    must(ip(), ["-n", ?NS_C, "route", "add", "default", "via", "10.198.1.1"]),
    must(ip(), ["-n", ?NS_S, "route", "add", "default", "via", "10.198.9.1"]),
    must(ip(), ["netns", "exec", ?NS_R, "sysctl", "-qw", "net.ipv4.ip_forward=1"]),
    Rules = filename:join(?config(priv_dir, Config), "mclm_router.nft"),
    ok = file:write_file(Rules,
                         "table ip mclm {\n"
                         "  chain nat_out { type nat hook postrouting priority 100;\n"
                         "    ip saddr 10.198.1.0/24 oifname \"mclmR2\" masquerade fully-random; }\n"
                         "  chain filter_fwd { type filter hook forward priority 0; }\n"
                         "}\n"),
    must(ip(), ["netns", "exec", ?NS_R, "nft", "-f", Rules]),
    ok.

remove_namespaces() ->
    [begin
         kill_all_in(NS),
         _ = cmd(ip(), ["netns", "del", NS])
     end || NS <- ?NAMESPACES, netns_exists(NS)],
    ok.

%%% ------------------------------------------------------------------
%%% Network events

flush_conntrack() ->
    must(ip(), ["netns", "exec", ?NS_R, "conntrack", "-F"]).

%% The NAT forgets every mapping three times, a second apart; each time C's
%% next packet gets a new random port.
rebind_nat() ->
    [begin flush_conntrack(), timer:sleep(1000) end || _ <- [1, 2, 3]],
    ok.

%% The old address goes first (sends from it start failing), then the new
%% one arrives with its route: the node is without an address meanwhile.
move_address() ->
    T0 = erlang:monotonic_time(millisecond),
    must(ip(), ["-n", ?NS_C, "addr", "del", ?C_OLD ++ "/24", "dev", "mclmC0"]),
    must(ip(), ["-n", ?NS_C, "addr", "add", ?C_NEW ++ "/24", "dev", "mclmC1"]),
    must(ip(), ["-n", ?NS_C, "route", "replace", "default", "via", "10.198.2.1"]),
    ct:pal("C had no usable address for ~p ms (the time the ip commands took)",
           [erlang:monotonic_time(millisecond) - T0]),
    ok.

%% A new address and route whose path is dead beyond the first hop; the
%% old address stays and still works (its packets leave by the new
%% interface and are forwarded; only 10.198.2.0/24 is dropped).
add_dead_path() ->
    must(ip(), ["netns", "exec", ?NS_R, "nft", "add", "rule", "ip", "mclm", "filter_fwd",
                "ip", "saddr", "10.198.2.0/24", "drop"]),
    must(ip(), ["-n", ?NS_C, "addr", "add", ?C_NEW ++ "/24", "dev", "mclmC1"]),
    must(ip(), ["-n", ?NS_C, "route", "replace", "default", "via", "10.198.2.1"]),
    ok.

%%% ------------------------------------------------------------------
%%% Cases

%% The operator API on both ends of one connection: who may migrate, the
%% refusals, the path figures, bad arguments.
api(Config) ->
    need_netns(Config),
    {C, NC, S, NS} = start_pair(Config, macula),
    [#{node := NS, role := client, local := {<<?C_OLD>>, 14102},
       remote := {<<?S_IP>>, 14101}, migrations := 0}] = peer:call(C, macula, paths, []),
    %% behind the NAT: the server sees the router's address
    [#{node := NC, role := server, local := {<<?S_IP>>, 14101},
       remote := {<<"10.198.9.1">>, _}}] = peer:call(S, macula, paths, []),
    #{follows_address_changes := true, paths := [_]} = peer:call(C, macula, info, []),
    %% the server end is not the server's to move
    {ok, []} = peer:call(S, macula, migrate, []),
    {ok, []} = peer:call(S, macula, migrate, [?S_IP]),
    {ok, [#{node := NS, result := same_path}]} = peer:call(C, macula, migrate, []),
    {ok, [#{node := NS, result := same_path}]} = peer:call(C, macula, migrate, [?C_OLD]),
    {ok, [#{result := not_local}]} = peer:call(C, macula, migrate, [?S_IP]),
    {ok, [#{result := not_local}]} = peer:call(C, macula, migrate, [{10, 198, 2, 2}]),
    [{error, {invalid_address, Bad}} = peer:call(C, macula, migrate, [Bad])
     || Bad <- ["10.198.1", "not an address", {1, 2, 3}, 42, <<"::g">>]],
    {'EXIT', {{badarg, ip}, _}} =
        peer:call(C, erlang, apply,
                  [fun() -> catch macula_nif:migrate(macula_endpoint:get(),
                                                      <<"x">>, self(), make_ref())
                   end, []]),
    {'EXIT', {{badarg, conn}, _}} =
        peer:call(C, erlang, apply, [fun() -> catch macula_nif:conn_info(make_ref()) end, []]),
    %% An operator's choice stands: after a move to an explicit address, a
    %% route change (which makes the node check its paths) does not move
    %% the connection back to the routing table's choice; migrate() does.
    must(ip(), ["-n", ?NS_C, "addr", "add", ?C_NEW ++ "/24", "dev", "mclmC1"]),
    {ok, [#{result := migrated, local := {<<?C_NEW>>, 14102}}]} =
        peer:call(C, macula, migrate, [?C_NEW], 30000),
    must(ip(), ["-n", ?NS_C, "route", "add", "10.198.50.0/24", "via", "10.198.1.1"]),
    timer:sleep(1000),
    [#{local := {<<?C_NEW>>, _}, migrations := 1}] = peer:call(C, macula, paths, []),
    %% the server end followed
    [#{remote := {<<?C_NEW>>, 14102}, migrations := SMig}] = peer:call(S, macula, paths, []),
    true = SMig >= 1,
    {ok, [#{result := migrated, local := {<<?C_OLD>>, 14102}}]} =
        peer:call(C, macula, migrate, [], 30000),
    pong = peer:call(C, net_adm, ping, [NS]),
    ok.

%% The workload with no event: the gaps this machine shows anyway, to read
%% the others against.
baseline(Config) ->
    expect_kept(scenario(Config, macula, baseline, fun() -> ok end, 2000)).

nat_rebinding(Config) ->
    R = scenario(Config, macula, nat_rebinding, fun rebind_nat/0, 2000),
    expect_kept(R),
    %% the server end saw C's new address and followed it
    #{s_path := SPath} = R,
    true = maps:get(migrations, SPath) >= 1,
    ok.

address_change(Config) ->
    R = scenario(Config, macula, address_change, fun move_address/0, 4000),
    expect_kept(R),
    #{c_path := CPath} = R,
    {<<?C_NEW>>, _} = maps:get(local, CPath),
    true = maps:get(migrations, CPath) >= 1,
    ok.

dead_new_path(Config) ->
    R = scenario(Config, macula, dead_new_path, fun add_dead_path/0,
                 fun(C) -> dead_path_checks(C) end),
    expect_kept(R),
    #{c_path := CPath} = R,
    {<<?C_OLD>>, _} = maps:get(local, CPath),
    true = maps:get(failed_migrations, CPath) >= 2,
    ok.

%% While the workload runs: the automatic attempt (route change) fails and
%% the connection stays; then an explicit migrate/1 to the dead address is
%% answered with path_validation_failed, again without disruption.
dead_path_checks(C) ->
    Path = macula_ct:poll(fun() ->
                                  case c_path(C) of
                                      #{failed_migrations := F, migrating := false} = P
                                        when F >= 1 -> {true, P};
                                      _ -> false
                                  end
                          end, 30000, automatic_attempt_never_failed),
    ct:pal("after the automatic attempt: ~p", [Path]),
    T0 = erlang:monotonic_time(millisecond),
    {ok, [#{result := Result, local := Local}]} =
        peer:call(C, macula, migrate, [?C_NEW], 40000),
    ct:pal("macula:migrate(~s) -> ~p, ~p after ~p ms",
           [?C_NEW, Result, Local, erlang:monotonic_time(millisecond) - T0]),
    path_validation_failed = Result,
    {<<?C_OLD>>, _} = Local,
    ok.

inet_tcp_baseline(Config) ->
    scenario(Config, inet_tcp, baseline, fun() -> ok end, 2000),
    ok.

inet_tcp_nat_rebinding(Config) ->
    scenario(Config, inet_tcp, nat_rebinding, fun rebind_nat/0, 2000),
    ok.

inet_tcp_address_change(Config) ->
    %% long enough for the tick to notice the dead connection
    scenario(Config, inet_tcp, address_change, fun move_address/0, 14000),
    ok.

inet_tcp_dead_new_path(Config) ->
    scenario(Config, inet_tcp, dead_new_path, fun add_dead_path/0, 14000),
    ok.

expect_kept(#{nodedown := Down, lost := Lost, reordered := Reordered,
              interruption_ms := Ms}) ->
    [] = Down,
    0 = Lost,
    0 = Reordered,
    Ms =< ?MAX_INTERRUPTION orelse ct:fail({interruption_too_long, Ms, ?MAX_INTERRUPTION}),
    ok.

%%% ------------------------------------------------------------------
%%% One scenario: nodes, workload, event, verdict

%% Runs Event under the workload, then waits After (ms, or a fun of C's
%% peer that returns when done) and collects what happened.
scenario(Config, Proto, Name, Event, After) ->
    need_netns(Config),
    {C, NC, S, NS} = start_pair(Config, Proto),
    WC = peer:call(C, macula_ct, watch, [NS]),
    WS = peer:call(S, macula_ct, watch, [NC]),
    Up = peer:call(C, ?MODULE, stream_start, [NS]),
    Down = peer:call(S, ?MODULE, stream_start, [NC]),
    Ping = peer:call(C, ?MODULE, pingpong_start, [NS]),
    timer:sleep(?BASELINE),
    Before = paths(Proto, C, S),
    Event(),
    case After of
        Ms when is_integer(Ms) -> timer:sleep(Ms);
        Fun -> Fun(C), timer:sleep(1000)
    end,
    Result0 = collect(C, S, Up, Down, Ping),
    Nodedown = [Who || {Who, Peer, W} <- [{c, C, WC}, {s, S, WS}],
                       is_down(peer:call(Peer, macula_ct, wait_down, [W, 0]))],
    After1 = paths(Proto, C, S),
    Result = Result0#{nodedown => Nodedown, c_path => maps:get(c, After1),
                      s_path => maps:get(s, After1)},
    ct:pal("~p ~p: paths before ~p~nafter ~p", [Proto, Name, Before, After1]),
    verdict(Config, Proto, Name, Result),
    Result.

is_down({down, _}) -> true;
is_down(_) -> false.

start_pair(Config, Proto) ->
    {CName, SName} = case Proto of
                         macula -> {"14102", "14101"};
                         inet_tcp ->
                             [start_epmd(NS) || NS <- [?NS_C, ?NS_S]],
                             {"c", "s"}
                     end,
    Opts = #{proto => Proto, args => ["-kernel", "net_ticktime", ?TICKTIME]},
    {S, NS} = macula_ct:start_node(Config, Opts#{name => SName, host => ?S_IP,
                                                 netns => ?NS_S}),
    {C, NC} = macula_ct:start_node(Config, Opts#{name => CName, host => ?C_OLD,
                                                 netns => ?NS_C}),
    pong = peer:call(C, net_adm, ping, [NS], 30000),
    {C, NC, S, NS}.

paths(macula, C, S) ->
    #{c => c_path(C), s => first_path(S)};
paths(inet_tcp, _C, _S) ->
    #{c => #{}, s => #{}}.

c_path(C) -> first_path(C).

first_path(Peer) ->
    case catch peer:call(Peer, macula, paths, [], 10000) of
        [P | _] -> P;
        _ -> #{}
    end.

%% Stops the workload and gathers the receivers' reports. A receiver on
%% the far side of a dead connection may never get the last message:
%% then what it has counts.
collect(C, S, {UpSender, UpSink}, {DownSender, DownSink}, Ping) ->
    %% a sender may sit in a send that waits for a connection set-up to
    %% a peer address that is gone (inet_tcp): up to net_setuptime per send
    UpSent = peer:call(C, ?MODULE, sender_stop, [UpSender], 60000),
    DownSent = peer:call(S, ?MODULE, sender_stop, [DownSender], 60000),
    PingR = peer:call(C, ?MODULE, ping_stop, [Ping], 30000),
    UpR = peer:call(S, ?MODULE, sink_report, [UpSink, UpSent], 30000),
    DownR = peer:call(C, ?MODULE, sink_report, [DownSink, DownSent], 30000),
    Lost = maps:get(lost, UpR) + maps:get(lost, DownR) + maps:get(lost, PingR),
    Reordered = maps:get(reordered, UpR) + maps:get(reordered, DownR) +
        maps:get(reordered, PingR),
    Gaps = [maps:get(max_gap_ms, UpR), maps:get(max_gap_ms, DownR), maps:get(max_rtt_ms, PingR)],
    #{up => UpR, down => DownR, ping => PingR, lost => Lost, reordered => Reordered,
      interruption_ms => lists:max(Gaps)}.

verdict(Config, Proto, Name, R = #{nodedown := Down, lost := Lost, reordered := Re,
                                   interruption_ms := Ms, up := Up, down := Dn,
                                   ping := Ping}) ->
    Line = lists:flatten(
             io_lib:format("MIGRATION_RESULT scenario=~p proto=~p nodedown=~s lost=~p "
                           "reordered=~p interruption_ms=~p (c->s gap ~p ms, s->c gap ~p ms, "
                           "ping max ~p ms; messages c->s ~p s->c ~p pings ~p)",
                           [Name, Proto, down_text(Down), Lost, Re, Ms,
                            maps:get(max_gap_ms, Up), maps:get(max_gap_ms, Dn),
                            maps:get(max_rtt_ms, Ping), maps:get(received, Up),
                            maps:get(received, Dn), maps:get(received, Ping)])),
    ct:pal("~s", [Line]),
    ct:comment("~s", [Line]),
    record(Config, {Name, Proto, maps:with([nodedown, lost, reordered, interruption_ms], R)}).

down_text([]) -> "none";
down_text(Who) -> string:join([atom_to_list(W) || W <- Who], "+").

%%% ------------------------------------------------------------------
%%% Results: kept in priv_dir, side by side at the end of the suite

record(Config, Term) ->
    ok = file:write_file(results_file(Config), io_lib:format("~p.~n", [Term]), [append]).

results_file(Config) ->
    filename:join(?config(priv_dir, Config), "migration_results.txt").

report(Config) ->
    case file:consult(results_file(Config)) of
        {ok, Terms} ->
            Row = fun(Name) ->
                          Cell = fun(Proto) ->
                                         case lists:keyfind(Proto, 2,
                                                            [T || T <- Terms, element(1, T) =:= Name]) of
                                             {_, _, #{nodedown := D, lost := L, reordered := Re,
                                                      interruption_ms := Ms}} ->
                                                 io_lib:format("down=~s lost=~p reord=~p gap=~pms",
                                                               [down_text(D), L, Re, Ms]);
                                             false -> "-"
                                         end
                                 end,
                          io_lib:format("~-15s ~-42s ~s~n", [Name, Cell(macula), Cell(inet_tcp)])
                  end,
            ct:pal("migration scenarios, macula vs inet_tcp (net_ticktime ~s):~n"
                   "~-15s ~-42s ~s~n~s~s~s~s",
                   [?TICKTIME, "scenario", "macula", "inet_tcp",
                    Row(baseline), Row(nat_rebinding), Row(address_change),
                    Row(dead_new_path)]);
        _ ->
            ok
    end.

%%% ------------------------------------------------------------------
%%% On the nodes: numbered streams and a ping-pong

now_ms() -> erlang:monotonic_time(millisecond).

%% A sender here and a sink on Node; {Sender, Sink}.
stream_start(Node) ->
    Sink = spawn(Node, ?MODULE, sink_init, []),
    Bin = binary:copy(<<"macula!">>, ?MSG_SIZE div 7),
    Sender = spawn(fun() -> sender_loop(Sink, 0, Bin) end),
    {Sender, Sink}.

sender_loop(Sink, I, Bin) ->
    receive
        {stop, From, Ref} -> From ! {Ref, I}
    after ?SEND_EVERY ->
            [Sink ! {seq, J, Bin} || J <- lists:seq(I, I + ?BURST - 1)],
            sender_loop(Sink, I + ?BURST, Bin)
    end.

%% Stops a sender; the number of messages it sent.
sender_stop(Sender) ->
    Ref = make_ref(),
    Sender ! {stop, self(), Ref},
    receive {Ref, N} -> N end.

sink_init() ->
    sink_loop(#{next => 0, received => 0, reordered => 0, first_error => none,
                last => now_ms(), max_gap_ms => 0}).

sink_loop(S = #{next := Next, received := N, reordered := Re, last := Last,
                max_gap_ms := Gap}) ->
    receive
        {seq, I, _Bin} ->
            T = now_ms(),
            S1 = S#{next := I + 1, received := N + 1, last := T,
                    max_gap_ms := max(Gap, T - Last)},
            sink_loop(case {I, maps:get(first_error, S)} of
                          {Next, _} -> S1;
                          {_, none} -> S1#{reordered := Re + 1,
                                           first_error := {expected, Next, got, I}};
                          _ -> S1#{reordered := Re + 1}
                      end);
        {report, From, Ref} ->
            From ! {Ref, S},
            sink_loop(S)
    end.

%% What the sink received of Sent messages: lost counts the ones that
%% never arrived (by the time the report is asked for, after a grace
%% period for what is still in flight).
sink_report(Sink, Sent) ->
    Ask = fun() ->
                  Ref = make_ref(),
                  Sink ! {report, self(), Ref},
                  receive {Ref, S} -> S after 5000 -> #{} end
          end,
    Asked = now_ms(),
    S = wait_received(Ask, Sent, Asked + 10000),
    Received = maps:get(received, S, 0),
    %% arrivals that stopped for good are an interruption until the end
    Gap = case Received < Sent of
              true -> max(maps:get(max_gap_ms, S, 0), Asked - maps:get(last, S, Asked));
              false -> maps:get(max_gap_ms, S, 0)
          end,
    S#{lost => max(0, Sent - Received), sent => Sent, max_gap_ms => Gap}.

wait_received(Ask, Sent, Deadline) ->
    S = Ask(),
    case maps:get(received, S, 0) >= Sent orelse now_ms() > Deadline of
        true -> S;
        false -> timer:sleep(100), wait_received(Ask, Sent, Deadline)
    end.

%% A process here pinging an echo on Node, one ping at a time.
pingpong_start(Node) ->
    Echo = spawn(Node, ?MODULE, pong_loop, []),
    spawn(fun() -> ping_loop(Echo, 0, #{received => 0, lost => 0, reordered => 0,
                                        max_rtt_ms => 0}) end).

pong_loop() ->
    receive
        {ping, From, I} -> From ! {pong, I}, pong_loop()
    end.

ping_loop(Echo, I, S = #{received := N, lost := L, max_rtt_ms := Max}) ->
    receive
        {stop, From, Ref} -> From ! {Ref, S#{sent => I}}
    after 0 ->
            T0 = now_ms(),
            Echo ! {ping, self(), I},
            case await_pong(I) of
                ok ->
                    timer:sleep(?SEND_EVERY),
                    ping_loop(Echo, I + 1, S#{received := N + 1,
                                              max_rtt_ms := max(Max, now_ms() - T0)});
                timeout ->
                    ping_loop(Echo, I + 1, S#{lost := L + 1, max_rtt_ms := max(Max, now_ms() - T0)})
            end
    end.

%% A pong for an earlier ping (one that timed out) is stale: skip it.
await_pong(I) ->
    receive
        {pong, I} -> ok;
        {pong, J} when J < I -> await_pong(I)
    after ?PONG_TIMEOUT ->
            timeout
    end.

ping_stop(Pinger) ->
    Ref = make_ref(),
    Pinger ! {stop, self(), Ref},
    receive {Ref, S} -> S end.
