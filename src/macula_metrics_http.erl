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
%%
%% A scrape asks macula_endpoint (the distribution's own process) for its
%% figures, so scrapes must not pile up there: the server keeps the
%% rendered page for ?FRESH ms, and while it is being built (by one
%% process, with ?CALL_TIMEOUT ms per call) other scrapes wait for that
%% page instead of asking again. A page not ready within ?SCRAPE_TIMEOUT
%% ms is answered 503.
-module(macula_metrics_http).
-behaviour(gen_server).

-export([start_link/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).
-export([accept_loop/3, admit/2, serve/2]).

-define(MAX_SCRAPES, 4).
-define(MAX_REQUEST, 8192).
-define(REQUEST_TIMEOUT, 5000).
-define(SEND_TIMEOUT, 5000).
-define(FRESH, 1000).
-define(CALL_TIMEOUT, 2000).
-define(SCRAPE_TIMEOUT, 3000).
-define(DRAIN_TIMEOUT, 1000).

-record(st, {listen :: gen_tcp:socket(),
             acceptor :: pid(),
             page :: none | {integer(), binary()},  % {built at (ms), body}
             builder :: none | reference(),         % monitor of the builder
             waiting = [] :: [gen_server:from()]}).

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
            {ok, #st{listen = L, acceptor = Acceptor, page = none, builder = none}};
        {error, Why} ->
            logger:error("macula: cannot listen for metrics on ~s (macula_metrics_port, "
                         "macula_metrics_bind): ~s", [where(Ip, Port), inet:format_error(Why)]),
            {stop, {macula_metrics_port, Why}}
    end.

-spec handle_call(term(), gen_server:from(), #st{}) ->
          {reply, term(), #st{}} | {noreply, #st{}}.
handle_call(page, From, St = #st{page = Page, builder = Builder, waiting = W}) ->
    Now = erlang:monotonic_time(millisecond),
    case Page of
        {At, Body} when Now - At < ?FRESH ->
            {reply, {ok, Body}, St};
        _ when Builder =/= none ->
            {noreply, St#st{waiting = [From | W]}};
        _ ->
            {_, Ref} = spawn_monitor(fun build/0),
            {noreply, St#st{builder = Ref, waiting = [From | W]}}
    end;
handle_call(_Request, _From, St) ->
    {reply, {error, unknown_request}, St}.

-spec handle_cast(term(), #st{}) -> {noreply, #st{}}.
handle_cast(_Msg, St) ->
    {noreply, St}.

-spec handle_info(term(), #st{}) -> {noreply, #st{}}.
handle_info({'DOWN', Ref, process, _, Why}, St = #st{builder = Ref, waiting = W}) ->
    {Reply, Page} = case Why of
                        {page, Body} -> {{ok, Body}, {erlang:monotonic_time(millisecond), Body}};
                        _ -> {{error, Why}, St#st.page}
                    end,
    [gen_server:reply(From, Reply) || From <- W],
    {noreply, St#st{builder = none, waiting = [], page = Page}};
handle_info(_Info, St) ->
    {noreply, St}.

-spec terminate(term(), #st{}) -> ok.
terminate(_Why, #st{listen = L}) ->
    gen_tcp:close(L),
    ok.

%% The builder: hands the page over as its exit reason (one message).
build() ->
    exit({page, macula_metrics:render(macula_metrics:snapshot(?CALL_TIMEOUT))}).

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

%% @private Hands an accepted socket to a serving process, or answers 503.
%% Never raises: the acceptor must outlive whatever a client or the
%% node's limits do (its crashes count against macula_sup's intensity).
-spec admit(gen_tcp:socket(), counters:counters_ref()) -> ok.
admit(S, Slots) ->
    case counters:get(Slots, 1) < ?MAX_SCRAPES of
        true ->
            counters:add(Slots, 1, 1),
            hand_over(S, Slots);
        false ->
            busy(S, "too many scrapes at once\n")
    end.

hand_over(S, Slots) ->
    try proc_lib:spawn(?MODULE, serve, [S, Slots]) of
        Pid ->
            case gen_tcp:controlling_process(S, Pid) of
                ok ->
                    Pid ! go,
                    ok;
                {error, _} ->
                    %% Killed before its `after' runs: give its slot back here.
                    exit(Pid, kill),
                    counters:sub(Slots, 1, 1),
                    _ = gen_tcp:close(S),
                    ok
            end
    catch error:_ ->  % system_limit: no process left
            counters:sub(Slots, 1, 1),
            busy(S, "no process for the scrape (system_limit)\n")
    end.

busy(S, Why) ->
    reply(S, 503, "Service Unavailable", Why),
    _ = gen_tcp:shutdown(S, write),
    _ = gen_tcp:close(S),
    ok.

%%% One request (a process of its own)

%% @private
-spec serve(gen_tcp:socket(), counters:counters_ref()) -> ok.
serve(S, Slots) ->
    try
        receive go -> ok after ?REQUEST_TIMEOUT -> exit(normal) end,
        Deadline = erlang:monotonic_time(millisecond) + ?REQUEST_TIMEOUT,
        answer(S, read_head(S, <<>>, Deadline))
    after
        %% FIN after the reply, so the client reads it before the close.
        _ = gen_tcp:shutdown(S, write),
        gen_tcp:close(S),
        counters:sub(Slots, 1, 1)
    end,
    ok.

%% The request line and headers, up to the empty line, which must end
%% within the first ?MAX_REQUEST + 4 bytes (however they were read).
read_head(S, Acc, Deadline) ->
    Scope = {0, min(byte_size(Acc), ?MAX_REQUEST + 4)},
    case binary:match(Acc, <<"\r\n\r\n">>, [{scope, Scope}]) of
        {_, _} ->
            {ok, Acc};
        nomatch when byte_size(Acc) >= ?MAX_REQUEST + 4 ->
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
    reply(S, 431, "Request Header Fields Too Large", "request head over 8192 bytes\n"),
    drain(S);
answer(S, timeout) ->
    reply(S, 408, "Request Timeout", "request not complete in time\n");
answer(_S, closed) ->
    ok.

%% The rest of a request we will not read: closing with unread bytes
%% would reset the connection and lose the reply at the client. Bounded
%% in time; the client closes once it has the reply.
drain(S) ->
    _ = gen_tcp:shutdown(S, write),
    Deadline = erlang:monotonic_time(millisecond) + ?DRAIN_TIMEOUT,
    drain(S, Deadline).

drain(S, Deadline) ->
    Left = Deadline - erlang:monotonic_time(millisecond),
    case Left > 0 andalso gen_tcp:recv(S, 0, Left) of
        {ok, _} -> drain(S, Deadline);
        _ -> ok
    end.

get(S, Path) ->
    case binary:split(Path, <<"?">>) of
        [<<"/metrics">> | _] ->
            page(S);
        _ ->
            reply(S, 404, "Not Found", "try /metrics\n")
    end.

page(S) ->
    case catch gen_server:call(?MODULE, page, ?SCRAPE_TIMEOUT) of
        {ok, Body} ->
            reply(S, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", Body);
        _ ->
            reply(S, 503, "Service Unavailable", "the node's figures did not come in time\n")
    end.

reply(S, Code, Reason, Body) ->
    reply(S, Code, Reason, "text/plain; charset=utf-8", Body).

reply(S, Code, Reason, Type, Body) ->
    Head = io_lib:format("HTTP/1.1 ~b ~s\r\nContent-Type: ~s\r\nContent-Length: ~b\r\n"
                         "Connection: close\r\n\r\n",
                         [Code, Reason, Type, iolist_size(Body)]),
    _ = gen_tcp:send(S, [Head, Body]),
    ok.
