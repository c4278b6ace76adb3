%% @doc Helpers for suites that build networks out of Linux network
%% namespaces: run commands without a shell, and clean namespaces up.
-module(macula_netns).

-export([need_netns/1, ip/0, cmd/2, must/2, netns_exists/1, kill_all_in/1, pids_in/1,
         start_epmd/1, test_ca/2, test_cert/3]).

%% Fails the case when the suite could not build its namespaces (the
%% suites never skip: CI runs as root and must run them).
need_netns(Config) ->
    case proplists:get_value(netns_error, Config) of
        undefined -> ok;
        Error -> ct:fail({network_namespaces_unavailable, Error})
    end.

ip() ->
    case os:find_executable("ip") of
        false -> "/usr/sbin/ip";
        Ip -> Ip
    end.

%% Runs Exe with Args (no shell): {ExitStatus, Output}.
cmd(Exe, Args) ->
    Path = case filename:pathtype(Exe) of
               absolute -> Exe;
               _ -> os:find_executable(Exe)
           end,
    Path =/= false orelse error({no_executable, Exe}),
    Port = open_port({spawn_executable, Path},
                     [{args, Args}, exit_status, stderr_to_stdout, binary,
                      use_stdio, hide]),
    cmd_collect(Port, []).

cmd_collect(Port, Acc) ->
    receive
        {Port, {data, D}} -> cmd_collect(Port, [D | Acc]);
        {Port, {exit_status, S}} ->
            {S, unicode:characters_to_list(iolist_to_binary(lists:reverse(Acc)))}
    after 60000 ->
            catch port_close(Port),
            {timeout, unicode:characters_to_list(iolist_to_binary(lists:reverse(Acc)))}
    end.

%% The output of a command that must succeed.
must(Exe, Args) ->
    case cmd(Exe, Args) of
        {0, Out} -> Out;
        {Status, Out} -> error({command_failed, [Exe | Args], Status, Out})
    end.

netns_exists(NS) ->
    {_, Out} = cmd(ip(), ["netns", "list"]),
    lists:member(NS, [hd(string:lexemes(L, " ")) || L <- string:lexemes(Out, "\n")]).

%% Kills every process in namespace NS and waits until none is left.
kill_all_in(NS) ->
    case pids_in(NS) of
        [] -> ok;
        Pids ->
            _ = cmd("kill", ["-9" | Pids]),
            macula_ct:poll(fun() -> pids_in(NS) =:= [] end, 10000,
                           {processes_left_in, NS, Pids})
    end.

pids_in(NS) ->
    case cmd(ip(), ["netns", "pids", NS]) of
        {0, Out} -> string:lexemes(Out, "\n ");
        _ -> []
    end.

%% An epmd daemon inside NS (for the inet_tcp/inet_tls baselines).
start_epmd(NS) ->
    must(ip(), ["netns", "exec", NS, "epmd", "-daemon"]),
    macula_ct:poll(fun() ->
                           case cmd(ip(), ["netns", "exec", NS, "epmd", "-names"]) of
                               {0, Out} -> string:find(Out, "up and running") =/= nomatch;
                               _ -> false
                           end
                   end, 10000, {epmd_not_up_in, NS}).

%% A throwaway CA (ECDSA P-256, openssl) in Dir, and one key for the
%% certificates test_cert/3 issues: Dir/ca.pem, Dir/node.key.
test_ca(Dir, Label) ->
    ok = filelib:ensure_path(Dir),
    F = fun(Name) -> filename:join(Dir, Name) end,
    must("openssl", ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", F("ca.key")]),
    must("openssl", ["req", "-x509", "-new", "-key", F("ca.key"), "-sha256", "-days", "2",
                     "-subj", "/CN=" ++ Label ++ " CA", "-out", F("ca.pem")]),
    must("openssl", ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", F("node.key")]),
    must("openssl", ["req", "-new", "-key", F("node.key"), "-subj", "/CN=" ++ Label ++ " node",
                     "-out", F("node.csr")]),
    ok.

%% A certificate for Dir/node.key from test_ca/2's CA, for both TLS roles,
%% with subject alternative names Sans ("IP:10.0.0.1", "DNS:host").
%% Returns its path, Dir/Name.pem.
test_cert(Dir, Name, Sans) ->
    F = fun(File) -> filename:join(Dir, File) end,
    ok = file:write_file(F(Name ++ ".ext"),
                         ["basicConstraints=CA:FALSE\n",
                          "keyUsage=critical,digitalSignature\n",
                          "extendedKeyUsage=serverAuth,clientAuth\n",
                          "subjectAltName=", lists:join(",", Sans), "\n"]),
    must("openssl", ["x509", "-req", "-in", F("node.csr"), "-CA", F("ca.pem"),
                     "-CAkey", F("ca.key"), "-CAcreateserial", "-sha256", "-days", "2",
                     "-extfile", F(Name ++ ".ext"), "-out", F(Name ++ ".pem")]),
    F(Name ++ ".pem").
