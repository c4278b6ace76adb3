%% @doc The relay modes between two nodes that cannot dial each other:
%% each sits in a private network behind its own NAT router (nftables
%% masquerade, no inbound forwarding), and the macula-relay is on the
%% public network between the routers. The nodes reach each other only
%% through relay tunnels, with their own end-to-end QUIC + TLS session.
%%
%%   mclr_a  (node a, 10.196.1.2)            mclr_b  (node b, 10.196.2.2)
%%     | mclrA  10.196.1.2/24                  | mclrB  10.196.2.2/24
%%     | mclrNAi 10.196.1.1/24                 | mclrNBi 10.196.2.1/24
%%   mclr_na (NAT)                           mclr_nb (NAT)
%%     | mclrNAo 10.196.10.2/24                | mclrNBo 10.196.20.2/24
%%     | mclrPA  10.196.10.1/24                | mclrPB  10.196.20.1/24
%%     +------------- mclr_pub (relay on 10.196.0.1:4434) -------------+
%%
%% The public namespace has no route to the private networks, and the
%% routers forward nothing inwards that is not an answer to the inside,
%% so only the relay's tunnels connect a and b. The mesh cases run two
%% relays (10.196.0.1 and 10.196.0.2, both on the public namespace) linked
%% to each other, with a at one and b at the other. The suite creates and
%% removes every namespace; all addresses are 10.196.x.x inside them.
%% Needs root; without it every case fails (it does not skip).
-module(macula_relay_SUITE).

-include_lib("common_test/include/ct.hrl").

-import(macula_netns, [need_netns/1, ip/0, cmd/2, must/2, netns_exists/1, kill_all_in/1, pids_in/1]).

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([ping_rpc_big/1, relay_sees_no_plaintext/1, wrong_cookie/1,
         name_hijack/1, relay_killed/1, unknown_target/1,
         relay_unreachable/1, wrong_realm_secret/1, bad_relays_setting/1,
         join_at_runtime/1, ca_mode/1, relay_stopped/1, two_relays/1,
         relays_setting_syntax/1, mesh_ping_rpc_big/1, mesh_name_hijack/1,
         mesh_relay_killed/1, mesh_wrong_cookie/1, mesh_sees_no_plaintext/1,
         restart_after_kill/1, ca_mode_relay_certificate/1, peer_halts/1,
         listing_is_paced/1, relay_registry_cluster/1]).
%% run on the nodes
-export([plaintext_sink/1, udp_probe/3]).

-define(NS_A, "mclr_a").
-define(NS_B, "mclr_b").
-define(NS_NA, "mclr_na").
-define(NS_NB, "mclr_nb").
-define(NS_PUB, "mclr_pub").
-define(NAMESPACES, [?NS_A, ?NS_B, ?NS_NA, ?NS_NB, ?NS_PUB]).
-define(DEVICES, ["mclrA", "mclrNAi", "mclrB", "mclrNBi", "mclrNAo", "mclrPA",
                  "mclrNBo", "mclrPB"]).
-define(IP_A, "10.196.1.2").
-define(IP_B, "10.196.2.2").
-define(RELAY_IP, "10.196.0.1").
-define(RELAY, "10.196.0.1:4434").
-define(RELAY2_IP, "10.196.0.2").
-define(MB, (1024 * 1024)).
-define(MARKER, "MACULA-RELAY-PLAINTEXT-MARKER-7f3a9c").

suite() ->
    [{timetrap, {minutes, 5}}].

all() ->
    [ping_rpc_big, relay_sees_no_plaintext, wrong_cookie, name_hijack,
     unknown_target, wrong_realm_secret, relay_unreachable,
     bad_relays_setting, relays_setting_syntax, join_at_runtime, ca_mode,
     ca_mode_relay_certificate,
     two_relays, relay_stopped, relay_killed, peer_halts, listing_is_paced,
     restart_after_kill, mesh_ping_rpc_big,
     mesh_sees_no_plaintext, mesh_wrong_cookie, mesh_name_hijack,
     mesh_relay_killed, relay_registry_cluster].

%%% ------------------------------------------------------------------
%%% Set-up

init_per_suite(Config0) ->
    Config = macula_ct:init_suite(Config0, 15001),
    Priv = ?config(priv_dir, Config),
    Secret = filename:join(Priv, "realm.secret"),
    ok = file:write_file(Secret, "relay-suite-realm-secret-0123456789\n"),
    ok = file:change_mode(Secret, 8#600),
    Wrong = filename:join(Priv, "wrong.secret"),
    ok = file:write_file(Wrong, "not-the-realm-secret-of-this-suite\n"),
    ok = file:change_mode(Wrong, 8#600),
    Extra = [{secret_file, Secret}, {wrong_secret_file, Wrong}],
    try setup() of
        ok -> Extra ++ Config
    catch
        Class:Reason:Stack ->
            ct:pal("network namespace set-up failed: ~p:~p~n~p", [Class, Reason, Stack]),
            catch remove_namespaces(),
            [{netns_error, {Class, Reason}} | Extra ++ Config]
    end.

end_per_suite(Config) ->
    macula_ct:end_suite(Config),
    remove_namespaces(),
    [] = [NS || NS <- ?NAMESPACES, netns_exists(NS)],
    ok.

init_per_testcase(_Case, Config) ->
    Config.

end_per_testcase(_Case, Config) ->
    macula_ct:stop_all(),
    stop_relay(Config),
    [kill_all_in(NS) || NS <- [?NS_A, ?NS_B, ?NS_PUB]],
    ok.

setup() ->
    remove_namespaces(),
    [must(ip(), ["netns", "add", NS]) || NS <- ?NAMESPACES],
    [must(ip(), ["-n", NS, "link", "set", "lo", "up"]) || NS <- ?NAMESPACES],
    link(?NS_A, "mclrA", "10.196.1.2/24", ?NS_NA, "mclrNAi", "10.196.1.1/24"),
    link(?NS_B, "mclrB", "10.196.2.2/24", ?NS_NB, "mclrNBi", "10.196.2.1/24"),
    link(?NS_NA, "mclrNAo", "10.196.10.2/24", ?NS_PUB, "mclrPA", "10.196.10.1/24"),
    link(?NS_NB, "mclrNBo", "10.196.20.2/24", ?NS_PUB, "mclrPB", "10.196.20.1/24"),
    must(ip(), ["-n", ?NS_PUB, "addr", "add", ?RELAY_IP ++ "/32", "dev", "lo"]),
    must(ip(), ["-n", ?NS_PUB, "addr", "add", ?RELAY2_IP ++ "/32", "dev", "lo"]),
    must(ip(), ["-n", ?NS_A, "route", "add", "default", "via", "10.196.1.1"]),
    must(ip(), ["-n", ?NS_B, "route", "add", "default", "via", "10.196.2.1"]),
    must(ip(), ["-n", ?NS_NA, "route", "add", "default", "via", "10.196.10.1"]),
    must(ip(), ["-n", ?NS_NB, "route", "add", "default", "via", "10.196.20.1"]),
    nat(?NS_NA, "mclrNAo"),
    nat(?NS_NB, "mclrNBo"),
    ok.

link(NS1, Dev1, Addr1, NS2, Dev2, Addr2) ->
    must(ip(), ["link", "add", Dev1, "netns", NS1, "type", "veth", "peer", "name", Dev2,
                "netns", NS2]),
    must(ip(), ["-n", NS1, "addr", "add", Addr1, "dev", Dev1]),
    must(ip(), ["-n", NS2, "addr", "add", Addr2, "dev", Dev2]),
    must(ip(), ["-n", NS1, "link", "set", Dev1, "up"]),
    must(ip(), ["-n", NS2, "link", "set", Dev2, "up"]).

%% A home router: masquerade outwards, nothing inwards but answers.
nat(NS, Out) ->
    must(ip(), ["netns", "exec", NS, "sysctl", "-qw", "net.ipv4.ip_forward=1"]),
    Nft = fun(Args) -> must(ip(), ["netns", "exec", NS, "nft" | Args]) end,
    Nft(["add", "table", "ip", "mclr"]),
    Nft(["add", "chain", "ip", "mclr", "outbound",
         "{ type nat hook postrouting priority 100 ; }"]),
    Nft(["add", "rule", "ip", "mclr", "outbound", "oifname", Out, "masquerade"]),
    Nft(["add", "chain", "ip", "mclr", "inbound",
         "{ type filter hook forward priority 0 ; policy accept ; }"]),
    Nft(["add", "rule", "ip", "mclr", "inbound", "iifname", Out, "ct", "state",
         "established,related", "accept"]),
    Nft(["add", "rule", "ip", "mclr", "inbound", "iifname", Out, "drop"]).

remove_namespaces() ->
    [begin
         kill_all_in(NS),
         _ = cmd(ip(), ["netns", "del", NS])
     end || NS <- ?NAMESPACES, netns_exists(NS)],
    [_ = cmd(ip(), ["link", "del", Dev])
     || Dev <- ?DEVICES, element(1, cmd(ip(), ["link", "show", Dev])) =:= 0],
    ok.

%%% ------------------------------------------------------------------
%%% The relay and the nodes

relay_bin() ->
    Ebin = filename:dirname(code:which(macula_dist)),
    filename:absname(filename:join([Ebin, "..", "build", "macula-relay"])).

%% Starts macula-relay in the public namespace, on the wildcard address
%% (it answers each node from the address the node dialled); its OS pid
%% is kept in the process dictionary so end_per_testcase can stop it.
start_relay(Config) ->
    start_relay(Config, "::", "mclr-relay").

start_relay(Config, Ip, Name) ->
    start_relay(Config, Ip, Name, []).

%% Extra: more flags (--peer for the mesh).
start_relay(Config, Ip, Name, Extra) ->
    Priv = ?config(priv_dir, Config),
    Args = ["netns", "exec", ?NS_PUB, relay_bin(),
            "--realm-secret-file", ?config(secret_file, Config),
            "--bind", Ip, "--port", "4434", "--name", Name,
            "--cert-dir", filename:join(Priv, "relay-cert")] ++ Extra,
    Parent = self(),
    Keeper = spawn(fun() ->
                           Port = open_port({spawn_executable, ip()},
                                            [{args, Args}, exit_status, stderr_to_stdout,
                                             binary, use_stdio, hide]),
                           {os_pid, OsPid} = erlang:port_info(Port, os_pid),
                           Parent ! {self(), OsPid},
                           relay_loop(Port)
                   end),
    OsPid = receive {Keeper, P} -> P end,
    put(relay, OsPid),
    put(relays, [OsPid | case get(relays) of undefined -> []; Pids -> Pids end]),
    Listening = case Ip of "::" -> "*:4434"; _ -> Ip ++ ":4434" end,
    macula_ct:poll(fun() -> udp_listening(?NS_PUB, Listening) end, 10000,
                   relay_not_listening),
    OsPid.

relay_loop(Port) ->
    receive
        {Port, {data, D}} -> ct:log("[relay] ~ts", [D]), relay_loop(Port);
        {Port, {exit_status, S}} -> ct:log("[relay] exited with ~p", [S])
    end.

%% Kills every relay this case started.
stop_relay(_Config) ->
    erase(relay),
    case erase(relays) of
        undefined -> ok;
        Pids ->
            [_ = cmd("kill", ["-9", integer_to_list(P)]) || P <- Pids],
            %% kill returns before the process is gone: wait for its socket
            %% too, or the next relay may find the port still bound.
            macula_ct:poll(fun() -> not udp_listening(?NS_PUB, ":4434") end, 5000,
                           relay_still_listening)
    end.

udp_listening(NS, Address) ->
    {_, Out} = cmd(ip(), ["netns", "exec", NS, "ss", "-Hlun"]),
    string:find(Out, Address ++ " ") =/= nomatch.

relay_args(Config, Relays) ->
    relay_args(Config, Relays, ?config(secret_file, Config)).

relay_args(_Config, Relays, SecretFile) ->
    mode_args("dist_relay", Relays, SecretFile).

mode_args(Mode, Relays, SecretFile) ->
    ["-macula_dist_mode", Mode, "-macula_dist_relays", Relays,
     "-macula_dist_realm_secret_file", SecretFile].

mesh_args(Config, Relays) ->
    mode_args("relay", Relays, ?config(secret_file, Config)).

node_a(Config) -> node_a(Config, #{}).
node_a(Config, Opts) -> start(Config, "a", ?IP_A, ?NS_A, Opts).
node_b(Config) -> node_b(Config, #{}).
node_b(Config, Opts) -> start(Config, "b", ?IP_B, ?NS_B, Opts).

start(Config, Name, Host, NS, Opts) ->
    Args = maps:get(args, Opts, relay_args(Config, ?RELAY)),
    macula_ct:start_node(Config, Opts#{name => Name, host => Host, netns => NS,
                                       args => Args}).

wait_registered(Node) ->
    macula_ct:wait_output(Node, "registered at relay mclr-relay", 20000).

pair(Config) ->
    start_relay(Config),
    {A, NA} = node_a(Config),
    {B, NB} = node_b(Config),
    wait_registered(NA),
    wait_registered(NB),
    {A, NA, B, NB}.

%%% ------------------------------------------------------------------
%%% Cases

%% Through the relay: ping and rpc both ways, a 64 MB message both ways.
%% The nodes cannot reach each other directly, and open no port on the
%% network (their endpoint is on 127.0.0.1).
ping_rpc_big(Config) ->
    need_netns(Config),
    {A, NA, B, NB} = pair(Config),
    {1, _} = cmd(ip(), ["netns", "exec", ?NS_A, "ping", "-c1", "-W1", ?IP_B]),
    [] = [L || L <- udp_sockets(?NS_A), not lists:prefix("127.0.0.1:", L),
               not lists:prefix("0.0.0.0:", L)],
    %% the relay registry: both nodes, at this relay, before any tunnel
    Online = [#{node => atom_to_binary(N), relays => [<<"mclr-relay">>]} || N <- lists:sort([NA, NB])],
    Online = peer:call(A, macula, relay_nodes, []),
    Online = peer:call(B, macula, relay_nodes, []),
    ping_rpc_big(A, NA, B, NB, "through the relay"),
    [#{state := identified, stats := #{tunnels := 1}}] = peer:call(A, macula, relays, []),
    ok.

%% Ping and rpc both ways, then a 64 MB message round trip each way.
ping_rpc_big(A, NA, B, NB, Path) ->
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    pong = peer:call(B, net_adm, ping, [NA], 30000),
    NB = peer:call(A, rpc, call, [NB, erlang, node, []], 30000),
    NA = peer:call(B, rpc, call, [NA, erlang, node, []], 30000),
    {ok, MsAB} = peer:call(A, macula_ct, big_roundtrip, [NB, 64 * ?MB, 120000], 130000),
    {ok, MsBA} = peer:call(B, macula_ct, big_roundtrip, [NA, 64 * ?MB, 120000], 130000),
    ct:pal("64 MB round trip ~s: a->b ~p ms, b->a ~p ms", [Path, MsAB, MsBA]).

udp_sockets(NS) ->
    {_, Out} = cmd(ip(), ["netns", "exec", NS, "ss", "-Hlun"]),
    [lists:nth(4, string:lexemes(L, " ")) || L <- string:lexemes(Out, "\n")].

%% A known plaintext sent between the nodes never appears in what the
%% relay receives or sends (all UDP on the public namespace, captured),
%% nor does the cookie.
relay_sees_no_plaintext(Config) ->
    need_netns(Config),
    {A, _NA, _B, NB} = pair(Config),
    no_plaintext(Config, A, NB).

%% The same across two relays: the capture holds both relays' traffic,
%% the link between them included.
mesh_sees_no_plaintext(Config) ->
    need_netns(Config),
    {_R1, _R2, A, _NA, _B, NB} = mesh(Config),
    no_plaintext(Config, A, NB).

no_plaintext(Config, A, NB) ->
    Pcap = filename:join(?config(priv_dir, Config), "relay.pcap"),
    Dump = start_capture(Pcap),
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    Text = binary:copy(<<?MARKER>>, 4096),
    ok = peer:call(A, rpc, call, [NB, ?MODULE, plaintext_sink, [Text]], 30000),
    timer:sleep(500),
    stop_capture(Dump),
    {ok, Captured} = file:read_file(Pcap),
    ct:pal("captured ~p bytes of relay traffic", [byte_size(Captured)]),
    true = byte_size(Captured) > byte_size(Text),
    nomatch = binary:match(Captured, <<?MARKER>>),
    %% the connection (cookie proof, dist handshake) was set up during the
    %% capture: neither the cookie nor the distribution handshake's node
    %% names (sent in clear inside the nodes' own session) show
    nomatch = binary:match(Captured, <<"macula_ct_cookie">>),
    nomatch = binary:match(Captured, atom_to_binary(NB)),
    %% the capture does see clear text when there is some: the marker
    %% sent in a plain UDP datagram shows up
    Probe = start_capture(Pcap),
    ok = peer:call(A, ?MODULE, udp_probe, [?RELAY_IP, 4434, <<?MARKER>>]),
    timer:sleep(500),
    stop_capture(Probe),
    {ok, Captured2} = file:read_file(Pcap),
    {_, _} = binary:match(Captured2, <<?MARKER>>),
    ok.

udp_probe(Ip, Port, Payload) ->
    {ok, Addr} = inet:parse_address(Ip),
    {ok, S} = gen_udp:open(0),
    ok = gen_udp:send(S, Addr, Port, Payload),
    timer:sleep(200),  % closing at once may drop the queued datagram
    gen_udp:close(S).

plaintext_sink(Text) ->
    byte_size(Text) > 0 andalso ok.

start_capture(File) ->
    _ = file:delete(File),
    Port = open_port({spawn_executable, ip()},
                     [{args, ["netns", "exec", ?NS_PUB, "tcpdump", "-i", "any", "-U",
                              "-s", "0", "-w", File, "udp"]},
                      exit_status, stderr_to_stdout, binary, use_stdio, hide]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    macula_ct:poll(fun() -> receive {Port, {data, D}} ->
                                    binary:match(D, <<"listening">>) =/= nomatch
                            after 100 -> false
                            end
                   end, 10000, tcpdump_not_started),
    timer:sleep(300),
    {Port, OsPid}.

stop_capture({Port, OsPid}) ->
    _ = cmd("kill", ["-INT", integer_to_list(OsPid)]),
    receive {Port, {exit_status, _}} -> ok after 5000 -> ok end,
    catch port_close(Port),
    ok.

%% b has another cookie: the end-to-end cookie proof fails, the ping
%% gets pang quickly, and a says why.
wrong_cookie(Config) ->
    need_netns(Config),
    start_relay(Config),
    {A, NA} = node_a(Config),
    {_B, NB} = node_b(Config, #{cookie => "another_cookie"}),
    wait_registered(NA),
    wait_registered(NB),
    T0 = erlang:monotonic_time(millisecond),
    pang = peer:call(A, net_adm, ping, [NB], 30000),
    Ms = erlang:monotonic_time(millisecond) - T0,
    ct:pal("wrong cookie: pang after ~p ms", [Ms]),
    true = Ms < 10000,
    macula_ct:wait_output(NB, "does not know our cookie", 10000),
    [] = peer:call(A, erlang, nodes, []),
    ok.

%% A second node claiming a's name (from b's network) is refused by the
%% relay and says so; traffic for a still goes to the real a.
name_hijack(Config) ->
    need_netns(Config),
    {A, NA, B, NB} = pair(Config),
    ok = peer:call(A, persistent_term, put, [mclr_who, real_a]),
    %% The impostor runs in b's namespace under a's full name.
    {Evil, _} = macula_ct:start_node(Config, #{name => "a", host => ?IP_A, netns => ?NS_B,
                                               args => relay_args(Config, ?RELAY)}),
    %% (the impostor has a's node name: output/1 now reads its output)
    Out = macula_ct:wait_output(NA, "name_taken", 20000),
    ct:pal("impostor said: ~ts", [Out]),
    pang = peer:call(Evil, net_adm, ping, [NB], 30000),
    real_a = peer:call(B, rpc, call, [NA, persistent_term, get, [mclr_who]], 30000),
    ok.

%% A node name nobody registered: pang at once, with the relay's reason.
%% (This node takes its settings from the OS environment.)
unknown_target(Config) ->
    need_netns(Config),
    start_relay(Config),
    Env = [{"MACULA_DIST_MODE", "dist_relay"}, {"MACULA_DIST_RELAYS", ?RELAY},
           {"MACULA_DIST_REALM_SECRET_FILE", ?config(secret_file, Config)}],
    {A, NA} = node_a(Config, #{args => [], env => Env}),
    wait_registered(NA),
    T0 = erlang:monotonic_time(millisecond),
    pang = peer:call(A, net_adm, ping, ['nobody@10.196.9.9'], 30000),
    Ms = erlang:monotonic_time(millisecond) - T0,
    true = Ms < 5000,
    macula_ct:wait_output(NA, "unknown_target", 5000),
    ok.

%% A node with another realm secret is refused (bad_proof) and says so.
wrong_realm_secret(Config) ->
    need_netns(Config),
    start_relay(Config),
    {A, NA} = node_a(Config, #{args => relay_args(Config, ?RELAY,
                                                  ?config(wrong_secret_file, Config))}),
    macula_ct:wait_output(NA, "bad_proof", 20000),
    {_B, NB} = node_b(Config),
    wait_registered(NB),
    pang = peer:call(A, net_adm, ping, [NB], 30000),
    ok.

%% Nothing listens at the relay's address: pings fail within the setup
%% time instead of hanging, and the node says it cannot reach the relay.
relay_unreachable(Config) ->
    need_netns(Config),
    {A, NA} = node_a(Config),
    T0 = erlang:monotonic_time(millisecond),
    pang = peer:call(A, net_adm, ping, ['b@10.196.2.2'], 30000),
    Ms = erlang:monotonic_time(millisecond) - T0,
    ct:pal("relay unreachable: pang after ~p ms", [Ms]),
    true = Ms < 15000,
    macula_ct:wait_output(NA, "relay " ?RELAY_IP ":4434", 20000),
    ok.

%% A bad macula_dist_relays stops the node at boot, naming the setting.
bad_relays_setting(Config) ->
    need_netns(Config),
    Args = macula_ct:erl_args(macula, #{args => relay_args(Config, "10.196.0.1:notaport")}) ++
        ["-name", "bad@127.0.0.1", "-noshell", "-eval", "halt(0)."],
    {Status, Out} = macula_ct:run_erl(Args, [], 30000),
    ct:pal("exit ~p:~n~ts", [Status, Out]),
    true = Status =/= 0,
    {_, _} = binary:match(Out, <<"macula_dist_relays">>),
    %% dist_relay without the realm secret: the same, naming that setting
    Args2 = macula_ct:erl_args(macula, #{args => ["-macula_dist_mode", "dist_relay",
                                                 "-macula_dist_relays", ?RELAY]}) ++
        ["-name", "bad@127.0.0.1", "-noshell", "-eval", "halt(0)."],
    {Status2, Out2} = macula_ct:run_erl(Args2, [], 30000),
    true = Status2 =/= 0,
    {_, _} = binary:match(Out2, <<"macula_dist_realm_secret_file">>),
    ok.

%% What macula_dist_relays accepts and refuses (no network needed).
relays_setting_syntax(_Config) ->
    P = fun(Text) -> macula_relay_config:parse_relays(macula_dist_relays, Text) end,
    [{"10.0.0.1", 4434}] = P("10.0.0.1"),
    [{"relay.example", 5000}, {"::1", 4434}, {"fe80::1", 7}] =
        P(" relay.example:5000 , [::1],[fe80::1]:7 "),
    [] = P(""),
    [] = P(" , "),
    [{'EXIT', {{macula_config, _}, _}} = catch P(Bad)
     || Bad <- ["h:0", "h:65536", "h:x", ":5", "h:5:6", "[::1", "[]:5", "[::1]x",
                "h:", "::1"]],
    ok.

%% Two relays: a registers at both, b only at the second. a's ping to b
%% is refused by the first (unknown_target) and goes through the second;
%% when that one stops, a's node goes down and a ping to b fails cleanly.
two_relays(Config) ->
    need_netns(Config),
    R1 = start_relay(Config, ?RELAY_IP, "mclr-relay"),
    start_relay(Config, ?RELAY2_IP, "mclr-relay-2"),
    R2 = get(relay),
    put(relay, R1),
    Both = ?RELAY ++ "," ++ ?RELAY2_IP,
    {A, NA} = node_a(Config, #{args => relay_args(Config, Both)}),
    {_B, NB} = node_b(Config, #{args => relay_args(Config, ?RELAY2_IP ++ ":4434")}),
    macula_ct:wait_output(NA, "registered at relay mclr-relay-2", 20000),
    wait_registered(NA),
    macula_ct:wait_output(NB, "registered at relay mclr-relay-2", 20000),
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    [#{stats := #{tunnels := 0}}, #{stats := #{tunnels := 1}}] =
        lists:sort(fun(X, Y) -> maps:get(tag, X) =< maps:get(tag, Y) end,
                   peer:call(A, macula, relays, [])),
    W = peer:call(A, macula_ct, watch, [NB]),
    _ = cmd("kill", ["-TERM", integer_to_list(R2)]),
    {down, _} = peer:call(A, macula_ct, wait_down, [W, 10000], 15000),
    pang = peer:call(A, net_adm, ping, [NB], 30000),
    ok.

%% A node started without relays joins one at run time.
join_at_runtime(Config) ->
    need_netns(Config),
    start_relay(Config),
    {A, NA} = node_a(Config, #{args => relay_args(Config, "")}),
    {_B, NB} = node_b(Config),
    wait_registered(NB),
    pang = peer:call(A, net_adm, ping, [NB], 30000),
    ok = peer:call(A, macula, join_dist_relay, [?RELAY]),
    wait_registered(NA),
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    ok.

%% a and b connected, each watching the other for nodedown; and the time.
connected_and_watched(A, NA, B, NB) ->
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    WA = peer:call(A, macula_ct, watch, [NB]),
    WB = peer:call(B, macula_ct, watch, [NA]),
    {WA, WB, erlang:system_time(millisecond)}.

%% The relay stops (SIGTERM): it tells every node (relay_shutdown), so
%% both see nodedown at once.
relay_stopped(Config) ->
    need_netns(Config),
    {A, NA, B, NB} = pair(Config),
    {WA, WB, T0} = connected_and_watched(A, NA, B, NB),
    _ = cmd("kill", ["-TERM", integer_to_list(get(relay))]),
    {down, DA} = peer:call(A, macula_ct, wait_down, [WA, 10000], 15000),
    {down, DB} = peer:call(B, macula_ct, wait_down, [WB, 10000], 15000),
    ct:pal("relay stopped: nodedown after ~p ms (a) and ~p ms (b)", [DA - T0, DB - T0]),
    true = DA - T0 < 3000 andalso DB - T0 < 3000,
    macula_ct:wait_output(NA, "relay_shutdown", 5000),
    ok.

%% A node halts (erlang:halt/0): its relay connection is closed on the
%% way out, so the peer sees nodedown at once and the relay frees its
%% name at once, not after the relay's idle timeout (8-10 s): the other
%% node's registry listing drops it (answers are reused for 2 s).
peer_halts(Config) ->
    need_netns(Config),
    {A, NA, B, NB} = pair(Config),
    {_WA, WB, _} = connected_and_watched(A, NA, B, NB),
    T0 = erlang:system_time(millisecond),
    peer:cast(A, erlang, halt, []),
    {down, DB} = peer:call(B, macula_ct, wait_down, [WB, 10000], 15000),
    ct:pal("a halted: b saw nodedown after ~p ms", [DB - T0]),
    true = DB - T0 < 2000,
    OnlyB = [#{node => atom_to_binary(NB), relays => [<<"mclr-relay">>]}],
    macula_ct:poll(fun() -> peer:call(B, macula, relay_nodes, []) =:= OnlyB end, 5000,
                   relay_kept_the_name),
    Ms = erlang:system_time(millisecond) - T0,
    ct:pal("a halted: its name left the relay's registry within ~p ms", [Ms]),
    ok.

%% online_nodes/0's bookkeeping: page requests to one relay never go
%% over 50 at once and 20/s after (a relay closes a node over 200 and
%% 50/s), and callers during a run share it.
listing_is_paced(_Config) ->
    L0 = macula_relay_listing:new(),
    {L1, true, [{send, 1, <<>>}, {send, 2, <<>>}]} =
        sort_actions(macula_relay_listing:join(L0, from1, {[1, 2], 0})),
    {L2, false, []} = macula_relay_listing:join(L1, from2, {[1, 2], 0}),
    L3 = macula_relay_listing:sent(macula_relay_listing:sent(L2, 1, 10), 2, 0),  % relay 2 gone
    %% relay 1 pages 200 times at time 0: 49 more sends, then waits of 50 ms
    {L4, Sends, Waits} = page_through(L3, 10, 0, 0, 0),
    {49, 1} = {Sends, Waits},
    {wait, 1, <<"n0049@h">>, 50} = get(last_action),
    false = macula_relay_listing:done(L4),
    %% a stale or early answer changes nothing while the request waits
    {L4, []} = macula_relay_listing:page(L4, 1, 59, {[{<<"x@h">>, <<"r">>}], false}, 10),
    %% the wait is over: the request goes out; its answer, the last page,
    %% ends the run and both callers get all 51 nodes
    {L5, [{send, 1, <<"n0049@h">>}]} = macula_relay_listing:paced(L4, {1, <<"n0049@h">>}, 50),
    L6 = macula_relay_listing:sent(L5, 1, 99),
    {L7, []} = macula_relay_listing:page(L6, 1, 99, {[{<<"z@h">>, <<"r2">>}], false}, 60),
    true = macula_relay_listing:done(L7),
    {L8, [from2, from1], Answer} = macula_relay_listing:answer(L7),
    51 = length(Answer),
    #{node := <<"z@h">>, relays := [<<"r2">>]} = lists:last(Answer),
    false = macula_relay_listing:done(L8),  % no run any more
    ok.

sort_actions({L, Started, Actions}) -> {L, Started, lists:sort(Actions)}.

%% Feeds pages of one node each to relay 1 until the listing waits.
page_through(L, Id, N, Sends, Waits) ->
    Node = iolist_to_binary(io_lib:format("n~4..0b@h", [N])),
    {L1, [Action]} = macula_relay_listing:page(L, 1, Id, {[{Node, <<"r">>}], true}, 0),
    put(last_action, Action),
    case Action of
        {send, 1, Node} -> page_through(macula_relay_listing:sent(L1, 1, Id + 1), Id + 1, N + 1,
                                        Sends + 1, Waits);
        {wait, 1, Node, _} -> {L1, Sends, Waits + 1}
    end.

%% The relay dies: both nodes see nodedown within the relay connection's
%% idle timeout (8 s), before the tick timeout (60 s); a new relay on the
%% same address brings them back.
relay_killed(Config) ->
    need_netns(Config),
    {A, NA, B, NB} = pair(Config),
    {WA, WB, T0} = connected_and_watched(A, NA, B, NB),
    stop_relay(Config),
    {down, DA} = peer:call(A, macula_ct, wait_down, [WA, 40000], 45000),
    {down, DB} = peer:call(B, macula_ct, wait_down, [WB, 40000], 45000),
    ct:pal("relay killed: nodedown after ~p ms (a) and ~p ms (b)", [DA - T0, DB - T0]),
    true = DA - T0 < 25000 andalso DB - T0 < 25000,
    start_relay(Config),
    {pong, Ms, N} = peer:call(A, macula_ct, ping_until, [NB, 60000], 65000),
    ct:pal("relay restarted: pong after ~p ms (~p pings)", [Ms, N]),
    ok.

%%% ------------------------------------------------------------------
%%% Mesh (relay mode)

-define(MESH1, "10.196.0.1:4434").
-define(MESH2, "10.196.0.2:4434").

%% Two relays linked to each other (each names the other: they keep one
%% link); a registers at the first, b at the second.
mesh(Config) ->
    R1 = start_relay(Config, ?RELAY_IP, "mclr-mesh-1", ["--peer", ?MESH2]),
    R2 = start_relay(Config, ?RELAY2_IP, "mclr-mesh-2", ["--peer", ?MESH1]),
    {A, NA} = node_a(Config, #{args => mesh_args(Config, ?MESH1 ++ "," ++ ?MESH2)}),
    {B, NB} = node_b(Config, #{args => mesh_args(Config, ?MESH2 ++ "," ++ ?MESH1)}),
    macula_ct:wait_output(NA, "registered at relay mclr-mesh-1", 20000),
    macula_ct:wait_output(NB, "registered at relay mclr-mesh-2", 20000),
    {R1, R2, A, NA, B, NB}.

%% Across two relays: ping and rpc both ways, a 64 MB message both ways.
%% In relay mode a node uses one relay of its list at a time.
mesh_ping_rpc_big(Config) ->
    need_netns(Config),
    {_R1, _R2, A, NA, B, NB} = mesh(Config),
    %% each node's home relay, as a registered node at either relay sees it
    Online = lists:sort([#{node => atom_to_binary(NA), relays => [<<"mclr-mesh-1">>]},
                         #{node => atom_to_binary(NB), relays => [<<"mclr-mesh-2">>]}]),
    ok = macula_ct:poll(fun() -> peer:call(A, macula, relay_nodes, []) =:= Online end, 10000,
                        relay_registry_incomplete),
    Online = peer:call(B, macula, relay_nodes, []),
    ping_rpc_big(A, NA, B, NB, "across two relays"),
    [#{state := identified, name := <<"mclr-mesh-1">>, stats := #{tunnels := 1}},
     #{state := standby}] =
        lists:sort(fun(X, Y) -> maps:get(tag, X) =< maps:get(tag, Y) end,
                   peer:call(A, macula, relays, [])),
    {error, not_in_dist_relay_mode} = peer:call(A, macula, join_dist_relay, [?MESH2]),
    ok.

%% The relay registry as a discovery source: a at one relay of a mesh,
%% b at the other, both with cluster formation on and no other source.
%% Each asks its relay which nodes of the realm are online (over the
%% authenticated relay connection; the relay answers for the whole mesh)
%% and dials the other: they connect without anyone naming the other.
relay_registry_cluster(Config) ->
    need_netns(Config),
    start_relay(Config, ?RELAY_IP, "mclr-mesh-1", ["--peer", ?MESH2]),
    start_relay(Config, ?RELAY2_IP, "mclr-mesh-2", ["--peer", ?MESH1]),
    Cluster = ["-macula_dist_cluster", "true", "-macula_dist_discovery_interval_ms", "500"],
    {A, NA} = node_a(Config, #{args => mesh_args(Config, ?MESH1) ++ Cluster}),
    {B, NB} = node_b(Config, #{args => mesh_args(Config, ?MESH2) ++ Cluster}),
    T0 = erlang:monotonic_time(millisecond),
    macula_ct:poll(fun() -> peer:call(A, erlang, nodes, []) =:= [NB] end, 30000,
                   fun() -> {not_joined, peer:call(A, macula, discovered, [])} end),
    %% b's side of the connection may come up a moment after a's
    macula_ct:poll(fun() -> peer:call(B, erlang, nodes, []) =:= [NA] end, 5000,
                   fun() -> {b_not_joined, peer:call(B, erlang, nodes, [])} end),
    ct:pal("joined through the relay registry ~b ms after b's start",
           [erlang:monotonic_time(millisecond) - T0]),
    %% the join may be b's dial: a's own next refresh lists b too
    FromRelay = fun() -> [D || D = #{node := N} <- peer:call(A, macula, discovered, []),
                               N =:= atom_to_binary(NB)] end,
    macula_ct:poll(fun() -> FromRelay() =/= [] end, 5000, fun() -> {not_discovered, FromRelay()} end),
    [#{source := relay, address := relay}] = FromRelay(),
    [NA, NB] = lists:sort([binary_to_atom(N) || #{node := N} <- peer:call(B, macula,
                                                                          relay_nodes, [])]),
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    ok.

%% b has another cookie: the end-to-end cookie proof fails across the
%% mesh as through one relay.
mesh_wrong_cookie(Config) ->
    need_netns(Config),
    start_relay(Config, ?RELAY_IP, "mclr-mesh-1", ["--peer", ?MESH2]),
    start_relay(Config, ?RELAY2_IP, "mclr-mesh-2", ["--peer", ?MESH1]),
    {A, NA} = node_a(Config, #{args => mesh_args(Config, ?MESH1)}),
    {_B, NB} = node_b(Config, #{args => mesh_args(Config, ?MESH2), cookie => "another_cookie"}),
    macula_ct:wait_output(NA, "registered at relay mclr-mesh-1", 20000),
    macula_ct:wait_output(NB, "registered at relay mclr-mesh-2", 20000),
    pang = peer:call(A, net_adm, ping, [NB], 30000),
    macula_ct:wait_output(NB, "does not know our cookie", 10000),
    [] = peer:call(A, erlang, nodes, []),
    ok.

%% A node claiming b's name at the other relay is refused: a name is
%% unique across the mesh. b stays reachable.
mesh_name_hijack(Config) ->
    need_netns(Config),
    {_R1, _R2, A, _NA, B, NB} = mesh(Config),
    ok = peer:call(B, persistent_term, put, [mclr_who, real_b]),
    {_Evil, _} = macula_ct:start_node(Config, #{name => "b", host => ?IP_B, netns => ?NS_A,
                                                args => mesh_args(Config, ?MESH1)}),
    %% (the impostor has b's node name: output/1 now reads its output)
    Out = macula_ct:wait_output(NB, "name_taken", 20000),
    ct:pal("impostor said: ~ts", [Out]),
    real_b = peer:call(A, rpc, call, [NB, persistent_term, get, [mclr_who]], 30000),
    ok.

%% The relay a uses dies (SIGKILL): a notices within its relay
%% connection's idle timeout, its connection to b goes down (nodedown, no
%% corrupted data), it fails over to the other relay, and a ping gets
%% through again. Then a 1 MB round trip checks the new path carries data.
mesh_relay_killed(Config) ->
    need_netns(Config),
    {R1, _R2, A, NA, B, NB} = mesh(Config),
    {WA, WB, T0} = connected_and_watched(A, NA, B, NB),
    _ = cmd("kill", ["-9", integer_to_list(R1)]),
    {down, DA} = peer:call(A, macula_ct, wait_down, [WA, 30000], 35000),
    {down, DB} = peer:call(B, macula_ct, wait_down, [WB, 30000], 35000),
    ct:pal("relay killed: nodedown after ~p ms (a) and ~p ms (b)", [DA - T0, DB - T0]),
    true = DA - T0 < 15000 andalso DB - T0 < 15000,
    macula_ct:wait_output(NA, "registered at relay mclr-mesh-2", 40000),
    {pong, Ms, N} = peer:call(A, macula_ct, ping_until, [NB, 40000], 45000),
    ct:pal("failed over: pong ~p ms after the nodedown (~p pings)",
           [erlang:system_time(millisecond) - DA, N]),
    true = Ms < 40000,
    {ok, _} = peer:call(A, macula_ct, big_roundtrip, [NB, ?MB, 30000], 35000),
    ok.

%% a's VM is killed (SIGKILL: no goodbye to the relay) and started again
%% at once: it gets its name back after the relay's probe of the old
%% connection (3 s), well before the idle timeout would free it, and b
%% reaches the new a.
restart_after_kill(Config) ->
    need_netns(Config),
    {A, NA, _B, NB} = pair(Config),
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    macula_ct:kill9(A),
    macula_ct:stop_node(NA),
    T0 = erlang:monotonic_time(millisecond),
    {A2, NA} = node_a(Config),
    wait_registered(NA),
    Ms = erlang:monotonic_time(millisecond) - T0,
    ct:pal("restarted node registered after ~p ms", [Ms]),
    true = Ms < 8000,
    pong = peer:call(A2, net_adm, ping, [NB], 30000),
    ok.

%% CA mode through the relay: the end-to-end session checks the chain
%% and that the certificate is valid for the host of the node name (not
%% for the tunnel's loopback address). A node whose certificate is for
%% another host is refused by its peer.
%% The relay runs in CA mode too, with a certificate from the same CA
%% valid for its address: the nodes check it, and it checks theirs.
ca_mode(Config) ->
    need_netns(Config),
    Tls = ca_files(Config),
    start_relay(Config, "::", "mclr-relay", ca_relay_args(Tls)),
    CaArgs = fun(Cert) -> ca_node_args(Config, Tls, Cert) end,
    {A, NA} = node_a(Config, #{args => CaArgs(good)}),
    {B, NB} = node_b(Config, #{args => CaArgs(good)}),
    wait_registered(NA),
    wait_registered(NB),
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    #{trust := ca} = peer:call(A, macula, info, []),
    pong = peer:call(B, net_adm, ping, [NA], 30000),
    macula_ct:stop_node(NA),
    %% The relay frees a's name when the old connection times out (8 s):
    %% a stopped VM does not always say goodbye.
    {A2, NA} = node_a(Config, #{args => CaArgs(wrong_host)}),
    macula_ct:wait_output(NA, "registered at relay mclr-relay", 40000),
    pang = peer:call(A2, net_adm, ping, [NB], 30000),
    macula_ct:wait_output(NB, "certificate not valid for", 10000),
    ok.

ca_relay_args(Tls) ->
    ["--cacertfile", maps:get(ca, Tls), "--certfile", maps:get(relay, Tls),
     "--keyfile", maps:get(key, Tls)].

ca_node_args(Config, Tls, Cert) ->
    relay_args(Config, ?RELAY) ++
        ["-macula_dist_cacertfile", maps:get(ca, Tls),
         "-macula_dist_certfile", maps:get(Cert, Tls),
         "-macula_dist_keyfile", maps:get(key, Tls)].

%% A node in CA mode does not register at a relay whose certificate is not
%% from its CA (here: the relay's own self-signed one), and says why; a
%% relay in CA mode refuses a node whose certificate is not from its CA.
ca_mode_relay_certificate(Config) ->
    need_netns(Config),
    Tls = ca_files(Config),
    start_relay(Config),
    {A, NA} = node_a(Config, #{args => ca_node_args(Config, Tls, good)}),
    macula_ct:wait_output(NA, "TLS with relay " ?RELAY_IP ":4434 failed", 20000),
    [#{state := State}] = peer:call(A, macula, relays, []),
    true = State =/= identified,
    stop_relay(Config),
    start_relay(Config, "::", "mclr-relay", ca_relay_args(Tls)),
    {B, NB} = node_b(Config),  % self-signed, cookie mode
    macula_ct:wait_output(NB, "relay " ?RELAY_IP ":4434", 20000),
    [#{state := StateB}] = peer:call(B, macula, relays, []),
    true = StateB =/= identified,
    wait_registered(NA),
    ok.

%% A CA, and one key with three certificates: one valid for both nodes'
%% hosts, one for another host, one for the relay's address.
ca_files(Config) ->
    Dir = filename:join(?config(priv_dir, Config), "tls"),
    ok = macula_netns:test_ca(Dir, "macula relay suite"),
    Cert = fun(Name, Ips) -> macula_netns:test_cert(Dir, Name, ["IP:" ++ Ip || Ip <- Ips]) end,
    #{ca => filename:join(Dir, "ca.pem"), key => filename:join(Dir, "node.key"),
      good => Cert("good", [?IP_A, ?IP_B]), wrong_host => Cert("wrong", ["10.196.9.9"]),
      relay => Cert("relay", [?RELAY_IP])}.

