%% @doc The node's Prometheus endpoint: `GET /metrics` answers
%% macula_metrics:render/1 of a fresh snapshot, in the text exposition
%% format. Opt-in (`macula_metrics_port`), on 127.0.0.1 unless
%% `macula_metrics_bind` says otherwise; started by macula_sup.
%%
%% Bounded, since whoever reaches the port may connect: at most
%% ?MAX_SCRAPES requests are served at a time (more get 503 at once), a
%% request's head may be ?MAX_REQUEST bytes (more: 431) and must arrive
%% within ?REQUEST_TIMEOUT ms (else 408), and a reply that the client does
%% not read within ?SEND_TIMEOUT ms is dropped. Each request is served by
%% a process of its own, not linked: a client cannot crash the server.
-module(macula_metrics_http).
-behaviour(gen_server).

-export([start_link/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).
-export([accept_loop/3, serve/2]).

-define(MAX_SCRAPES, 4).
-define(MAX_REQUEST, 8192).
-define(REQUEST_TIMEOUT, 5000).
-define(SEND_TIMEOUT, 5000).

-record(st, {listen :: gen_tcp:socket(), acceptor :: pid()}).

%% @doc Listens on Ip:Port; a port that cannot be bound stops the start
%% with `{macula_metrics_port, Reason}' (and one log line naming it).
-spec start_link(inet:ip_address(), 1..65535) -> {ok, pid()} | {error, term()}.
start_link(Ip, Port) ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, {Ip, Port}, []).

-spec init({inet:ip_address(), 1..65535}) -> {ok, #st{}} | {stop, term()}.
init({Ip, Port}) ->
    Opts = [binary, {ip, Ip}, {active, false}, {reuseaddr, true}, {backlog, 16},
            {packet, raw}, {nodelay, true}, {send_timeout, ?SEND_TIMEOUT},
            {send_timeout_close, true}, family(Ip)],
    case gen_tcp:listen(Port, Opts) of
        {ok, L} ->
            Slots = counters:new(1, [atomics]),
            Acceptor = proc_lib:spawn_link(?MODULE, accept_loop, [L, Slots, self()]),
            logger:info("macula: metrics on http://~s/metrics", [where(Ip, Port)]),
            {ok, #st{listen = L, acceptor = Acceptor}};
        {error, Why} ->
            logger:error("macula: cannot listen for metrics on ~s (macula_metrics_port, "
                         "macula_metrics_bind): ~s", [where(Ip, Port), inet:format_error(Why)]),
            {stop, {macula_metrics_port, Why}}
    end.

-spec handle_call(term(), gen_server:from(), #st{}) -> {reply, term(), #st{}}.
handle_call(_Request, _From, St) ->
    {reply, {error, unknown_request}, St}.

-spec handle_cast(term(), #st{}) -> {noreply, #st{}}.
handle_cast(_Msg, St) ->
    {noreply, St}.

-spec handle_info(term(), #st{}) -> {noreply, #st{}}.
handle_info(_Info, St) ->
    {noreply, St}.

-spec terminate(term(), #st{}) -> ok.
terminate(_Why, #st{listen = L}) ->
    gen_tcp:close(L),
    ok.

family({_, _, _, _}) -> inet;
family(_) -> inet6.

where({_, _, _, _} = Ip, Port) -> inet:ntoa(Ip) ++ ":" ++ integer_to_list(Port);
where(Ip, Port) -> "[" ++ inet:ntoa(Ip) ++ "]:" ++ integer_to_list(Port).

%%% Accepting (a process linked to the server: if either goes, both do)

%% @private
-spec accept_loop(gen_tcp:socket(), counters:counters_ref(), pid()) -> no_return().
accept_loop(L, Slots, Server) ->
    case gen_tcp:accept(L) of
        {ok, S} ->
            admit(S, Slots),
            accept_loop(L, Slots, Server);
        {error, closed} ->
            exit(normal);
        {error, _} ->
            %% emfile and the like: try again a little later.
            timer:sleep(100),
            accept_loop(L, Slots, Server)
    end.

admit(S, Slots) ->
    case counters:get(Slots, 1) < ?MAX_SCRAPES of
        true ->
            counters:add(Slots, 1, 1),
            Pid = proc_lib:spawn(?MODULE, serve, [S, Slots]),
            case gen_tcp:controlling_process(S, Pid) of
                ok -> Pid ! go;
                {error, _} -> exit(Pid, kill), gen_tcp:close(S)
            end;
        false ->
            reply(S, 503, "Service Unavailable", "too many scrapes at once\n"),
            gen_tcp:close(S)
    end.

%%% One request (a process of its own)

%% @private
-spec serve(gen_tcp:socket(), counters:counters_ref()) -> ok.
serve(S, Slots) ->
    try
        receive go -> ok after ?REQUEST_TIMEOUT -> exit(normal) end,
        Deadline = erlang:monotonic_time(millisecond) + ?REQUEST_TIMEOUT,
        answer(S, read_head(S, <<>>, Deadline))
    after
        gen_tcp:close(S),
        counters:sub(Slots, 1, 1)
    end,
    ok.

%% The request line and headers, up to the empty line.
read_head(S, Acc, Deadline) ->
    case binary:match(Acc, <<"\r\n\r\n">>) of
        {_, _} ->
            {ok, Acc};
        nomatch when byte_size(Acc) > ?MAX_REQUEST ->
            too_large;
        nomatch ->
            Left = Deadline - erlang:monotonic_time(millisecond),
            case Left > 0 andalso gen_tcp:recv(S, 0, Left) of
                {ok, More} -> read_head(S, <<Acc/binary, More/binary>>, Deadline);
                false -> timeout;
                {error, timeout} -> timeout;
                {error, _} -> closed
            end
    end.

answer(S, {ok, Head}) ->
    [Line | _] = binary:split(Head, <<"\r\n">>),
    case binary:split(Line, <<" ">>, [global]) of
        [<<"GET">>, Path, <<"HTTP/1.", _>>] -> get(S, Path);
        [_, _, <<"HTTP/1.", _>>] -> reply(S, 405, "Method Not Allowed", "GET only\n");
        _ -> reply(S, 400, "Bad Request", "bad request line\n")
    end;
answer(S, too_large) ->
    reply(S, 431, "Request Header Fields Too Large", "request head over 8192 bytes\n");
answer(S, timeout) ->
    reply(S, 408, "Request Timeout", "request not complete in time\n");
answer(_S, closed) ->
    ok.

get(S, Path) ->
    case binary:split(Path, <<"?">>) of
        [<<"/metrics">> | _] ->
            Body = macula_metrics:render(macula_metrics:snapshot()),
            reply(S, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", Body);
        _ ->
            reply(S, 404, "Not Found", "try /metrics\n")
    end.

reply(S, Code, Reason, Body) ->
    reply(S, Code, Reason, "text/plain; charset=utf-8", Body).

reply(S, Code, Reason, Type, Body) ->
    Head = io_lib:format("HTTP/1.1 ~b ~s\r\nContent-Type: ~s\r\nContent-Length: ~b\r\n"
                         "Connection: close\r\n\r\n",
                         [Code, Reason, Type, iolist_size(Body)]),
    _ = gen_tcp:send(S, [Head, Body]),
    ok.
