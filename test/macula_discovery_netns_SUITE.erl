%% @doc Discovery over a real link: nodes in network namespaces on one
%% Linux bridge find each other through DNS SRV (a real dnsmasq, started
%% here) and through mDNS alone, and form a cluster by themselves; a rogue
%% mDNS announcer (plain gen_udp, not macula) that gives a victim's name
%% with its own address makes a node dial it, never connect.
%%
%%   mcd_br: bridge mcdbr0 ── mcdp<i> ══ mcdv<i> in mcd_<i>
%%     mcd_1..mcd_5   10.77.0.11..15   nodes
%%     mcd_6          10.77.0.66       the rogue and its impostor node
%%     mcd_dns        10.77.0.53       dnsmasq
%%
%% Every address exists only inside these namespaces; the suite creates
%% and removes them (and everything running in them). Needs root.
-module(macula_discovery_netns_SUITE).

-include_lib("common_test/include/ct.hrl").

-import(macula_netns, [need_netns/1, ip/0, cmd/2, must/2, netns_exists/1, kill_all_in/1]).

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([dns_srv_cluster/1, mdns_cluster_of_five/1, mdns_rogue_announcer/1,
         mdns_rogue_ca_mode/1, mdns_flood_bounded/1]).
%% run on the rogue's node
-export([rogue/4, flood/3]).

-define(BR_NS, "mcd_br").
-define(DNS_NS, "mcd_dns").
-define(NODE_NS, ["mcd_1", "mcd_2", "mcd_3", "mcd_4", "mcd_5", "mcd_6"]).
-define(NAMESPACES, [?BR_NS, ?DNS_NS | ?NODE_NS]).
-define(DNS_IP, "10.77.0.53").
-define(ROGUE_IP, "10.77.0.66").
-define(OFF_LINK_IP, "10.99.0.66").
-define(DOMAIN, "disc.test").
-define(INTERVAL, "500").

suite() ->
    [{timetrap, {minutes, 3}}].

all() ->
    [dns_srv_cluster, mdns_cluster_of_five, mdns_rogue_announcer, mdns_rogue_ca_mode,
     mdns_flood_bounded].

%%% ------------------------------------------------------------------
%%% Set-up

init_per_suite(Config0) ->
    Config = macula_ct:init_suite(Config0, 17300),
    try setup() of
        ok -> Config
    catch
        Class:Reason:Stack ->
            ct:pal("namespace set-up failed: ~p:~p~n~p", [Class, Reason, Stack]),
            catch remove_namespaces(),
            [{netns_error, {Class, Reason}} | Config]
    end.

end_per_suite(Config) ->
    macula_ct:end_suite(Config),
    remove_namespaces(),
    [] = [NS || NS <- ?NAMESPACES, netns_exists(NS)],
    ok.

init_per_testcase(_Case, Config) ->
    need_netns(Config),
    Config.

end_per_testcase(_Case, Config) ->
    macula_ct:stop_all(),
    case proplists:get_value(netns_error, Config) of
        undefined -> [kill_all_in(NS) || NS <- [?DNS_NS | ?NODE_NS]], ok;
        _ -> ok
    end.

setup() ->
    remove_namespaces(),
    [must(ip(), ["netns", "add", NS]) || NS <- ?NAMESPACES],
    [must(ip(), ["-n", NS, "link", "set", "lo", "up"]) || NS <- ?NAMESPACES],
    must(ip(), ["-n", ?BR_NS, "link", "add", "mcdbr0", "type", "bridge"]),
    must(ip(), ["-n", ?BR_NS, "link", "set", "mcdbr0", "up"]),
    Ends = lists:zip(?NODE_NS, ["10.77.0.11", "10.77.0.12", "10.77.0.13", "10.77.0.14",
                                "10.77.0.15", ?ROGUE_IP]) ++ [{?DNS_NS, ?DNS_IP}],
    lists:foreach(fun({{NS, Ip}, I}) -> link(NS, Ip, integer_to_list(I)) end,
                  lists:zip(Ends, lists:seq(1, length(Ends)))),
    %% the rogue also has an address on no subnet of the link
    must(ip(), ["-n", "mcd_6", "addr", "add", ?OFF_LINK_IP ++ "/32", "dev", "mcdv6"]),
    ok.

%% A veth from NS to the bridge, with Ip/24 and the multicast route.
link(NS, Ip, I) ->
    V = "mcdv" ++ I,
    P = "mcdp" ++ I,
    must(ip(), ["link", "add", V, "netns", NS, "type", "veth", "peer", "name", P,
                "netns", ?BR_NS]),
    must(ip(), ["-n", ?BR_NS, "link", "set", P, "master", "mcdbr0", "up"]),
    must(ip(), ["-n", NS, "addr", "add", Ip ++ "/24", "dev", V]),
    must(ip(), ["-n", NS, "link", "set", V, "up"]),
    must(ip(), ["-n", NS, "route", "add", "224.0.0.0/4", "dev", V]).

remove_namespaces() ->
    [begin kill_all_in(NS), _ = cmd(ip(), ["netns", "del", NS]) end
     || NS <- ?NAMESPACES, netns_exists(NS)],
    ok.

%%% ------------------------------------------------------------------
%%% DNS SRV

%% Nodes `app@nI.disc.test' whose host names only dnsmasq knows (SRV
%% _erlang-dist._udp.disc.test, A records): n1 and n2, in the records,
%% join each other. Then the records change while they run: n3 (which
%% itself never dials: cluster formation off) comes in and n2 goes out.
%% n1 dials n3 by itself, and n2 drops out of n1's discovered/0.
dns_srv_cluster(Config) ->
    Hosts = [{"n" ++ integer_to_list(I), "10.77.0.1" ++ integer_to_list(I), 4500 + I}
             || I <- [1, 2, 3]],
    [H1, H2, H3] = Hosts,
    Dns1 = start_dnsmasq([H1, H2]),
    T0 = erlang:monotonic_time(millisecond),
    {P1, N1} = start_dns_node(Config, "mcd_1", H1, "true"),
    {P2, N2} = start_dns_node(Config, "mcd_2", H2, "true"),
    wait_nodes(P1, [N2], 30000),
    wait_nodes(P2, [N1], 30000),
    ct:pal("n1 and n2 joined through DNS ~b ms after n1's start",
           [erlang:monotonic_time(millisecond) - T0]),
    [#{source := dns, port := 4502, address := {10, 77, 0, 12}}] =
        [D || D = #{node := <<"app@n2.disc.test">>} <- peer:call(P1, macula, discovered, [])],
    {P3, N3} = start_dns_node(Config, "mcd_3", H3, "false"),
    timer:sleep(1500),  % three refreshes: n3 is in no answer yet
    [] = peer:call(P3, erlang, nodes, []),
    T1 = erlang:monotonic_time(millisecond),
    stop_dnsmasq(Dns1),
    Dns2 = start_dnsmasq([H1, H3]),
    wait_nodes(P1, [N2, N3], 30000),
    ct:pal("n1 joined n3 ~b ms after the records changed",
           [erlang:monotonic_time(millisecond) - T1]),
    macula_ct:poll(fun() ->
                           not lists:any(fun(#{node := N}) -> N =:= <<"app@n2.disc.test">> end,
                                         peer:call(P1, macula, discovered, []))
                   end, 10000, n2_still_discovered),
    stop_dnsmasq(Dns2),
    ok.

start_dns_node(Config, NS, {Host, _Ip, Port}, Cluster) ->
    Args = ["-proto_dist", "macula", "-epmd_module", "macula_epmd", "-start_epmd", "false",
            "-macula_dist_port", integer_to_list(Port),
            "-macula_dist_dns_domain", ?DOMAIN, "-macula_dist_dns_servers", ?DNS_IP,
            "-macula_dist_cluster", Cluster,
            "-macula_dist_discovery_interval_ms", ?INTERVAL,
            "-macula_dist_registry_dir", registry(Config, NS)],
    macula_ct:start_node(Config, #{proto => inet_tcp, name => "app",
                                   host => Host ++ "." ++ ?DOMAIN, netns => NS, args => Args}).

%% dnsmasq in its namespace, authoritative for the SRV and A records of
%% Hosts only (no upstream, no /etc/hosts).
start_dnsmasq(Hosts) ->
    Args = ["netns", "exec", ?DNS_NS, "dnsmasq", "--keep-in-foreground", "--no-resolv",
            "--no-hosts", "--conf-file=/dev/null", "--listen-address=" ++ ?DNS_IP,
            "--bind-interfaces", "--pid-file=", "--log-facility=-",
            "--local=/" ++ ?DOMAIN ++ "/", "--local-ttl=0"]
        ++ lists:append([["--srv-host=_erlang-dist._udp." ++ ?DOMAIN ++ "," ++ H ++ "."
                          ++ ?DOMAIN ++ "," ++ integer_to_list(P),
                          "--host-record=" ++ H ++ "." ++ ?DOMAIN ++ "," ++ Ip]
                         || {H, Ip, P} <- Hosts]),
    Port = open_port({spawn_executable, ip()}, [{args, Args}, exit_status, stderr_to_stdout,
                                                binary, hide]),
    %% dnsmasq reads its records at start: once it listens, it answers
    %% with these
    macula_ct:poll(fun() -> dns_listening() end, 10000,
                   fun() -> {dnsmasq_not_listening, drain(Port)} end),
    Port.

dns_listening() ->
    {_, Out} = cmd(ip(), ["netns", "exec", ?DNS_NS, "ss", "-Hlun"]),
    string:find(Out, ?DNS_IP ++ ":53 ") =/= nomatch.

drain(Port) ->
    receive {Port, {data, D}} -> [D | drain(Port)] after 0 -> [] end.

stop_dnsmasq(Port) ->
    kill_all_in(?DNS_NS),
    catch port_close(Port),
    ok.

%%% ------------------------------------------------------------------
%%% mDNS

%% Five nodes, nothing configured but mDNS and cluster formation: each
%% ends up connected to the four others.
mdns_cluster_of_five(Config) ->
    T0 = erlang:monotonic_time(millisecond),
    %% -connect_all false: global does not connect the nodes' peers to
    %% each other, so each of the 20 links is a dial after an mDNS find
    Started = [start_mdns_node(Config, NS, "d" ++ integer_to_list(I),
                               ["-connect_all", "false"])
               || {I, NS} <- lists:zip(lists:seq(1, 5), lists:sublist(?NODE_NS, 5))],
    T1 = erlang:monotonic_time(millisecond),
    All = [N || {_, N} <- Started],
    [wait_nodes(P, All -- [N], 30000) || {P, N} <- Started],
    T2 = erlang:monotonic_time(millisecond),
    ct:pal("5 nodes started in ~b ms; full mesh (20 links) ~b ms after the last start",
           [T1 - T0, T2 - T1]),
    %% what each source knows, with age: the four others, heard recently
    {P1, _} = hd(Started),
    Found = macula_ct:poll(
              fun() ->
                      F = peer:call(P1, macula, discovered, []),
                      Fresh = [X || X = #{source := mdns, age_ms := Age} <- F, Age < 5000],
                      length(Fresh) =:= 4 andalso {true, F}
              end, 10000, fun() -> {d1_discovered, peer:call(P1, macula, discovered, [])} end),
    ct:pal("d1 discovered ~p~nmDNS counters ~p",
           [Found, [peer:call(P, macula_mdns, info, []) || {P, _} <- Started]]),
    %% the ports are the nodes' own, which nobody configured
    [#{port := Port2}] = [F || F = #{node := <<"d2@10.77.0.12">>} <- Found],
    Port2 = maps:get(port, macula_ct:node_info(element(1, lists:nth(2, Started)))),
    ok.

start_mdns_node(Config, NS, Name, Extra) ->
    Host = host_of(NS),
    Args = Extra ++ ["-proto_dist", "macula", "-epmd_module", "macula_epmd",
                     "-start_epmd", "false", "-macula_dist_mdns", "true",
                     "-macula_dist_cluster", "true",
                     "-macula_dist_discovery_interval_ms", ?INTERVAL,
                     "-macula_dist_registry_dir", registry(Config, NS)],
    macula_ct:start_node(Config, #{proto => inet_tcp, name => Name, host => Host,
                                   netns => NS, args => Args}).

%% A rogue in mcd_6 (not macula: a gen_udp socket and hand-made packets)
%% announces the victim's name `v@10.77.0.12' at its own address, where
%% an impostor macula node with another cookie listens, and sends garbage
%% besides, and announcements from an address off the link (dropped). The observer (cluster formation on, mDNS its only source)
%% believes the announcement and dials the impostor; the cookie proof
%% refuses it, so the observer connects to neither, and its mDNS process
%% survives the garbage, counting it.
mdns_rogue_announcer(Config) ->
    {V, NV} = macula_ct:start_node(Config, #{proto => inet_tcp, name => "v",
                                             host => "10.77.0.12", netns => "mcd_2",
                                             args => plain_args(Config, "mcd_2", "4600")}),
    {I, _NI} = macula_ct:start_node(Config, #{proto => inet_tcp, name => "imp",
                                              host => ?ROGUE_IP, netns => "mcd_6",
                                              cookie => "not_the_cookie",
                                              args => plain_args(Config, "mcd_6", "4666")}),
    {O, _NO} = start_mdns_node(Config, "mcd_1", "obs", []),
    Mdns = peer:call(O, erlang, whereis, [macula_mdns]),
    Rogue = peer:call(I, erlang, spawn, [?MODULE, rogue, ["v@10.77.0.12", 4666, 300, 100]]),
    true = is_pid(Rogue),
    %% the observer believes the rogue...
    macula_ct:poll(fun() ->
                           [A || #{node := <<"v@10.77.0.12">>, address := A}
                                     <- peer:call(O, macula, discovered, [])] =:= [{10, 77, 0, 66}]
                   end, 20000, rogue_not_heard),
    %% ...dials the impostor, whose cookie proof check refuses it
    macula_ct:poll(fun() ->
                           maps:get(bad_cookie, maps:get(refused, macula_ct:node_info(I)), 0) > 0
                   end, 20000, fun() -> {impostor_not_dialled, macula_ct:node_info(I)} end),
    pang = peer:call(O, net_adm, ping, [NV], 30000),
    ct:pal("observer's discovered: ~p", [peer:call(O, macula, discovered, [])]),
    [] = peer:call(O, erlang, nodes, [[visible, hidden]]),
    [] = peer:call(V, erlang, nodes, [[visible, hidden]]),
    Mdns = peer:call(O, erlang, whereis, [macula_mdns]),
    Counts = peer:call(O, macula_mdns, info, []),
    ct:pal("observer's mDNS counters: ~p", [Counts]),
    true = maps:get(malformed, Counts, 0) > 0,
    %% the announcement from off the link was dropped unread
    true = maps:get(off_link, Counts, 0) > 0,
    [] = [N || #{node := N = <<"offlink", _/binary>>} <- peer:call(O, macula, discovered, [])],
    ok.

%% The same rogue in CA mode, with an impostor that has everything but
%% the victim's certificate: the cookie, and the victim's very node name
%% (`v@10.77.0.12', run at 10.77.0.66), and a certificate of the cluster
%% CA for its own address. The observer dials it for the victim, and only
%% the certificate check (the host of the name dialled) refuses it.
mdns_rogue_ca_mode(Config) ->
    Dir = filename:join(?config(priv_dir, Config), "ca"),
    ok = macula_netns:test_ca(Dir, "macula discovery"),
    Ca = fun(Name, Ip) ->
                 Cert = macula_netns:test_cert(Dir, Name, ["IP:" ++ Ip]),
                 ["-macula_dist_cacertfile", filename:join(Dir, "ca.pem"),
                  "-macula_dist_certfile", Cert,
                  "-macula_dist_keyfile", filename:join(Dir, "node.key")]
         end,
    {I, NI} = macula_ct:start_node(Config, #{proto => inet_tcp, name => "v",
                                             host => "10.77.0.12", netns => "mcd_6",
                                             args => Ca("imp", ?ROGUE_IP) ++
                                                 plain_args(Config, "mcd_6", "4667")}),
    'v@10.77.0.12' = NI,
    {O, _} = start_mdns_node(Config, "mcd_1", "obs", Ca("obs", "10.77.0.11")),
    _ = peer:call(I, erlang, spawn, [?MODULE, rogue, ["v@10.77.0.12", 4667, 300, 100]]),
    macula_ct:poll(fun() ->
                           maps:get(failed_handshake,
                                    maps:get(refused, macula_ct:node_info(I)), 0) > 0
                   end, 20000, fun() -> {impostor_not_dialled, macula_ct:node_info(I)} end),
    pang = peer:call(O, net_adm, ping, [NI], 30000),
    [] = peer:call(O, erlang, nodes, [[visible, hidden]]),
    [] = peer:call(I, erlang, nodes, [[visible, hidden]]),
    ok.

%% A rogue floods the link with 1,600 names (and re-announces a node the
%% observer has in its static list, at the rogue's address). The
%% observer, cluster formation on, keeps at most 1,024 mDNS entries and
%% counts the rest, still resolves the static node to its configured
%% address, and dials at most 8 at a time.
mdns_flood_bounded(Config) ->
    Static = "st@10.77.0.13=10.77.0.13:4700",
    {O, _} = start_mdns_node(Config, "mcd_1", "obs", ["-macula_dist_nodes", Static]),
    {I, _} = macula_ct:start_node(Config, #{proto => inet_tcp, name => "imp",
                                            host => ?ROGUE_IP, netns => "mcd_6",
                                            args => plain_args(Config, "mcd_6", "4668")}),
    ok = peer:call(I, ?MODULE, flood, [1600, 4668, ["st@10.77.0.13"]], 60000),
    Info = macula_ct:poll(fun() ->
                                  Inf = peer:call(O, macula_discovery, info, []),
                                  maps:get(mdns, maps:get(entries, Inf), 0) =:= 1024
                                      andalso maps:get(dropped, Inf) > 0
                                      andalso {true, Inf}
                          end, 20000,
                          fun() -> {not_full, peer:call(O, macula_discovery, info, [])} end),
    ct:pal("observer after the flood: ~p~nmDNS ~p",
           [Info, peer:call(O, macula_mdns, info, [])]),
    1 = maps:get(static, maps:get(entries, Info)),
    true = maps:get(dialling, Info) =< 8,
    %% static ranks before mDNS, whatever mDNS heard last
    {ok, {10, 77, 0, 13}, 4700, _} =
        peer:call(O, macula_epmd, address_please, ["st", "10.77.0.13", inet]),
    ok.

%% Runs on the rogue's node: N announcements of distinct names, and of
%% Extra names, at its own address and Port, about 120 a second.
flood(N, Port, Extra) ->
    {ok, S} = gen_udp:open(0, [binary, {multicast_ttl, 255}, {ip, {10, 77, 0, 66}}]),
    Names = Extra ++ ["f" ++ integer_to_list(I) ++ "@10.77.0.66" || I <- lists:seq(1, N)],
    [begin
         gen_udp:send(S, {224, 0, 0, 251}, 5353, forged(list_to_binary(Name), Port)),
         timer:sleep(8)
     end || Name <- Names],
    gen_udp:close(S).

plain_args(Config, NS, Port) ->
    ["-proto_dist", "macula", "-epmd_module", "macula_epmd", "-start_epmd", "false",
     "-macula_dist_port", Port, "-macula_dist_registry_dir", registry(Config, NS)].

%% Runs on the impostor's node: Rounds times, every PeriodMs, one forged
%% announcement of Victim at this host's address and Port, and a few
%% malformed packets. Written by hand (RFC 1035 wire format), without
%% macula's codec.
rogue(Victim, Port, Rounds, PeriodMs) ->
    {ok, S} = gen_udp:open(0, [binary, {multicast_ttl, 255}, {ip, {10, 77, 0, 66}}]),
    %% the same kind of announcement from an address off the link
    {ok, Off} = gen_udp:open(0, [binary, {multicast_ttl, 255}, {ip, {10, 99, 0, 66}},
                                 {multicast_if, {10, 77, 0, 66}}]),
    OffLink = forged(<<"offlink@10.99.0.66">>, Port),
    Forged = forged(list_to_binary(Victim), Port),
    Garbage = [<<1, 2, 3>>, crypto:strong_rand_bytes(200),
               %% a name that points at itself
               <<0:16, 16#8400:16, 0:16, 1:16, 0:16, 0:16, 16#C0, 12, 0, 12, 0, 1, 0:32, 0:16>>,
               %% a record that claims more data than there is
               <<0:16, 16#8400:16, 0:16, 1:16, 0:16, 0:16, 0, 0, 1, 0, 1, 0:32, 200:16>>,
               %% 64 000 records announced
               <<0:16, 16#8400:16, 0:16, 64000:16, 0:16, 0:16>>],
    [begin
         [gen_udp:send(S, {224, 0, 0, 251}, 5353, P) || P <- [Forged | Garbage]],
         gen_udp:send(Off, {224, 0, 0, 251}, 5353, OffLink),
         timer:sleep(PeriodMs)
     end || _ <- lists:seq(1, Rounds)],
    gen_udp:close(Off),
    gen_udp:close(S).

forged(Victim, Port) ->
    Service = dns_name([<<"_erlang-dist">>, <<"_udp">>, <<"local">>]),
    Instance = dns_name([Victim, <<"_erlang-dist">>, <<"_udp">>, <<"local">>]),
    Target = dns_name([<<"rogue">>, <<"local">>]),
    Txt = <<"realm=macula">>,
    Rrs = [[Service, <<12:16, 1:16, 120:32, (byte_size(Instance)):16>>, Instance],
           [Instance, <<33:16, 1:16, 120:32, (6 + byte_size(Target)):16, 0:16, 0:16, Port:16>>,
            Target],
           [Instance, <<16:16, 1:16, 120:32, (1 + byte_size(Txt)):16, (byte_size(Txt)):8>>, Txt],
           [Target, <<1:16, 1:16, 120:32, 4:16, 10, 77, 0, 66>>]],
    iolist_to_binary([<<0:16, 16#8400:16, 0:16, 4:16, 0:16, 0:16>> | Rrs]).

dns_name(Labels) ->
    iolist_to_binary([[<<(byte_size(L)):8>>, L] || L <- Labels] ++ [<<0>>]).

%%% ------------------------------------------------------------------

host_of(NS) ->
    {_, Ip} = lists:keyfind(NS, 1, lists:zip(?NODE_NS, ["10.77.0.11", "10.77.0.12", "10.77.0.13",
                                                      "10.77.0.14", "10.77.0.15", ?ROGUE_IP])),
    Ip.

registry(Config, NS) ->
    filename:join(?config(priv_dir, Config), "registry-" ++ NS).

wait_nodes(Peer, Nodes, Timeout) ->
    macula_ct:poll(fun() -> Nodes -- peer:call(Peer, erlang, nodes, []) =:= [] end, Timeout,
                   fun() -> {not_connected, Nodes, peer:call(Peer, erlang, nodes, []),
                             peer:call(Peer, macula, discovered, [])} end).
