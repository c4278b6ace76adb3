%% @doc Helpers shared by the macula Common Test suites.
%%
%% CT-node side: starting and stopping peer nodes (OTP `peer` over
%% standard_io, so the CT node needs no distribution of its own), UDP port
%% allocation, capture of each peer's console output, running `erl` as a
%% plain OS process for nodes that must fail at start.
%%
%% Peer side (called with peer:call/4,5; this module's directory is in
%% each peer's code path): echo servers, nodedown watchers, polling.
-module(macula_ct).

%% CT node side
-export([init_suite/2, end_suite/1, next_port/1, start_node/2, stop_all/0,
         stop_node/1, output/1, wait_output/3, run_erl/3, erl_args/2,
         poll/3, os_pid/1, kill9/1, node_info/1, wait_connections/3]).
%% peer side
-export([spawn_echo/0, echo_call/3, watch/1, wait_down/2, ping_until/2,
         pid_status/2, spawn_sleeper/0, spawn_sleeper/1, big_roundtrip/2, big_roundtrip/3,
         big_echo/0, ping_many/3]).
%% capture process
-export([capture_init/2]).

-define(PEERS, macula_ct_peers).
-define(COOKIE, "macula_ct_cookie").

%%% ------------------------------------------------------------------
%%% Suite set-up

%% Adds to Config: a fresh certificate directory under priv_dir, a UDP
%% port counter starting at FirstPort and a keeper process owning the
%% table of started peers.
init_suite(Config, FirstPort) ->
    Priv = proplists:get_value(priv_dir, Config),
    CertDir = filename:join(Priv, "certs"),
    Counter = counters:new(1, []),
    counters:put(Counter, 1, FirstPort),
    Parent = self(),
    Keeper = spawn(fun() ->
                           ets:new(?PEERS, [named_table, public, set]),
                           Parent ! {self(), ready},
                           receive stop -> ok end
                   end),
    receive {Keeper, ready} -> ok end,
    [{cert_dir, CertDir}, {port_counter, Counter}, {keeper, Keeper} | Config].

end_suite(Config) ->
    stop_all(),
    case proplists:get_value(keeper, Config) of
        undefined -> ok;
        Keeper -> Keeper ! stop
    end,
    ok.

%% A UDP port nobody on this host holds (both families checked), from the
%% suite's counter so each test case gets its own.
next_port(Config) ->
    Counter = proplists:get_value(port_counter, Config),
    Port = counters:get(Counter, 1),
    counters:add(Counter, 1, 1),
    case port_free(Port) of
        true -> Port;
        false -> next_port(Config)
    end.

port_free(Port) ->
    case gen_udp:open(Port, [inet6, {ipv6_v6only, false}]) of
        {ok, S} ->
            gen_udp:close(S),
            case gen_udp:open(Port, [inet]) of
                {ok, S4} -> gen_udp:close(S4), true;
                _ -> false
            end;
        _ ->
            false
    end.

ebin() -> filename:dirname(code:which(macula_dist)).
test_dir() -> filename:dirname(code:which(?MODULE)).

%% The command-line arguments of a node of protocol Proto (macula or
%% inet_tcp), without -name.
erl_args(macula, Opts) ->
    ["-pa", ebin(), "-pa", test_dir(),
     "-proto_dist", "macula", "-no_epmd", "-start_epmd", "false",
     "-setcookie", maps:get(cookie, Opts, ?COOKIE)] ++ maps:get(args, Opts, []);
erl_args(inet_tcp, Opts) ->
    ["-pa", ebin(), "-pa", test_dir(),
     "-setcookie", maps:get(cookie, Opts, ?COOKIE)] ++ maps:get(args, Opts, []);
erl_args(inet_tls, Opts = #{tls_optfile := OptFile}) ->
    ["-proto_dist", "inet_tls", "-ssl_dist_optfile", OptFile | erl_args(inet_tcp, Opts)].

erl_env(Config, Opts) ->
    [{"MACULA_DIST_CERT_DIR", proplists:get_value(cert_dir, Config)},
     {"ERL_CRASH_DUMP_SECONDS", "0"}] ++ maps:get(env, Opts, []).

%%% ------------------------------------------------------------------
%%% Peers

%% @doc Starts a peer node; returns {PeerPid, NodeName}. Opts:
%%   proto  => macula | inet_tcp | inet_tls (default: the group's `proto`,
%%             else macula); inet_tls needs tls_optfile => an ssl_dist_optfile
%%   name   => the part before '@' (default: a fresh port number for
%%             macula, "ct<N>" for inet_tcp)
%%   port   => the UDP port to use in a generated macula name
%%   cookie => string(), args => [string()], env => [{K, V}]
%%   host   => the part after '@' (default "127.0.0.1")
%%   netns  => a network namespace to run the node in (through
%%             `ip netns exec NS erl ...`; the CT node stays outside)
%% Everything the peer prints (including logger output) is captured and
%% can be read back with output/1; it is also copied to the CT log.
start_node(Config, Opts) ->
    Proto = maps:get(proto, Opts, proplists:get_value(proto, Config, macula)),
    Name = case maps:find(name, Opts) of
               {ok, N} -> N;
               error when Proto =:= macula ->
                   integer_to_list(maps:get(port, Opts, next_port(Config)));
               error ->
                   "ct" ++ integer_to_list(next_port(Config))
           end,
    Host = maps:get(host, Opts, "127.0.0.1"),
    PeerOpts0 = #{name => Name, host => Host, longnames => true,
                  connection => standard_io,
                  args => erl_args(Proto, Opts),
                  env => erl_env(Config, Opts),
                  wait_boot => 30000},
    PeerOpts = case maps:find(netns, Opts) of
                   {ok, NS} ->
                       PeerOpts0#{exec => {ip_exe(),
                                           ["netns", "exec", NS, erl_exe()]}};
                   error ->
                       PeerOpts0
               end,
    Label = Name ++ "@" ++ Host,
    Capture = spawn(?MODULE, capture_init, [group_leader(), Label]),
    %% The peer's control process inherits our group leader: it forwards
    %% the peer's I/O there, so make it the capture process for the start.
    OldGL = group_leader(),
    group_leader(Capture, self()),
    Result = try peer:start_link(PeerOpts)
             catch Class:Reason -> {Class, Reason}
             after group_leader(OldGL, self())
             end,
    case Result of
        {ok, Peer, Node} ->
            ets:insert(?PEERS, {Node, Peer, Capture}),
            {Peer, Node};
        Other ->
            ct:pal("peer ~s failed to start: ~p~noutput:~n~ts",
                   [Label, Other, capture_get(Capture)]),
            exit(Capture, kill),
            ct:fail({peer_start_failed, Label, Other})
    end.

ip_exe() ->
    case os:find_executable("ip") of
        false -> "/usr/sbin/ip";
        Ip -> Ip
    end.

erl_exe() ->
    case os:find_executable("erl") of
        false -> filename:join([code:root_dir(), "bin", "erl"]);
        Erl -> Erl
    end.

stop_node(Node) ->
    case ets:lookup(?PEERS, Node) of
        [{Node, Peer, _Capture}] ->
            catch peer:stop(Peer),
            ok;
        [] ->
            ok
    end.

%% Stops every peer started so far (end_per_testcase).
stop_all() ->
    case ets:info(?PEERS) of
        undefined -> ok;
        _ ->
            Peers = ets:tab2list(?PEERS),
            [catch peer:stop(Peer) || {_, Peer, _} <- Peers],
            [exit(Capture, kill) || {_, _, Capture} <- Peers],
            ets:delete_all_objects(?PEERS),
            ok
    end.

%% Everything the peer Node has printed so far, as a binary.
output(Node) ->
    case ets:lookup(?PEERS, Node) of
        [{Node, _, Capture}] -> capture_get(Capture);
        [] -> <<>>
    end.

%% Waits until the output of Node contains Text; returns the output.
wait_output(Node, Text, Timeout) ->
    poll(fun() ->
                 Out = output(Node),
                 case binary:match(Out, iolist_to_binary(Text)) of
                     nomatch -> false;
                     _ -> {true, Out}
                 end
         end, Timeout, {no_output, Node, Text}).

os_pid(Peer) ->
    peer:call(Peer, os, getpid, []).

%% kill -9 of a peer's OS process.
kill9(Peer) ->
    OsPid = os_pid(Peer),
    _ = os:cmd("kill -9 " ++ OsPid),
    OsPid.

node_info(Peer) ->
    peer:call(Peer, macula, info, []).

%% Waits until macula:info() of the peer reports N connections.
wait_connections(Peer, N, Timeout) ->
    poll(fun() ->
                 case node_info(Peer) of
                     #{connections := N} = Info -> {true, Info};
                     _ -> false
                 end
         end, Timeout, {connections_not, N, node_info(Peer)}).

%% Calls Fun every 50 ms until it returns {true, Value} (-> Value) or
%% true (-> ok); fails the test case with FailReason after Timeout ms.
poll(Fun, Timeout, FailReason) ->
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    poll_loop(Fun, Deadline, FailReason).

poll_loop(Fun, Deadline, FailReason) ->
    case Fun() of
        true -> ok;
        {true, Value} -> Value;
        false ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true when is_function(FailReason, 0) -> ct:fail(FailReason());
                true -> ct:fail(FailReason);
                false ->
                    timer:sleep(50),
                    poll_loop(Fun, Deadline, FailReason)
            end
    end.

%%% ------------------------------------------------------------------
%%% erl as a plain OS process (nodes that must fail at start)

%% Runs `erl Args` with extra environment Env; returns {ExitStatus, Output}
%% or {timeout, Output} after Timeout ms (the process is then killed).
run_erl(Args, Env, Timeout) ->
    Erl = os:find_executable("erl"),
    Port = open_port({spawn_executable, Erl},
                     [{args, Args}, {env, Env}, exit_status, stderr_to_stdout,
                      binary, use_stdio, hide]),
    OsPid = case erlang:port_info(Port, os_pid) of
                {os_pid, P} -> P;
                _ -> undefined
            end,
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    collect(Port, OsPid, Deadline, []).

collect(Port, OsPid, Deadline, Acc) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {Port, {data, Data}} ->
            collect(Port, OsPid, Deadline, [Data | Acc]);
        {Port, {exit_status, Status}} ->
            {Status, iolist_to_binary(lists:reverse(Acc))}
    after Left ->
            _ = os:cmd("kill -9 " ++ integer_to_list(OsPid)),
            catch port_close(Port),
            {timeout, iolist_to_binary(lists:reverse(Acc))}
    end.

%%% ------------------------------------------------------------------
%%% Output capture: a minimal I/O server

capture_init(GL, Label) ->
    capture_loop(GL, Label, []).

capture_loop(GL, Label, Acc) ->
    receive
        {io_request, From, ReplyAs, Req} ->
            {Reply, Text} = io_req(Req),
            From ! {io_reply, ReplyAs, Reply},
            Text =/= <<>> andalso
                (catch io:format(GL, "[~ts] ~ts", [Label, Text])),
            capture_loop(GL, Label, [Text | Acc]);
        {get, From, Ref} ->
            From ! {Ref, iolist_to_binary(lists:reverse(Acc))},
            capture_loop(GL, Label, Acc);
        _ ->
            capture_loop(GL, Label, Acc)
    end.

capture_get(Capture) ->
    Ref = make_ref(),
    MRef = monitor(process, Capture),
    Capture ! {get, self(), Ref},
    receive
        {Ref, Out} -> demonitor(MRef, [flush]), Out;
        {'DOWN', MRef, _, _, _} -> <<>>
    after 5000 -> demonitor(MRef, [flush]), <<>>
    end.

io_req({put_chars, Enc, Chars}) ->
    {ok, chars(Enc, Chars)};
io_req({put_chars, Enc, M, F, A}) ->
    try {ok, chars(Enc, apply(M, F, A))}
    catch _:_ -> {{error, bad_request}, <<>>}
    end;
io_req({put_chars, Chars}) ->
    io_req({put_chars, latin1, Chars});
io_req({put_chars, M, F, A}) ->
    io_req({put_chars, latin1, M, F, A});
io_req({requests, Reqs}) ->
    lists:foldl(fun(R, {_, T}) ->
                        {Rep, T2} = io_req(R),
                        {Rep, <<T/binary, T2/binary>>}
                end, {ok, <<>>}, Reqs);
io_req(_) ->
    {{error, enotsup}, <<>>}.

chars(unicode, Chars) ->
    case unicode:characters_to_binary(Chars) of
        B when is_binary(B) -> B;
        _ -> iolist_to_binary(io_lib:format("~p", [Chars]))
    end;
chars(_, Chars) ->
    try iolist_to_binary(Chars)
    catch _:_ -> chars(unicode, Chars)
    end.

%%% ------------------------------------------------------------------
%%% Peer side

%% An echo server: {From, Ref, Msg} -> From ! {Ref, node(), self(), Msg}.
spawn_echo() ->
    spawn(fun echo_loop/0).

echo_loop() ->
    receive
        {From, Ref, Msg} ->
            From ! {Ref, node(), self(), Msg},
            echo_loop();
        stop ->
            ok
    end.

%% Sends Msg to the echo server Echo (a pid or {Name, Node}) and waits
%% for the echo: {ok, EchoNode, Msg} or timeout.
echo_call(Echo, Msg, Timeout) ->
    Ref = make_ref(),
    Echo ! {self(), Ref, Msg},
    receive
        {Ref, Node, _Pid, Back} -> {ok, Node, Back}
    after Timeout -> timeout
    end.

spawn_sleeper() ->
    spawn(fun() -> receive stop -> ok end end).

spawn_sleeper(Node) ->
    spawn(Node, fun() -> receive stop -> ok end end).

%% Starts a process that monitors Node and remembers when (system time,
%% ms) it saw nodedown. Returns the watcher's pid once monitoring.
watch(Node) ->
    Parent = self(),
    Ref = make_ref(),
    W = spawn(fun() ->
                      erlang:monitor_node(Node, true),
                      Parent ! {Ref, watching},
                      watch_loop(Node, undefined)
              end),
    receive {Ref, watching} -> W end.

watch_loop(Node, Down) ->
    receive
        {nodedown, Node} ->
            watch_loop(Node, erlang:system_time(millisecond));
        {get, From, Ref, _Timeout} when Down =/= undefined ->
            From ! {Ref, {down, Down}},
            watch_loop(Node, Down);
        {get, From, Ref, Timeout} ->
            receive
                {nodedown, Node} ->
                    At = erlang:system_time(millisecond),
                    From ! {Ref, {down, At}},
                    watch_loop(Node, At)
            after Timeout ->
                    From ! {Ref, up},
                    watch_loop(Node, Down)
            end
    end.

%% {down, SystemTimeMs} once the watcher saw nodedown (waiting up to
%% Timeout ms for it), else up.
wait_down(Watcher, Timeout) ->
    Ref = make_ref(),
    Watcher ! {get, self(), Ref, Timeout},
    receive {Ref, Result} -> Result
    after Timeout + 2000 -> no_answer
    end.

%% Pings Node until pong or Timeout ms: {pong, Ms, Attempts} or pang.
%% A ping that hangs (a connection that is up on our side only) counts
%% against the deadline too.
ping_until(Node, Timeout) ->
    T0 = erlang:monotonic_time(millisecond),
    ping_until(Node, T0, T0 + Timeout, 1).

ping_until(Node, T0, Deadline, N) ->
    Self = self(),
    Ref = make_ref(),
    spawn(fun() -> Self ! {Ref, net_adm:ping(Node)} end),
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {Ref, pong} ->
            {pong, erlang:monotonic_time(millisecond) - T0, N};
        {Ref, pang} ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> pang;
                false -> timer:sleep(100), ping_until(Node, T0, Deadline, N + 1)
            end
    after Left ->
            pang
    end.

%% What a monitor says about Pid: the 'DOWN' reason, or alive.
pid_status(Pid, Timeout) ->
    MRef = erlang:monitor(process, Pid),
    receive
        {'DOWN', MRef, process, _, Reason} -> Reason
    after Timeout ->
            erlang:demonitor(MRef, [flush]),
            alive
    end.

%% Sends Size random bytes to an echo on Node, which checks and returns
%% them; both sides compare byte for byte.
big_roundtrip(Node, Size) ->
    big_roundtrip(Node, Size, 100000).

%% The same with a deadline of Timeout ms ({timeout, Timeout} after it).
big_roundtrip(Node, Size, Timeout) ->
    Bin = crypto:strong_rand_bytes(Size),
    Md5 = erlang:md5(Bin),
    Echo = spawn(Node, ?MODULE, big_echo, []),
    T0 = erlang:monotonic_time(millisecond),
    Echo ! {self(), Bin},
    receive
        {Echo, RemoteSize, RemoteMd5, Back} ->
            Ms = erlang:monotonic_time(millisecond) - T0,
            if RemoteSize =/= Size -> {bad_size_remote, RemoteSize};
               RemoteMd5 =/= Md5 -> bad_md5_remote;
               Back =/= Bin -> {bad_echo, byte_size(Back)};
               true -> {ok, Ms}
            end
    after Timeout ->
            {timeout, Timeout}
    end.

big_echo() ->
    receive
        {From, Bin} -> From ! {self(), byte_size(Bin), erlang:md5(Bin), Bin}
    end.

%% Peer side: Workers processes each ping Node N times, one after the
%% other; returns every result (pong | pang).
ping_many(Node, N, Workers) ->
    Self = self(),
    Pids = [spawn_link(fun() -> Self ! {self(), [net_adm:ping(Node) || _ <- lists:seq(1, N)]} end)
            || _ <- lists:seq(1, Workers)],
    lists:append([receive {P, R} -> R end || P <- Pids]).
