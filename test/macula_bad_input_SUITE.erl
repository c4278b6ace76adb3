%% @doc What `-proto_dist macula` does with bad input: wrong cookies,
%% certificates from the wrong CA or for the wrong host, UDP garbage, a
%% port already taken, invalid node names and settings, insecure mode.
%% Nodes that must come up are started with OTP's `peer`; nodes that must
%% fail at start are run as plain OS processes and their output checked.
-module(macula_bad_input_SUITE).

-include_lib("common_test/include/ct.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([wrong_cookie/1, ca_mode_ping/1, ca_other_ca_refused/1,
         ca_wrong_host_refused/1, udp_garbage/1, port_in_use/1,
         port_in_use_by_node/1, node_name_parsing/1,
         invalid_node_name_at_start/1, missing_keyfile/1,
         invalid_setting/1, insecure_mode/1, wrong_cookie_log_volume/1]).

-define(FIRST_PORT, 16000).
-define(STARTED, "MACULA_CT_STARTED").

suite() ->
    [{timetrap, {minutes, 2}}].

all() ->
    [wrong_cookie, ca_mode_ping, ca_other_ca_refused, ca_wrong_host_refused,
     udp_garbage, port_in_use, port_in_use_by_node, node_name_parsing,
     invalid_node_name_at_start, missing_keyfile, invalid_setting,
     insecure_mode, wrong_cookie_log_volume].

init_per_suite(Config0) ->
    Config = macula_ct:init_suite(Config0, ?FIRST_PORT),
    [{pki, make_pki(?config(priv_dir, Config))}, {proto, macula} | Config].

end_per_suite(Config) ->
    macula_ct:end_suite(Config).

init_per_testcase(_Case, Config) ->
    Config.

end_per_testcase(_Case, _Config) ->
    macula_ct:stop_all().

%%% ------------------------------------------------------------------
%%% Helpers

start(Config) ->
    macula_ct:start_node(Config, #{}).

start(Config, Opts) ->
    macula_ct:start_node(Config, Opts).

nodes_of(Peer) ->
    lists:sort(peer:call(Peer, erlang, nodes, [])).

%% Runs a macula node as an OS process that must fail at start: returns
%% its output after checking it exited non-zero without booting.
must_fail(Config, Name, Opts) ->
    Args = macula_ct:erl_args(macula, Opts) ++
        ["-name", Name, "-noshell",
         "-eval", "io:format(\"" ?STARTED " ~p~n\", [node()]), halt(0)."],
    Env = [{"MACULA_DIST_CERT_DIR", ?config(cert_dir, Config)},
           {"ERL_CRASH_DUMP_SECONDS", "0"} | maps:get(env, Opts, [])],
    {Status, Out} = macula_ct:run_erl(Args, Env, 30000),
    ct:pal("erl -name ~s ~p~nexit status ~p, output:~n~ts",
           [Name, maps:get(args, Opts, []), Status, Out]),
    binary:match(Out, <<?STARTED>>) =:= nomatch
        orelse ct:fail({node_started, Name, Out}),
    is_integer(Status) andalso Status =/= 0
        orelse ct:fail({bad_exit_status, Name, Status, Out}),
    Out.

contains(Out, Text) ->
    case binary:match(Out, iolist_to_binary(Text)) of
        nomatch -> ct:fail({output_lacks, iolist_to_binary(Text), Out});
        _ -> ok
    end.

lacks(Out, Text) ->
    case binary:match(Out, iolist_to_binary(Text)) of
        nomatch -> ok;
        _ -> ct:fail({output_has, iolist_to_binary(Text), Out})
    end.

%% The peer's connections back to N within a few seconds.
connections(Peer, N) ->
    macula_ct:wait_connections(Peer, N, 8000).

%%% ------------------------------------------------------------------
%%% PKI made with the openssl CLI: two CAs, node certificates with
%%% SAN IP:127.0.0.1 (serverAuth + clientAuth) from each, and one from
%%% the first CA for another address.

make_pki(Priv) ->
    Dir = filename:join(Priv, "pki"),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    Ca1 = make_ca(Dir, "ca1"),
    Ca2 = make_ca(Dir, "ca2"),
    #{ca1 => Ca1, ca2 => Ca2,
      n1 => make_cert(Dir, "n1", "ca1", "IP:127.0.0.1"),
      n2 => make_cert(Dir, "n2", "ca1", "IP:127.0.0.1"),
      other_ca => make_cert(Dir, "n3", "ca2", "IP:127.0.0.1"),
      wrong_host => make_cert(Dir, "n4", "ca1", "IP:127.0.0.2")}.

make_ca(Dir, Name) ->
    Key = filename:join(Dir, Name ++ ".key"),
    Pem = filename:join(Dir, Name ++ ".pem"),
    openssl(["req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes",
             " -keyout ", q(Key), " -out ", q(Pem), " -days 30",
             " -subj ", q("/CN=macula test " ++ Name),
             " -addext ", q("basicConstraints=critical,CA:TRUE"),
             " -addext ", q("keyUsage=critical,keyCertSign,cRLSign")]),
    Pem.

make_cert(Dir, Name, Ca, San) ->
    Key = filename:join(Dir, Name ++ ".key"),
    Csr = filename:join(Dir, Name ++ ".csr"),
    Pem = filename:join(Dir, Name ++ ".pem"),
    Ext = filename:join(Dir, Name ++ ".ext"),
    ok = file:write_file(Ext, ["basicConstraints=CA:FALSE\n",
                               "keyUsage=critical,digitalSignature\n",
                               "extendedKeyUsage=serverAuth,clientAuth\n",
                               "subjectAltName=", San, "\n"]),
    openssl(["req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes",
             " -keyout ", q(Key), " -out ", q(Csr), " -subj ", q("/CN=" ++ Name)]),
    openssl(["x509 -req -in ", q(Csr), " -CA ", q(filename:join(Dir, Ca ++ ".pem")),
             " -CAkey ", q(filename:join(Dir, Ca ++ ".key")), " -CAcreateserial",
             " -out ", q(Pem), " -days 30 -sha256 -extfile ", q(Ext)]),
    {Pem, Key}.

openssl(Args) ->
    Cmd = lists:flatten(["openssl ", Args, " 2>&1; echo \"exit=$?\""]),
    Out = os:cmd(Cmd),
    case string:find(Out, "exit=0") of
        nomatch -> ct:fail({openssl_failed, Cmd, Out});
        _ -> ok
    end.

q(S) -> "'" ++ S ++ "'".

ca_args(Config, Ca, Node) ->
    Pki = ?config(pki, Config),
    {Cert, Key} = maps:get(Node, Pki),
    ["-macula_dist_cacertfile", maps:get(Ca, Pki),
     "-macula_dist_certfile", Cert, "-macula_dist_keyfile", Key].

%%% ------------------------------------------------------------------
%%% Cases

%% Different cookies: pang both ways, the accepting side logs the refusal,
%% and the refused connections go away. A per-node cookie then works.
wrong_cookie(Config) ->
    {A, NA} = start(Config, #{cookie => "cookie_one"}),
    {B, NB} = start(Config, #{cookie => "cookie_two"}),
    pang = peer:call(A, net_adm, ping, [NB], 30000),
    [] = nodes_of(A),
    [] = nodes_of(B),
    Out = macula_ct:wait_output(NB, "does not know our cookie", 5000),
    contains(Out, "refused"),
    contains(Out, atom_to_list(NA)),
    connections(A, 0),
    connections(B, 0),
    %% the other way round
    pang = peer:call(B, net_adm, ping, [NA], 30000),
    [] = nodes_of(B),
    _ = macula_ct:wait_output(NA, "does not know our cookie", 5000),
    connections(A, 0),
    connections(B, 0),
    %% with the right cookie for that node, it connects
    true = peer:call(A, erlang, set_cookie, [NB, cookie_two]),
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    [NB] = nodes_of(A),
    connections(A, 1),
    connections(B, 1).

ca_mode_ping(Config) ->
    {A, NA} = start(Config, #{args => ca_args(Config, ca1, n1)}),
    {B, NB} = start(Config, #{args => ca_args(Config, ca1, n2)}),
    #{trust := ca} = macula_ct:node_info(A),
    #{trust := ca} = macula_ct:node_info(B),
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    [NB] = nodes_of(A),
    [NA] = nodes_of(B),
    NB = peer:call(A, rpc, call, [NB, erlang, node, []]),
    %% the cookie is still required in CA mode
    {C, NC} = start(Config, #{args => ca_args(Config, ca1, n2), cookie => "other"}),
    pang = peer:call(A, net_adm, ping, [NC], 30000),
    [] = nodes_of(C).

%% C's certificate comes from another CA (C itself trusts the first CA):
%% refused in both directions, nothing left connected.
ca_other_ca_refused(Config) ->
    {A, NA} = start(Config, #{args => ca_args(Config, ca1, n1)}),
    {C, NC} = start(Config, #{args => ca_args(Config, ca1, other_ca)}),
    pang = peer:call(C, net_adm, ping, [NA], 30000),
    pang = peer:call(A, net_adm, ping, [NC], 30000),
    [] = nodes_of(A),
    [] = nodes_of(C),
    connections(A, 0),
    connections(C, 0),
    %% a node of the right CA still gets in
    {B, _NB} = start(Config, #{args => ca_args(Config, ca1, n2)}),
    pong = peer:call(B, net_adm, ping, [NA], 30000),
    [NA] = nodes_of(B).

%% D's certificate is from the right CA but for 127.0.0.2, while D claims
%% a name on 127.0.0.1: refused, and the accepting side says why.
ca_wrong_host_refused(Config) ->
    {A, NA} = start(Config, #{args => ca_args(Config, ca1, n1)}),
    {D, ND} = start(Config, #{args => ca_args(Config, ca1, wrong_host)}),
    pang = peer:call(D, net_adm, ping, [NA], 30000),
    [] = nodes_of(A),
    _ = macula_ct:wait_output(NA, "not valid for " ++ atom_to_list(ND), 5000),
    pang = peer:call(A, net_adm, ping, [ND], 30000),
    [] = nodes_of(A),
    [] = nodes_of(D),
    connections(A, 0),
    connections(D, 0).

%% Random datagrams at a connected node's port are dropped and counted;
%% the node's connection to its peer is untouched.
udp_garbage(Config) ->
    {A, _NA} = start(Config),
    {B, NB} = start(Config),
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    W = peer:call(A, macula_ct, watch, [NB]),
    #{port := Port, dropped_packets := D0, connections := 1} = macula_ct:node_info(B),
    {ok, S} = gen_udp:open(0, [binary, inet, {ip, {127, 0, 0, 1}}]),
    Packets = garbage(300),
    [ok = gen_udp:send(S, {127, 0, 0, 1}, Port, P) || P <- Packets],
    #{dropped_packets := D1} =
        macula_ct:poll(fun() ->
                               case macula_ct:node_info(B) of
                                   #{dropped_packets := D} = I
                                     when D >= D0 + length(Packets) * 9 div 10 -> {true, I};
                                   _ -> false
                               end
                       end, 5000, fun() -> {garbage_not_counted, D0, macula_ct:node_info(B)} end),
    ct:pal("dropped_packets ~p -> ~p after ~p datagrams", [D0, D1, length(Packets)]),
    gen_udp:close(S),
    %% still connected, nothing went down, traffic still flows
    up = peer:call(A, macula_ct, wait_down, [W, 1000]),
    [NB] = nodes_of(A),
    NB = peer:call(A, rpc, call, [NB, erlang, node, []]),
    {ok, _} = peer:call(A, macula_ct, big_roundtrip, [NB, 1024 * 1024], 30000),
    connections(B, 1),
    ct:comment("~p of ~p garbage datagrams counted as dropped",
               [D1 - D0, length(Packets)]).

%% Plain random bytes of every size, plus random bytes behind QUIC-like
%% first bytes (long header of version 1 and short header).
garbage(N) ->
    [case I rem 3 of
         0 -> crypto:strong_rand_bytes(1 + rand:uniform(1400));
         1 -> <<16#C0, 1:32, (crypto:strong_rand_bytes(1200))/binary>>;
         2 -> <<16#40, (crypto:strong_rand_bytes(20 + rand:uniform(1000)))/binary>>
     end || I <- lists:seq(1, N)].

%% The port is held by a socket of the CT node.
port_in_use(Config) ->
    Port = macula_ct:next_port(Config),
    {ok, S} = gen_udp:open(Port, [inet]),
    try
        Out = must_fail(Config, integer_to_list(Port) ++ "@127.0.0.1", #{}),
        contains(Out, "Address already in use"),
        contains(Out, integer_to_list(Port))
    after
        gen_udp:close(S)
    end.

%% The port is held by a running node: a second node on it fails (by
%% name or by -macula_dist_port), the first one carries on.
port_in_use_by_node(Config) ->
    {A, NA} = start(Config),
    #{port := Port} = macula_ct:node_info(A),
    Out1 = must_fail(Config, integer_to_list(Port) ++ "@127.0.0.1", #{}),
    contains(Out1, "Address already in use"),
    contains(Out1, integer_to_list(Port)),
    Out2 = must_fail(Config, "second@127.0.0.1",
                     #{args => ["-macula_dist_port", integer_to_list(Port)]}),
    contains(Out2, "Address already in use"),
    contains(Out2, integer_to_list(Port)),
    {B, _NB} = start(Config),
    pong = peer:call(B, net_adm, ping, [NA], 30000),
    #{port := Port, connections := 1} = macula_ct:node_info(A).

%% macula_dist's name functions, called in the CT node itself.
node_name_parsing(_Config) ->
    {module, macula_dist} = code:ensure_loaded(macula_dist),
    {4433, "127.0.0.1"} = macula_dist:splitname('4433@127.0.0.1'),
    {15000, "localhost"} = macula_dist:splitname('15000@localhost'),
    {1, "::1"} = macula_dist:splitname('1@::1'),
    {65535, "::1"} = macula_dist:splitname('65535@[::1]'),
    %% a non-numeric name gets the default port
    {4433, "127.0.0.1"} = macula_dist:splitname('a@127.0.0.1'),
    Bad = [bad, '70000@127.0.0.1', '0@127.0.0.1', '123456@127.0.0.1', 'a@', '@h',
           'a@b@c', 'a b@127.0.0.1', 'a@bad_host!', 'a@-x.example', 'a@1234'],
    [false = macula_dist:splitname(N) || N <- Bad],
    [false = macula_dist:is_node_name(N) || N <- Bad],
    [false = macula_dist:select(N) || N <- Bad],
    false = macula_dist:splitname("4433@127.0.0.1"),
    false = macula_dist:splitname(4433),
    true = macula_dist:is_node_name('4433@127.0.0.1'),
    true = macula_dist:is_node_name('a@unresolvable.invalid'),
    true = macula_dist:select('4433@127.0.0.1'),
    true = macula_dist:select('a@localhost'),
    false = macula_dist:select('bad'),
    false = macula_dist:select('a@unresolvable.invalid').

%% A numeric name that is not a port must stop the node at start, not
%% run it on some other port under a name no one can reach.
invalid_node_name_at_start(Config) ->
    Out1 = must_fail(Config, "70000@127.0.0.1", #{}),
    contains(Out1, "70000"),
    Out2 = must_fail(Config, "0@127.0.0.1", #{}),
    contains(Out2, "0@127.0.0.1").

missing_keyfile(Config) ->
    Pki = ?config(pki, Config),
    {Cert, _Key} = maps:get(n1, Pki),
    Out = must_fail(Config, integer_to_list(macula_ct:next_port(Config)) ++ "@127.0.0.1",
                    #{args => ["-macula_dist_cacertfile", maps:get(ca1, Pki),
                               "-macula_dist_certfile", Cert,
                               "-macula_dist_keyfile", "/nonexistent"]}),
    contains(Out, "macula_dist_keyfile"),
    contains(Out, "/nonexistent"),
    %% CA mode with the key and certificate left out altogether
    Out2 = must_fail(Config, integer_to_list(macula_ct:next_port(Config)) ++ "@127.0.0.1",
                     #{args => ["-macula_dist_cacertfile", maps:get(ca1, Pki)]}),
    contains(Out2, "macula_dist_certfile").

%% Each bad value stops the node at start with one message naming the
%% setting (not a stack trace), whichever way it was given.
invalid_setting(Config) ->
    Numeric = fun() -> integer_to_list(macula_ct:next_port(Config)) ++ "@127.0.0.1" end,
    Cases = [{"named@127.0.0.1", #{args => ["-macula_dist_port", "abc"]}, "macula_dist_port"},
             {Numeric(), #{args => ["-macula_dist_port", "abc"]}, "macula_dist_port"},
             {"named@127.0.0.1", #{args => ["-kernel", "macula_dist_port", "0"]}, "macula_dist_port"},
             {"named@127.0.0.1", #{env => [{"MACULA_DIST_PORT", "99999"}]}, "macula_dist_port"},
             {Numeric(), #{args => ["-macula_dist_insecure", "maybe"]}, "macula_dist_insecure"},
             {Numeric(), #{args => ["-macula_dist_mode", "mesh"]}, "macula_dist_mode"},
             {"named@127.0.0.1", #{args => ["-macula_dist_mode", "relay"]},
              "macula_dist_realm_secret_file"}],
    [begin
         Out = must_fail(Config, Name, Opts),
         contains(Out, "invalid " ++ Setting),
         lacks(Out, "{macula_config,invalid")
     end || {Name, Opts, Setting} <- Cases],
    ok.

%% 1,000 connection attempts with a wrong cookie (one after the other:
%% net_kernel makes concurrent pings to one node share an attempt): the
%% refusing node logs
%% the first ones of each 10 s in full and then one summary line per 10 s,
%% and counts every refusal (macula:info/0). It used to log one error per
%% attempt.
wrong_cookie_log_volume(Config) ->
    {A, _NA} = start(Config, #{cookie => "not_the_cookie"}),
    {B, NB} = start(Config),
    Attempts = 1000,
    Workers = 1,
    T0 = erlang:monotonic_time(millisecond),
    Results = peer:call(A, macula_ct, ping_many, [NB, Attempts div Workers, Workers], 300000),
    Secs = (erlang:monotonic_time(millisecond) - T0) / 1000,
    Attempts = length([pang || pang <- Results]),
    %% the summary of the last interval comes at its end
    Out = macula_ct:wait_output(NB, "more refused connections", 12000),
    Lines = string:split(Out, "\n", all),
    Full = [L || L <- Lines, binary:match(L, <<"does not know our cookie">>) =/= nomatch],
    Summaries = [L || L <- Lines, binary:match(L, <<"more refused connections">>) =/= nomatch],
    #{refused := #{bad_cookie := Counted}} = macula_ct:node_info(B),
    %% at most 10 lines in full and one summary per 10 s interval touched
    Intervals = trunc(Secs / 10) + 2,
    ct:pal("~b attempts in ~.1f s: ~b lines in full, ~b summaries, ~b counted~n~ts",
           [Attempts, Secs, length(Full), length(Summaries), Counted,
            lists:join("\n", Summaries)]),
    true = length(Full) >= 1,
    true = length(Full) =< 10 * Intervals,
    true = length(Summaries) =< Intervals,
    Counted = Attempts,
    %% the summaries account for every refusal not logged in full
    NotLogged = lists:sum([binary_to_integer(N) || L <- Summaries,
                           {match, [N]} <- [re:run(L, <<"bad_cookie ([0-9]+)">>,
                                                   [{capture, all_but_first, binary}])]]),
    Attempts = NotLogged + length(Full),
    ct:comment("~b wrong-cookie attempts in ~.1f s: ~b lines in full + ~b summaries",
               [Attempts, Secs, length(Full), length(Summaries)]).

%% Insecure mode on both sides: connects, says so loudly, and the cookie
%% is still checked by the distribution handshake.
insecure_mode(Config) ->
    Insecure = #{args => ["-macula_dist_insecure", "true"]},
    {A, NA} = start(Config, Insecure),
    {B, NB} = start(Config, Insecure),
    #{trust := insecure} = macula_ct:node_info(A),
    #{trust := insecure} = macula_ct:node_info(B),
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    [NB] = nodes_of(A),
    [NA] = nodes_of(B),
    _ = macula_ct:wait_output(NA, "INSECURE", 5000),
    _ = macula_ct:wait_output(NB, "INSECURE", 5000),
    {C, NC} = start(Config, Insecure#{cookie => "another_cookie"}),
    pang = peer:call(A, net_adm, ping, [NC], 30000),
    [] = nodes_of(C).
