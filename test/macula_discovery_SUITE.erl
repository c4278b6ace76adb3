%% @doc Discovery without EPMD, on loopback: macula_epmd (`-epmd_module
%% macula_epmd -start_epmd false', no daemon) lets `name@host' nodes take
%% free ports and still find each other, several on one host;
%% net_adm:names/0 lists them; a second node of a running name is
%% refused; a killed node's entry is replaced; an entry of another user
%% pointing at a port that user does not hold is ignored. A custom EPMD
%% module (after OTP's distribution_SUITE case `epmd_module') decides the
%% ports of macula nodes. The static list and hosts file sources.
-module(macula_discovery_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("kernel/include/file.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([free_ports_and_names/1, duplicate_name_refused/1, stale_and_foreign_entries/1,
         custom_epmd_module/1, static_sources/1, bad_settings/1, mdns_codec/1,
         mdns_decoder_garbage/1]).

-define(FIRST_PORT, 17100).
-define(HOST, "127.0.0.1").

suite() ->
    [{timetrap, {minutes, 3}}].

all() ->
    [free_ports_and_names, duplicate_name_refused, stale_and_foreign_entries,
     custom_epmd_module, static_sources, bad_settings, mdns_codec, mdns_decoder_garbage].

init_per_suite(Config) ->
    macula_ct:init_suite(Config, ?FIRST_PORT).

end_per_suite(Config) ->
    macula_ct:end_suite(Config).

init_per_testcase(Case, Config) ->
    Dir = filename:join(?config(priv_dir, Config), atom_to_list(Case) ++ "-registry"),
    [{registry, Dir} | Config].

end_per_testcase(_Case, _Config) ->
    macula_ct:stop_all().

%%% ------------------------------------------------------------------

%% Three `name@127.0.0.1' nodes, no port anywhere: each takes a free UDP
%% port, they connect by name, and names/0 lists all three.
free_ports_and_names(Config) ->
    {A, NA} = start(Config, "da", []),
    {B, NB} = start(Config, "db", []),
    {C, NC} = start(Config, "dc", []),
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    pong = peer:call(C, net_adm, ping, [NA], 30000),
    pong = peer:call(B, net_adm, ping, [NC], 30000),
    Ports = [maps:get(port, macula_ct:node_info(P)) || P <- [A, B, C]],
    3 = length(lists:usort(Ports)),
    false = lists:member(4433, Ports),
    {ok, Names} = peer:call(A, net_adm, names, []),
    Ports = [proplists:get_value(N, Names) || N <- ["da", "db", "dc"]],
    {ok, Names} = peer:call(B, net_adm, names, [?HOST]),
    %% net_adm:world-style use: every listed node answers
    [pong = peer:call(C, net_adm, ping, [list_to_atom(N ++ "@" ++ ?HOST)], 30000)
     || {N, _} <- Names],
    ok.

%% A second node of a name that a running node holds does not start.
duplicate_name_refused(Config) ->
    {_A, _} = start(Config, "dup", []),
    Args = macula_ct:erl_args(inet_tcp, #{args => args(Config, [])}) ++
        ["-name", "dup@" ++ ?HOST, "-noshell", "-eval", "erlang:halt(0)"],
    {Status, Out} = macula_ct:run_erl(Args, env(Config), 30000),
    true = Status =/= 0,
    {match, _} = re:run(Out, "the name dup is registered on port [0-9]+ by a running node"),
    ok.

%% A node killed with -9 leaves its entry: the entry is ignored, and the
%% next node of that name takes it over. An entry of another user that
%% points at a port that user holds no socket on is not believed.
stale_and_foreign_entries(Config) ->
    {A, NA} = start(Config, "st", []),
    {B, _} = start(Config, "ob", []),
    pong = peer:call(B, net_adm, ping, [NA], 30000),
    PortA = maps:get(port, macula_ct:node_info(A)),
    macula_ct:kill9(A),
    macula_ct:poll(fun() -> not lists:member(NA, peer:call(B, erlang, nodes, [])) end,
                   20000, still_connected),
    {ok, Names1} = peer:call(B, net_adm, names, []),
    undefined = proplists:get_value("st", Names1),
    %% a killed node of another name: its entry goes when a node registers
    {K, _} = start(Config, "killed", []),
    macula_ct:kill9(K),
    [NsDir] = filelib:wildcard(filename:join(?config(registry, Config), "net*")),
    Killed = filename:join([NsDir, "u0", "killed"]),
    {ok, _} = file:read_link_info(Killed),
    {A2, NA} = start(Config, "st", []),
    {error, enoent} = file:read_link_info(Killed),
    pong = peer:call(B, net_adm, ping, [NA], 30000),
    true = is_integer(PortA),
    %% entries of another user (65534; the test runs as root to make them)
    %% for B's port, which that user does not hold; a directory named for
    %% a user that does not own it; a FIFO where an entry should be
    PortB = maps:get(port, macula_ct:node_info(B)),
    Target = lists:flatten(io_lib:format("macula:1:~p:~s", [PortB, os:getpid()])),
    Nobody = filename:join(NsDir, "u65534"),
    ok = file:make_dir(Nobody),
    ok = file:make_symlink(Target, filename:join(Nobody, "forged")),
    [] = os:cmd("chown -h 65534 " ++ Nobody ++ " " ++ filename:join(Nobody, "forged")),
    Fake = filename:join(NsDir, "u65533"),
    ok = file:make_dir(Fake),
    ok = file:make_symlink(Target, filename:join(Fake, "forged2")),
    [] = os:cmd("mkfifo " ++ filename:join([NsDir, "u0", "fifo"])),
    {ok, Names2} = peer:call(A2, net_adm, names, []),
    undefined = proplists:get_value("forged", Names2),
    undefined = proplists:get_value("forged2", Names2),
    true = is_integer(proplists:get_value("ob", Names2)),
    noport = peer:call(A2, macula_epmd, port_please, ["forged", {127, 0, 0, 1}]),
    noport = peer:call(A2, macula_epmd, port_please, ["fifo", {127, 0, 0, 1}]),
    {port, PortB, _} = peer:call(A2, macula_epmd, port_please, ["ob", {127, 0, 0, 1}]),
    ok.

%% OTP's `epmd_module' case over macula: a module of the test's own
%% (macula_ct_epmd) gives every node's port; macula listens and dials
%% where it says.
custom_epmd_module(Config) ->
    P1 = macula_ct:next_port(Config),
    P2 = macula_ct:next_port(Config),
    Table = lists:flatten(io_lib:format("ea=~p,eb=~p", [P1, P2])),
    Args = ["-proto_dist", "macula", "-epmd_module", "macula_ct_epmd", "-start_epmd", "false",
            "-kernel", "macula_ct_epmd_ports", "\"" ++ Table ++ "\""],
    {A, _} = macula_ct:start_node(Config, #{proto => inet_tcp, name => "ea", args => Args}),
    {B, NB} = macula_ct:start_node(Config, #{proto => inet_tcp, name => "eb", args => Args}),
    P1 = maps:get(port, macula_ct:node_info(A)),
    P2 = maps:get(port, macula_ct:node_info(B)),
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    ok.

%% The static list and a hosts file tell a node where its peers listen
%% (free ports, which its own registry does not know), and cluster
%% formation joins them.
static_sources(Config) ->
    {A, _} = start(Config, "sa", []),
    PortA = maps:get(port, macula_ct:node_info(A)),
    {B, _} = start(Config, "sb", []),
    PortB = maps:get(port, macula_ct:node_info(B)),
    Hosts = filename:join(?config(priv_dir, Config), "hosts"),
    ok = file:write_file(Hosts, io_lib:format("# test~nsb@127.0.0.1 127.0.0.1:~p~n", [PortB])),
    List = lists:flatten(io_lib:format("sa@127.0.0.1=127.0.0.1:~p", [PortA])),
    {C, _} = start(Config, "sc", ["-macula_dist_nodes", List,
                                  "-macula_dist_hosts_file", Hosts,
                                  "-macula_dist_cluster", "true",
                                  "-macula_dist_discovery_interval_ms", "500",
                                  "-macula_dist_registry_dir",
                                  ?config(registry, Config) ++ "-other"]),
    %% C has a registry of its own: only the sources can tell it the
    %% ports; cluster formation connects it to both without a ping
    macula_ct:poll(fun() -> lists:sort(peer:call(C, erlang, nodes, [])) =:=
                                ['sa@127.0.0.1', 'sb@127.0.0.1'] end,
                   20000, fun() -> {not_joined, peer:call(C, erlang, nodes, [])} end),
    Found = peer:call(C, macula, discovered, []),
    [static] = lists:usort([S || #{source := S} <- Found]),
    [<<"sa@127.0.0.1">>, <<"sb@127.0.0.1">>] = lists:sort([N || #{node := N} <- Found]),
    ok.

%% Bad discovery settings stop the node at boot, naming the setting.
bad_settings(Config) ->
    Bad = [{"-macula_dist_nodes", "a@h=10.0.0.1", "macula_dist_nodes"},
           {"-macula_dist_nodes", "nohost=10.0.0.1:5", "macula_dist_nodes"},
           {"-macula_dist_hosts_file", "/nonexistent/hosts", "macula_dist_hosts_file"},
           {"-macula_dist_dns_domain", "bad..domain", "macula_dist_dns_domain"},
           {"-macula_dist_dns_servers", "10.0.0.1:99999", "macula_dist_dns_servers"},
           {"-macula_dist_mdns", "yes", "macula_dist_mdns"},
           {"-macula_dist_mdns_realm", "a b", "macula_dist_mdns_realm"},
           {"-macula_dist_discovery_interval_ms", "5", "macula_dist_discovery_interval_ms"},
           {"-macula_dist_cluster", "1", "macula_dist_cluster"},
           {"-macula_dist_registry_dir", "relative", "macula_dist_registry_dir"}],
    [refused(Config, args(Config, [K, V]), Name) || {K, V, Name} <- Bad],
    %% a source without macula_epmd
    NoEpmd = macula_ct:erl_args(macula, #{args => ["-macula_dist_mdns", "true"]}),
    refused(Config, NoEpmd, "macula_dist_mdns"),
    ok.

refused(Config, Args, Name) ->
    Full = macula_ct:erl_args(inet_tcp, #{}) -- ["-setcookie", "macula_ct_cookie"],
    All = Full ++ Args ++ ["-name", "bad@" ++ ?HOST, "-noshell", "-eval", "erlang:halt(0)"],
    {Status, Out} = macula_ct:run_erl(All, env(Config), 30000),
    case Status =/= 0 andalso binary:match(Out, list_to_binary("invalid " ++ Name)) of
        {_, _} -> ok;
        _ -> ct:fail({not_refused, Name, Args, Status, Out})
    end.

%% The announcement decodes to what was announced; compressed names (as
%% other mDNS stacks send them) are read; loops and forward pointers are
%% refused.
mdns_codec(_Config) ->
    Service = [<<"_erlang-dist">>, <<"_udp">>, <<"local">>],
    Instance = [<<"a@10.0.0.1">> | Service],
    Target = [<<"10-0-0-1">>, <<"local">>],
    Packet = macula_mdns_codec:announcement(
               #{service => Service, instance => Instance, target => Target, port => 4500,
                 txt => [<<"realm=r">>], addresses => [{10, 0, 0, 1}, {16#fd00, 0, 0, 0, 0, 0, 0, 1}],
                 ttl => 15}),
    {ok, #{response := true, questions := [],
           records := [{Service, ptr, 15, Instance},
                       {Instance, srv, 15, {0, 0, 4500, Target}},
                       {Instance, txt, 15, [<<"realm=r">>]},
                       {Target, a, 15, {10, 0, 0, 1}},
                       {Target, aaaa, 15, {16#fd00, 0, 0, 0, 0, 0, 0, 1}}]}} =
        macula_mdns_codec:decode(Packet),
    {ok, #{response := false, questions := [{Service, 12}]}} =
        macula_mdns_codec:decode(macula_mdns_codec:query(Service)),
    %% PTR data compressed to the owner name's suffix (offset 12: the service)
    Name = <<12, "_erlang-dist", 4, "_udp", 5, "local", 0>>,
    Ptr = <<1, "x", 16#C0, 12>>,
    Compressed = <<0:16, 16#8400:16, 0:16, 1:16, 0:16, 0:16, Name/binary,
                   12:16, 1:16, 60:32, (byte_size(Ptr)):16, Ptr/binary>>,
    {ok, #{records := [{Service, ptr, 60, [<<"x">> | Service]}]}} =
        macula_mdns_codec:decode(Compressed),
    Loop = <<0:16, 16#8400:16, 1:16, 0:16, 0:16, 0:16, 16#C0, 12, 0, 12, 0, 1>>,
    {error, _} = macula_mdns_codec:decode(Loop),
    Forward = <<0:16, 16#8400:16, 1:16, 0:16, 0:16, 0:16, 16#C0, 20, 0, 12, 0, 1, 0, 0, 0, 0, 0, 0>>,
    {error, _} = macula_mdns_codec:decode(Forward),
    ok.

%% 100 000 packets made by damaging real ones (bytes changed, cut,
%% repeated) and random bytes: the decoder returns, never raises, and
%% stays fast.
mdns_decoder_garbage(_Config) ->
    Service = [<<"_erlang-dist">>, <<"_udp">>, <<"local">>],
    Seeds = [macula_mdns_codec:query(Service),
             macula_mdns_codec:announcement(
               #{service => Service, instance => [<<"n@h">> | Service],
                 target => [<<"h">>, <<"local">>], port => 1, txt => [<<"realm=macula">>],
                 addresses => [{1, 2, 3, 4}], ttl => 1})],
    T0 = erlang:monotonic_time(millisecond),
    Results = [decode_damaged(lists:nth(rand:uniform(2), Seeds)) || _ <- lists:seq(1, 100000)],
    Ms = erlang:monotonic_time(millisecond) - T0,
    Ok = length([x || ok <- Results]),
    ct:pal("100000 damaged packets in ~b ms: ~b decoded, ~b refused", [Ms, Ok, 100000 - Ok]),
    true = Ok > 0 andalso Ok < 100000,
    ok.

decode_damaged(Seed) ->
    Packet = damage(Seed, rand:uniform(4)),
    try macula_mdns_codec:decode(Packet) of
        {ok, #{}} -> ok;
        {error, Why} when is_atom(Why) -> error
    catch C:R:S -> ct:fail({decoder_raised, Packet, C, R, S})
    end.

damage(Bin, 1) ->
    << <<(case rand:uniform(20) of 1 -> rand:uniform(256) - 1; _ -> B end)>> || <<B>> <= Bin >>;
damage(Bin, 2) ->
    binary:part(Bin, 0, rand:uniform(byte_size(Bin)));
damage(Bin, 3) ->
    Cut = rand:uniform(byte_size(Bin)) - 1,
    <<Head:Cut/binary, Tail/binary>> = Bin,
    <<Head/binary, Tail/binary, Tail/binary>>;
damage(_Bin, 4) ->
    crypto:strong_rand_bytes(rand:uniform(600)).

%%% ------------------------------------------------------------------

start(Config, Name, Extra) ->
    macula_ct:start_node(Config, #{proto => inet_tcp, name => Name,
                                   args => args(Config, Extra), env => env_extra(Config)}).

%% A setting given twice takes its first value: Extra comes first.
args(Config, Extra) ->
    Extra ++ ["-proto_dist", "macula", "-epmd_module", "macula_epmd", "-start_epmd", "false",
              "-macula_dist_registry_dir", ?config(registry, Config)].

env(Config) ->
    [{"MACULA_DIST_CERT_DIR", filename:join(?config(priv_dir, Config), "certs")} |
     env_extra(Config)].

env_extra(_Config) ->
    [{"ERL_CRASH_DUMP_SECONDS", "0"}].
