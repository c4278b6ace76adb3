%% @doc Every setting of the README's table, given a bad value: the node
%% refuses to start, with one log line naming the setting and the value
%% (values erl takes for flags, like `-1`, included). Relays given by DNS
%% name: the node boots at once and registers; a name that does not
%% resolve is retried and logged by name. Nodes that must fail are run as
%% plain OS processes and their output checked; the relay is a
%% macula-relay on loopback.
-module(macula_settings_SUITE).

-include_lib("common_test/include/ct.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([every_setting_bad/1, flag_like_values/1, key_and_certificate_mismatch/1,
         relay_by_dns_name/1, relay_name_unresolvable/1, dial_only_node/1,
         no_home_no_cert_dir/1, random_values/1]).

-define(FIRST_PORT, 16600).
-define(STARTED, "MACULA_CT_STARTED").
-define(RELAY_PORT, 14434).

suite() ->
    [{timetrap, {minutes, 4}}].

all() ->
    [every_setting_bad, flag_like_values, key_and_certificate_mismatch,
     relay_by_dns_name, relay_name_unresolvable, dial_only_node, no_home_no_cert_dir,
     random_values].

init_per_suite(Config0) ->
    Config = macula_ct:init_suite(Config0, ?FIRST_PORT),
    Priv = ?config(priv_dir, Config),
    Files = make_files(Priv),
    [{files, Files} | Config].

end_per_suite(Config) ->
    macula_ct:end_suite(Config).

init_per_testcase(_Case, Config) ->
    Config.

end_per_testcase(_Case, _Config) ->
    stop_relay(),
    macula_ct:stop_all().

%%% ------------------------------------------------------------------
%%% The settings parser, fuzzed in this VM: random values (strings built
%%% from pieces that parsers trip on, and terms of every type, since the
%%% kernel environment can hold any) for random subsets of the settings.
%%% Every read either gives a configuration or fails with the one error
%%% that names a setting that was given; never another exception, never
%%% a hang. A new seed each run, printed first, so a failure can be
%%% replayed (MACULA_SETTINGS_SEED="{A,B,C}").

-define(SETTINGS, [macula_dist_port, macula_dist_bind, macula_dist_mode, macula_dist_relays,
                   macula_dist_realm_secret_file, macula_dist_cert_dir, macula_dist_cacertfile,
                   macula_dist_certfile, macula_dist_keyfile, macula_dist_insecure, macula_dist_cc,
                   macula_dist_busy_poll_us, macula_dist_keep_alive_ms,
                   macula_dist_registry_dir, macula_dist_nodes, macula_dist_hosts_file,
                   macula_dist_dns_domain, macula_dist_dns_servers, macula_dist_dns_basename,
                   macula_dist_mdns, macula_dist_mdns_realm, macula_dist_discovery_interval_ms,
                   macula_dist_cluster]).
-define(RANDOM_READS, 20000).

random_values(Config) ->
    Fs = ?config(files, Config),
    Seed = case os:getenv("MACULA_SETTINGS_SEED") of
               false -> list_to_tuple([rand:uniform(1 bsl 30) || _ <- [1, 2, 3]]);
               Text -> {ok, T, _} = erl_scan:string(Text ++ "."),
                       {ok, S} = erl_parse:parse_term(T),
                       S
           end,
    ct:pal("seed ~p", [Seed]),
    rand:seed(exsss, Seed),
    Pieces = pieces(Fs),
    T0 = erlang:monotonic_time(millisecond),
    %% each refusal logs its line: not 20,000 of them in the CT log
    #{level := Level} = logger:get_primary_config(),
    logger:set_primary_config(level, none),
    Results = try [random_read(Pieces) || _ <- lists:seq(1, ?RANDOM_READS)]
              after logger:set_primary_config(level, Level)
              end,
    [application:unset_env(kernel, K) || K <- ?SETTINGS],
    forget_config(),
    Ok = length([x || ok <- Results]),
    Named = length(Results) - Ok,
    ct:pal("~b random reads (seed ~p) in ~b ms: ~b configurations, ~b refusals naming "
           "their setting", [?RANDOM_READS, Seed, erlang:monotonic_time(millisecond) - T0,
                             Ok, Named]),
    %% both outcomes must have been exercised, or the generator is broken
    true = Ok > 0 andalso Named > 0,
    ok.

random_read(Pieces) ->
    [application:unset_env(kernel, K) || K <- ?SETTINGS],
    Given = [K || K <- ?SETTINGS, rand:uniform(3) =:= 1],
    Values = [{K, random_value(Pieces)} || K <- Given],
    [application:set_env(kernel, K, V) || {K, V} <- Values],
    forget_config(),
    Self = self(),
    {Pid, Ref} = spawn_monitor(fun() ->
                                       Self ! {self(), try macula_config:get() of
                                                           C when is_map(C) -> ok
                                                       catch
                                                           C:R:S -> {C, R, S}
                                                       end}
                               end),
    receive
        {Pid, Result} ->
            erlang:demonitor(Ref, [flush]),
            check_read(Result, Given, Values)
    after 5000 ->
            exit(Pid, kill),
            ct:fail({hung, Values})
    end.

check_read(ok, _Given, _Values) ->
    ok;
check_read({error, {macula_config, Text}, _}, _Given, Values) ->
    case [K || K <- ?SETTINGS, lists:prefix("invalid " ++ atom_to_list(K) ++ " ", Text)] of
        [_ | _] -> named;
        [] -> ct:fail({refusal_names_no_setting, Text, Values})
    end;
check_read({C, R, S}, _Given, Values) ->
    ct:fail({unexpected_exception, {C, R, S}, Values}).

forget_config() ->
    persistent_term:erase({macula_config, config}),
    persistent_term:erase({macula_relay_config, config}),
    ok.

pieces(Fs) ->
    Files = [maps:get(K, Fs) || K <- [ca, cert, key, garbage, secret, short_secret, plain_file]],
    ["", "0", "1", "-1", "4433", "65535", "65536", "99999999999999999999", "0x10", "1e3",
     " ", "\t", "\n", ":", "::", "[", "]", "[::1]", "127.0.0.1", "0.0.0.0", "::1", "999.1.1.1",
     "localhost", "relay.invalid", ",", ":4434", "127.0.0.1:4434", "a@b", "direct",
     "dist_relay", "relay", "mesh", "true", "false", "cubic", "reno", "bbr", "bbr2", "/",
     "/nonexistent", "/proc/self/status", "/dev/null", "..", "~", "%s", "\x00",
     [16#e9], [16#2603], "-macula_dist_port", lists:duplicate(300, $a)] ++ Files.

random_value(Pieces) ->
    case rand:uniform(10) of
        1 -> rand:uniform(1 bsl 40) - (1 bsl 39);
        2 -> lists:nth(rand:uniform(6), [true, false, undefined, direct, '', 'dist_relay'])
             ;
        3 -> unicode:characters_to_binary(random_string(Pieces));
        4 -> {random_string(Pieces), rand:uniform(70000)};
        5 -> [random_string(Pieces), random_string(Pieces)];
        6 -> [rand:uniform(300) - 1 || _ <- lists:seq(1, rand:uniform(8))];
        _ -> random_string(Pieces)
    end.

random_string(Pieces) ->
    N = rand:uniform(3),
    lists:append([lists:nth(rand:uniform(length(Pieces)), Pieces) || _ <- lists:seq(1, N)]).

%%% ------------------------------------------------------------------
%%% Files: a good CA, certificate and key (openssl), garbage, a short
%%% secret, a good secret, a file where a directory is expected.

make_files(Priv) ->
    Dir = filename:join(Priv, "files"),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    F = fun(Name) -> filename:join(Dir, Name) end,
    openssl(["req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes",
             " -keyout ", F("ca.key"), " -out ", F("ca.pem"), " -days 30 -subj /CN=ca",
             " -addext basicConstraints=critical,CA:TRUE"]),
    openssl(["req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes",
             " -keyout ", F("n1.key"), " -out ", F("n1.pem"), " -days 30 -subj /CN=n1"]),
    openssl(["req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes",
             " -keyout ", F("n2.key"), " -out ", F("n2.pem"), " -days 30 -subj /CN=n2"]),
    ok = file:write_file(F("garbage.pem"), <<"this is not PEM at all\n">>),
    ok = file:write_file(F("short.secret"), <<"too short\n">>),
    ok = file:write_file(F("realm.secret"), <<"a realm secret of the settings suite\n">>),
    ok = file:write_file(F("plain_file"), <<"x">>),
    #{ca => F("ca.pem"), cert => F("n1.pem"), key => F("n1.key"),
      other_key => F("n2.key"), garbage => F("garbage.pem"),
      short_secret => F("short.secret"), secret => F("realm.secret"),
      plain_file => F("plain_file")}.

openssl(Args) ->
    Cmd = lists:flatten(["openssl ", Args, " 2>&1; echo \"exit=$?\""]),
    Out = os:cmd(Cmd),
    string:find(Out, "exit=0") =/= nomatch orelse ct:fail({openssl_failed, Cmd, Out}).

%%% ------------------------------------------------------------------
%%% Helpers

%% Runs a node that must not start; returns its output.
must_fail(Config, Opts) ->
    Name = integer_to_list(macula_ct:next_port(Config)) ++ "@127.0.0.1",
    Args = macula_ct:erl_args(macula, Opts) ++
        ["-name", Name, "-noshell",
         "-eval", "io:format(\"" ?STARTED " ~p~n\", [node()]), halt(0)."],
    Env = [{"MACULA_DIST_CERT_DIR", ?config(cert_dir, Config)},
           {"ERL_CRASH_DUMP_SECONDS", "0"} | maps:get(env, Opts, [])],
    {Status, Out} = macula_ct:run_erl(Args, Env, 30000),
    ct:log("~p~nexit status ~p, output:~n~ts", [Opts, Status, Out]),
    binary:match(Out, <<?STARTED>>) =:= nomatch orelse ct:fail({node_started, Opts, Out}),
    is_integer(Status) andalso Status =/= 0 orelse ct:fail({bad_exit_status, Status, Out}),
    Out.

%% Exactly one line of Out names Setting, and that line holds Value.
one_line_names(Out, Setting, Value) ->
    Lines = [L || L <- string:split(Out, "\n", all),
                  binary:match(L, list_to_binary(Setting)) =/= nomatch],
    case Lines of
        [Line] ->
            binary:match(Line, list_to_binary(Value)) =/= nomatch
                orelse ct:fail({value_not_named, Setting, Value, Line}),
            Line;
        _ ->
            ct:fail({not_one_line, Setting, Value, Lines, Out})
    end.

%%% ------------------------------------------------------------------
%%% Cases

%% Each row of the README's settings table with a bad value, given on the
%% command line, in the kernel environment or in the OS environment.
every_setting_bad(Config) ->
    Fs = ?config(files, Config),
    Ca = fun(Ca, Cert, Key) -> ["-macula_dist_cacertfile", Ca, "-macula_dist_certfile", Cert,
                                "-macula_dist_keyfile", Key] end,
    Relay = fun(Relays, Secret) -> ["-macula_dist_mode", "dist_relay",
                                    "-macula_dist_relays", Relays,
                                    "-macula_dist_realm_secret_file", Secret] end,
    Cases =
        [{"macula_dist_port", "abc", #{args => ["-macula_dist_port", "abc"]}},
         {"macula_dist_port", "70000", #{env => [{"MACULA_DIST_PORT", "70000"}]}},
         {"macula_dist_bind", "999.1.1.1", #{args => ["-macula_dist_bind", "999.1.1.1"]}},
         {"macula_dist_bind", "192.0.2.77", #{args => ["-macula_dist_bind", "192.0.2.77"]}},
         {"macula_dist_bind", "localhost", #{args => ["-kernel", "macula_dist_bind", "\"localhost\""]}},
         {"macula_dist_mode", "mesh", #{args => ["-macula_dist_mode", "mesh"]}},
         {"macula_dist_relays", "127.0.0.1:notaport",
          #{args => Relay("127.0.0.1:notaport", maps:get(secret, Fs))}},
         {"macula_dist_realm_secret_file", maps:get(short_secret, Fs),
          #{args => Relay("127.0.0.1:4434", maps:get(short_secret, Fs))}},
         {"macula_dist_realm_secret_file", "/nonexistent/secret",
          #{args => Relay("127.0.0.1:4434", "/nonexistent/secret")}},
         {"macula_dist_cert_dir", maps:get(plain_file, Fs) ++ "/certs",
          #{env => [{"MACULA_DIST_CERT_DIR", maps:get(plain_file, Fs) ++ "/certs"}]}},
         {"macula_dist_cert_dir", "/proc/macula-certs",
          #{args => ["-macula_dist_cert_dir", "/proc/macula-certs"]}},
         {"macula_dist_cacertfile", maps:get(garbage, Fs),
          #{args => Ca(maps:get(garbage, Fs), maps:get(cert, Fs), maps:get(key, Fs))}},
         {"macula_dist_certfile", maps:get(garbage, Fs),
          #{args => Ca(maps:get(ca, Fs), maps:get(garbage, Fs), maps:get(key, Fs))}},
         {"macula_dist_keyfile", maps:get(garbage, Fs),
          #{args => Ca(maps:get(ca, Fs), maps:get(cert, Fs), maps:get(garbage, Fs))}},
         {"macula_dist_keyfile", "/nonexistent.key",
          #{args => Ca(maps:get(ca, Fs), maps:get(cert, Fs), "/nonexistent.key")}},
         {"macula_dist_insecure", "maybe", #{args => ["-macula_dist_insecure", "maybe"]}},
         {"macula_dist_cc", "vegas", #{args => ["-macula_dist_cc", "vegas"]}},
         {"macula_dist_busy_poll_us", "10001", #{args => ["-macula_dist_busy_poll_us", "10001"]}},
         {"macula_dist_busy_poll_us", "-1", #{env => [{"MACULA_DIST_BUSY_POLL_US", "-1"}]}},
         {"macula_dist_listen", "maybe", #{args => ["-macula_dist_listen", "maybe"]}},
         {"macula_dist_listen", "no", #{env => [{"MACULA_DIST_LISTEN", "no"}]}},
         {"macula_dist_registry_dir", "rel/dir", #{args => ["-macula_dist_registry_dir", "rel/dir"]}},
         {"macula_dist_nodes", "a@h=10.0.0.1", #{args => ["-macula_dist_nodes", "a@h=10.0.0.1"]}},
         {"macula_dist_hosts_file", "/nonexistent/hosts",
          #{env => [{"MACULA_DIST_HOSTS_FILE", "/nonexistent/hosts"}]}},
         {"macula_dist_dns_domain", "a..b", #{args => ["-macula_dist_dns_domain", "a..b"]}},
         {"macula_dist_dns_servers", "ns.example", #{args => ["-macula_dist_dns_servers", "ns.example"]}},
         {"macula_dist_dns_basename", "a b", #{env => [{"MACULA_DIST_DNS_BASENAME", "a b"}]}},
         {"macula_dist_mdns", "on", #{args => ["-macula_dist_mdns", "on"]}},
         {"macula_dist_mdns_realm", "x/y", #{args => ["-macula_dist_mdns_realm", "x/y"]}},
         {"macula_dist_discovery_interval_ms", "50",
          #{args => ["-macula_dist_discovery_interval_ms", "50"]}},
         {"macula_dist_cluster", "yes", #{args => ["-macula_dist_cluster", "yes"]}},
         %% a source needs macula_epmd (these nodes run with -no_epmd)
         {"macula_dist_cluster", "true", #{args => ["-macula_dist_cluster", "true"]}},
         {"macula_metrics_port", "0", #{args => ["-macula_metrics_port", "0"]}},
         {"macula_metrics_port", "http", #{env => [{"MACULA_METRICS_PORT", "http"}]}},
         {"macula_metrics_bind", "192.0.2.77",
          #{args => ["-macula_metrics_port", "9568", "-macula_metrics_bind", "192.0.2.77"]}},
         {"macula_metrics_bind", "localhost",
          #{args => ["-macula_metrics_port", "9568", "-macula_metrics_bind", "localhost"]}}],
    Lines = [begin
                 Out = must_fail(Config, Opts),
                 one_line_names(Out, Setting, Value)
             end || {Setting, Value, Opts} <- Cases],
    %% every setting of the table is covered
    Table = ["macula_dist_port", "macula_dist_bind", "macula_dist_mode",
             "macula_dist_relays", "macula_dist_realm_secret_file", "macula_dist_cert_dir",
             "macula_dist_cacertfile", "macula_dist_certfile", "macula_dist_keyfile",
             "macula_dist_insecure", "macula_dist_cc", "macula_dist_busy_poll_us",
             "macula_dist_listen", "macula_dist_registry_dir", "macula_dist_nodes",
             "macula_dist_hosts_file", "macula_dist_dns_domain", "macula_dist_dns_servers",
             "macula_dist_dns_basename", "macula_dist_mdns", "macula_dist_mdns_realm",
             "macula_dist_discovery_interval_ms", "macula_dist_cluster",
             "macula_metrics_port", "macula_metrics_bind"],
    [] = Table -- [S || {S, _, _} <- Cases],
    ct:comment("~b bad values refused, one line each", [length(Lines)]).

%% erl takes a value starting with '-' for a flag: the setting is refused
%% by name (it used to be dropped silently), and so is a setting given two
%% values.
flag_like_values(Config) ->
    Out1 = must_fail(Config, #{args => ["-macula_dist_busy_poll_us", "-1"]}),
    one_line_names(Out1, "macula_dist_busy_poll_us", "-1"),
    Out2 = must_fail(Config, #{args => ["-macula_dist_port", "-4433"]}),
    one_line_names(Out2, "macula_dist_port", "-4433"),
    Out3 = must_fail(Config, #{args => ["-macula_dist_cc", "cubic", "reno"]}),
    one_line_names(Out3, "macula_dist_cc", "reno"),
    %% the same value through the OS environment is read (and refused for
    %% being out of range, not for being missing)
    Out4 = must_fail(Config, #{env => [{"MACULA_DIST_BUSY_POLL_US", "-1"}]}),
    Line = one_line_names(Out4, "macula_dist_busy_poll_us", "-1"),
    nomatch = binary:match(Line, <<"no value">>),
    ok.

%% Valid PEM files whose key does not belong to the certificate: refused
%% by the endpoint, naming both settings and files.
key_and_certificate_mismatch(Config) ->
    Fs = ?config(files, Config),
    Out = must_fail(Config, #{args => ["-macula_dist_cacertfile", maps:get(ca, Fs),
                                       "-macula_dist_certfile", maps:get(cert, Fs),
                                       "-macula_dist_keyfile", maps:get(other_key, Fs)]}),
    Line = one_line_names(Out, "macula_dist_keyfile", maps:get(other_key, Fs)),
    {_, _} = binary:match(Line, <<"macula_dist_certfile">>),
    {_, _} = binary:match(Line, list_to_binary(maps:get(cert, Fs))),
    ok.

%% macula_dist_listen false (as a release tool's helper node gets it):
%% the node binds an ephemeral port, not its configured one, so it starts
%% even where another node holds that port, and dials that node.
dial_only_node(Config) ->
    {_PA, A} = macula_ct:start_node(Config, #{}),
    [PortA, _] = string:split(atom_to_list(A), "@"),
    {PB, B} = macula_ct:start_node(Config, #{
                 name => "helper",
                 args => ["-macula_dist_port", PortA],
                 env => [{"MACULA_DIST_LISTEN", "false"}]}),
    pong = peer:call(PB, net_adm, ping, [A]),
    Bound = maps:get(port, peer:call(PB, macula, info, [])),
    Bound =/= list_to_integer(PortA) orelse ct:fail({bound_the_configured_port, Bound}),
    %% the same node with the setting at true (the vm argument wins over
    %% the OS environment) takes the port and cannot start
    Args = macula_ct:erl_args(macula, #{args => ["-macula_dist_port", PortA,
                                                 "-macula_dist_listen", "true"]})
        ++ ["-name", "clash@127.0.0.1", "-noshell", "-eval", "halt(0)."],
    Env = [{"MACULA_DIST_CERT_DIR", ?config(cert_dir, Config)},
           {"MACULA_DIST_LISTEN", "false"}, {"ERL_CRASH_DUMP_SECONDS", "0"}],
    {Status, Out} = macula_ct:run_erl(Args, Env, 30000),
    ct:log("exit status ~p, output:~n~ts", [Status, Out]),
    Status =/= 0 andalso nomatch =/= binary:match(Out, <<"in use">>)
        orelse ct:fail({not_a_port_clash, Status, Out}),
    ct:comment("~s dialled ~s from port ~b", [B, A, Bound]),
    ok.

%% A service started without $HOME (and $XDG_DATA_HOME) has no default
%% certificate directory: the node stops, naming the setting to give.
no_home_no_cert_dir(Config) ->
    Name = integer_to_list(macula_ct:next_port(Config)) ++ "@127.0.0.1",
    Args = macula_ct:erl_args(macula, #{}) ++ ["-name", Name, "-noshell", "-eval", "halt(0)."],
    Env = [{"HOME", false}, {"XDG_DATA_HOME", false}, {"MACULA_DIST_CERT_DIR", false},
           {"ERL_CRASH_DUMP_SECONDS", "0"}],
    {Status, Out} = macula_ct:run_erl(Args, Env, 30000),
    ct:log("exit status ~p, output:~n~ts", [Status, Out]),
    Status =/= 0 orelse ct:fail({started_without_home, Out}),
    Line = one_line_names(Out, "macula_dist_cert_dir", "$HOME"),
    ct:comment("~ts", [string:trim(Line)]),
    ok.

%% A relay given by DNS name (localhost): the node boots at once (it used
%% to fail after 5 s, resolving in the boot path) and registers.
relay_by_dns_name(Config) ->
    Fs = ?config(files, Config),
    start_relay(Config, maps:get(secret, Fs)),
    T0 = erlang:monotonic_time(millisecond),
    {_P, N} = macula_ct:start_node(Config, #{
                 name => "dns", args => relay_args("localhost:" ++ integer_to_list(?RELAY_PORT),
                                                   maps:get(secret, Fs))}),
    Boot = erlang:monotonic_time(millisecond) - T0,
    macula_ct:wait_output(N, "registered at relay settings-relay (localhost:", 10000),
    Registered = erlang:monotonic_time(millisecond) - T0,
    ct:comment("booted in ~b ms, registered after ~b ms", [Boot, Registered]),
    ok.

%% A relay name that does not resolve: the node boots, says which name it
%% cannot resolve, and tries again (two attempts within the backoff).
relay_name_unresolvable(Config) ->
    Fs = ?config(files, Config),
    {_P, N} = macula_ct:start_node(Config, #{
                 name => "nodns", args => relay_args("no-such-relay.invalid:4434",
                                                     maps:get(secret, Fs))}),
    Text = "cannot reach relay no-such-relay.invalid:4434: cannot resolve no-such-relay.invalid",
    Out = macula_ct:poll(fun() ->
                                 O = macula_ct:output(N),
                                 length(binary:matches(O, list_to_binary(Text))) >= 2
                                     andalso {true, O}
                         end, 15000, {no_retry_logged, N}),
    ct:log("~ts", [Out]),
    ok.

%%% ------------------------------------------------------------------
%%% The relay

relay_args(Relays, Secret) ->
    ["-macula_dist_mode", "dist_relay", "-macula_dist_relays", Relays,
     "-macula_dist_realm_secret_file", Secret].

relay_bin() ->
    Ebin = filename:dirname(code:which(macula_dist)),
    filename:absname(filename:join([Ebin, "..", "build", "macula-relay"])).

start_relay(Config, Secret) ->
    Args = ["--realm-secret-file", Secret, "--bind", "127.0.0.1",
            "--port", integer_to_list(?RELAY_PORT), "--name", "settings-relay",
            "--cert-dir", filename:join(?config(priv_dir, Config), "relay-cert")],
    Parent = self(),
    Keeper = spawn(fun() ->
                           Port = open_port({spawn_executable, relay_bin()},
                                            [{args, Args}, exit_status, stderr_to_stdout,
                                             binary, use_stdio, hide]),
                           {os_pid, OsPid} = erlang:port_info(Port, os_pid),
                           Parent ! {self(), OsPid},
                           relay_loop(Port)
                   end),
    OsPid = receive {Keeper, P} -> P end,
    put(relay, OsPid),
    macula_ct:poll(fun() -> string:find(os:cmd("ss -Hlun"), "127.0.0.1:" ++
                                            integer_to_list(?RELAY_PORT) ++ " ") =/= nomatch
                   end, 10000, relay_not_listening),
    OsPid.

relay_loop(Port) ->
    receive
        {Port, {data, D}} -> ct:log("[relay] ~ts", [D]), relay_loop(Port);
        {Port, {exit_status, S}} -> ct:log("[relay] exited with ~p", [S])
    end.

stop_relay() ->
    case erase(relay) of
        undefined -> ok;
        OsPid -> os:cmd("kill -9 " ++ integer_to_list(OsPid))
    end.
