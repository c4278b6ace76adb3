%% @doc Benchmark of the macula distribution carrier against inet_tcp_dist
%% and inet_tls_dist (TLS 1.3), all in one run on 127.0.0.1.
%%
%% Run by scripts/bench.sh (make bench), which compiles this module into a
%% temporary directory, makes the TLS certificates and starts epmd. The
%% driver is a non-distributed node; for each carrier it starts two peer
%% nodes (OTP `peer`, connection standard_io, so the driver's control
%% traffic never touches the carrier under test) and asks node A to
%% measure against node B:
%%   - connection setup: time of net_adm:ping/1 on a fresh connection
%%   - round trip of a 64-byte message to an echo process on B
%%   - one-way streams of 64 B, 4 KiB and 1 MiB messages from A to B
%%   - CPU time (utime+stime of both OS processes, from /proc) per GB
%%     moved during the 1 MiB stream
%% and prints/writes a markdown table with macula/baseline ratios.
-module(macula_bench).

-export([main/1]).
%% run on the peer nodes
-export([timed_ping/1, rtt/4, echo/0, stream/6, counter/0, proc_cpu_ticks/1]).

-define(SETUP_REPS, 20).
-define(SETUP_MAX_FAILS, 3).
-define(RTT_WARMUP, 2000).
-define(RTT_N, 20000).
-define(PAYLOAD_SMALL, 64).
-define(PAYLOAD_4K, 4096).
-define(PAYLOAD_1M, 1048576).
-define(CALL_TIMEOUT, 60000).

%%% ------------------------------------------------------------------
%%% Driver (non-distributed node)
%%% ------------------------------------------------------------------

%% Args: [BenchDir, OutMd, PidFile, Carrier...]; settings from the OS env.
main([BenchDir, OutMd, PidFile | Carriers]) ->
    Cfg = #{bench_dir => BenchDir,
            pid_file => PidFile,
            ebin => env("BENCH_MACULA_EBIN", ""),
            tls_optfile => env("BENCH_TLS_OPTFILE", ""),
            tmp => env("BENCH_TMP", "/tmp"),
            port_base => list_to_integer(env("BENCH_PORT_BASE", "47100")),
            case_secs => list_to_integer(env("BENCH_CASE_SECONDS", "8")),
            clk_tck => list_to_integer(env("BENCH_CLK_TCK", "100")),
            cookie => env("BENCH_COOKIE", "macula_bench_cookie"),
            erl_flags => string:lexemes(env("BENCH_ERL_FLAGS", ""), " "),
            steps => case env("BENCH_STEPS", "all") of
                         "all" -> all;
                         Names -> [list_to_atom(N) || N <- string:lexemes(Names, ", ")]
                     end},
    T0 = erlang:monotonic_time(millisecond),
    Results = [{C, run_carrier(C, Cfg)} || C <- Carriers],
    Secs = (erlang:monotonic_time(millisecond) - T0) / 1000,
    Md = render(Results, Cfg, Secs),
    io:put_chars(["\n", Md]),
    ok = filelib:ensure_dir(OutMd),
    ok = file:write_file(OutMd, Md),
    io:format("~nwritten to ~s~n", [OutMd]),
    Failed = [C || {C, R} <- Results, maps:get(errors, R) =/= []],
    case Failed of
        [] -> halt(0);
        _ ->
            io:format(standard_error, "~nBENCH FAILED for: ~s~n",
                      [lists:join(", ", Failed)]),
            halt(1)
    end.

env(Name, Default) ->
    case os:getenv(Name) of
        false -> Default;
        "" -> Default;
        V -> V
    end.

log(Fmt, Args) ->
    io:format("[bench ~s] " ++ Fmt ++ "~n", [now_str() | Args]).

now_str() ->
    {_, {H, M, S}} = calendar:local_time(),
    io_lib:format("~2..0w:~2..0w:~2..0w", [H, M, S]).

%% Returns #{metrics => #{Key => Value}, errors => [String]}.
run_carrier(Carrier, Cfg) ->
    log("== carrier ~s: starting two nodes", [Carrier]),
    case start_pair_safe(Carrier, Cfg) of
        {ok, Pair} ->
            measure(Carrier, Pair, Cfg);
        {error, Err} ->
            #{metrics => #{}, errors => [Err]}
    end.

start_pair_safe(Carrier, Cfg) ->
    Result = try start_pair(Carrier, Cfg)
             catch Class:Reason:Stack -> {error, {Class, Reason, Stack}}
             end,
    case Result of
        {ok, Pair} ->
            {ok, Pair#{carrier => Carrier, cfg => Cfg}};
        {error, Why} ->
            Err = lists:flatten(io_lib:format("~s: could not start nodes: ~p", [Carrier, Why])),
            log("ERROR ~s", [Err]),
            {error, Err}
    end.

%% After a failure the pair is replaced by two fresh nodes, so that one
%% bug does not hide every later measurement.
restart_pair(Pair = #{carrier := Carrier, cfg := Cfg}) ->
    stop_pair(Pair),
    log("   ~s: restarting both nodes after the failure", [Carrier]),
    start_pair_safe(Carrier, Cfg).

node_opts("macula", Which, Cfg = #{port_base := Base, tmp := Tmp}) ->
    Port = Base + which_index(Which),
    CertDir = filename:join([Tmp, "macula_cert_" ++ atom_to_list(Which)]),
    {integer_to_list(Port),
     ["-pa", maps:get(ebin, Cfg), "-proto_dist", "macula",
      "-no_epmd", "-start_epmd", "false"],
     [{"MACULA_DIST_CERT_DIR", CertDir}]};
node_opts("inet_tcp", Which, _Cfg) ->
    {"bench_tcp_" ++ atom_to_list(Which), [], []};
node_opts("inet_tls", Which, #{tls_optfile := OptFile}) ->
    {"bench_tls_" ++ atom_to_list(Which),
     ["-proto_dist", "inet_tls", "-ssl_dist_optfile", OptFile], []}.

which_index(a) -> 1;
which_index(b) -> 2.

start_pair(Carrier, Cfg) ->
    case start_node(Carrier, a, Cfg) of
        {ok, A} ->
            case start_node(Carrier, b, Cfg) of
                {ok, B} -> {ok, #{a => A, b => B}};
                Error -> stop_node(A), Error
            end;
        Error ->
            Error
    end.

start_node(Carrier, Which, Cfg = #{bench_dir := BenchDir, cookie := Cookie}) ->
    {Name, Args, Env} = node_opts(Carrier, Which, Cfg),
    Opts = #{name => Name,
             host => "127.0.0.1",
             longnames => true,
             connection => standard_io,
             peer_down => continue,
             wait_boot => 30000,
             args => ["-pa", BenchDir, "-setcookie", Cookie
                      | maps:get(erl_flags, Cfg) ++ Args],
             env => Env},
    case catch peer:start_link(Opts) of
        {ok, Peer, Node} ->
            OsPid = list_to_integer(peer:call(Peer, os, getpid, [], 10000)),
            ok = file:write_file(maps:get(pid_file, Cfg),
                                 [integer_to_list(OsPid), "\n"], [append]),
            log("   started ~p (os pid ~p)", [Node, OsPid]),
            {ok, #{peer => Peer, node => Node, ospid => OsPid}};
        {error, _} = Error ->
            Error;
        Other ->
            {error, Other}
    end.

stop_pair(#{a := A, b := B}) ->
    stop_node(A),
    stop_node(B).

stop_node(#{peer := Peer, ospid := OsPid}) ->
    catch peer:stop(Peer),
    %% peer:stop waits for the node; make sure it is gone (a hung node
    %% would keep its UDP port or epmd name)
    wait_os_exit(OsPid, 50),
    ok.

wait_os_exit(OsPid, 0) ->
    %% still there after 5 s: kill it, if the pid is still that node
    case file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/cmdline") of
        {ok, Cmd} ->
            case binary:match(Cmd, <<"macula_bench">>) of
                nomatch -> ok;
                _ -> os:cmd("kill -9 " ++ integer_to_list(OsPid)), timer:sleep(100)
            end;
        _ -> ok
    end;
wait_os_exit(OsPid, N) ->
    case filelib:is_file("/proc/" ++ integer_to_list(OsPid)) of
        true -> timer:sleep(100), wait_os_exit(OsPid, N - 1);
        false -> ok
    end.

call(#{peer := Peer}, M, F, A) ->
    call(#{peer => Peer}, M, F, A, ?CALL_TIMEOUT).

call(#{peer := Peer}, M, F, A, Timeout) ->
    peer:call(Peer, M, F, A, Timeout).

%% Runs each measurement. A failed one is reported, the pair restarted
%% and the next one run on the fresh pair.
measure(Carrier, Pair, Cfg) ->
    Steps = [{connect, fun(P) -> first_connect(P) end},
             {setup, fun(P) -> setup_times(P) end},
             {rtt, fun(P) -> rtt_case(P, Cfg) end},
             {stream_64, fun(P) -> stream_case(P, ?PAYLOAD_SMALL, 10000000, 1000, Cfg) end},
             {stream_4k, fun(P) -> stream_case(P, ?PAYLOAD_4K, 1000000, 100, Cfg) end},
             {stream_1m, fun(P) -> stream_case(P, ?PAYLOAD_1M, 2000, 1, Cfg) end}],
    Chosen = [S || {Name, _} = S <- Steps,
                   maps:get(steps, Cfg) =:= all orelse lists:member(Name, maps:get(steps, Cfg))],
    run_steps(Carrier, Chosen, Pair, #{}, []).

run_steps(_Carrier, [], Pair, Metrics, Errors) ->
    stop_pair(Pair),
    #{metrics => Metrics, errors => lists:reverse(Errors)};
run_steps(Carrier, [{Name, Fun} | Rest], Pair, Metrics, Errors) ->
    log("   ~s: ~s", [Carrier, Name]),
    Result = try Fun(Pair)
             catch
                 throw:{error, _} = E -> E;
                 Class:Reason:Stack -> {error, {Class, Reason, Stack}}
             end,
    case Result of
        {ok, M} ->
            log("   ~s: ~s -> ~s", [Carrier, Name, fmt_metrics(M)]),
            run_steps(Carrier, Rest, Pair, maps:merge(Metrics, M), Errors);
        {ok, M, StepErrors, Pair1} ->
            %% a step that recovered from failures on its own
            log("   ~s: ~s -> ~s", [Carrier, Name, fmt_metrics(M)]),
            Errs = [error_text(Carrier, Name, W) || W <- StepErrors],
            run_steps(Carrier, Rest, Pair1, maps:merge(Metrics, M),
                      lists:reverse(Errs, Errors));
        {error, Why} ->
            Err = error_text(Carrier, Name, Why),
            case restart_pair(Pair) of
                {ok, Pair1} ->
                    run_steps(Carrier, Rest, Pair1, Metrics, [Err | Errors]);
                {error, RErr} ->
                    #{metrics => Metrics, errors => lists:reverse(Errors, [Err, RErr])}
            end
    end.

error_text(Carrier, Name, Why) ->
    Err = lists:flatten(io_lib:format("~s: ~s failed: ~p", [Carrier, Name, Why])),
    log("ERROR ~s", [Err]),
    Err.

fmt_metrics(M) ->
    lists:join(", ", [io_lib:format("~s=~s", [K, fmt(V)]) || {K, V} <- lists:sort(maps:to_list(M))]).

first_connect(#{a := A, b := #{node := BNode}}) ->
    case call(A, ?MODULE, timed_ping, [BNode], 30000) of
        {pong, Us} ->
            {ok, #{first_connect_ms => Us / 1000}};
        {pang, _} ->
            {error, {could_not_connect, BNode, "net_adm:ping returned pang; "
                     "see the node's log lines above"}}
    end.

%% Disconnect, wait until both sides have forgotten each other, then time
%% one ping over a fresh connection. A repetition that fails is reported
%% and the pair restarted; after ?SETUP_MAX_FAILS failures the step fails.
setup_times(Pair) ->
    setup_times(Pair, 1, [], [], 0).

setup_times(Pair, I, Times, Errors, Fails) when I > ?SETUP_REPS ->
    case Times of
        [] -> {error, {no_successful_reconnect, lists:reverse(Errors)}};
        _ ->
            S = lists:sort(Times),
            {ok, #{setup_p50_ms => pct(S, 50) / 1000, setup_min_ms => hd(S) / 1000,
                   setup_fails => Fails, setup_ok => length(S)},
             lists:reverse(Errors), Pair}
    end;
setup_times(Pair = #{a := A, b := #{node := BNode}}, I, Times, Errors, Fails) ->
    Rep = try
              ok = disconnect(Pair),
              case call(A, ?MODULE, timed_ping, [BNode], 30000) of
                  {pong, Us0} -> {ok, Us0};
                  {pang, Us0} -> {error, {reconnect_pang_after_us, Us0}}
              end
          catch
              throw:{error, W} -> {error, W};
              C:R:St -> {error, {C, R, St}}
          end,
    case Rep of
        {ok, Us} ->
            setup_times(Pair, I + 1, [Us | Times], Errors, Fails);
        {error, Why} ->
            Err = {repetition, I, of_, ?SETUP_REPS, Why},
            case Fails + 1 >= ?SETUP_MAX_FAILS of
                true ->
                    throw({error, {too_many_failed_repetitions, lists:reverse([Err | Errors])}});
                false ->
                    case restart_pair(Pair) of
                        {ok, Pair1} ->
                            %% the fresh pair's first connection is not timed
                            case call(maps:get(a, Pair1), ?MODULE, timed_ping, [BNode], 30000) of
                                {pong, _} -> setup_times(Pair1, I + 1, Times, [Err | Errors], Fails + 1);
                                {pang, _} -> throw({error, {could_not_connect_after_restart, [Err | Errors]}})
                            end;
                        {error, RErr} ->
                            throw({error, {RErr, [Err | Errors]}})
                    end
            end
    end.

disconnect(#{a := A, b := B}) ->
    BNode = maps:get(node, B),
    _ = call(A, erlang, disconnect_node, [BNode]),
    wait_no_nodes([A, B], erlang:monotonic_time(millisecond) + 5000).

wait_no_nodes(Nodes, Deadline) ->
    case lists:all(fun(N) -> call(N, erlang, nodes, []) =:= [] end, Nodes) of
        true -> ok;
        false ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> throw({error, {still_connected_5s_after_disconnect_node,
                                       [{maps:get(node, N), call(N, erlang, nodes, [])}
                                        || N <- Nodes]}});
                false -> timer:sleep(5), wait_no_nodes(Nodes, Deadline)
            end
    end.

rtt_case(#{a := A, b := #{node := BNode}}, #{case_secs := Secs}) ->
    case call(A, ?MODULE, rtt, [BNode, ?RTT_WARMUP, ?RTT_N, Secs], (Secs + 60) * 1000) of
        {ok, Sorted} ->
            {ok, #{rtt_p50_us => pct(Sorted, 50) / 1000,
                   rtt_p99_us => pct(Sorted, 99) / 1000,
                   rtt_n => length(Sorted)}};
        Error ->
            Error
    end.

stream_case(#{a := A, b := B}, Size, MaxMsgs, Batch, #{case_secs := Secs, clk_tck := Tck}) ->
    BNode = maps:get(node, B),
    Pids = [maps:get(ospid, A), maps:get(ospid, B)],
    Timeout = (Secs + 90) * 1000,
    case call(A, ?MODULE, stream, [BNode, Size, MaxMsgs, Batch, Secs, Pids], Timeout) of
        {ok, #{msgs := N, bytes := Bytes, us := Us, ticks := [{TA0, TA1}, {TB0, TB1}]}} ->
            Sec = Us / 1.0e6,
            Tag = case Size of
                      ?PAYLOAD_SMALL -> "64";
                      ?PAYLOAD_4K -> "4k";
                      ?PAYLOAD_1M -> "1m"
                  end,
            GB = Bytes / 1.0e9,
            Base = #{list_to_atom("s" ++ Tag ++ "_msgs_per_s") => N / Sec,
                     list_to_atom("s" ++ Tag ++ "_mb_per_s") => Bytes / 1.0e6 / Sec,
                     list_to_atom("s" ++ Tag ++ "_msgs") => N,
                     list_to_atom("s" ++ Tag ++ "_secs") => Sec},
            Cpu = case Size of
                      ?PAYLOAD_1M ->
                          CA = (TA1 - TA0) / Tck, CB = (TB1 - TB0) / Tck,
                          #{cpu_sender_s_per_gb => CA / GB,
                            cpu_receiver_s_per_gb => CB / GB,
                            cpu_total_s_per_gb => (CA + CB) / GB};
                      _ -> #{}
                  end,
            {ok, maps:merge(Base, Cpu)};
        {error, _} = Error ->
            Error
    end.

pct([], _) -> 0;
pct(Sorted, P) ->
    N = length(Sorted),
    I = max(1, min(N, ceil(N * P / 100))),
    lists:nth(I, Sorted).

%%% ------------------------------------------------------------------
%%% Run on node A
%%% ------------------------------------------------------------------

%% {pong | pang, Microseconds}
timed_ping(Node) ->
    T0 = erlang:monotonic_time(),
    R = net_adm:ping(Node),
    T1 = erlang:monotonic_time(),
    {R, erlang:convert_time_unit(T1 - T0, native, microsecond)}.

%% Round trips of a 64-byte message to an echo process on Node. Returns
%% {ok, SortedNanoseconds}; at most MaxSecs of measured round trips.
rtt(Node, Warmup, N, MaxSecs) ->
    Echo = spawn(Node, ?MODULE, echo, []),
    MRef = erlang:monitor(process, Echo),
    Bin = payload(?PAYLOAD_SMALL),
    try
        _ = rtt_loop(Echo, MRef, Bin, Warmup, infinity, []),
        Deadline = erlang:monotonic_time() +
            erlang:convert_time_unit(MaxSecs, second, native),
        Samples = rtt_loop(Echo, MRef, Bin, N, Deadline, []),
        {ok, lists:sort(Samples)}
    catch throw:Error ->
            Error
    after
        Echo ! stop
    end.

rtt_loop(_Echo, _MRef, _Bin, 0, _Deadline, Acc) ->
    Acc;
rtt_loop(Echo, MRef, Bin, N, Deadline, Acc) ->
    T0 = erlang:monotonic_time(),
    Echo ! {self(), Bin},
    receive
        {Echo, Bin2} when byte_size(Bin2) =:= ?PAYLOAD_SMALL -> ok;
        {'DOWN', MRef, process, _, Reason} -> throw({error, {echo_down, Reason}})
    after 10000 ->
            throw({error, {rtt_timeout, length(Acc)}})
    end,
    T1 = erlang:monotonic_time(),
    Acc1 = [erlang:convert_time_unit(T1 - T0, native, nanosecond) | Acc],
    case Deadline =/= infinity andalso T1 > Deadline of
        true -> Acc1;
        false -> rtt_loop(Echo, MRef, Bin, N - 1, Deadline, Acc1)
    end.

echo() ->
    receive
        {From, Msg} -> From ! {self(), Msg}, echo();
        stop -> ok
    end.

%% One-way stream of Size-byte binaries to a counter on Node: at most
%% MaxMsgs, sending stops after MaxSecs; the time ends when the counter
%% confirms it received every message. Also samples the CPU ticks of the
%% given OS pids (node A's and node B's) around the stream.
stream(Node, Size, MaxMsgs, Batch, MaxSecs, OsPids) ->
    Counter = spawn(Node, ?MODULE, counter, []),
    MRef = erlang:monitor(process, Counter),
    Bin = payload(Size),
    %% warm up: a few messages, confirmed, so the connection and the
    %% counter are ready before the clock starts
    _ = send_n(Counter, Bin, min(Batch, 10)),
    Counter ! {done, min(Batch, 10), self()},
    case wait_counted(MRef, 10000) of
        {ok, _} ->
            erlang:garbage_collect(),
            Ticks0 = [proc_cpu_ticks(P) || P <- OsPids],
            T0 = erlang:monotonic_time(),
            Deadline = T0 + erlang:convert_time_unit(MaxSecs, second, native),
            Sent = send_loop(Counter, Bin, Batch, MaxMsgs, Deadline, 0),
            Counter ! {done, Sent, self()},
            Result = wait_counted(MRef, 20000),
            T1 = erlang:monotonic_time(),
            Ticks1 = [proc_cpu_ticks(P) || P <- OsPids],
            erlang:demonitor(MRef, [flush]),
            Counter ! stop,
            case Result of
                {ok, {Sent, Bytes}} ->
                    {ok, #{msgs => Sent, bytes => Bytes,
                           us => erlang:convert_time_unit(T1 - T0, native, microsecond),
                           ticks => lists:zip(Ticks0, Ticks1)}};
                {ok, {Got, _}} ->
                    {error, {lost_messages, Sent, Got}};
                {error, _} = Error ->
                    Error
            end;
        {error, _} = Error ->
            Error
    end.

send_loop(_Counter, _Bin, _Batch, MaxMsgs, _Deadline, Sent) when Sent >= MaxMsgs ->
    Sent;
send_loop(Counter, Bin, Batch, MaxMsgs, Deadline, Sent) ->
    send_n(Counter, Bin, Batch),
    case erlang:monotonic_time() > Deadline of
        true -> Sent + Batch;
        false -> send_loop(Counter, Bin, Batch, MaxMsgs, Deadline, Sent + Batch)
    end.

send_n(_To, _Bin, 0) -> ok;
send_n(To, Bin, N) -> To ! Bin, send_n(To, Bin, N - 1).

wait_counted(MRef, Timeout) ->
    receive
        {counted, Count, Bytes} -> {ok, {Count, Bytes}};
        {'DOWN', MRef, process, _, Reason} -> {error, {counter_down, Reason}}
    after Timeout ->
            {error, {no_ack_after_ms, Timeout}}
    end.

counter() ->
    counter(0, 0).

counter(N, Bytes) ->
    receive
        Bin when is_binary(Bin) -> counter(N + 1, Bytes + byte_size(Bin));
        {done, _Expected, From} -> From ! {counted, N, Bytes}, counter(0, 0);
        stop -> ok
    end.

payload(Size) ->
    binary:part(binary:copy(<<"macula!">>, Size div 7 + 1), 0, Size).

%% utime + stime of an OS process, in clock ticks.
proc_cpu_ticks(OsPid) ->
    {ok, Data} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/stat"),
    %% fields after the command name, which is in parentheses
    [_, After] = split_after_comm(Data),
    Fields = binary:split(After, <<" ">>, [global]),
    %% After starts at field 3 (state); utime is field 14, stime field 15
    UTime = binary_to_integer(lists:nth(14 - 2, Fields)),
    STime = binary_to_integer(lists:nth(15 - 2, Fields)),
    UTime + STime.

split_after_comm(Data) ->
    {Pos, _} = lists:last(binary:matches(Data, <<") ">>)),
    [binary:part(Data, 0, Pos), binary:part(Data, Pos + 2, byte_size(Data) - Pos - 2)].

%%% ------------------------------------------------------------------
%%% Report
%%% ------------------------------------------------------------------

-define(ROWS,
        [{setup_p50_ms, "connection setup p50 (fresh net_adm:ping, 20x)", "ms", lower},
         {rtt_p50_us, "64 B round trip p50", "us", lower},
         {rtt_p99_us, "64 B round trip p99", "us", lower},
         {s64_msgs_per_s, "64 B one-way", "msgs/s", higher},
         {s4k_msgs_per_s, "4 KiB one-way", "msgs/s", higher},
         {s4k_mb_per_s, "4 KiB one-way", "MB/s", higher},
         {s1m_mb_per_s, "1 MiB one-way", "MB/s", higher},
         {cpu_sender_s_per_gb, "CPU sender node, 1 MiB stream", "s/GB", lower},
         {cpu_receiver_s_per_gb, "CPU receiver node, 1 MiB stream", "s/GB", lower},
         {cpu_total_s_per_gb, "CPU both nodes, 1 MiB stream", "s/GB", lower}]).

render(Results, _Cfg, Secs) ->
    Get = fun(C) -> case lists:keyfind(C, 1, Results) of
                        {_, R} -> R;
                        false -> not_run
                    end
          end,
    Mac = Get("macula"), Tcp = Get("inet_tcp"), Tls = Get("inet_tls"),
    Header = "| metric | unit | macula | inet_tcp | inet_tls | macula/inet_tcp | macula/inet_tls |\n"
             "|---|---|---:|---:|---:|---:|---:|\n",
    Rows = [begin
                M = val(Key, Mac), T = val(Key, Tcp), S = val(Key, Tls),
                io_lib:format("| ~s | ~s | ~s | ~s | ~s | ~s | ~s |\n",
                              [Label, Unit, fmt(M), fmt(T), fmt(S),
                               ratio(M, T, Better), ratio(M, S, Better)])
            end || {Key, Label, Unit, Better} <- ?ROWS],
    Sample = [io_lib:format("| ~s | ~s | ~s | ~s | ~s |\n",
                            [Label, fmt(val(K, Mac)), fmt(val(K, Tcp)), fmt(val(K, Tls)), Unit])
              || {K, Label, Unit} <- [{s64_msgs, "64 B messages sent", "msgs"},
                                      {s64_secs, "64 B stream time", "s"},
                                      {s4k_msgs, "4 KiB messages sent", "msgs"},
                                      {s4k_secs, "4 KiB stream time", "s"},
                                      {s1m_msgs, "1 MiB messages sent", "msgs"},
                                      {s1m_secs, "1 MiB stream time", "s"},
                                      {rtt_n, "round trips measured", "count"},
                                      {setup_ok, "fresh connections timed (of 20)", "count"},
                                      {setup_fails, "fresh connections failed (pair restarted)", "count"},
                                      {first_connect_ms, "first connection (cold)", "ms"}]],
    Errors = lists:append([maps:get(errors, R) || {_, R} <- Results]),
    {ok, Host} = inet:gethostname(),
    [io_lib:format("# macula distribution benchmark\n\n"
                   "OTP ~s, ERTS ~s, ~p schedulers, host ~s, ~s UTC; bench took ~.1f s.\n"
                   "Two nodes per carrier on 127.0.0.1, all carriers measured in the same run.\n"
                   "inet_tls = inet_tls_dist, TLS 1.3 only, verify_peer, ECDSA P-256 certs.\n"
                   "Ratios are macula value / baseline value; the (+)/(-) mark says\n"
                   "whether macula is better (+) or worse (-) than the baseline on that metric.\n"
                   "MB = 10^6 bytes, GB = 10^9 bytes of payload.\n\n",
                   [erlang:system_info(otp_release), erlang:system_info(version),
                    erlang:system_info(schedulers_online), Host, utc_now(), Secs]),
     Header, Rows,
     "\nDetails (each stream bounded to BENCH_CASE_SECONDS of sending, then drained):\n\n"
     "| detail | macula | inet_tcp | inet_tls | unit |\n|---|---:|---:|---:|---|\n",
     Sample,
     case Errors of
         [] -> "\nAll carriers connected and completed every measurement.\n";
         _ -> ["\n## FAILURES\n\n", [["- ", E, "\n"] || E <- Errors]]
     end].

utc_now() ->
    {{Y, Mo, D}, {H, Mi, _}} = calendar:universal_time(),
    lists:flatten(io_lib:format("~4..0w-~2..0w-~2..0w ~2..0w:~2..0w", [Y, Mo, D, H, Mi])).

val(_Key, not_run) -> not_run;
val(Key, #{metrics := M}) -> maps:get(Key, M, undefined).

fmt(undefined) -> "FAILED";
fmt(not_run) -> "not run";
fmt(V) when is_integer(V) -> integer_to_list(V);
fmt(V) when is_float(V), V >= 1000 -> integer_to_list(round(V));
fmt(V) when is_float(V), V >= 100 -> io_lib:format("~.1f", [V]);
fmt(V) when is_float(V), V >= 1 -> io_lib:format("~.2f", [V]);
fmt(V) when is_float(V) -> io_lib:format("~.3f", [V]);
fmt(V) -> io_lib:format("~p", [V]).

ratio(A, B, _) when not is_number(A); not is_number(B) -> "n/a";
ratio(_, B, _) when B == 0 -> "n/a";
ratio(A, B, Better) ->
    R = A / B,
    Mark = if R == 1.0 -> "";
              Better =:= higher, R > 1.0 -> " (+)";
              Better =:= lower, R < 1.0 -> " (+)";
              true -> " (-)"
           end,
    io_lib:format("~.2fx~s", [R, Mark]).
