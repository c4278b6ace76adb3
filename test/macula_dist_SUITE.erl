%% @doc Distribution semantics over `-proto_dist macula`, with the very same
%% cases run over the default distribution (inet_tcp + epmd) for
%% comparison. Every node is a real OS process started with OTP's `peer`
%% module over standard_io, so the CT node itself is not distributed.
-module(macula_dist_SUITE).

-include_lib("common_test/include/ct.hrl").

-export([all/0, groups/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_group/2, end_per_group/2, init_per_testcase/2,
         end_per_testcase/2]).
-export([ping/1, rpc_call/1, remote_spawn/1, link_exit/1, monitor_down/1,
         registered_send/1, global_register/1, pg_members/1,
         big_binary/1, ordering/1, auto_connect/1, kill9_nodedown/1,
         disconnect_nodedown/1, init_stop_nodedown/1, restart_reconnect/1,
         restart_after_crash/1, no_ghost_connection/1, named_down_order/1]).
%% run on the peers
-export([concurrent_rpc/2, double_here/1, spawn_roundtrip/2, link_exit_on/1,
         monitor_on/1, global_on/2, pg_join/1, pg_members_of/2,
         ordering_on/3, named_down_on/2, named_sender/1, call_then_exit/0]).

-define(FIRST_PORT, 15000).
-define(BIG, (64 * 1024 * 1024)).
-define(ORDER_N, 10000).

suite() ->
    [{timetrap, {minutes, 2}}].

all() ->
    [{group, macula}, {group, inet_tcp}].

groups() ->
    [{macula, [], cases()},
     {inet_tcp, [], cases()}].

cases() ->
    [ping, rpc_call, remote_spawn, link_exit, monitor_down, registered_send,
     global_register, pg_members, big_binary, ordering, auto_connect,
     kill9_nodedown, disconnect_nodedown, init_stop_nodedown,
     restart_reconnect, restart_after_crash, no_ghost_connection,
     named_down_order].

init_per_suite(Config) ->
    macula_ct:init_suite(Config, ?FIRST_PORT).

end_per_suite(Config) ->
    macula_ct:end_suite(Config).

init_per_group(macula, Config) ->
    [{proto, macula} | Config];
init_per_group(inet_tcp, Config) ->
    ok = ensure_epmd(),
    [{proto, inet_tcp} | Config].

end_per_group(_, _Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    Config.

end_per_testcase(_Case, _Config) ->
    macula_ct:stop_all().

ensure_epmd() ->
    case epmd_up() of
        true -> ok;
        false ->
            _ = os:cmd("epmd -daemon"),
            macula_ct:poll(fun epmd_up/0, 5000, epmd_not_started)
    end.

epmd_up() ->
    case erl_epmd:names("127.0.0.1") of
        {ok, _} -> true;
        _ -> false
    end.

%%% ------------------------------------------------------------------
%%% Helpers

start(Config) ->
    macula_ct:start_node(Config, #{}).

start(Config, Opts) ->
    macula_ct:start_node(Config, Opts).

%% Two nodes, A connected to B.
pair(Config) ->
    pair(Config, #{}).

pair(Config, Opts) ->
    {A, NA} = start(Config, Opts),
    {B, NB} = start(Config, Opts),
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    {A, NA, B, NB}.

nodes_of(Peer) ->
    lists:sort(peer:call(Peer, erlang, nodes, [])).

proto(Config) ->
    ?config(proto, Config).

%% {down, Ms since T0} as seen by the watcher W on Peer, else fail.
down_within(Peer, W, T0, Limit) ->
    case peer:call(Peer, macula_ct, wait_down, [W, Limit + 2000], Limit + 10000) of
        {down, At} ->
            Ms = At - T0,
            ct:pal("nodedown seen after ~p ms (limit ~p ms)", [Ms, Limit]),
            Ms =< Limit orelse ct:fail({nodedown_too_late, Ms, Limit}),
            Ms;
        Other ->
            ct:fail({no_nodedown_within, Limit + 2000, Other})
    end.

now_ms() ->
    erlang:system_time(millisecond).

%%% ------------------------------------------------------------------
%%% Cases

ping(Config) ->
    {A, NA} = start(Config),
    {B, NB} = start(Config),
    [] = nodes_of(A),
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    [NB] = nodes_of(A),
    [NA] = nodes_of(B),
    pong = peer:call(B, net_adm, ping, [NA], 30000),
    pong = peer:call(A, net_adm, ping, [NA]),
    [NB] = nodes_of(A),
    %% a node nobody runs: pang, and no connection left behind
    Nobody = case proto(Config) of
                 macula -> list_to_atom(integer_to_list(macula_ct:next_port(Config))
                                        ++ "@127.0.0.1");
                 inet_tcp -> 'nobody_here@127.0.0.1'
             end,
    pang = peer:call(A, net_adm, ping, [Nobody], 30000),
    [NB] = nodes_of(A).

rpc_call(Config) ->
    {A, _NA, _B, NB} = pair(Config),
    NB = peer:call(A, rpc, call, [NB, erlang, node, []]),
    [1, 2, 3, 4, 5] = peer:call(A, rpc, call, [NB, lists, seq, [1, 5]]),
    "25" = peer:call(A, erpc, call, [NB, erlang, system_info, [otp_release]]),
    {badrpc, {'EXIT', {boom, _}}} =
        peer:call(A, rpc, call, [NB, erlang, error, [boom]]),
    {badrpc, {'EXIT', {undef, _}}} =
        peer:call(A, rpc, call, [NB, no_such_module, f, []]),
    %% many concurrent calls over the one connection
    Seq = lists:seq(1, 200),
    Doubled = [{NB, N * 2} || N <- Seq],
    Doubled = peer:call(A, ?MODULE, concurrent_rpc, [NB, Seq], 30000).

%% One erpc call per element, all at once: [{Node, 2 * N}].
concurrent_rpc(Node, Seq) ->
    Self = self(),
    Pids = [spawn_link(fun() ->
                               Self ! {self(), erpc:call(Node, ?MODULE, double_here, [N])}
                       end) || N <- Seq],
    [receive {P, R} -> R after 20000 -> timeout end || P <- Pids].

double_here(N) ->
    {node(), N * 2}.

remote_spawn(Config) ->
    {A, _NA, _B, NB} = pair(Config),
    {ok, NB, NB, true} = peer:call(A, ?MODULE, spawn_roundtrip, [NB, term()]),
    %% a process spawned there by M:F:A answers from there
    Echo = peer:call(A, erpc, call, [NB, macula_ct, spawn_echo, []]),
    NB = node(Echo),
    {ok, NB, spawned} = peer:call(A, macula_ct, echo_call, [Echo, spawned, 5000], 10000).

%% A term exercising the external term format: funs, bignums, floats,
%% unicode atoms, maps, sub-binaries, improper lists (pids and refs are
%% added by spawn_roundtrip).
term() ->
    <<_:3, Sub/bitstring>> = <<"unaligned sub binary", 7:5>>,
    K = 42,
    {self, 'ünïcödé', -1, 1 bsl 200, -(1 bsl 70), 3.14159, -0.0,
     #{a => [1 | 2], "k" => <<>>, {t} => lists:seq(1, 300)},
     Sub, <<0:4000>>, [$a, 256, 16#10FFFF], {}, [], "tail",
     fun(X) -> X + K end, fun lists:reverse/1}.

spawn_roundtrip(Node, Term0) ->
    Term = setelement(1, Term0, {self(), make_ref()}),
    Pid = spawn(Node, fun() ->
                              receive {From, Ref, X} -> From ! {Ref, node(), X} end
                      end),
    Ref = make_ref(),
    Pid ! {self(), Ref, Term},
    receive
        {Ref, RemoteNode, Back} -> {ok, node(Pid), RemoteNode, Back =:= Term}
    after 10000 ->
            timeout
    end.

link_exit(Config) ->
    {A, _NA, _B, NB} = pair(Config),
    {{boom, R}, {local_boom, R}, {local_boom, R}} =
        peer:call(A, ?MODULE, link_exit_on, [NB], 30000).

%% 1. a remote linked process exits: we get its reason;
%% 2. a local process exits: a trapping remote process linked to it gets
%%    its reason; 3. a non-trapping one dies with that reason.
link_exit_on(Node) ->
    process_flag(trap_exit, true),
    R = make_ref(),
    Self = self(),
    P1 = spawn_link(Node, fun() -> receive {die, Why} -> exit(Why) end end),
    P1 ! {die, {boom, R}},
    E1 = receive {'EXIT', P1, W1} -> W1 after 10000 -> timeout1 end,
    L2 = spawn(fun() -> receive go -> exit({local_boom, R}) end end),
    P2 = spawn(Node, fun() ->
                             process_flag(trap_exit, true),
                             link(L2),
                             Self ! {linked, self()},
                             receive {'EXIT', L2, W} -> Self ! {saw, self(), W}
                             after 10000 -> Self ! {saw, self(), timeout2}
                             end
                     end),
    receive {linked, P2} -> ok end,
    L2 ! go,
    E2 = receive {saw, P2, W2} -> W2 after 10000 -> timeout2 end,
    L3 = spawn(fun() -> receive go -> exit({local_boom, R}) end end),
    P3 = spawn(Node, fun() ->
                             link(L3),
                             Self ! {linked, self()},
                             receive _ -> ok end
                     end),
    receive {linked, P3} -> ok end,
    M3 = erlang:monitor(process, P3),
    L3 ! go,
    E3 = receive {'DOWN', M3, process, P3, W3} -> W3 after 10000 -> timeout3 end,
    {E1, E2, E3}.

monitor_down(Config) ->
    {A, _NA, _B, NB} = pair(Config),
    {bye, noproc, noproc, {normal, ok}} =
        peer:call(A, ?MODULE, monitor_on, [NB], 30000).

%% A 'DOWN' for a monitor by name names no process (a MONITOR_P_EXIT from a
%% registered name), yet it must not overtake what the process sent before
%% exiting, big messages included; and a call by name whose server replies
%% and exits at once sees the reply, never the 'DOWN' first.
named_down_order(Config) ->
    {A, _NA, _B, NB} = pair(Config),
    ok = peer:call(A, ?MODULE, named_down_on, [NB, 20], 90000).

named_down_on(Node, Rounds) ->
    Self = self(),
    lists:foreach(
      fun(I) ->
              Name = list_to_atom("named_sender_" ++ integer_to_list(I)),
              Pid = spawn(Node, ?MODULE, named_sender, [Name]),
              ok = macula_ct:poll(fun() -> rpc:call(Node, erlang, whereis, [Name]) =:= Pid end,
                                  10000, {not_registered, Name}),
              M = erlang:monitor(process, {Name, Node}),
              Pid ! {go, Self},
              ok = named_collect(M, 0)
      end, lists:seq(1, Rounds)),
    %% gen:call-like: monitor by name, request, reply then exit at once
    lists:foreach(
      fun(I) ->
              Name = list_to_atom("call_then_exit_" ++ integer_to_list(I)),
              Pid = spawn(Node, ?MODULE, call_then_exit, []),
              true = rpc:call(Node, erlang, register, [Name, Pid]),
              M = erlang:monitor(process, {Name, Node}),
              {Name, Node} ! {call, self(), M},
              receive
                  {M, reply} -> erlang:demonitor(M, [flush]);
                  {'DOWN', M, _, _, R} -> error({down_before_reply, I, R})
              after 10000 -> error({no_reply, I})
              end
      end, lists:seq(1, 50)),
    ok.

%% Messages 1..200 (every 50th one 4 MB, the others small), then 'DOWN'.
named_collect(M, N) ->
    receive
        {seq, I, _} when I =:= N + 1 -> named_collect(M, I);
        {seq, I, _} -> error({out_of_order, expected, N + 1, got, I});
        {'DOWN', M, process, _, normal} when N =:= 200 -> ok;
        {'DOWN', M, process, _, R} -> error({down_after, N, R})
    after 30000 -> error({stuck_after, N})
    end.

named_sender(Name) ->
    register(Name, self()),
    receive {go, To} -> ok end,
    Big = binary:copy(<<7>>, 4 * 1024 * 1024),
    [To ! {seq, I, case I rem 50 of 0 -> Big; _ -> I end} || I <- lists:seq(1, 200)],
    ok.

call_then_exit() ->
    receive {call, From, Ref} -> From ! {Ref, reply} end.

monitor_on(Node) ->
    Pid = spawn(Node, fun() -> receive stop -> exit(bye) end end),
    M1 = erlang:monitor(process, Pid),
    Pid ! stop,
    D1 = receive {'DOWN', M1, process, Pid, R1} -> R1 after 10000 -> timeout end,
    %% monitoring a dead remote pid or an unregistered remote name
    D2 = macula_ct:pid_status(Pid, 10000),
    D3 = macula_ct:pid_status({no_such_name, Node}, 10000),
    %% demonitor: no 'DOWN' after demonitor
    Pid4 = spawn(Node, fun() -> receive stop -> ok end end),
    M4 = erlang:monitor(process, Pid4),
    true = erlang:demonitor(M4),
    M5 = erlang:monitor(process, Pid4),
    Pid4 ! stop,
    D5 = receive {'DOWN', M5, process, Pid4, R5} -> R5 after 10000 -> timeout end,
    Stray = receive {'DOWN', M4, _, _, _} -> stray_down after 200 -> ok end,
    {D1, D2, D3, {D5, Stray}}.

registered_send(Config) ->
    {A, NA} = start(Config),
    {B, NB} = start(Config),
    Echo = peer:call(B, macula_ct, spawn_echo, []),
    true = peer:call(B, erlang, register, [macula_ct_echo, Echo]),
    %% not connected yet: the send to {Name, Node} connects
    [] = nodes_of(A),
    {ok, NB, {hello, NA}} =
        peer:call(A, macula_ct, echo_call, [{macula_ct_echo, NB}, {hello, NA}, 10000], 15000),
    [NB] = nodes_of(A),
    %% a name that is not registered there: the message is dropped
    timeout = peer:call(A, macula_ct, echo_call, [{no_such_name, NB}, x, 500]).

global_register(Config) ->
    {A, NA, B, NB} = pair(Config),
    PA = peer:call(A, macula_ct, spawn_sleeper, []),
    yes = peer:call(A, ?MODULE, global_on, [register, {macula_ct_a, PA}], 15000),
    PA = macula_ct:poll(fun() -> seen(peer:call(B, global, whereis_name, [macula_ct_a])) end,
                        10000, global_name_not_seen_on_b),
    PB = peer:call(B, macula_ct, spawn_sleeper, []),
    yes = peer:call(B, ?MODULE, global_on, [register, {macula_ct_b, PB}], 15000),
    PB = macula_ct:poll(fun() -> seen(peer:call(A, global, whereis_name, [macula_ct_b])) end,
                        10000, global_name_not_seen_on_a),
    NB = node(PB),
    NA = node(PA),
    %% a clash is refused
    no = peer:call(B, ?MODULE, global_on, [register, {macula_ct_a, PB}], 15000),
    %% a message through the global name reaches the process
    ok = peer:call(B, ?MODULE, global_on, [send, macula_ct_a], 15000),
    %% unregister is seen on the other node
    ok = peer:call(A, global, unregister_name, [macula_ct_a]),
    macula_ct:poll(fun() -> undefined =:= peer:call(B, global, whereis_name, [macula_ct_a]) end,
                   10000, global_unregister_not_seen).

seen(undefined) -> false;
seen(Pid) -> {true, Pid}.

global_on(register, {Name, Pid}) ->
    global:sync(),
    global:register_name(Name, Pid);
global_on(send, Name) ->
    global:sync(),
    Pid = global:whereis_name(Name),
    Ref = erlang:monitor(process, Pid),
    global:send(Name, stop),
    receive {'DOWN', Ref, process, Pid, normal} -> ok
    after 10000 -> timeout
    end.

pg_members(Config) ->
    {A, _NA} = start(Config),
    {B, NB} = start(Config),
    {ok, _} = peer:call(A, pg, start, [macula_ct_pg]),
    {ok, _} = peer:call(B, pg, start, [macula_ct_pg]),
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    PA = peer:call(A, ?MODULE, pg_join, [group1]),
    PB = peer:call(B, ?MODULE, pg_join, [group1]),
    Both = lists:sort([PA, PB]),
    macula_ct:poll(fun() -> Both =:= pg_members_at(B, group1) end, 10000,
                   fun() -> {pg_not_synced_on_b, pg_members_at(B, group1), Both} end),
    macula_ct:poll(fun() -> Both =:= pg_members_at(A, group1) end, 10000,
                   fun() -> {pg_not_synced_on_a, pg_members_at(A, group1), Both} end),
    %% a member exits: removed everywhere
    stop = peer:call(A, erlang, send, [PA, stop]),
    macula_ct:poll(fun() -> [PB] =:= pg_members_at(B, group1) end, 10000,
                   fun() -> {pg_leave_not_seen, pg_members_at(B, group1)} end).

pg_members_at(Peer, Group) ->
    lists:sort(peer:call(Peer, ?MODULE, pg_members_of, [macula_ct_pg, Group])).

pg_join(Group) ->
    Parent = self(),
    P = spawn(fun() ->
                      ok = pg:join(macula_ct_pg, Group, self()),
                      Parent ! {joined, self()},
                      receive stop -> ok end
              end),
    receive {joined, P} -> P end.

pg_members_of(Scope, Group) ->
    pg:get_members(Scope, Group).

big_binary(Config) ->
    {A, _NA, _B, NB} = pair(Config),
    {ok, Ms} = peer:call(A, macula_ct, big_roundtrip, [NB, ?BIG], 110000),
    ct:comment("64 MB round trip in ~p ms", [Ms]).

ordering(Config) ->
    {A, _NA, _B, NB} = pair(Config),
    {ok, ?ORDER_N} = peer:call(A, ?MODULE, ordering_on, [NB, ?ORDER_N, 3], 100000).

%% Senders on this node each send N numbered messages to one receiver on
%% Node (every 1000th carries 256 KB, so it is fragmented); the receiver
%% takes them in arrival order and checks each sender's sequence.
ordering_on(Node, N, Senders) ->
    Self = self(),
    Big = binary:copy(<<"x">>, 256 * 1024),
    Recv = spawn(Node, fun() -> order_recv(Self, maps:new(), N * Senders) end),
    [spawn_link(fun() ->
                        [Recv ! {seq, S, I, case I rem 1000 of 0 -> Big; _ -> I end}
                         || I <- lists:seq(1, N)]
                end) || S <- lists:seq(1, Senders)],
    receive
        {Recv, {ok, Counts}} ->
            case lists:usort(maps:values(Counts)) of
                [N] when map_size(Counts) =:= Senders -> {ok, N};
                _ -> {bad_counts, Counts}
            end;
        {Recv, Other} -> Other
    after 90000 -> timeout
    end.

order_recv(Parent, Last, 0) ->
    Parent ! {self(), {ok, Last}};
order_recv(Parent, Last, Left) ->
    receive
        {seq, S, I, Payload} ->
            Expected = maps:get(S, Last, 0) + 1,
            PayloadOk = case I rem 1000 of
                            0 -> byte_size(Payload) =:= 256 * 1024;
                            _ -> Payload =:= I
                        end,
            if I =/= Expected -> Parent ! {self(), {out_of_order, S, Expected, I}};
               not PayloadOk -> Parent ! {self(), {bad_payload, S, I}};
               true -> order_recv(Parent, Last#{S => I}, Left - 1)
            end
    after 60000 ->
            Parent ! {self(), {stalled, Last}}
    end.

auto_connect(Config) ->
    %% connect_all false: global does not connect B and C behind our back
    Opts = #{args => ["-connect_all", "false"]},
    {A, _NA} = start(Config, Opts),
    {B, NB} = start(Config, Opts),
    {C, NC} = start(Config, Opts),
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    pong = peer:call(A, net_adm, ping, [NC], 30000),
    CPid = peer:call(A, erpc, call, [NC, macula_ct, spawn_echo, []]),
    NC = node(CPid),
    [] = [N || N <- nodes_of(B), N =:= NC],
    [] = [N || N <- nodes_of(C), N =:= NB],
    %% A hands B the pid (over distribution); B's send to it connects B-C
    {ok, NC, ping_from_b} =
        peer:call(A, rpc, call, [NB, macula_ct, echo_call, [CPid, ping_from_b, 10000]], 20000),
    true = lists:member(NC, nodes_of(B)),
    true = lists:member(NB, nodes_of(C)).

kill9_nodedown(Config) ->
    Tick = #{args => ["-kernel", "net_ticktime", "4"]},
    {A, _NA, B, NB} = pair(Config, Tick),
    4 = peer:call(A, net_kernel, get_net_ticktime, []),
    W = peer:call(A, macula_ct, watch, [NB]),
    T0 = now_ms(),
    _ = macula_ct:kill9(B),
    Ms = down_within(A, W, T0, 8000),
    [] = nodes_of(A),
    ct:comment("nodedown after kill -9 in ~p ms (net_ticktime 4)", [Ms]).

disconnect_nodedown(Config) ->
    {A, NA, B, NB} = pair(Config),
    W = peer:call(B, macula_ct, watch, [NA]),
    T0 = now_ms(),
    true = peer:call(A, net_kernel, disconnect, [NB]),
    [] = nodes_of(A),
    Ms = down_within(B, W, T0, 1000),
    ct:comment("nodedown on the other side in ~p ms", [Ms]).

init_stop_nodedown(Config) ->
    {A, _NA, B, NB} = pair(Config),
    W = peer:call(A, macula_ct, watch, [NB]),
    T0 = now_ms(),
    ok = peer:call(B, init, stop, []),
    Ms = down_within(A, W, T0, 2000),
    ct:comment("nodedown after init:stop in ~p ms", [Ms]).

%% The node stops cleanly (init:stop) and a new incarnation with the same
%% name starts: it is reachable again and the old pids are dead.
restart_reconnect(Config) ->
    restart(Config, fun(A, B1, NB) ->
                            W = peer:call(A, macula_ct, watch, [NB]),
                            T0 = now_ms(),
                            ok = peer:call(B1, init, stop, []),
                            down_within(A, W, T0, 5000)
                    end, 10000).

%% The node is killed (kill -9, so its peers hear nothing) and restarted at
%% once on the same name (same UDP port for macula), well before
%% net_ticktime (60 s) could notice. The new incarnation must be reachable
%% within 15 s: for TCP the kernel resets the old connection; for QUIC the
%% new incarnation answers the old connection's packets with a stateless
%% reset (its reset key is derived from the persistent node key).
restart_after_crash(Config) ->
    restart(Config, fun(_A, B1, _NB) -> macula_ct:kill9(B1) end, 15000).

restart(Config, Stop, PingLimit) ->
    {A, _NA} = start(Config),
    Name = case proto(Config) of
               macula -> integer_to_list(macula_ct:next_port(Config));
               inet_tcp -> "ct" ++ integer_to_list(macula_ct:next_port(Config))
           end,
    {B1, NB} = start(Config, #{name => Name}),
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    60 = peer:call(A, net_kernel, get_net_ticktime, []),
    Creation1 = peer:call(B1, erlang, system_info, [creation]),
    Old = peer:call(A, macula_ct, spawn_sleeper, [NB]),
    NB = node(Old),
    alive = peer:call(A, macula_ct, pid_status, [Old, 200]),
    _ = Stop(A, B1, NB),
    {B2, NB} = start(Config, #{name => Name}),
    Creation2 = peer:call(B2, erlang, system_info, [creation]),
    true = Creation1 =/= Creation2,
    Ms = case peer:call(A, macula_ct, ping_until, [NB, PingLimit], PingLimit + 90000) of
             {pong, T, Tries} ->
                 ct:pal("new incarnation answered after ~p ms, ~p pings", [T, Tries]),
                 T =< PingLimit orelse ct:fail({reconnect_too_late, T, PingLimit}),
                 T;
             pang ->
                 ct:fail({no_reconnect_within, PingLimit, peer:call(A, erlang, nodes, []),
                          info(Config, A), info(Config, B2)})
         end,
    [NB] = nodes_of(A),
    %% pids of the old incarnation are dead, from both sides
    noproc = peer:call(A, macula_ct, pid_status, [Old, 5000]),
    noproc = peer:call(B2, macula_ct, pid_status, [Old, 5000]),
    New = peer:call(A, macula_ct, spawn_sleeper, [NB]),
    true = New =/= Old,
    alive = peer:call(A, macula_ct, pid_status, [New, 200]),
    ct:comment("reconnected after ~p ms", [Ms]).

info(Config, Peer) ->
    case proto(Config) of
        macula -> macula_ct:node_info(Peer);
        inet_tcp -> undefined
    end.

no_ghost_connection(Config) ->
    {A, NA, B, NB} = pair(Config),
    check_connections(Config, A, B, 1),
    true = peer:call(A, net_kernel, disconnect, [NB]),
    no_nodes(A, B),
    check_connections(Config, A, B, 0),
    %% and again, from the other side
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    [NB] = nodes_of(A),
    [NA] = nodes_of(B),
    check_connections(Config, A, B, 1),
    true = peer:call(B, net_kernel, disconnect, [NA]),
    no_nodes(A, B),
    check_connections(Config, A, B, 0),
    %% nothing reconnects by itself
    timer:sleep(1000),
    [] = nodes_of(A),
    [] = nodes_of(B).

no_nodes(A, B) ->
    macula_ct:poll(fun() -> {nodes_of(A), nodes_of(B)} =:= {[], []} end, 2000,
                   fun() -> {ghost_connection, nodes_of(A), nodes_of(B)} end).

check_connections(Config, A, B, N) ->
    case proto(Config) of
        macula ->
            macula_ct:wait_connections(A, N, 5000),
            macula_ct:wait_connections(B, N, 5000);
        inet_tcp ->
            ok
    end.
