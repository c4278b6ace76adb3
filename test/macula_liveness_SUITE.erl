%% @doc How fast a node notices that a peer is gone, against inet_tcp_dist
%% in the same run: the "exit table". Each case runs once with macula and
%% once with inet_tcp, asserts macula's target and records both figures;
%% end_per_suite prints the table into the CT log and writes it to
%% exit_table.md in the suite's priv_dir.
%%
%% | peer ...                        | macula target                      |
%% |---------------------------------|------------------------------------|
%% | erlang:halt()                   | nodedown within 100 ms             |
%% | kill -9 (of either end)         | nodedown within 2.5 s              |
%% | init:stop()                     | nodedown within 1.5 s              |
%% | kill -9, restarted, same port,  | nodedown within 3 s of the restart |
%% |   ICMP dropped (netns, nft)     |   (a stateless reset)              |
%% | SIGSTOP for 5 s                 | no nodedown (net_ticktime 10)      |
%% | link cut silently (netns, nft)  | nodedown at the tick timeout, not  |
%% |                                 |   before (net_ticktime 4)          |
%%
%% The netns cases build two namespaces joined by a veth pair (addresses
%% 10.199.7.0/24, only inside them) and remove them at the end; they need
%% root, and fail (never skip) without it.
-module(macula_liveness_SUITE).

-include_lib("common_test/include/ct.hrl").

-import(macula_netns, [need_netns/1, ip/0, cmd/2, must/2, netns_exists/1,
                       kill_all_in/1, start_epmd/1]).

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([halt/1, kill9/1, kill9_dialer/1, init_stop/1, restart_same_port/1, sigstop/1,
         silent_cut/1]).
%% run on the peers
-export([stamp_and/2]).

-define(NS1, "mcl_l1").
-define(NS2, "mcl_l2").
-define(IP1, "10.199.7.1").
-define(IP2, "10.199.7.2").
-define(PROTOS, [macula, inet_tcp]).

suite() ->
    [{timetrap, {minutes, 5}}].

all() ->
    [halt, kill9, kill9_dialer, init_stop, restart_same_port, sigstop, silent_cut].

%%% ------------------------------------------------------------------
%%% Set-up

init_per_suite(Config0) ->
    Config = macula_ct:init_suite(Config0, 14701),
    try setup_namespaces() of
        ok -> Config
    catch
        Class:Reason ->
            ct:pal("network namespace set-up failed: ~p:~p", [Class, Reason]),
            catch remove_namespaces(),
            [{netns_error, {Class, Reason}} | Config]
    end.

end_per_suite(Config) ->
    macula_ct:end_suite(Config),
    remove_namespaces(),
    report(Config),
    [] = [NS || NS <- [?NS1, ?NS2], netns_exists(NS)],
    ok.

init_per_testcase(_Case, Config) ->
    Config.

end_per_testcase(_Case, Config) ->
    macula_ct:stop_all(),
    case proplists:get_value(netns_error, Config) of
        undefined ->
            undo_nft(?NS2),
            kill_all_in(?NS1),
            kill_all_in(?NS2);
        _ ->
            ok
    end,
    ok.

setup_namespaces() ->
    remove_namespaces(),
    [must(ip(), ["netns", "add", NS]) || NS <- [?NS1, ?NS2]],
    [must(ip(), ["-n", NS, "link", "set", "lo", "up"]) || NS <- [?NS1, ?NS2]],
    must(ip(), ["link", "add", "mclL0", "netns", ?NS1, "type", "veth",
                "peer", "name", "mclL1", "netns", ?NS2]),
    must(ip(), ["-n", ?NS1, "addr", "add", ?IP1 ++ "/24", "dev", "mclL0"]),
    must(ip(), ["-n", ?NS2, "addr", "add", ?IP2 ++ "/24", "dev", "mclL1"]),
    must(ip(), ["-n", ?NS1, "link", "set", "mclL0", "up"]),
    must(ip(), ["-n", ?NS2, "link", "set", "mclL1", "up"]),
    ok.

remove_namespaces() ->
    [begin kill_all_in(NS), _ = cmd(ip(), ["netns", "del", NS]) end
     || NS <- [?NS1, ?NS2], netns_exists(NS)],
    ok.

%%% ------------------------------------------------------------------
%%% Cases

%% The peer calls erlang:halt(): its VM closes its connections on the way
%% out (macula: CONNECTION_CLOSE from an atexit handler).
halt(Config) ->
    exit_case(Config, halt, 100, fun(B, _NB) -> stamped_exit(Config, B, halt) end).

%% kill -9: the VM says nothing; its host answers the next packet with
%% ICMP port unreachable (macula: the keep-alive PING, every second).
kill9(Config) ->
    exit_case(Config, kill9, 2500,
              fun(B, _NB) ->
                      T0 = now_ms(),
                      _ = macula_ct:kill9(B),
                      T0
              end).

%% The same, but the dead peer is the node that dialled: the survivor
%% accepted the connection, and an ICMP error alone does not close such a
%% connection (its client may have moved behind a NAT); a keep-alive
%% period and a half of silence after the ICMP's cause does.
kill9_dialer(Config) ->
    exit_case(Config, kill9_dialer, 2500,
              fun(B, _NB) ->
                      T0 = now_ms(),
                      _ = macula_ct:kill9(B),
                      T0
              end, dialer).

init_stop(Config) ->
    exit_case(Config, init_stop, 1500, fun(B, _NB) -> stamped_exit(Config, B, stop) end).

%% Both carriers run before macula's figure is checked, so the table has
%% both even when the target is missed.
exit_case(Config, Case, Limit, Stop) ->
    exit_case(Config, Case, Limit, Stop, survivor).

%% Dialler: which node of the pair dialled the other (the survivor A, or
%% the peer B that goes away).
exit_case(Config, Case, Limit, Stop, Dialler) ->
    [Macula, _Tcp] =
        [begin
             {A, _NA, B, NB} = pair(Config, Proto, [], Dialler),
             W = peer:call(A, macula_ct, watch, [NB]),
             T0 = Stop(B, NB),
             Ms = down_ms(A, W, T0, 30000),
             record(Config, Case, Proto, Ms),
             macula_ct:stop_all(),
             Ms
         end || Proto <- ?PROTOS],
    Macula =< Limit orelse ct:fail({Case, nodedown_too_late, Macula, Limit}),
    ok.

%% The peer is killed and at once started again with the same name (for
%% macula: the same UDP port), while the connection is idle. Its host
%% drops ICMP (nft in its namespace), as many firewalls do, so only the
%% new incarnation can tell the survivor: macula answers the old
%% connection's keep-alive with a stateless reset; TCP's kernel sends a
%% FIN when the process dies. Measured from the new node's start.
restart_same_port(Config) ->
    need_netns(Config),
    drop_icmp(?NS2),
    [{Ms, Resets}, _] =
    [begin
         Name = name(Config, Proto),
         {A, _NA} = start_in(Config, Proto, ?NS1, ?IP1, #{}),
         {B1, NB} = start_in(Config, Proto, ?NS2, ?IP2, #{name => Name}),
         pong = peer:call(A, net_adm, ping, [NB], 30000),
         W = peer:call(A, macula_ct, watch, [NB]),
         timer:sleep(500),
         TKill = now_ms(),
         _ = macula_ct:kill9(B1),
         {B2, NB} = start_in(Config, Proto, ?NS2, ?IP2, #{name => Name}),
         TUp = now_ms(),
         Down = down_ms(A, W, TKill, 30000),
         Ms = Down - (TUp - TKill),
         record(Config, restart_same_port, Proto, {Down, TUp - TKill}),
         Resets = case Proto of
                      macula -> maps:get(stateless_resets, macula_ct:node_info(B2));
                      inet_tcp -> undefined
                  end,
         {pong, _, _} = peer:call(A, macula_ct, ping_until, [NB, 20000], 30000),
         macula_ct:stop_all(),
         {Ms, Resets}
     end || Proto <- ?PROTOS],
    %% The new incarnation's resets are what cut it (the kill alone could
    %% not: ICMP was dropped).
    Ms =< 3000 orelse ct:fail({nodedown_too_late_after_restart, Ms}),
    Resets >= 1 orelse ct:fail({no_stateless_reset_sent, Resets}),
    ok.

%% A frozen peer (SIGSTOP for 5 s) is alive: no nodedown, since
%% net_ticktime 10 allows 7.5-10 s of silence; afterwards it still works.
sigstop(Config) ->
    _ = [begin
         {A, _NA, B, NB} = pair(Config, Proto, ["-kernel", "net_ticktime", "10"]),
         W = peer:call(A, macula_ct, watch, [NB]),
         Pid = macula_ct:os_pid(B),
         T0 = now_ms(),
         _ = os:cmd("kill -STOP " ++ Pid),
         timer:sleep(5000),
         _ = os:cmd("kill -CONT " ++ Pid),
         Result = peer:call(A, macula_ct, wait_down, [W, 1500], 10000),
         record(Config, sigstop, Proto, case Result of
                                            up -> no_nodedown;
                                            {down, At} -> At - T0
                                        end),
         up = Result,
         pong = peer:call(A, net_adm, ping, [NB], 10000),
         up = peer:call(A, macula_ct, wait_down, [W, 0], 5000),
         macula_ct:stop_all(),
         Result
     end || Proto <- ?PROTOS],
    ok.

%% The link between the two nodes goes silent (nft drops everything in
%% B's namespace: no ICMP, no error on send): nodedown comes from the
%% tick rules only, no earlier than 3/4 of net_ticktime (4 s).
silent_cut(Config) ->
    need_netns(Config),
    Results =
    [begin
         Args = ["-kernel", "net_ticktime", "4"],
         {A, _NA} = start_in(Config, Proto, ?NS1, ?IP1, #{args => Args}),
         {_B, NB} = start_in(Config, Proto, ?NS2, ?IP2, #{args => Args}),
         pong = peer:call(A, net_adm, ping, [NB], 30000),
         W = peer:call(A, macula_ct, watch, [NB]),
         timer:sleep(500),
         T0 = now_ms(),
         drop_all(?NS2),
         Ms = down_ms(A, W, T0, 15000),
         record(Config, silent_cut, Proto, Ms),
         macula_ct:stop_all(),
         undo_nft(?NS2),
         {Proto, Ms}
     end || Proto <- ?PROTOS],
    [begin
         Ms >= 3000 orelse ct:fail({Proto, nodedown_before_tick_timeout, Ms}),
         Ms =< 7000 orelse ct:fail({Proto, nodedown_after_tick_timeout, Ms})
     end || {Proto, Ms} <- Results],
    ok.

%%% ------------------------------------------------------------------
%%% Helpers

now_ms() ->
    erlang:system_time(millisecond).

name(Config, macula) -> integer_to_list(macula_ct:next_port(Config));
name(Config, inet_tcp) -> "ct" ++ integer_to_list(macula_ct:next_port(Config)).

pair(Config, Proto, Args) ->
    pair(Config, Proto, Args, survivor).

pair(Config, Proto, Args, Dialler) ->
    {A, NA} = macula_ct:start_node(Config, #{proto => Proto, args => Args}),
    {B, NB} = macula_ct:start_node(Config, #{proto => Proto, args => Args}),
    pong = case Dialler of
               survivor -> peer:call(A, net_adm, ping, [NB], 30000);
               dialer -> peer:call(B, net_adm, ping, [NA], 30000)
           end,
    %% Let the connection settle into idleness: what is measured is a
    %% peer that goes away from a quiet connection.
    timer:sleep(500),
    {A, NA, B, NB}.

start_in(Config, Proto, NS, Ip, Opts) ->
    Proto =:= inet_tcp andalso start_epmd(NS),
    Name = maps:get(name, Opts, name(Config, Proto)),
    macula_ct:start_node(Config, Opts#{proto => Proto, netns => NS, host => Ip,
                                       name => Name}).

%% The peer notes the time, then exits by halt or init:stop; returns the
%% time it noted.
stamped_exit(Config, B, How) ->
    File = filename:join(?config(priv_dir, Config),
                         "stamp_" ++ integer_to_list(erlang:unique_integer([positive]))),
    ok = peer:cast(B, ?MODULE, stamp_and, [File, How]),
    macula_ct:poll(fun() ->
                           case file:read_file(File) of
                               {ok, <<T/binary>>} when T =/= <<>> ->
                                   {true, binary_to_integer(T)};
                               _ -> false
                           end
                   end, 10000, {no_stamp, File}).

%% On the peer.
-spec stamp_and(file:filename(), halt | stop) -> ok | no_return().
stamp_and(File, How) ->
    T = erlang:system_time(millisecond),
    ok = file:write_file(File ++ ".tmp", integer_to_binary(T)),
    ok = file:rename(File ++ ".tmp", File),
    case How of
        halt -> erlang:halt();
        stop -> init:stop()
    end.

down_ms(A, W, T0, Limit) ->
    case peer:call(A, macula_ct, wait_down, [W, Limit], Limit + 10000) of
        {down, At} -> At - T0;
        Other -> ct:fail({no_nodedown_within, Limit, Other})
    end.

%% nft rules in a namespace, from a file (nft -f): drops ICMP errors
%% leaving it, or every packet in and out.
drop_icmp(NS) ->
    nft_file(NS, "table inet mcl_liveness {\n"
                 "  chain out { type filter hook output priority 0; policy accept;\n"
                 "    icmp type destination-unreachable drop\n"
                 "    icmpv6 type destination-unreachable drop\n"
                 "  }\n"
                 "}\n").

drop_all(NS) ->
    nft_file(NS, "table inet mcl_liveness {\n"
                 "  chain in { type filter hook input priority 0; policy drop;\n"
                 "    iif lo accept\n"
                 "  }\n"
                 "  chain out { type filter hook output priority 0; policy drop;\n"
                 "    oif lo accept\n"
                 "  }\n"
                 "}\n").

undo_nft(NS) ->
    _ = cmd(ip(), ["netns", "exec", NS, "nft", "delete", "table", "inet", "mcl_liveness"]),
    ok.

nft_file(NS, Rules) ->
    File = filename:join("/tmp", "mcl_liveness_" ++ NS ++ ".nft"),
    ok = file:write_file(File, Rules),
    must(ip(), ["netns", "exec", NS, "nft", "-f", File]),
    ok = file:delete(File).

%%% ------------------------------------------------------------------
%%% Results: one term per line in priv_dir, a table at the end

results_file(Config) ->
    filename:join(?config(priv_dir, Config), "exit_table.terms").

record(Config, Case, Proto, Value) ->
    ct:pal("~p ~p: ~p", [Case, Proto, Value]),
    ok = file:write_file(results_file(Config),
                         io_lib:format("~p.~n", [{Case, Proto, Value}]), [append]).

report(Config) ->
    Results = case file:consult(results_file(Config)) of
                  {ok, Terms} -> Terms;
                  _ -> []
              end,
    Rows = [row(Case, Results) || Case <- all()],
    {ok, Host} = inet:gethostname(),
    Table = ["Exit table, ", calendar:system_time_to_rfc3339(erlang:system_time(second)),
             ", host ", Host, ", ", erlang:system_info(otp_release), "\n\n",
             "| peer | macula | inet_tcp | macula target |\n",
             "|---|---:|---:|---|\n", Rows],
    Out = filename:join(?config(priv_dir, Config), "exit_table.md"),
    ok = file:write_file(Out, Table),
    ct:pal("~ts~nwritten to ~ts", [Table, Out]),
    ok.

row(Case, Results) ->
    Get = fun(P) ->
                  case lists:keyfind(P, 2, [R || R = {C, _, _} <- Results, C =:= Case]) of
                      {_, _, V} -> cell(V);
                      false -> "-"
                  end
          end,
    io_lib:format("| ~s | ~s | ~s | ~s |~n",
                  [label(Case), Get(macula), Get(inet_tcp), target(Case)]).

cell(no_nodedown) -> "no nodedown";
cell({Down, Restart}) ->
    io_lib:format("~p ms after the kill (the restart took ~p ms): ~p ms after the restart",
                  [Down, Restart, Down - Restart]);
cell(Ms) when is_integer(Ms) -> integer_to_list(Ms) ++ " ms";
cell(Other) -> io_lib:format("~p", [Other]).

label(halt) -> "`erlang:halt()`: nodedown after";
label(kill9) -> "`kill -9`: nodedown after";
label(kill9_dialer) -> "`kill -9` of the node that dialled: nodedown after";
label(init_stop) -> "`init:stop()`: nodedown after";
label(restart_same_port) -> "`kill -9`, restarted on the same port, ICMP dropped: nodedown";
label(sigstop) -> "SIGSTOP 5 s (net_ticktime 10)";
label(silent_cut) -> "link silently cut (net_ticktime 4): nodedown after".

target(halt) -> "<= 100 ms";
target(kill9) -> "<= 2500 ms";
target(kill9_dialer) -> "<= 2500 ms";
target(init_stop) -> "<= 1500 ms";
target(restart_same_port) -> "<= 3000 ms after the restart";
target(sigstop) -> "no nodedown";
target(silent_cut) -> "3000-7000 ms (the tick)".
