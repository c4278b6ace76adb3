%% @doc Node metrics: macula:metrics/0 and the opt-in Prometheus endpoint
%% (macula_metrics_port), between real nodes over -proto_dist macula:
%% scraped with a real HTTP client (httpc), values that move after
%% traffic, bad settings refused by name when the application starts, and
%% a server that stays bounded against slow, huge and too many requests.
-module(macula_metrics_SUITE).

-include_lib("common_test/include/ct.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         end_per_testcase/2]).
-export([scrape_moves_with_traffic/1, metrics_map/1, app_refuses_bad_settings/1,
         slow_huge_and_many_requests/1, port_in_use/1, stuck_endpoint_scrapes/1,
         failed_hand_over_frees_its_slot/1, no_process_left_answers_503/1]).
%% run on the peers
-export([sink/0, send_bytes/3, fill_processes/1]).

-define(FIRST_PORT, 17800).
-define(MB, 1048576).

suite() ->
    [{timetrap, {minutes, 3}}].

all() ->
    [scrape_moves_with_traffic, metrics_map, app_refuses_bad_settings,
     slow_huge_and_many_requests, port_in_use, stuck_endpoint_scrapes,
     failed_hand_over_frees_its_slot, no_process_left_answers_503].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(inets),
    macula_ct:init_suite(Config, ?FIRST_PORT).

end_per_suite(Config) ->
    macula_ct:end_suite(Config).

end_per_testcase(_Case, _Config) ->
    macula_ct:stop_all().

%% A with the metrics endpoint on TCP port MPort (and the application
%% started, as a release does), B plain; connected.
pair(Config) ->
    MPort = tcp_port(),
    {A, NA} = macula_ct:start_node(Config, #{proto => macula,
                                             args => ["-macula_metrics_port",
                                                      integer_to_list(MPort)]}),
    {ok, _} = peer:call(A, application, ensure_all_started, [macula]),
    {B, NB} = macula_ct:start_node(Config, #{proto => macula}),
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    {A, NA, B, NB, MPort}.

%% A TCP port free on loopback now.
tcp_port() ->
    {ok, L} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(L),
    gen_tcp:close(L),
    Port.

%%% Cases

%% Two scrapes with httpc around 8 MB sent from A to B: the totals and
%% B's per-connection series grow; every family has HELP and TYPE lines.
scrape_moves_with_traffic(Config) ->
    {A, _NA, B, NB, MPort} = pair(Config),
    Sink = peer:call(B, erlang, spawn, [?MODULE, sink, []]),
    M1 = scrape(MPort),
    ok = peer:call(A, ?MODULE, send_bytes, [Sink, 8, 30000], 60000),
    Node = atom_to_list(NB),
    Sent1 = value(M1, "macula_bytes_sent_total"),
    %% Connections publish their figures every 100 ms, and a page is
    %% served again for up to a second.
    Moved = fun() ->
                    M = scrape(MPort),
                    value(M, "macula_bytes_sent_total") - Sent1 >= 8 * ?MB andalso {true, M}
            end,
    M2 = macula_ct:poll(Moved, 5000, bytes_sent_did_not_move),
    Sent2 = value(M2, "macula_bytes_sent_total"),
    ct:pal("bytes sent ~p -> ~p", [Sent1, Sent2]),
    Sent2 - Sent1 >= 8 * ?MB orelse ct:fail({bytes_sent_did_not_move, Sent1, Sent2}),
    value(M2, "macula_bytes_received_total") > value(M1, "macula_bytes_received_total")
        orelse ct:fail(bytes_received_did_not_move),
    Conn = value(M2, "macula_connection_bytes_sent_total{node=\"" ++ Node ++ "\"}"),
    Conn >= 8 * ?MB orelse ct:fail({connection_series, Conn}),
    true = value(M2, "macula_connections") >= 1,
    1 = value(M2, "macula_endpoint_up"),
    0 = value(M2, "macula_handshakes_refused_total{reason=\"bad_cookie\"}"),
    Rtt = value(M2, "macula_connection_smoothed_rtt_seconds{node=\"" ++ Node ++ "\"}"),
    true = Rtt > 0 andalso Rtt < 1,
    %% every sample's family is declared
    Families = [F || <<"# TYPE ", Rest/binary>> <- lines(M2),
                     [F, _] <- [binary:split(Rest, <<" ">>)]],
    Helps = [F || <<"# HELP ", Rest/binary>> <- lines(M2),
                  [F | _] <- [binary:split(Rest, <<" ">>)]],
    Families = Helps,
    [true = lists:member(family(L), Families) || L <- lines(M2), L =/= <<>>,
                                                  binary:first(L) =/= $#],
    [true = lists:member(N, Families) ||
        N <- [<<"macula_packets_lost_total">>, <<"macula_migrations_total">>,
              <<"macula_failed_handshakes_total">>, <<"macula_relay_state">>,
              <<"macula_priority_processes">>]],
    ok.

%% macula:metrics/0 on a node: its connection to B with figures, the
%% refusals by reason, and what a node without a macula endpoint reports.
metrics_map(Config) ->
    {A, _NA, _B, NB, _MPort} = pair(Config),
    %% A connection's figures are a snapshot taken at most every 100 ms.
    Measured = fun() ->
                       M0 = peer:call(A, macula, metrics, []),
                       [P || P = #{node := N, srtt_us := R} <- maps:get(per_connection, M0),
                             N =:= NB, R > 0] =/= [] andalso {true, M0}
               end,
    M = macula_ct:poll(Measured, 5000, no_rtt_sample),
    ct:pal("~p", [M]),
    #{endpoint := up, connections := C, bytes_sent := S, per_connection := Per,
      handshakes_refused := #{bad_cookie := 0, bad_proof_frame := 0},
      relays := [], priority := #{processes := 0}} = M,
    true = C >= 1 andalso S > 0,
    [#{srtt_us := Srtt, min_rtt_us := MinRtt, bytes_received := R}] =
        [P || P = #{node := N} <- Per, N =:= NB],
    true = Srtt > 0 andalso MinRtt > 0 andalso MinRtt =< Srtt * 10 andalso R > 0,
    %% This CT node has no macula endpoint.
    #{endpoint := down, connections := 0, per_connection := []} = macula:metrics(),
    ok.

%% The application refuses bad metrics settings by name (here on a node
%% whose distribution is not macula: the application reads its settings
%% when it starts).
app_refuses_bad_settings(_Config) ->
    Bad = [{["-macula_metrics_port", "65536"], "macula_metrics_port"},
           {["-macula_metrics_port", "metrics"], "macula_metrics_port"},
           {["-macula_metrics_port", "9568", "-macula_metrics_bind", "192.0.2.9"],
            "macula_metrics_bind"}],
    [begin
         Args = ["-noshell", "-pa", filename:dirname(code:which(macula)) | A] ++
             ["-eval", "io:format(\"~p~n\", [application:start(macula)]), halt()."],
         {0, Out} = macula_ct:run_erl(Args, [], 30000),
         ct:log("~p:~n~ts", [A, Out]),
         {_, _} = binary:match(Out, <<"{error,">>),
         {_, _} = binary:match(Out, list_to_binary("invalid " ++ Setting))
     end || {A, Setting} <- Bad],
    ok.

%% Four clients that send nothing hold every slot: a fifth gets 503 at
%% once. A request head over 8 KB gets 431 without waiting. The slow ones
%% get 408 after the request timeout (5 s), and scrapes work again.
slow_huge_and_many_requests(Config) ->
    {_A, _NA, _B, _NB, MPort} = pair(Config),
    Slow = [connect(MPort) || _ <- lists:seq(1, 4)],
    timer:sleep(200),
    T0 = erlang:monotonic_time(millisecond),
    {503, _} = raw(MPort, <<"GET /metrics HTTP/1.1\r\n\r\n">>),
    true = erlang:monotonic_time(millisecond) - T0 < 2000,
    %% 408 for each slow client, within the timeout and a margin
    [{408, _} = read_reply(S, 8000) || S <- Slow],
    T1 = erlang:monotonic_time(millisecond),
    %% Each head in one write, so its end can come in the read that
    %% crosses the limit: 8 KB + the empty line's 4 bytes is the most.
    {431, _} = raw(MPort, head(20000)),
    {431, _} = raw(MPort, head(8192 + 5)),
    {404, _} = raw(MPort, head(8192 + 4)),
    true = erlang:monotonic_time(millisecond) - T1 < 2000,
    {405, _} = raw(MPort, <<"POST /metrics HTTP/1.1\r\n\r\n">>),
    {404, _} = raw(MPort, <<"GET /other HTTP/1.1\r\n\r\n">>),
    {400, _} = raw(MPort, <<"garbage\r\n\r\n">>),
    Body = scrape(MPort),
    {_, _} = binary:match(Body, <<"macula_bytes_sent_total">>),
    ok.

%% A port another socket holds: the application does not start, and the
%% log line names the setting.
port_in_use(Config) ->
    {ok, L} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}, {reuseaddr, false}]),
    {ok, Busy} = inet:port(L),
    {A, _} = macula_ct:start_node(Config, #{proto => macula,
                                            args => ["-macula_metrics_port",
                                                     integer_to_list(Busy)]}),
    {error, Why} = peer:call(A, application, start, [macula]),
    ct:pal("~p", [Why]),
    {_, _} = binary:match(iolist_to_binary(io_lib:format("~p", [Why])),
                          <<"macula_metrics_port">>),
    gen_tcp:close(L),
    ok.

%% The endpoint process (the distribution's own) stops answering: four
%% scrapes at once get 503 within the scrape timeout (3 s) and a margin,
%% and only one of them asked the endpoint (one builder). Once it answers
%% again, scrapes work.
stuck_endpoint_scrapes(Config) ->
    {A, _NA, _B, _NB, MPort} = pair(Config),
    _ = scrape(MPort),
    timer:sleep(1100),  % past the page's freshness
    ok = peer:call(A, sys, suspend, [macula_endpoint]),
    Self = self(),
    T0 = erlang:monotonic_time(millisecond),
    [spawn_link(fun() -> Self ! {scraped, raw(MPort, <<"GET /metrics HTTP/1.1\r\n\r\n">>)} end)
     || _ <- lists:seq(1, 4)],
    Codes = [receive {scraped, {Code, _}} -> Code after 10000 -> ct:fail(scrape_hangs) end
             || _ <- lists:seq(1, 4)],
    Took = erlang:monotonic_time(millisecond) - T0,
    Endpoint = peer:call(A, erlang, whereis, [macula_endpoint]),
    {message_queue_len, Asked} =
        peer:call(A, erlang, process_info, [Endpoint, message_queue_len]),
    ct:pal("codes ~p in ~b ms; calls waiting at the endpoint: ~b", [Codes, Took, Asked]),
    ok = peer:call(A, sys, resume, [macula_endpoint]),
    [503, 503, 503, 503] = Codes,
    true = Took < 5000,
    true = Asked =< 1,
    _ = macula_ct:poll(fun() -> {Code, _} = raw(MPort, <<"GET /metrics HTTP/1.1\r\n\r\n">>),
                                Code =:= 200 end, 5000, scrapes_do_not_recover),
    ok.

%% A socket that cannot be handed to its serving process (here: closed
%% already) gives its slot back: more such failures than slots leave
%% scrapes working.
failed_hand_over_frees_its_slot(_Config) ->
    Slots = counters:new(1, [atomics]),
    {ok, L} = gen_tcp:listen(0, [binary, {ip, {127, 0, 0, 1}}, {active, false}]),
    {ok, Port} = inet:port(L),
    [begin
         {ok, C} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}]),
         {ok, S} = gen_tcp:accept(L, 5000),
         gen_tcp:close(S),
         ok = macula_metrics_http:admit(S, Slots),
         gen_tcp:close(C)
     end || _ <- lists:seq(1, 6)],
    gen_tcp:close(L),
    0 = counters:get(Slots, 1),
    ok.

%% A node out of processes (+P at its minimum, all taken for 2 s): a
%% scrape gets 503 naming the limit, the acceptor does not crash (the
%% server is the same process afterwards), and scrapes work once
%% processes are free again.
no_process_left_answers_503(Config) ->
    MPort = tcp_port(),
    {A, _} = macula_ct:start_node(Config, #{proto => macula,
                                            args => ["+P", "1024", "-macula_metrics_port",
                                                     integer_to_list(MPort)]}),
    {ok, _} = peer:call(A, application, ensure_all_started, [macula]),
    _ = scrape(MPort),
    Server = peer:call(A, erlang, whereis, [macula_metrics_http]),
    ok = peer:call(A, ?MODULE, fill_processes, [2000]),
    timer:sleep(300),
    {503, Reply} = raw(MPort, <<"GET /metrics HTTP/1.1\r\n\r\n">>),
    {_, _} = binary:match(Reply, <<"system_limit">>),
    _ = macula_ct:poll(fun() -> {Code, _} = raw(MPort, <<"GET /metrics HTTP/1.1\r\n\r\n">>),
                                Code =:= 200 end, 10000, scrapes_do_not_recover),
    Server = peer:call(A, erlang, whereis, [macula_metrics_http]),
    ok.

%%% Peer side

%% Takes every free process slot for Ms ms (the holder and its children
%% go together).
fill_processes(Ms) ->
    spawn(fun() ->
                  fill(),
                  timer:sleep(Ms),
                  exit(released)
          end),
    ok.

fill() ->
    Self = self(),
    try spawn_link(fun() -> receive never -> Self end end) of
        _ -> fill()
    catch error:system_limit -> ok
    end.

sink() ->
    receive {From, Bin} when is_binary(Bin) -> From ! {self(), ack} end,
    sink().

send_bytes(Sink, Mb, Timeout) ->
    Sink ! {self(), binary:copy(<<5>>, Mb * ?MB)},
    receive {Sink, ack} -> ok after Timeout -> timeout end.

%%% Helpers

scrape(Port) ->
    Url = "http://127.0.0.1:" ++ integer_to_list(Port) ++ "/metrics",
    {ok, {{_, 200, _}, Headers, Body}} =
        httpc:request(get, {Url, []}, [{timeout, 10000}], [{body_format, binary}]),
    "text/plain; version=0.0.4" ++ _ = proplists:get_value("content-type", Headers),
    Body.

lines(Body) ->
    binary:split(Body, <<"\n">>, [global]).

family(Line) ->
    [Name | _] = binary:split(Line, [<<"{">>, <<" ">>]),
    Name.

%% The value of the sample named exactly Name (labels included).
value(Body, Name) ->
    N = list_to_binary(Name ++ " "),
    case [V || L <- lines(Body), <<P:(byte_size(N))/binary, V/binary>> <- [L], P =:= N] of
        [V] ->
            try binary_to_integer(V) catch error:badarg -> binary_to_float(V) end;
        Other ->
            ct:fail({sample, Name, Other})
    end.

%% A request head of exactly Size bytes (for a path that does not exist).
head(Size) ->
    Start = <<"GET /other HTTP/1.1\r\nX-Pad: ">>,
    Pad = binary:copy(<<"a">>, Size - byte_size(Start) - 4),
    <<Start/binary, Pad/binary, "\r\n\r\n">>.

connect(Port) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}], 5000),
    S.

raw(Port, Request) ->
    S = connect(Port),
    ok = gen_tcp:send(S, Request),
    read_reply(S, 5000).

%% {Status, Whole reply} once the server closes.
read_reply(S, Timeout) ->
    Reply = read_all(S, Timeout, <<>>),
    gen_tcp:close(S),
    <<"HTTP/1.1 ", Code:3/binary, _/binary>> = Reply,
    {binary_to_integer(Code), Reply}.

read_all(S, Timeout, Acc) ->
    case gen_tcp:recv(S, 0, Timeout) of
        {ok, B} -> read_all(S, Timeout, <<Acc/binary, B/binary>>);
        {error, closed} -> Acc;
        {error, Why} -> ct:fail({recv, Why, Acc})
    end.
