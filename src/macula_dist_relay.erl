%% @doc The relay modes: the node's connections to its macula-relays and
%% the tunnels through them. In dist_relay mode the node registers at
%% every relay it is given (independent relays); in relay mode at one
%% relay of a mesh at a time, which reaches the nodes at every relay of
%% the mesh, and it fails over to the next relay of its list when that
%% one is lost. One process (a child of net_sup, through
%% macula_dist:childspecs/0) owns a relay shim per relay (see
%% relay/client/relay_shim.h): the shim identifies the node to the relay under its
%% full node name and gives each tunnel a loopback UDP port, so the node's
%% own endpoint (bound to 127.0.0.1) runs the normal end-to-end QUIC + TLS
%% session, cookie proof and dist handshake to 127.0.0.1:<tunnel port>.
%%
%% Each tunnel has an owner, the connection's handshake process (which
%% lives as long as the distribution connection): a tunnel we requested
%% is owned by the process that asked (route/1), one another node opened
%% by the process that accepted it (accepted/1). When the owner dies the
%% tunnel is closed; when the tunnel or the whole relay connection goes
%% away the owner is killed, so net_kernel sees nodedown at once instead
%% of after the tick timeout. A lost relay connection is re-dialled with
%% a growing delay (1 s .. 10 s); in relay mode the next relay of the list
%% is dialled instead, at once if the lost one was working.
-module(macula_dist_relay).
-behaviour(gen_server).

-export([childspec/0, start_link/0, listen/1, route/1, accepted/1, join/2,
         info/0, info/1, online_nodes/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-include_lib("kernel/include/dist_util.hrl").

-define(SERVER, ?MODULE).
-define(RETRY_MIN_MS, 1000).
%% At most this between attempts: a name held by a vanished connection of
%% ours is free again after the relay connection's idle timeout (8 s).
-define(RETRY_MAX_MS, 10000).
%% A tunnel another node opened must carry a connection we accept by then.
-define(UNCLAIMED_MS, 30000).
%% A relay's host name not resolved by then counts as unreachable.
-define(RESOLVE_MS, 10000).
%% online_nodes/0 answers with what the relays sent by then.
-define(LIST_MS, 5000).

-record(relay, {host :: string(), port :: 1..65535, shim,
                state = down :: standby | connecting | identified | down,
                %% while its host name is being resolved: the resolver
                resolver :: {pid(), reference()} | undefined,
                name = <<>> :: binary(), retry = ?RETRY_MIN_MS}).
-record(req, {from, node :: node(), mref :: reference(), tried = [] :: [integer()]}).
-record(tunnel, {port :: 1..65535, owner :: pid() | undefined,
                 mref :: reference() | undefined, peer :: binary()}).
-record(st, {node :: node() | undefined, inner :: 1..65535 | undefined,
             mode = dist_relay :: dist_relay | relay,
             config = #{} :: map(),
             relays = #{} :: #{integer() => #relay{}},
             next_tag = 1 :: integer(),
             pending = #{} :: #{{integer(), integer()} => #req{}},
             waiting = [] :: [#req{}],
             tunnels = #{} :: #{{integer(), integer()} => #tunnel{}},
             %% online_nodes/0 (macula_relay_listing), and its run's timer
             listing = macula_relay_listing:new() :: macula_relay_listing:t(),
             list_ref :: reference() | undefined}).

%%% ------------------------------------------------------------------
%%% API

%% @doc The child spec net_sup starts before net_kernel.
-spec childspec() -> supervisor:child_spec().
childspec() ->
    #{id => ?SERVER, start => {?MODULE, start_link, []}, restart => permanent,
      shutdown => 2000, type => worker, modules => [?MODULE]}.

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?SERVER}, ?MODULE, [], []).

%% @doc Opens the node's loopback endpoint and dials the configured
%% relays as `Node`. Called from macula_dist:listen (in net_kernel).
-spec listen(node()) -> {ok, reference()} | {error, string()}.
listen(Node) ->
    case macula_endpoint:listen(0) of
        {ok, Ep} ->
            #{port := Inner} = macula_nif:endpoint_info(Ep),
            ok = gen_server:call(?SERVER, {listen, Node, Inner}),
            {ok, Ep};
        {error, _} = Error ->
            Error
    end.

%% @doc Where to dial `Node`: {Host, Port, Ip} of the loopback end of a
%% new tunnel, owned by the caller. Fails the caller's handshake (as
%% dist_util expects) when no relay gives one.
-spec route(node()) -> {string(), 1..65535, inet:ip_address()}.
route(Node) ->
    Host = case macula_node_name:split(Node) of
               {_, H} -> H;
               false -> ?shutdown2(Node, {macula, invalid_node_name})
           end,
    case catch gen_server:call(?SERVER, {route, Node}, infinity) of
        {ok, Port} ->
            {Host, Port, {127, 0, 0, 1}};
        {error, Why} ->
            logger:warning("macula: no tunnel to ~p through the relays: ~s",
                           [Node, Why]),
            ?shutdown2(Node, {macula, {relay, Why}});
        {'EXIT', Why} ->
            logger:error("macula: relay service unavailable: ~p", [Why]),
            ?shutdown2(Node, {macula, {relay, unavailable}})
    end.

%% @doc The caller accepted a connection from 127.0.0.1:`Port`: it owns the
%% tunnel behind that port from now on.
-spec accepted(1..65535) -> ok.
accepted(Port) ->
    gen_server:call(?SERVER, {accepted, Port, self()}, infinity).

%% @doc Adds relays ("host:port", comma-separated; port 4434 if left out)
%% at run time; the node must be distributed in relay mode `Mode`.
-spec join(dist_relay | relay, string() | binary()) -> ok | {error, term()}.
join(Mode, Spec) ->
    try macula_relay_config:parse_relays(macula_dist_relays, unicode:characters_to_list(Spec)) of
        Relays ->
            case whereis(?SERVER) of
                undefined -> {error, not_in_mode(Mode)};
                _ -> gen_server:call(?SERVER, {join, Mode, Relays})
            end
    catch error:{macula_config, Text} -> {error, Text}
    end.

not_in_mode(dist_relay) -> not_in_dist_relay_mode;
not_in_mode(relay) -> not_in_relay_mode.

%% @doc Each relay: where, state, the name it proved, and shim counters.
-spec info() -> [map()].
info() ->
    info(5000).

%% @doc info/0 within Timeout ms (else exit `{timeout, _}').
-spec info(timeout()) -> [map()].
info(Timeout) ->
    case whereis(?SERVER) of
        undefined -> [];
        _ -> gen_server:call(?SERVER, info, Timeout)
    end.

%% @doc The nodes of the realm online at the relays this node is
%% registered at and at the relays linked to them, each with the relays
%% that hold it (its home relays), asked now over the authenticated relay
%% connections. A relay that has not answered within 5 s is left out;
%% [] outside the relay modes or before a relay identified us.
-spec online_nodes() -> [#{node := binary(), relays := [binary()]}].
online_nodes() ->
    case whereis(?SERVER) of
        undefined -> [];
        _ -> gen_server:call(?SERVER, online_nodes, ?LIST_MS + 2000)
    end.

%%% ------------------------------------------------------------------
%%% gen_server
%%% Under net_sup (one_for_all, no restarts) a crash here would take
%%% distribution down: every NIF call that can raise is caught.

-spec init([]) -> {ok, #st{}}.
init([]) ->
    {ok, #st{}}.

-spec handle_call(term(), {pid(), term()}, #st{}) ->
          {reply, term(), #st{}} | {noreply, #st{}}.
handle_call({listen, Node, Inner}, _From, St) ->
    Config = macula_config:get(),
    Mode = maps:get(mode, Config),
    St1 = St#st{node = Node, inner = Inner, config = Config, mode = Mode},
    Relays = maps:get(relays, Config, []),
    Relays =:= [] andalso
        logger:warning("macula: ~p mode without relays (macula_dist_relays); use ~s",
                       [Mode, case Mode of
                                  relay -> "macula:join_mesh/1";
                                  dist_relay -> "macula:join_dist_relay/1"
                              end]),
    {reply, ok, add_relays(Relays, St1)};
handle_call({join, Mode, Relays}, _From, St = #st{node = Node, mode = Mode}) when Node =/= undefined ->
    {reply, ok, add_relays(Relays, St)};
handle_call({join, Mode, _}, _From, St) ->
    {reply, {error, not_in_mode(Mode)}, St};
handle_call({route, Node}, {Pid, _} = From, St) ->
    Req = #req{from = From, node = Node, mref = monitor(process, Pid)},
    {noreply, dispatch(Req, St)};
handle_call({accepted, Port, Pid}, _From, St) ->
    {reply, ok, claim(Port, Pid, St)};
handle_call(online_nodes, From, St) ->
    {noreply, start_listing(From, St)};
handle_call(info, _From, St) ->
    {reply, [relay_info(Tag, R) || {Tag, R} <- maps:to_list(St#st.relays)], St};
handle_call(_Other, _From, St) ->
    {reply, {error, unknown_call}, St}.

-spec handle_cast(term(), #st{}) -> {noreply, #st{}}.
handle_cast(_Msg, St) ->
    {noreply, St}.

-spec handle_info(term(), #st{}) -> {noreply, #st{}}.
handle_info({macula_relay, Tag, Event}, St) ->
    case maps:find(Tag, St#st.relays) of
        {ok, R} -> {noreply, relay_event(Tag, R, Event, St)};
        error -> {noreply, St}
    end;
handle_info({reopen, Tag}, St = #st{mode = relay}) ->
    case active(St) of
        true -> {noreply, St};  % joined meanwhile
        false -> {noreply, open_relay(Tag, St)}
    end;
handle_info({reopen, Tag}, St) ->
    {noreply, open_relay(Tag, St)};
handle_info({resolved, Tag, Ref, Result}, St) ->
    {noreply, resolved(Tag, Ref, Result, St)};
handle_info({listed, Ref}, St = #st{list_ref = Ref}) ->
    {noreply, end_listing(St)};
handle_info({list_paced, Ref, Tag, After}, St = #st{list_ref = Ref}) ->
    {L, Actions} = macula_relay_listing:paced(St#st.listing, {Tag, After}, now_ms()),
    {noreply, listing_actions(Actions, St#st{listing = L})};
handle_info({unclaimed, Key}, St) ->
    {noreply, unclaimed(Key, St)};
handle_info({'DOWN', MRef, process, _, _}, St) ->
    {noreply, owner_down(MRef, St)};
handle_info(_Msg, St) ->
    {noreply, St}.

%%% ------------------------------------------------------------------
%%% Relays

%% A relay already known is not added twice (our second registration
%% there would only be refused as name_taken). dist_relay mode dials each
%% relay now; relay mode keeps them on standby and dials the first if it
%% has no relay yet.
add_relays(Relays, St) ->
    St1 = lists:foldl(fun({Host, Port}, S = #st{next_tag = Tag, relays = Rs}) ->
                              Known = [T || {T, #relay{host = H, port = P}} <- maps:to_list(Rs),
                                            H =:= Host, P =:= Port],
                              case {Known, S#st.mode} of
                                  {[], dist_relay} ->
                                      R = #relay{host = Host, port = Port},
                                      open_relay(Tag, S#st{next_tag = Tag + 1, relays = Rs#{Tag => R}});
                                  {[], relay} ->
                                      R = #relay{host = Host, port = Port, state = standby},
                                      S#st{next_tag = Tag + 1, relays = Rs#{Tag => R}};
                                  _ ->
                                      S
                              end
                      end, St, Relays),
    case St1#st.mode =:= relay andalso not active(St1) andalso lists:sort(maps:keys(St1#st.relays)) of
        [First | _] -> open_relay(First, St1);
        _ -> St1
    end.

%% relay mode: a relay is being dialled or is in use.
active(#st{relays = Rs}) ->
    lists:any(fun(#relay{state = S}) -> S =:= connecting orelse S =:= identified end,
              maps:values(Rs)).

%% relay mode: the relay after Tag in the list, round the end.
next_relay(Tag, #st{relays = Rs}) ->
    Tags = lists:sort(maps:keys(Rs)),
    case [T || T <- Tags, T > Tag] of
        [Next | _] -> Next;
        [] -> hd(Tags)
    end.

%% Resolving a relay's host name may take long (a slow DNS server; at boot
%% the resolver may not run yet), so a process of its own does it: neither
%% the node's boot nor this server waits for it. Until it answers the relay
%% counts as connecting.
open_relay(Tag, St = #st{relays = Rs}) ->
    R = #relay{host = Host} = maps:get(Tag, Rs),
    Self = self(),
    Ref = make_ref(),
    Pid = spawn(fun() -> Self ! {resolved, Tag, Ref, catch macula_node_name:resolve(Host)} end),
    erlang:send_after(?RESOLVE_MS, self(), {resolved, Tag, Ref, timeout}),
    St#st{relays = Rs#{Tag := R#relay{state = connecting, resolver = {Pid, Ref}}}}.

%% The answer of the relay's current resolver (others are stale).
resolved(Tag, Ref, Result, St = #st{relays = Rs}) ->
    case maps:find(Tag, Rs) of
        {ok, R = #relay{resolver = {Pid, Ref}}} ->
            exit(Pid, kill),
            connect_relay(Tag, R#relay{resolver = undefined}, Result, St);
        _ ->
            St
    end.

connect_relay(Tag, R = #relay{host = Host, port = Port}, Ip, St)
  when tuple_size(Ip) =:= 4; tuple_size(Ip) =:= 8 ->
    case open_shim(Tag, R, Ip, St) of
        {ok, Shim} ->
            St#st{relays = (St#st.relays)#{Tag := R#relay{shim = Shim, state = connecting}}};
        {error, Why} ->
            logger:error("macula: cannot reach relay ~s:~p: ~s", [Host, Port, Why]),
            retry_later(Tag, R, St)
    end;
connect_relay(Tag, R = #relay{host = Host, port = Port}, Why, St) ->
    logger:error("macula: cannot reach relay ~s:~p: cannot resolve ~s (~s); trying again later",
                 [Host, Port, Host, case Why of timeout -> "timeout"; _ -> "no address" end]),
    retry_later(Tag, R, St).

open_shim(Tag, #relay{host = Host, port = Port}, Ip,
          #st{node = Node, inner = Inner, config = C}) ->
    Opts = #{relay_ip => inet:ntoa(Ip), relay_port => Port, relay_host => Host,
             node => atom_to_binary(Node), secret => maps:get(realm_secret, C),
             inner_port => Inner, tag => Tag, bind => bind_for(Ip),
             cert_dir => maps:get(cert_dir, C), certfile => maps:get(certfile, C),
             keyfile => maps:get(keyfile, C),
             %% CA mode: the relay's certificate is checked too
             cacertfile => case maps:get(trust, C) of
                               ca -> maps:get(cacertfile, C);
                               _ -> ""
                           end},
    try macula_relay_nif:open(Opts) of
        {ok, Shim} -> {ok, Shim};
        {error, Text} -> {error, binary_to_list(Text)}
    catch error:{badarg, What} ->
        {error, lists:flatten(io_lib:format("bad ~p for the relay protocol", [What]))}
    end.

bind_for(Ip) when tuple_size(Ip) =:= 8 -> "::";
bind_for(_) -> "0.0.0.0".

%% Dials this relay again later; in relay mode the next relay of the list
%% instead, at once if this one was working (it failed under us).
retry_later(Tag, R = #relay{retry = Ms, state = State}, St) ->
    case St#st.mode of
        dist_relay ->
            erlang:send_after(Ms, self(), {reopen, Tag});
        relay ->
            erlang:send_after(if State =:= identified -> 0; true -> Ms end, self(),
                              {reopen, next_relay(Tag, St)})
    end,
    Next = min(Ms * 2, ?RETRY_MAX_MS),
    St1 = St#st{relays = (St#st.relays)#{Tag := R#relay{shim = undefined, state = down,
                                                        retry = Next}}},
    fail_waiting(St1).

relay_event(Tag, R, {identified, Name}, St) ->
    logger:notice("macula: node ~p registered at relay ~s (~s:~p)",
                  [St#st.node, Name, R#relay.host, R#relay.port]),
    R1 = R#relay{state = identified, name = Name, retry = ?RETRY_MIN_MS},
    Waiting = St#st.waiting,
    St1 = St#st{relays = (St#st.relays)#{Tag := R1}, waiting = []},
    lists:foldl(fun dispatch/2, St1, lists:reverse(Waiting));
relay_event(Tag, _R, {tunnel_ready, Id, Tunnel, Port}, St) ->
    tunnel_ready(Tag, Id, Tunnel, Port, St);
relay_event(Tag, _R, {tunnel_failed, Id, Why}, St) ->
    case maps:take({Tag, Id}, St#st.pending) of
        {Req, Pending} -> dispatch(Req, St#st{pending = Pending}, Why);
        error -> St
    end;
relay_event(Tag, _R, {tunnel_incoming, Tunnel, Source, Port}, St) ->
    erlang:send_after(?UNCLAIMED_MS, self(), {unclaimed, {Tag, Tunnel}}),
    T = #tunnel{port = Port, peer = Source},
    St#st{tunnels = (St#st.tunnels)#{{Tag, Tunnel} => T}};
relay_event(Tag, _R, {tunnel_closed, Tunnel, Why}, St) ->
    case maps:take({Tag, Tunnel}, St#st.tunnels) of
        {T, Tunnels} -> drop_owner(T, Why), St#st{tunnels = Tunnels};
        error -> St
    end;
relay_event(Tag, _R, {node_list, Id, Nodes, More}, St) ->
    listed_page(Tag, Id, Nodes, More, St);
relay_event(Tag, _R, {request_failed, Id, _Why}, St) ->
    listed_page(Tag, Id, [], false, St);
relay_event(Tag, R, {closed, Why}, St) ->
    St1 = St#st{listing = macula_relay_listing:gone(St#st.listing, Tag)},
    relay_closed(Tag, R, Why, maybe_done(St1)).

%% Every tunnel through this relay is gone: their connections go down now.
relay_closed(Tag, R = #relay{host = Host, port = Port, shim = Shim}, Why, St) ->
    log_closed(St#st.node, Host, Port, Why),
    catch macula_relay_nif:close(Shim),
    {Gone, Kept} = maps:fold(fun({T, _} = K, V, {G, K1}) when T =:= Tag -> {[V | G], maps:remove(K, K1)};
                                (_, _, Acc) -> Acc
                             end, {[], St#st.tunnels}, St#st.tunnels),
    [drop_owner(T, relay_gone) || T <- Gone],
    {Mine, Others} = maps:fold(fun({T, _} = K, V, {M, O}) when T =:= Tag -> {[V | M], maps:remove(K, O)};
                                  (_, _, Acc) -> Acc
                               end, {[], St#st.pending}, St#st.pending),
    St1 = retry_later(Tag, R, St#st{tunnels = Kept, pending = Others}),
    lists:foldl(fun(Req, S) -> dispatch(Req, S, <<"relay_gone">>) end, St1, Mine).

log_closed(Node, Host, Port, {peer_closed, _Code, Reason}) when Reason =:= <<"name_taken">>;
                                                        Reason =:= <<"bad_proof">> ->
    logger:error("macula: relay ~s:~p refused node ~p: ~s~s", [Host, Port, Node, Reason,
                 hint(Reason)]);
log_closed(_Node, Host, Port, {local_close, 16#28, _}) ->
    logger:error("macula: relay ~s:~p failed to prove the realm secret "
                 "(macula_dist_realm_secret_file differs, or not a relay of this realm)",
                 [Host, Port]);
log_closed(_Node, Host, Port, {tls_alert, Code, Text}) ->
    logger:error("macula: TLS with relay ~s:~p failed (alert ~p, ~s); in CA mode "
                 "(macula_dist_cacertfile) the relay's certificate must come from that CA "
                 "and be valid for ~s", [Host, Port, Code, Text, Host]);
log_closed(_Node, Host, Port, Why) ->
    logger:warning("macula: connection to relay ~s:~p lost: ~p", [Host, Port, Why]).

hint(<<"name_taken">>) -> " (another live node uses this name)";
hint(<<"bad_proof">>) -> " (wrong realm secret: macula_dist_realm_secret_file)".

%%% ------------------------------------------------------------------
%%% Listing the realm's online nodes

%% A new run (or the caller joins the one running): see
%% macula_relay_listing for the pacing.
start_listing(From, St = #st{relays = Rs}) ->
    Tags = [Tag || {Tag, #relay{state = identified}} <- maps:to_list(Rs)],
    {L, Started, Actions} = macula_relay_listing:join(St#st.listing, From, {Tags, now_ms()}),
    St1 = case Started of
              true ->
                  Ref = make_ref(),
                  erlang:send_after(?LIST_MS, self(), {listed, Ref}),
                  St#st{listing = L, list_ref = Ref};
              false ->
                  St#st{listing = L}
          end,
    maybe_done(listing_actions(Actions, St1)).

%% Sends the page requests the listing asks for now, and arms the paced ones.
listing_actions(Actions, St) ->
    lists:foldl(fun({send, Tag, After}, S = #st{listing = L}) ->
                        Id = list_page(maps:get(Tag, S#st.relays), After),
                        maybe_done(S#st{listing = macula_relay_listing:sent(L, Tag, Id)});
                   ({wait, Tag, After, Ms}, S) ->
                        erlang:send_after(Ms, self(), {list_paced, S#st.list_ref, Tag, After}),
                        S
                end, St, Actions).

list_page(#relay{shim = Shim}, After) ->
    try macula_relay_nif:list_nodes(Shim, After)
    catch error:_ -> 0
    end.

%% A page (a refusal counts as an empty last page) from relay Tag.
listed_page(Tag, Id, Nodes, More, St) ->
    {L, Actions} = macula_relay_listing:page(St#st.listing, Tag, Id, {Nodes, More}, now_ms()),
    maybe_done(listing_actions(Actions, St#st{listing = L})).

maybe_done(St = #st{listing = L}) ->
    case macula_relay_listing:done(L) of
        true -> end_listing(St);
        false -> St
    end.

%% Answers every caller of the run, with what came (at the timeout:
%% without the relays still paging).
end_listing(St = #st{listing = L}) ->
    {L1, Froms, Answer} = macula_relay_listing:answer(L),
    [gen_server:reply(From, Answer) || From <- Froms],
    St#st{listing = L1, list_ref = undefined}.

now_ms() ->
    erlang:monotonic_time(millisecond).

%%% ------------------------------------------------------------------
%%% Tunnels

dispatch(Req, St) ->
    dispatch(Req, St, <<"no_relay">>).

%% Asks the next identified relay not tried yet; waits for one that is
%% still connecting; else the caller gets the last reason.
dispatch(Req = #req{node = Node, tried = Tried}, St, LastWhy) ->
    Relays = maps:to_list(St#st.relays),
    Ready = [{Tag, R} || {Tag, R} <- Relays, R#relay.state =:= identified,
                         not lists:member(Tag, Tried)],
    Connecting = [Tag || {Tag, #relay{state = connecting}} <- Relays],
    case lists:sort(Ready) of
        [{Tag, #relay{shim = Shim}} | _] ->
            %% A crash here would restart all of net_sup: a name the relay
            %% protocol cannot carry (e.g. not ASCII) is refused instead.
            try macula_relay_nif:tunnel(Shim, atom_to_binary(Node)) of
                Id -> St#st{pending = (St#st.pending)#{{Tag, Id} => Req#req{tried = [Tag | Tried]}}}
            catch error:{badarg, target} ->
                reply(Req, {error, <<"bad_name">>}),
                St
            end;
        [] when Connecting =/= [], Tried =:= [] ->
            St#st{waiting = [Req | St#st.waiting]};
        [] ->
            reply(Req, {error, LastWhy}),
            St
    end.

%% Requests waiting for a relay fail once no relay is connecting any more.
fail_waiting(St = #st{waiting = []}) ->
    St;
fail_waiting(St = #st{relays = Rs, waiting = Waiting}) ->
    case [T || {T, #relay{state = S}} <- maps:to_list(Rs), S =/= down] of
        [] -> [reply(Req, {error, <<"no_relay">>}) || Req <- Waiting],
              St#st{waiting = []};
        _ -> St
    end.

reply(#req{from = From, mref = MRef}, Reply) ->
    demonitor(MRef, [flush]),
    gen_server:reply(From, Reply).

tunnel_ready(Tag, Id, Tunnel, Port, St) ->
    case maps:take({Tag, Id}, St#st.pending) of
        {#req{from = {Pid, _} = From, node = Node, mref = MRef}, Pending} ->
            gen_server:reply(From, {ok, Port}),
            T = #tunnel{port = Port, owner = Pid, mref = MRef, peer = atom_to_binary(Node)},
            St#st{pending = Pending, tunnels = (St#st.tunnels)#{{Tag, Tunnel} => T}};
        error ->
            close_tunnel(Tag, Tunnel, St),
            St
    end.

claim(Port, Pid, St) ->
    case [K || {K, #tunnel{port = P, owner = undefined}} <- maps:to_list(St#st.tunnels), P =:= Port] of
        [Key] ->
            T = maps:get(Key, St#st.tunnels),
            T1 = T#tunnel{owner = Pid, mref = monitor(process, Pid)},
            St#st{tunnels = (St#st.tunnels)#{Key := T1}};
        [] ->
            %% Our endpoint listens on loopback: a local process, not a tunnel.
            logger:warning("macula: connection from 127.0.0.1:~p is not a relay tunnel", [Port]),
            St
    end.

unclaimed(Key = {Tag, Tunnel}, St) ->
    case maps:find(Key, St#st.tunnels) of
        {ok, #tunnel{owner = undefined}} ->
            close_tunnel(Tag, Tunnel, St),
            St#st{tunnels = maps:remove(Key, St#st.tunnels)};
        _ ->
            St
    end.

%% A requester or a tunnel owner died.
owner_down(MRef, St) ->
    case [K || {K, #req{mref = M}} <- maps:to_list(St#st.pending), M =:= MRef] of
        [K | _] -> St#st{pending = maps:remove(K, St#st.pending)};
        [] ->
            Waiting = [R || R = #req{mref = M} <- St#st.waiting, M =/= MRef],
            St1 = St#st{waiting = Waiting},
            case [K || {K, #tunnel{mref = M}} <- maps:to_list(St1#st.tunnels), M =:= MRef] of
                [{Tag, Tunnel} = K | _] ->
                    close_tunnel(Tag, Tunnel, St1),
                    St1#st{tunnels = maps:remove(K, St1#st.tunnels)};
                [] ->
                    St1
            end
    end.

close_tunnel(Tag, Tunnel, #st{relays = Rs}) ->
    case maps:find(Tag, Rs) of
        {ok, #relay{shim = Shim}} when Shim =/= undefined ->
            catch macula_relay_nif:close_tunnel(Shim, Tunnel);
        _ -> ok
    end.

%% The connection over a tunnel that is gone cannot carry anything more:
%% end it now (net_kernel sees nodedown) rather than at the tick timeout.
drop_owner(#tunnel{owner = undefined}, _Why) ->
    ok;
drop_owner(#tunnel{owner = Pid, mref = MRef, peer = Peer}, Why) ->
    demonitor(MRef, [flush]),
    logger:warning("macula: relay tunnel to ~s closed (~s): connection down", [Peer, Why]),
    exit(Pid, kill).

relay_info(Tag, #relay{host = H, port = P, state = S, name = N, shim = Shim}) ->
    Stats = case Shim of
                undefined -> #{};
                _ -> catch macula_relay_nif:stats(Shim)
            end,
    #{tag => Tag, relay => H ++ ":" ++ integer_to_list(P), state => S, name => N,
      stats => Stats}.
