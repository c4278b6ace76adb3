%% @doc The bookkeeping of macula_dist_relay:online_nodes/0, as plain
%% data: one listing at a time (callers that come while it runs share its
%% answer), each relay asked page after page, and the page requests paced
%% per relay by a token bucket.
%%
%% Why the pacing: a relay counts every control message of a node against
%% a rate (50/s, bursts of 200 by default) and closes the connection of a
%% node that goes over, which would drop every relayed connection of the
%% node. A listing spends at most ?BURST page requests at once and
%% ?RATE per second after that, which leaves the rest of the relay's
%% allowance to tunnel requests. Callers more frequent than that are
%% slowed down by the bucket, not answered from a stale copy.
%%
%% No process, no side effects: the owner sends the requests this module
%% asks for (`{send, Tag, After}') and waits the delays it names
%% (`{wait, Tag, After, Ms}').
-module(macula_relay_listing).

-export([new/0, join/3, page/5, gone/2, paced/3, sent/3, done/1, answer/1]).
-export_type([t/0, action/0]).

-define(BURST, 50).
-define(RATE, 20).        % page requests per second and relay, after the burst
-define(MAX_PAGES, 200).  % per relay and listing (11 names each)

-record(run, {froms = [] :: [gen_server:from()],
              nodes = #{} :: #{binary() => [binary()]},
              %% per relay: the request id awaited, or `paced'
              waiting = #{} :: #{integer() => non_neg_integer() | paced},
              pages = #{} :: #{integer() => non_neg_integer()}}).
-record(listing, {run :: #run{} | undefined,
                  buckets = #{} :: #{integer() => {float(), integer()}}}).

-opaque t() :: #listing{}.
-type action() :: {send, integer(), binary()} | {wait, integer(), binary(), pos_integer()}.

-spec new() -> t().
new() ->
    #listing{}.

%% @doc Adds caller From; a new run asks each relay in Tags for its first
%% page. Returns whether a run started (the owner then arms its timeout).
-spec join(t(), gen_server:from(), {[integer()], integer()}) ->
          {t(), boolean(), [action()]}.
join(L = #listing{run = R = #run{froms = Fs}}, From, _) when R =/= undefined ->
    {L#listing{run = R#run{froms = [From | Fs]}}, false, []};
join(L, From, {Tags, Now}) ->
    Run = #run{froms = [From], waiting = maps:from_list([{T, paced} || T <- Tags])},
    {L1, Actions} = lists:foldl(fun(T, {Acc, As}) ->
                                        {Acc1, A} = ask(Acc, T, <<>>, Now),
                                        {Acc1, [A | As]}
                                end, {L#listing{run = Run}, []}, Tags),
    {L1, true, Actions}.

%% @doc Relay Tag answered request Id with Nodes ([{Node, Relay}]) and More.
%% The next page is asked for while there is more (and the page bound is
%% not reached).
-spec page(t(), integer(), non_neg_integer(), {[{binary(), binary()}], boolean()}, integer()) ->
          {t(), [action()]}.
page(L = #listing{run = R = #run{waiting = W, nodes = Acc, pages = P}}, Tag, Id, {Nodes, More}, Now)
  when R =/= undefined ->
    case maps:find(Tag, W) of
        {ok, Id} ->
            N = maps:get(Tag, P, 0) + 1,
            R1 = R#run{nodes = lists:foldl(fun add_home/2, Acc, Nodes), pages = P#{Tag => N}},
            case More andalso Nodes =/= [] andalso N < ?MAX_PAGES of
                true ->
                    {Last, _} = lists:last(Nodes),
                    {L1, A} = ask(L#listing{run = R1#run{waiting = W#{Tag := paced}}}, Tag, Last, Now),
                    {L1, [A]};
                false ->
                    {L#listing{run = R1#run{waiting = maps:remove(Tag, W)}}, []}
            end;
        _ ->
            {L, []}
    end;
page(L, _Tag, _Id, _Page, _Now) ->
    {L, []}.

%% @doc Relay Tag will not answer (its connection closed, or a request
%% could not be sent): the run stops waiting for it.
-spec gone(t(), integer()) -> t().
gone(L = #listing{run = R = #run{waiting = W}}, Tag) when R =/= undefined ->
    L#listing{run = R#run{waiting = maps:remove(Tag, W)}, buckets = maps:remove(Tag, L#listing.buckets)};
gone(L, Tag) ->
    L#listing{buckets = maps:remove(Tag, L#listing.buckets)}.

%% @doc A paced request's wait is over: ask again (the bucket has a token
%% by now).
-spec paced(t(), {integer(), binary()}, integer()) -> {t(), [action()]}.
paced(L = #listing{run = #run{waiting = W}}, {Tag, After}, Now) ->
    case maps:find(Tag, W) of
        {ok, paced} -> {L1, A} = ask(L, Tag, After, Now), {L1, [A]};
        _ -> {L, []}
    end;
paced(L, _, _) ->
    {L, []}.

%% @doc The owner sent the request of Tag: its id (0: it could not).
-spec sent(t(), integer(), non_neg_integer()) -> t().
sent(L, Tag, 0) ->
    gone(L, Tag);
sent(L = #listing{run = R = #run{waiting = W}}, Tag, Id) ->
    L#listing{run = R#run{waiting = W#{Tag => Id}}}.

%% @doc True when the run waits for no relay any more.
-spec done(t()) -> boolean().
done(#listing{run = #run{waiting = W}}) -> map_size(W) =:= 0;
done(_) -> false.

%% @doc Ends the run (complete, or at its timeout with what came): the
%% callers to answer and the answer, one map per node with its relays.
-spec answer(t()) -> {t(), [gen_server:from()], [map()]}.
answer(L = #listing{run = #run{froms = Fs, nodes = Nodes}}) ->
    Answer = [#{node => N, relays => Hs} || {N, Hs} <- lists:sort(maps:to_list(Nodes))],
    {L#listing{run = undefined}, Fs, Answer};
answer(L) ->
    {L, [], []}.

%%% ------------------------------------------------------------------

add_home({Node, Home}, Acc) ->
    maps:update_with(Node, fun(Hs) -> lists:usort([Home | Hs]) end, [Home], Acc).

%% A token from Tag's bucket: send now, or wait until one is there.
ask(L = #listing{buckets = B}, Tag, After, Now) ->
    {Tokens, At} = maps:get(Tag, B, {float(?BURST), Now}),
    Refilled = min(float(?BURST), Tokens + (Now - At) * ?RATE / 1000),
    case Refilled >= 1 of
        true ->
            {L#listing{buckets = B#{Tag => {Refilled - 1, Now}}}, {send, Tag, After}};
        false ->
            Ms = max(1, ceil((1 - Refilled) * 1000 / ?RATE)),
            {L#listing{buckets = B#{Tag => {Refilled, Now}}}, {wait, Tag, After, Ms}}
    end.
