%% @doc The macula carrier over real network links: each node runs in its
%% own Linux network namespace (`ip netns exec NS erl ...`, driven over
%% standard_io with OTP's `peer`), and the nodes talk over veth pairs with
%% an MTU of 1500, so QUIC packetization, GSO and GRO meet a real
%% 1500-byte path instead of the 64 KB loopback.
%%
%% The suite creates and removes its own namespaces and links; every
%% address it uses (10.199.1.0/24 and 10.199.2.0/24) exists only inside
%% them, so no test traffic leaves the namespaces.
%%
%%   mcl_t1 (node A)                       mcl_t2 (node B)
%%     mclA0 10.199.1.1 <-- veth, direct --> mclB0 10.199.1.2
%%     mclA1 10.199.2.1 <-> mclM1  mcl_t3  mclM2 <-> mclB1 10.199.2.2
%%
%% The second path goes through a middle namespace, mcl_t3, where delay,
%% loss and partitions are applied: with `tc qdisc ... netem` on mclA1 and
%% mclB1 when the kernel has sch_netem, otherwise (this project's machines:
%% CONFIG_NET_SCH_NETEM is not set) by mcl_netem, a small user-space
%% bridge built from macula_netns_SUITE_data/mcl_netem.c that forwards
%% every frame between mclM1 and mclM2 with the delay and loss asked for.
%% mclA1 and mclB1 have gso_max_segs 1, so the bridge sees, and loses,
%% single 1500-byte packets (netem, which sits before the segmentation,
%% would drop whole GSO batches).
%%
%% The suite needs root (ip netns). Without it every case FAILS (it does
%% not skip): CI runs as root and must run these.
-module(macula_netns_SUITE).

-include_lib("common_test/include/ct.hrl").

-import(macula_netns, [need_netns/1, ip/0, cmd/2, must/2, netns_exists/1, kill_all_in/1, pids_in/1, start_epmd/1]).

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([mtu1500_basic/1, inet_tcp_basic/1, inet_tls_basic/1, delay_loss/1,
         hol_under_bulk/1, partition_nodedown/1, partition_linkdown/1]).
%% run on the nodes
-export([whereami/0, stream/3, stream_sink/4, ordered/2,
         ordered_sink/2, small_rtt/2, hol/3, hol_sink/0, hol_echo/0]).

-define(NS1, "mcl_t1").
-define(NS2, "mcl_t2").
-define(NS3, "mcl_t3").
-define(NAMESPACES, [?NS1, ?NS2, ?NS3]).
-define(PORT_A, "14001").
-define(PORT_B, "14002").
-define(MB, (1024 * 1024)).
-define(BIG, (64 * ?MB)).
-define(BIG_LOSSY, (16 * ?MB)).
-define(STREAM_N, 300).          % one-way stream: 300 messages of 1 MB
-define(ORDER_N, 2000).
-define(MIN_STREAM_RATE, 20).     % MB/s
-define(BRIDGE, macula_netns_bridge).

suite() ->
    [{timetrap, {minutes, 4}}].

all() ->
    [mtu1500_basic, inet_tcp_basic, inet_tls_basic, delay_loss,
     hol_under_bulk, partition_nodedown, partition_linkdown].

%%% ------------------------------------------------------------------
%%% Set-up

init_per_suite(Config0) ->
    Config = macula_ct:init_suite(Config0, 14001),
    try setup(Config) of
        Extra -> Extra ++ Config
    catch
        Class:Reason:Stack ->
            %% No skip: each case fails with this reason (need_netns/1).
            ct:pal("network namespace set-up failed: ~p:~p~n~p",
                   [Class, Reason, Stack]),
            catch remove_namespaces(),
            [{netns_error, {Class, Reason}} | Config]
    end.

end_per_suite(Config) ->
    macula_ct:end_suite(Config),
    bridge_stop(),
    remove_namespaces(),
    Left = [NS || NS <- ?NAMESPACES, netns_exists(NS)],
    report(Config),
    [] = Left,
    ok.

init_per_testcase(_Case, Config) ->
    Config.

end_per_testcase(_Case, Config) ->
    macula_ct:stop_all(),
    case proplists:get_value(netns_error, Config) of
        undefined ->
            catch impair(Config, 0, 0),
            _ = cmd(ip(), ["-n", ?NS1, "link", "set", "mclA0", "up"]),
            _ = cmd(ip(), ["-n", ?NS2, "link", "set", "mclB0", "up"]),
            %% epmd daemons and anything else left in the node namespaces
            kill_all_in(?NS1),
            kill_all_in(?NS2);
        _ ->
            ok
    end,
    ok.

setup(Config) ->
    remove_namespaces(),
    [must(ip(), ["netns", "add", NS]) || NS <- ?NAMESPACES],
    [must(ip(), ["-n", NS, "link", "set", "lo", "up"]) || NS <- ?NAMESPACES],
    %% the direct pair
    must(ip(), ["link", "add", "mclA0", "netns", ?NS1, "type", "veth",
                "peer", "name", "mclB0", "netns", ?NS2]),
    %% the impaired path, through mcl_t3
    must(ip(), ["link", "add", "mclA1", "netns", ?NS1, "type", "veth",
                "peer", "name", "mclM1", "netns", ?NS3]),
    must(ip(), ["link", "add", "mclB1", "netns", ?NS2, "type", "veth",
                "peer", "name", "mclM2", "netns", ?NS3]),
    must(ip(), ["-n", ?NS1, "addr", "add", "10.199.1.1/24", "dev", "mclA0"]),
    must(ip(), ["-n", ?NS2, "addr", "add", "10.199.1.2/24", "dev", "mclB0"]),
    must(ip(), ["-n", ?NS1, "addr", "add", "10.199.2.1/24", "dev", "mclA1"]),
    must(ip(), ["-n", ?NS2, "addr", "add", "10.199.2.2/24", "dev", "mclB1"]),
    [must(ip(), ["-n", NS, "link", "set", Dev, "mtu", "1500", "up"])
     || {NS, Dev} <- [{?NS1, "mclA0"}, {?NS2, "mclB0"}, {?NS1, "mclA1"},
                      {?NS2, "mclB1"}, {?NS3, "mclM1"}, {?NS3, "mclM2"}]],
    %% On the impaired path every frame is one wire packet (the kernel
    %% segments GSO batches before the veth), so "loss 1 %" drops 1 % of
    %% 1500-byte packets rather than 1 % of 64 KB GSO batches.
    [must(ip(), ["-n", NS, "link", "set", Dev, "gso_max_segs", "1"])
     || {NS, Dev} <- [{?NS1, "mclA1"}, {?NS2, "mclB1"}]],
    %% nothing but the two bridged ports in mcl_t3: no IPv6 chatter there
    [_ = cmd(ip(), ["netns", "exec", ?NS3, "sysctl", "-qw",
                    "net.ipv6.conf." ++ Dev ++ ".disable_ipv6=1"])
     || Dev <- ["mclM1", "mclM2"]],
    Backend = case cmd(ip(), ["netns", "exec", ?NS1, "tc", "qdisc", "add",
                              "dev", "mclA1", "root", "netem", "delay", "1ms"]) of
                  {0, _} ->
                      must(ip(), ["netns", "exec", ?NS1, "tc", "qdisc", "del",
                                  "dev", "mclA1", "root"]),
                      netem;
                  {_, Why} ->
                      ct:pal("tc netem not available (~ts): delay and loss "
                             "come from the mcl_netem bridge", [string:trim(Why)]),
                      mcl_netem
              end,
    Exe = build_bridge(Config),
    bridge_start(Exe),
    ct:pal("namespaces ~p ready, impairment by ~p", [?NAMESPACES, Backend]),
    [{impair_backend, Backend}, {tls_optfile, tls_files(Config)}].

%% A throwaway CA and one node certificate (ECDSA P-256) for inet_tls_dist,
%% valid for the suite's addresses (inet_tls_dist checks the host part of
%% the node name, as a DNS name too). Returns the ssl_dist_optfile.
tls_files(Config) ->
    Dir = filename:join(?config(priv_dir, Config), "tls"),
    F = fun(Name) -> filename:join(Dir, Name) end,
    Ips = ["10.199.1.1", "10.199.1.2", "10.199.2.1", "10.199.2.2"],
    ok = macula_netns:test_ca(Dir, "macula netns"),
    Cert = macula_netns:test_cert(Dir, "node", [[K, ":", Ip] || Ip <- Ips, K <- ["IP", "DNS"]]),
    Opts = [{certfile, Cert}, {keyfile, F("node.key")},
            {cacertfile, F("ca.pem")}, {verify, verify_peer},
            {versions, ['tlsv1.3']}],
    OptFile = F("ssl_dist.conf"),
    ok = file:write_file(OptFile, io_lib:format("~p.~n", [[{server, [{fail_if_no_peer_cert, true} | Opts]},
                                                          {client, Opts}]])),
    OptFile.

build_bridge(Config) ->
    Src = filename:join(?config(data_dir, Config), "mcl_netem.c"),
    Exe = filename:join(?config(priv_dir, Config), "mcl_netem"),
    CC = case os:find_executable("cc") of
             false -> "gcc";
             C -> C
         end,
    must(CC, ["-O2", "-Wall", "-o", Exe, Src]),
    Exe.

%% Kills every process in our namespaces, then deletes them (leftovers of
%% an earlier run included).
remove_namespaces() ->
    [begin
         kill_all_in(NS),
         _ = cmd(ip(), ["netns", "del", NS])
     end || NS <- ?NAMESPACES, netns_exists(NS)],
    %% veth ends never live in the root namespace, but a half-finished
    %% earlier set-up could have left one
    [_ = cmd(ip(), ["link", "del", Dev])
     || Dev <- ["mclA0", "mclA1", "mclB1", "mclM1", "mclM2"],
        element(1, cmd(ip(), ["link", "show", Dev])) =:= 0],
    ok.

%%% ------------------------------------------------------------------
%%% Impairment: netem, or the mcl_netem bridge in mcl_t3

%% One-way delay (ms) and loss (percent) on each direction of the
%% impaired path; impair(Config, 0, 0) clears both.
impair(Config, Delay, Loss) ->
    case ?config(impair_backend, Config) of
        netem ->
            [case {Delay, Loss} of
                 {0, 0} ->
                     _ = cmd(ip(), ["netns", "exec", NS, "tc", "qdisc", "del",
                                    "dev", Dev, "root"]);
                 _ ->
                     must(ip(), ["netns", "exec", NS, "tc", "qdisc", "replace",
                                 "dev", Dev, "root", "netem",
                                 "delay", integer_to_list(Delay) ++ "ms",
                                 "loss", integer_to_list(Loss) ++ "%"])
             end || {NS, Dev} <- [{?NS1, "mclA1"}, {?NS2, "mclB1"}]],
            ok;
        mcl_netem ->
            <<"ok">> = bridge_cmd("delay " ++ integer_to_list(Delay)),
            <<"ok">> = bridge_cmd("loss " ++ integer_to_list(Loss)),
            ok
    end.

%% What the mcl_netem bridge saw since the last bridge_zero/0: frames
%% forwarded, dropped as loss, dropped for a full queue; IPv4 fragments;
%% the longest frame.
bridge_stats() ->
    Line = bridge_cmd("stats"),
    ["stats", "fwd", Fwd, "lost", Lost, "overflow", Over, "queued", _,
     "frags", Frags, "maxframe", Max] = string:lexemes(binary_to_list(Line), " "),
    #{fwd => list_to_integer(Fwd), lost => list_to_integer(Lost),
      overflow => list_to_integer(Over), frags => list_to_integer(Frags),
      max_frame => list_to_integer(Max)}.

bridge_zero() ->
    <<"ok">> = bridge_cmd("zero"),
    ok.

bridge_start(Exe) ->
    Parent = self(),
    Pid = spawn(fun() ->
                        Port = open_port({spawn_executable, ip()},
                                         [{args, ["netns", "exec", ?NS3, Exe,
                                                  "mclM1", "mclM2"]},
                                          {line, 1024}, binary, use_stdio,
                                          stderr_to_stdout, exit_status]),
                        bridge_await(Port, Parent)
                end),
    <<"ready">> = bridge_reply(Pid, 10000),
    register(?BRIDGE, Pid),
    ok.

bridge_stop() ->
    case whereis(?BRIDGE) of
        undefined -> ok;
        Pid -> Pid ! stop, ok
    end.

bridge_cmd(Line) ->
    Pid = whereis(?BRIDGE),
    Pid ! {cmd, self(), Line},
    bridge_reply(Pid, 10000).

bridge_reply(Pid, Timeout) ->
    receive {Pid, reply, Reply} -> Reply
    after Timeout -> error({no_reply_from_mcl_netem, Pid})
    end.

bridge_loop(Port) ->
    receive
        {cmd, From, Line} ->
            port_command(Port, [Line, $\n]),
            bridge_await(Port, From);
        {Port, {data, {_, Text}}} ->
            ct:pal("mcl_netem: ~ts", [Text]),
            bridge_loop(Port);
        {Port, {exit_status, Status}} ->
            ct:pal("mcl_netem exited with status ~p", [Status]),
            exit({mcl_netem_exited, Status});
        stop ->
            catch port_close(Port),
            ok
    end.

bridge_await(Port, From) ->
    receive
        {Port, {data, {eol, Reply}}} ->
            From ! {self(), reply, Reply},
            bridge_loop(Port);
        {Port, {exit_status, Status}} ->
            From ! {self(), reply, {exited, Status}},
            exit({mcl_netem_exited, Status})
    after 10000 ->
            From ! {self(), reply, no_reply},
            bridge_loop(Port)
    end.

%%% ------------------------------------------------------------------
%%% Nodes

%% Node A in mcl_t1 and node B in mcl_t2, over Path (direct: the plain veth
%% pair; impaired: through mcl_t3), connected. Proto: macula | inet_tcp.
pair(Config, Proto, Path, Args) ->
    {IpA, IpB} = ips(Path),
    {NameA, NameB} = case Proto of
                         macula -> {?PORT_A, ?PORT_B};
                         _ -> {"a", "b"}
                     end,
    Proto =:= macula orelse [start_epmd(NS) || NS <- [?NS1, ?NS2]],
    Opts = #{proto => Proto, args => Args,
             tls_optfile => proplists:get_value(tls_optfile, Config)},
    {A, NA} = macula_ct:start_node(Config, Opts#{name => NameA, host => IpA,
                                                 netns => ?NS1}),
    {B, NB} = macula_ct:start_node(Config, Opts#{name => NameB, host => IpB,
                                                 netns => ?NS2}),
    where(A, NA, IpA),
    where(B, NB, IpB),
    T0 = erlang:monotonic_time(millisecond),
    pong = peer:call(A, net_adm, ping, [NB], 60000),
    ct:pal("~p -> ~p connected in ~p ms",
           [NA, NB, erlang:monotonic_time(millisecond) - T0]),
    {A, NA, B, NB}.

ips(direct) -> {"10.199.1.1", "10.199.1.2"};
ips(impaired) -> {"10.199.2.1", "10.199.2.2"}.

%% The node runs inside its namespace: the only IPv4 addresses it sees are
%% loopback and the suite's 10.199.x ones, Ip among them.
where(Peer, Node, Ip) ->
    {Node, Addrs} = peer:call(Peer, ?MODULE, whereami, []),
    true = lists:member(Ip, Addrs),
    [] = [A || A <- Addrs,
               not lists:prefix("127.", A), not lists:prefix("10.199.", A)],
    ok.

%% ping both ways, rpc both ways.
ping_rpc(A, NA, B, NB) ->
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    pong = peer:call(B, net_adm, ping, [NA], 30000),
    [NB] = peer:call(A, erlang, nodes, []),
    [NA] = peer:call(B, erlang, nodes, []),
    {NB, _} = peer:call(A, rpc, call, [NB, ?MODULE, whereami, []], 30000),
    {NA, _} = peer:call(B, rpc, call, [NA, ?MODULE, whereami, []], 30000),
    42 = peer:call(A, rpc, call, [NB, erlang, '*', [6, 7]], 30000),
    ok.

%% Round trip of Size random bytes, compared byte for byte on both sides.
roundtrip(A, NB, Size) ->
    case peer:call(A, macula_ct, big_roundtrip, [NB, Size, 170000], 180000) of
        {ok, Ms} -> Ms;
        Other -> ct:fail({roundtrip_failed, Size, Other})
    end.

%% One-way stream of ?STREAM_N messages of 1 MB, A -> B, checked in order
%% on B. Returns MB/s, which must be at least ?MIN_STREAM_RATE (a floor
%% far below what either carrier does here, to catch a collapse only).
stream_rate(A, NB) ->
    case peer:call(A, ?MODULE, stream, [NB, ?STREAM_N, ?MB], 180000) of
        {ok, Ms, Bytes} ->
            Rate = Bytes / ?MB / (max(Ms, 1) / 1000),
            Rate >= ?MIN_STREAM_RATE orelse
                ct:fail({stream_too_slow, Rate, min, ?MIN_STREAM_RATE}),
            Rate;
        Other ->
            ct:fail({stream_failed, Other})
    end.

%% Bytes sent and received on a namespace's interface.
veth_bytes(NS, Dev) ->
    {stat(NS, Dev, "tx_bytes"), stat(NS, Dev, "rx_bytes")}.

veth_packets(NS, Dev) ->
    {stat(NS, Dev, "tx_packets"), stat(NS, Dev, "rx_packets")}.

stat(NS, Dev, Name) ->
    {0, Out} = cmd(ip(), ["netns", "exec", NS, "cat",
                          "/sys/class/net/" ++ Dev ++ "/statistics/" ++ Name]),
    list_to_integer(string:trim(Out)).

mtu(NS, Dev) ->
    {0, Out} = cmd(ip(), ["netns", "exec", NS, "cat",
                          "/sys/class/net/" ++ Dev ++ "/mtu"]),
    list_to_integer(string:trim(Out)).

%%% ------------------------------------------------------------------
%%% Cases

%% macula between two namespaces over one veth pair, MTU 1500: ping, rpc,
%% a 64 MB binary round trip (byte-exact) and a one-way stream of 300
%% 1 MB messages; the bytes really cross the veth.
mtu1500_basic(Config) ->
    need_netns(Config),
    1500 = mtu(?NS1, "mclA0"),
    1500 = mtu(?NS2, "mclB0"),
    {A, NA, B, NB} = pair(Config, macula, direct, []),
    ping_rpc(A, NA, B, NB),
    {Tx0, Rx0} = veth_bytes(?NS1, "mclA0"),
    {TxP0, RxP0} = veth_packets(?NS1, "mclA0"),
    Ms = roundtrip(A, NB, ?BIG),
    {Tx1, Rx1} = veth_bytes(?NS1, "mclA0"),
    {TxP1, RxP1} = veth_packets(?NS1, "mclA0"),
    %% a veth passes GSO batches whole: more than 1500 bytes per skb on
    %% average means the sender used UDP GSO
    ct:pal("veth mclA0 during the round trip: ~p MB out in ~p skbs "
           "(~p bytes each), ~p MB in in ~p skbs (~p bytes each)",
           [(Tx1 - Tx0) div ?MB, TxP1 - TxP0, (Tx1 - Tx0) div max(1, TxP1 - TxP0),
            (Rx1 - Rx0) div ?MB, RxP1 - RxP0, (Rx1 - Rx0) div max(1, RxP1 - RxP0)]),
    true = Tx1 - Tx0 >= ?BIG,
    true = Rx1 - Rx0 >= ?BIG,
    Rate = stream_rate(A, NB),
    Rtt = rtt_p50(A, NB),
    [NB] = peer:call(A, erlang, nodes, []),
    Info = peer:call(A, macula, info, []),
    ct:pal("macula over veth MTU 1500: 64 MB round trip ~p ms; "
           "one-way stream of ~p x 1 MB: ~.1f MB/s; 64 B round trip p50 ~p us; A: ~p",
           [Ms, ?STREAM_N, Rate, Rtt, Info]),
    record(Config, {macula, roundtrip_64mb_ms, Ms}),
    record(Config, {macula, stream_mb_per_s, Rate}),
    record(Config, {macula, rtt_p50_us, Rtt}),
    ct:comment("64 MB round trip ~p ms, stream ~.1f MB/s, RTT p50 ~p us", [Ms, Rate, Rtt]),
    ok.

%% The same over inet_tcp_dist, with an epmd inside each namespace, for
%% comparison.
inet_tcp_basic(Config) ->
    baseline(Config, inet_tcp).

%% And over inet_tls_dist (TLS 1.3, verify_peer).
inet_tls_basic(Config) ->
    baseline(Config, inet_tls).

baseline(Config, Proto) ->
    need_netns(Config),
    {A, NA, B, NB} = pair(Config, Proto, direct, []),
    ping_rpc(A, NA, B, NB),
    {Tx0, _} = veth_bytes(?NS1, "mclA0"),
    Ms = roundtrip(A, NB, ?BIG),
    {Tx1, _} = veth_bytes(?NS1, "mclA0"),
    true = Tx1 - Tx0 >= ?BIG,
    Rate = stream_rate(A, NB),
    Rtt = rtt_p50(A, NB),
    [NB] = peer:call(A, erlang, nodes, []),
    ct:pal("~p over veth MTU 1500: 64 MB round trip ~p ms; one-way stream "
           "of ~p x 1 MB: ~.1f MB/s; 64 B round trip p50 ~p us",
           [Proto, Ms, ?STREAM_N, Rate, Rtt]),
    record(Config, {Proto, roundtrip_64mb_ms, Ms}),
    record(Config, {Proto, stream_mb_per_s, Rate}),
    record(Config, {Proto, rtt_p50_us, Rtt}),
    ct:comment("64 MB round trip ~p ms, stream ~.1f MB/s, RTT p50 ~p us",
               [Ms, Rate, Rtt]),
    ok.

%% Median round trip of a 64-byte message, microseconds.
rtt_p50(A, NB) ->
    Rtts = peer:call(A, ?MODULE, small_rtt, [NB, 2000], 60000),
    percentile(Rtts, 50).

percentile(Values, P) ->
    Sorted = lists:sort(Values),
    lists:nth(max(1, min(length(Sorted), ceil(length(Sorted) * P / 100))), Sorted).

%% 20 ms each way and 1 % loss each way (from the start, so the handshake
%% meets them too): ping, rpc, a 16 MB round trip byte-exact, and 2000
%% small messages that arrive complete and in order.
delay_loss(Config) ->
    need_netns(Config),
    impair(Config, 20, 1),
    Backend = ?config(impair_backend, Config),
    Backend =:= mcl_netem andalso bridge_zero(),
    {A, NA, B, NB} = pair(Config, macula, impaired, []),
    ping_rpc(A, NA, B, NB),
    %% the delay is really there: an rpc takes one round trip, >= 40 ms
    {Us, {NB, _}} = peer:call(A, timer, tc, [rpc, call, [NB, ?MODULE, whereami, []]],
                              30000),
    ct:pal("rpc round trip ~p ms", [Us div 1000]),
    true = Us >= 40000,
    Ms = roundtrip(A, NB, ?BIG_LOSSY),
    ok = peer:call(A, ?MODULE, ordered, [NB, ?ORDER_N], 120000),
    [NB] = peer:call(A, erlang, nodes, []),
    [NA] = peer:call(B, erlang, nodes, []),
    Stats = case Backend of
                mcl_netem ->
                    S = #{fwd := Fwd, lost := Lost, frags := Frags,
                          max_frame := MaxFrame} = bridge_stats(),
                    %% the loss was really applied, about 1 %
                    true = Lost > 0,
                    true = Lost * 100 < Fwd * 3,
                    %% wire packets fit the 1500-byte MTU (the frame
                    %% adds a 14-byte Ethernet header) without IP
                    %% fragmentation
                    0 = Frags,
                    true = MaxFrame =< 1514,
                    S;
                netem ->
                    netem
            end,
    ct:pal("delay 20 ms + loss 1 % each way: 16 MB round trip ~p ms, ~p "
           "ordered messages ok; impairment ~p", [Ms, ?ORDER_N, Stats]),
    record(Config, {macula, delay20_loss1_roundtrip_16mb_ms, Ms}),
    ct:comment("16 MB round trip ~p ms under 20 ms + 1 %", [Ms]),
    ok.

%% Head-of-line blocking: over the impaired path (20 ms + 1 % loss each
%% way) one process streams 8 MB messages (two in flight, each
%% acknowledged) while another measures 64-byte round trips. With one TCP
%% stream every small message waits behind the bulk bytes queued before it
%% and behind every retransmission; macula puts the two senders on
%% different QUIC streams. The test asserts macula's p50 and p99 are well
%% below inet_tcp_dist's (the target, p99 at most a third, is for `make
%% bench` on a quiet machine).
hol_under_bulk(Config) ->
    need_netns(Config),
    Secs = list_to_integer(os:getenv("MACULA_HOL_SECONDS", "30")),
    impair(Config, 20, 1),
    Protos = [list_to_atom(P) || P <- string:lexemes(os:getenv("MACULA_HOL_PROTOS", "macula inet_tcp inet_tls"), " ")],
    Results = [{Proto, hol_run(Config, Proto, Secs)} || Proto <- Protos],
    [begin
         record(Config, {Proto, hol_rtt_p50_ms, P50}),
         record(Config, {Proto, hol_rtt_p99_ms, P99}),
         record(Config, {Proto, hol_bulk_mb_per_s, Bulk})
     end || {Proto, #{p50 := P50, p99 := P99, bulk := Bulk}} <- Results],
    #{p50 := Mac50, p99 := Mac99} = proplists:get_value(macula, Results),
    #{p50 := Tcp50, p99 := Tcp99} = proplists:get_value(inet_tcp, Results),
    ct:comment("64 B RTT p50/p99 under 8 MB bulk, 20 ms + 1 %: macula ~.1f/~.1f ms, "
               "inet_tcp ~.1f/~.1f ms", [Mac50, Mac99, Tcp50, Tcp99]),
    %% Bounds with room for a loaded machine (measured since flushes are
    %% bounded by ngtcp2's send quantum: p50 0.31-0.38x, p99 0.18-0.40x,
    %% idle or not; inet_tcp's p99 alone moves between 258 and 525 ms);
    %% with one data stream macula's p50 is above inet_tcp's.
    Mac50 =< 0.5 * Tcp50 orelse ct:fail({head_of_line_blocking, p50_ms, Mac50, inet_tcp, Tcp50}),
    Mac99 =< 0.6 * Tcp99 orelse ct:fail({head_of_line_blocking, p99_ms, Mac99, inet_tcp, Tcp99}),
    ok.

hol_run(Config, Proto, Secs) ->
    {A, _NA, _B, NB} = pair(Config, Proto, impaired, []),
    Window = list_to_integer(os:getenv("MACULA_HOL_WINDOW", "2")),
    {ok, Rtts, BulkBytes} = peer:call(A, ?MODULE, hol, [NB, Secs, Window],
                                      (Secs + 120) * 1000),
    macula_ct:stop_all(),
    Proto =:= macula orelse [kill_all_in(NS) || NS <- [?NS1, ?NS2]],
    Ms = [U / 1000 || U <- Rtts],
    %% MACULA_HOL_DUMP=Prefix: every round trip (ms), one a line, in
    %% Prefix-Proto, for looking at the tail.
    case os:getenv("MACULA_HOL_DUMP") of
        false -> ok;
        Dump -> file:write_file(Dump ++ "-" ++ atom_to_list(Proto),
                                [io_lib:format("~.3f~n", [M]) || M <- lists:reverse(Ms)])
    end,
    R = #{p50 => percentile(Ms, 50), p90 => percentile(Ms, 90),
          p95 => percentile(Ms, 95), p99 => percentile(Ms, 99),
          max => lists:max(Ms), n => length(Ms),
          bulk => BulkBytes / ?MB / Secs},
    ct:pal("~p: 64 B round trips under an 8 MB bulk stream: ~p", [Proto, R]),
    R.

%% net_ticktime 4; then every packet is dropped (loss 100 %, the links
%% stay up): nodedown on both sides within 8 s. Restored: ping pong again.
partition_nodedown(Config) ->
    need_netns(Config),
    partition(Config, impaired,
              fun() -> impair(Config, 0, 100) end,
              fun() -> impair(Config, 0, 0) end).

%% The same, with the direct veth set down (sends fail with ENETUNREACH
%% instead of vanishing), then up again.
partition_linkdown(Config) ->
    need_netns(Config),
    partition(Config, direct,
              fun() -> must(ip(), ["-n", ?NS1, "link", "set", "mclA0", "down"]) end,
              fun() -> must(ip(), ["-n", ?NS1, "link", "set", "mclA0", "up"]) end).

partition(Config, Path, Cut, Restore) ->
    {A, NA, B, NB} = pair(Config, macula, Path, ["-kernel", "net_ticktime", "4"]),
    ping_rpc(A, NA, B, NB),
    WA = peer:call(A, macula_ct, watch, [NB]),
    WB = peer:call(B, macula_ct, watch, [NA]),
    T0 = erlang:system_time(millisecond),
    Cut(),
    DownA = down_within(A, WA, T0, 8000),
    DownB = down_within(B, WB, T0, 8000),
    [] = peer:call(A, erlang, nodes, []),
    [] = peer:call(B, erlang, nodes, []),
    Restore(),
    T1 = erlang:monotonic_time(millisecond),
    Pong = peer:call(A, macula_ct, ping_until, [NB, 30000], 40000),
    ct:pal("after restore: ~p (~p ms)", [Pong, erlang:monotonic_time(millisecond) - T1]),
    {pong, _, _} = Pong,
    ping_rpc(A, NA, B, NB),
    ct:comment("nodedown after ~p ms (A) / ~p ms (B); ~p after restore",
               [DownA, DownB, Pong]),
    ok.

down_within(Peer, W, T0, Limit) ->
    case peer:call(Peer, macula_ct, wait_down, [W, Limit + 2000], Limit + 10000) of
        {down, At} ->
            Ms = At - T0,
            ct:pal("~p: nodedown after ~p ms (limit ~p ms)",
                   [node_of(Peer), Ms, Limit]),
            Ms =< Limit orelse ct:fail({nodedown_too_late, Ms, Limit}),
            Ms;
        Other ->
            ct:fail({no_nodedown_within, Limit + 2000, Other})
    end.

node_of(Peer) ->
    catch peer:call(Peer, erlang, node, [], 5000).

%%% ------------------------------------------------------------------
%%% Results: kept in priv_dir, summed up at the end of the suite

record(Config, Term) ->
    ok = file:write_file(results_file(Config), io_lib:format("~p.~n", [Term]),
                         [append]).

results_file(Config) ->
    filename:join(?config(priv_dir, Config), "netns_results.txt").

%% Prints the figures as a markdown table, also written to the file named
%% by MACULA_NETNS_REPORT when set (`make bench` includes it).
report(Config) ->
    case file:consult(results_file(Config)) of
        {ok, Terms} ->
            Table = report_table(Terms),
            ct:pal("~ts", [Table]),
            case os:getenv("MACULA_NETNS_REPORT") of
                false -> ok;
                File -> file:write_file(File, Table)
            end;
        _ ->
            ok
    end.

report_table(Terms) ->
    Get = fun(P, K) ->
                  case [V || {P1, K1, V} <- Terms, P1 =:= P, K1 =:= K] of
                      [V | _] -> V;
                      [] -> '-'
                  end
          end,
    Ratio = fun(K, Base) ->
                    case {Get(macula, K), Get(Base, K)} of
                        {M, B} when is_number(M), is_number(B), B > 0 ->
                            float_to_list(M / B, [{decimals, 2}]) ++ "x";
                        _ -> "-"
                    end
            end,
    Rows = [{"1 MB messages, one-way stream", "MB/s", stream_mb_per_s},
            {"64 MB round trip", "ms", roundtrip_64mb_ms},
            {"64 B round trip p50", "us", rtt_p50_us},
            {"under 8 MB bulk, 20 ms + 1 % loss: 64 B RTT p50", "ms", hol_rtt_p50_ms},
            {"under 8 MB bulk, 20 ms + 1 % loss: 64 B RTT p99", "ms", hol_rtt_p99_ms},
            {"under 8 MB bulk, 20 ms + 1 % loss: bulk goodput", "MB/s", hol_bulk_mb_per_s}],
    ["Two network namespaces, veth MTU 1500 (impaired rows through the "
     "delay/loss bridge):\n\n"
     "| metric | unit | macula | inet_tcp | inet_tls | macula/inet_tcp | macula/inet_tls |\n"
     "|---|---|---:|---:|---:|---:|---:|\n",
     [io_lib:format("| ~ts | ~ts | ~ts | ~ts | ~ts | ~ts | ~ts |~n",
                    [Label, Unit, fmt(Get(macula, K)), fmt(Get(inet_tcp, K)),
                     fmt(Get(inet_tls, K)), Ratio(K, inet_tcp), Ratio(K, inet_tls)])
      || {Label, Unit, K} <- Rows],
     io_lib:format("~nmacula, 20 ms + 1 % loss each way, no other traffic: "
                   "16 MB round trip ~ts ms~n",
                   [fmt(Get(macula, delay20_loss1_roundtrip_16mb_ms))])].

fmt(F) when is_float(F) -> float_to_list(F, [{decimals, 1}]);
fmt(X) -> lists:flatten(io_lib:format("~p", [X])).

%%% ------------------------------------------------------------------
%%% On the nodes

whereami() ->
    {ok, Ifs} = inet:getifaddrs(),
    {node(), [inet:ntoa(A) || {_, Opts} <- Ifs, {addr, A} <- Opts,
                              tuple_size(A) =:= 4]}.

%% N messages of Size random bytes to a sink on Node, which checks each
%% (sequence number, size, tail); {ok, Ms, Bytes} once the sink has them all.
stream(Node, N, Size) ->
    Bin = crypto:strong_rand_bytes(Size),
    Tail = binary:part(Bin, Size - 64, 64),
    Sink = spawn(Node, ?MODULE, stream_sink, [self(), N, Size, Tail]),
    T0 = erlang:monotonic_time(microsecond),
    [Sink ! {chunk, I, Bin} || I <- lists:seq(1, N)],
    receive
        {stream_done, Sink, ok} ->
            {ok, (erlang:monotonic_time(microsecond) - T0) div 1000, N * Size};
        {stream_done, Sink, Bad} ->
            Bad
    after 170000 ->
            timeout
    end.

stream_sink(Parent, N, Size, Tail) ->
    Parent ! {stream_done, self(), stream_loop(1, N, Size, Tail)}.

stream_loop(I, N, _Size, _Tail) when I > N ->
    ok;
stream_loop(I, N, Size, Tail) ->
    receive
        {chunk, I, Bin} when byte_size(Bin) =:= Size ->
            case binary:part(Bin, Size - 64, 64) of
                Tail -> stream_loop(I + 1, N, Size, Tail);
                _ -> {corrupt, I}
            end;
        {chunk, J, Bin} ->
            {bad_chunk, expected, I, got, J, byte_size(Bin)}
    end.

%% N round trips of a 64-byte message to an echo on Node, microseconds.
small_rtt(Node, N) ->
    Echo = spawn(Node, ?MODULE, hol_echo, []),
    Bin = crypto:strong_rand_bytes(64),
    _ = [echo(Echo, Bin) || _ <- lists:seq(1, 100)],
    Rtts = [echo(Echo, Bin) || _ <- lists:seq(1, N)],
    exit(Echo, kill),
    Rtts.

echo(Echo, Bin) ->
    T0 = erlang:monotonic_time(microsecond),
    Echo ! {self(), Bin},
    receive {Echo, Bin} -> erlang:monotonic_time(microsecond) - T0 end.

hol_echo() ->
    receive {From, Bin} -> From ! {self(), Bin} end,
    hol_echo().

%% Bulk: 8 MB messages to a sink on Node, Window of them unacknowledged at
%% a time, for Secs seconds; meanwhile 64-byte round trips every 10 ms from
%% another process. Returns {ok, RoundTripsUs, BulkBytesDelivered}.
hol(Node, Secs, Window) ->
    Sink = spawn(Node, ?MODULE, hol_sink, []),
    Echo = spawn(Node, ?MODULE, hol_echo, []),
    Big = crypto:strong_rand_bytes(8 * ?MB),
    Bulk = spawn_link(fun() ->
                              [Sink ! {self(), Big} || _ <- lists:seq(1, Window)],
                              hol_bulk(Sink, Big, 0)
                      end),
    timer:sleep(2000),  % the bulk transfer fills the path first
    Small = crypto:strong_rand_bytes(64),
    Deadline = erlang:monotonic_time(millisecond) + Secs * 1000,
    Acked0 = hol_acked(Bulk),
    Rtts = hol_ping(Echo, Small, Deadline, []),
    Acked = hol_acked(Bulk) - Acked0,
    unlink(Bulk),
    exit(Bulk, kill),
    [exit(P, kill) || P <- [Sink, Echo]],
    {ok, Rtts, Acked * byte_size(Big)}.

hol_bulk(Sink, Big, Acked) ->
    receive
        {Sink, ack} ->
            Sink ! {self(), Big},
            hol_bulk(Sink, Big, Acked + 1);
        {acked, From} ->
            From ! {acked, Acked},
            hol_bulk(Sink, Big, Acked)
    end.

hol_acked(Bulk) ->
    Bulk ! {acked, self()},
    receive {acked, N} -> N after 60000 -> error(bulk_stuck) end.

hol_sink() ->
    receive {From, Bin} when byte_size(Bin) > 0 -> From ! {self(), ack} end,
    hol_sink().

hol_ping(Echo, Bin, Deadline, Acc) ->
    case erlang:monotonic_time(millisecond) < Deadline of
        true ->
            Rtt = echo(Echo, Bin),
            timer:sleep(10),
            hol_ping(Echo, Bin, Deadline, [Rtt | Acc]);
        false ->
            Acc
    end.

%% N small messages (0..1000 bytes) to a receiver on Node that checks
%% they come complete and in order: ok or what went wrong.
ordered(Node, N) ->
    R = spawn(Node, ?MODULE, ordered_sink, [self(), N]),
    [R ! {ord, I, ord_payload(I)} || I <- lists:seq(1, N)],
    receive {ordered_done, R, Result} -> Result
    after 110000 -> timeout
    end.

ordered_sink(Parent, N) ->
    Parent ! {ordered_done, self(), ordered_loop(1, N)}.

ordered_loop(I, N) when I > N ->
    ok;
ordered_loop(I, N) ->
    receive
        {ord, I, Bin} ->
            case Bin =:= ord_payload(I) of
                true -> ordered_loop(I + 1, N);
                false -> {corrupt, I}
            end;
        {ord, J, _} ->
            {out_of_order, expected, I, got, J}
    after 100000 ->
            {missing_from, I}
    end.

ord_payload(I) ->
    binary:part(binary:copy(<<I:32>>, 251), 0, (I * 7919) rem 1001).
