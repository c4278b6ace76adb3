%% @doc Rate-limited log lines for events that peers who proved nothing
%% can cause (a wrong cookie, a malformed proof frame, a certificate for
%% another host, a peer in insecure mode). Such a peer can repeat them as
%% fast as it can handshake, so each interval logs its first ?BURST events
%% in full and only counts the rest; after an interval with events left
%% unlogged, one summary line gives their number by reason. Every event is
%% counted (counts/0, shown by macula:info/0).
%%
%% No process is needed on the hot path: the counts live in an atomics
%% array kept in a persistent term. A short-lived process writes each
%% summary at the end of its interval, so the last one of an attack is not
%% left waiting for the next event. Any process may call.
-module(macula_log_limit).

-export([init/0, event/3, counts/0, reasons/0]).
-export_type([reason/0]).

-type reason() :: bad_cookie | bad_proof_frame | bad_cert_host | insecure_peer
                | failed_handshake.

-define(KEY, {?MODULE, atomics}).
-define(REASONS, [bad_cookie, bad_proof_frame, bad_cert_host, insecure_peer, failed_handshake]).
-define(INTERVAL_MS, 10000).
%% Lines in full per interval, all reasons together.
-define(BURST, 10).
%% Layout of the atomics array: per reason its total and its count left
%% unlogged in this interval, then the interval's number, the lines it has
%% logged, and whether a summary is scheduled.
-define(N, length(?REASONS)).
-define(TOTAL(I), I).
-define(UNLOGGED(I), ?N + I).
-define(WINDOW, 2 * ?N + 1).
-define(LOGGED, 2 * ?N + 2).
-define(SCHEDULED, 2 * ?N + 3).

%% @doc Creates the counters; called once at distribution start (before
%% any peer can cause an event), so that concurrent first events cannot
%% race to create them. Idempotent.
-spec init() -> ok.
init() ->
    _ = atomics_ref(),
    ok.

%% @doc Logs `Format`/`Args` (an error; a warning for insecure_peer), or
%% only counts it when this interval already logged ?BURST lines.
-spec event(reason(), io:format(), [term()]) -> ok.
event(Reason, Format, Args) ->
    A = atomics_ref(),
    I = index(Reason),
    atomics:add(A, ?TOTAL(I), 1),
    roll_window(A),
    case atomics:add_get(A, ?LOGGED, 1) =< ?BURST of
        true when Reason =:= insecure_peer ->
            logger:warning(Format, Args);
        true ->
            logger:error(Format, Args);
        false ->
            atomics:add(A, ?UNLOGGED(I), 1),
            schedule_summary(A)
    end,
    ok.

%% @doc Events since the node started, by reason (logged or not).
-spec counts() -> #{reason() => non_neg_integer()}.
counts() ->
    A = atomics_ref(),
    maps:from_list([{R, atomics:get(A, ?TOTAL(index(R)))} || R <- ?REASONS]).

-spec reasons() -> [reason()].
reasons() ->
    ?REASONS.

%%% ------------------------------------------------------------------

atomics_ref() ->
    case persistent_term:get(?KEY, undefined) of
        undefined ->
            A = atomics:new(2 * ?N + 3, [{signed, false}]),
            persistent_term:put(?KEY, A),
            A;
        A ->
            A
    end.

index(Reason) ->
    index(Reason, ?REASONS, 1).

index(R, [R | _], I) -> I;
index(R, [_ | Rs], I) -> index(R, Rs, I + 1).

window() ->
    uptime_ms() div ?INTERVAL_MS.

%% Monotonic time may be negative; time since the VM started is not.
uptime_ms() ->
    erlang:convert_time_unit(erlang:monotonic_time() - erlang:system_info(start_time),
                             native, millisecond).

%% The first event of a new interval starts its budget of lines afresh.
roll_window(A) ->
    W = window() + 1,  % + 1: 0 means no interval yet
    case atomics:get(A, ?WINDOW) of
        W -> ok;
        Old ->
            case atomics:compare_exchange(A, ?WINDOW, Old, W) of
                ok -> atomics:put(A, ?LOGGED, 0);
                _ -> ok  % another event rolled it
            end
    end.

schedule_summary(A) ->
    case atomics:compare_exchange(A, ?SCHEDULED, 0, 1) of
        ok ->
            Wait = ?INTERVAL_MS - uptime_ms() rem ?INTERVAL_MS,
            _ = spawn(fun() -> timer:sleep(Wait), summary(A) end),
            ok;
        _ ->
            ok
    end.

summary(A) ->
    atomics:put(A, ?SCHEDULED, 0),
    Unlogged = [{R, atomics:exchange(A, ?UNLOGGED(index(R)), 0)} || R <- ?REASONS],
    case [io_lib:format("~s ~b", [R, N]) || {R, N} <- Unlogged, N > 0] of
        [] ->
            ok;
        Parts ->
            Total = lists:sum([N || {_, N} <- Unlogged]),
            logger:error("macula: ~b more refused connections in the last ~b s not logged "
                         "one by one (~b lines in full per interval): ~s",
                         [Total, ?INTERVAL_MS div 1000, ?BURST, lists:join(", ", Parts)])
    end.
