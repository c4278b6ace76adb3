%% @doc mDNS / DNS-SD on the local link (RFC 6762, RFC 6763), IPv4
%% (224.0.0.251:5353): announces this node as an instance of
%% `_erlang-dist._udp.local' (instance label: the node name; SRV: its UDP
%% port; TXT: `realm=<macula_dist_mdns_realm>'; A: this host's IPv4
%% addresses) and browses for the others, reporting each to
%% macula_discovery. Every `macula_dist_discovery_interval_ms' it
%% announces and asks again; it answers a query for the service at most
%% once a second. It leaves with a goodbye (TTL 0).
%%
%% A child of net_sup when `macula_dist_mdns' is true. Bounds: at most
%% ?PACKETS_PER_SECOND packets are read a second (the socket is re-armed
%% each second, so the mailbox holds no more), each decoded with
%% macula_mdns_codec's limits; what is malformed, of another realm or not
%% a node name is dropped and counted, never a crash.
%%
%% Trust: none. Anyone on the link can announce any name at any address;
%% a node then only dials there, and TLS with the cookie proof decides.
-module(macula_mdns).
-behaviour(gen_server).

-export([childspec/0, start_link/0, info/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(GROUP, {224, 0, 0, 251}).
-define(PORT, 5353).
-define(SERVICE, [<<"_erlang-dist">>, <<"_udp">>, <<"local">>]).
-define(PACKETS_PER_SECOND, 200).
-define(MAX_ADDRESSES, 8).
-define(MAX_TTL_S, 4500).

-record(st, {socket :: gen_udp:socket(),
             interval :: pos_integer(),
             realm :: binary(),
             me :: binary() | undefined,
             port :: inet:port_number() | undefined,
             last_answer = 0 :: integer(),
             passive = false :: boolean(),
             %% {Address, Netmask} of this host's IPv4 interfaces
             links = [] :: [{inet:ip4_address(), inet:ip4_address()}],
             counts = #{} :: #{atom() => non_neg_integer()}}).

%%% ------------------------------------------------------------------
%%% API

-spec childspec() -> supervisor:child_spec().
childspec() ->
    #{id => ?MODULE, start => {?MODULE, start_link, []}, restart => permanent,
      shutdown => 2000, type => worker, modules => [?MODULE]}.

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Counters: packets read, announcements heard, dropped by reason.
-spec info() -> map().
info() ->
    gen_server:call(?MODULE, info).

%%% ------------------------------------------------------------------
%%% gen_server

-spec init([]) -> {ok, #st{}} | {stop, term()}.
init([]) ->
    process_flag(trap_exit, true),
    Config = macula_config:get(),
    Opts = [binary, {active, ?PACKETS_PER_SECOND}, {reuseaddr, true}, {ip, {0, 0, 0, 0}},
            {add_membership, {?GROUP, {0, 0, 0, 0}}}, {multicast_loop, true},
            {multicast_ttl, 255}],
    case gen_udp:open(?PORT, Opts) of
        {ok, S} ->
            self() ! tick,
            erlang:send_after(1000, self(), rearm),
            {ok, #st{socket = S, interval = maps:get(discovery_interval_ms, Config), links = links(),
                     realm = list_to_binary(maps:get(mdns_realm, Config))}};
        {error, Why} ->
            logger:error("macula: macula_dist_mdns: cannot open UDP port 5353: ~p", [Why]),
            {stop, {mdns_socket, Why}}
    end.

-spec handle_call(term(), {pid(), term()}, #st{}) -> {reply, term(), #st{}}.
handle_call(info, _From, St = #st{counts = Counts}) ->
    {reply, Counts, St};
handle_call(_Request, _From, St) ->
    {reply, {error, unknown_call}, St}.

-spec handle_cast(term(), #st{}) -> {noreply, #st{}}.
handle_cast(_Msg, St) ->
    {noreply, St}.

-spec handle_info(term(), #st{}) -> {noreply, #st{}}.
handle_info(tick, St = #st{interval = Interval}) ->
    erlang:send_after(Interval, self(), tick),
    St1 = whoami(St#st{links = links()}),
    announce(St1, ttl(St1)),
    send(St1, macula_mdns_codec:query(?SERVICE)),
    {noreply, St1};
%% {active, N} adds to what is left: re-armed only once used up.
handle_info(rearm, St = #st{socket = S, passive = Passive}) ->
    erlang:send_after(1000, self(), rearm),
    Passive andalso inet:setopts(S, [{active, ?PACKETS_PER_SECOND}]),
    {noreply, St#st{passive = false}};
handle_info({udp_passive, _S}, St) ->
    {noreply, count(rate_limited, St#st{passive = true})};
handle_info({udp, S, Ip, _Port, Packet}, St = #st{socket = S}) ->
    {noreply, packet(Ip, Packet, count(packets, St))};
handle_info(_Msg, St) ->
    {noreply, St}.

-spec terminate(term(), #st{}) -> ok.
terminate(_Why, St) ->
    announce(St, 0).

%%% ------------------------------------------------------------------
%%% Announcing

%% The node's name and port are known once net_kernel has listened.
whoami(St = #st{me = undefined}) ->
    case {node(), macula_endpoint:info()} of
        {nonode@nohost, _} -> St;
        {_, #{port := Port}} -> St#st{me = atom_to_binary(node()), port = Port};
        _ -> St
    end;
whoami(St) ->
    St.

%% Entries outlive three missed announcements.
ttl(#st{interval = Interval}) ->
    min(?MAX_TTL_S, max(2, (3 * Interval) div 1000)).

announce(#st{me = undefined}, _Ttl) ->
    ok;
announce(#st{me = Me}, _Ttl) when byte_size(Me) > 63 ->
    ok;  % a DNS label holds 63 bytes: such a node is not announced (README)
announce(St = #st{me = Me, port = Port, realm = Realm}, Ttl) ->
    send(St, macula_mdns_codec:announcement(
               #{service => ?SERVICE, instance => [Me | ?SERVICE], target => target(Me),
                 port => Port, txt => [<<"realm=", Realm/binary>>], addresses => addresses(),
                 ttl => Ttl})).

%% A host label made of the node name's host part.
target(Me) ->
    [_, Host] = binary:split(Me, <<"@">>),
    [macula_names:label(Host), <<"local">>].

addresses() ->
    case inet:getifaddrs() of
        {ok, Ifs} ->
            lists:sublist([A || {_, Opts} <- Ifs, lists:member(up, proplists:get_value(flags, Opts, [])),
                                {addr, A = {B, _, _, _}} <- Opts, B =/= 127], ?MAX_ADDRESSES);
        {error, _} -> []
    end.

send(#st{socket = S}, Packet) ->
    _ = gen_udp:send(S, ?GROUP, ?PORT, Packet),
    ok.

%%% ------------------------------------------------------------------
%%% Receiving

%% Whatever a packet holds, this process goes on: a packet that would
%% make the handling raise is dropped and counted like a malformed one.
%% mDNS is link-local (RFC 6762 section 11): a packet from an address
%% that is not on one of this host's subnets is dropped unread.
packet(Ip, Packet, St = #st{links = Links}) ->
    case on_link(Ip, Links) of
        true ->
            try handle_packet(Ip, Packet, St)
            catch _:_ -> count(unhandled, count(malformed, St))
            end;
        false ->
            count(off_link, St)
    end.

handle_packet(Ip, Packet, St) ->
    case macula_mdns_codec:decode(Packet) of
        {ok, #{response := false, questions := Qs}} -> answer(Qs, St);
        {ok, #{response := true, records := Records}} -> heard(Ip, Records, St);
        {error, Why} -> count(Why, count(malformed, St))
    end.

%% A query for our service gets our announcement (at most once a second).
answer(Questions, St = #st{last_answer = Last}) ->
    Now = erlang:monotonic_time(millisecond),
    Asked = lists:any(fun({Name, T}) -> same_name(Name, ?SERVICE) andalso
                                            (T =:= 12 orelse T =:= 255) end, Questions),
    case Asked andalso Now - Last >= 1000 of
        true -> announce(St, ttl(St)), St#st{last_answer = Now};
        false -> St
    end.

heard(Source, Records, St) ->
    Instances = [I || {Name, ptr, _, I} <- Records, same_name(Name, ?SERVICE)],
    lists:foldl(fun(I, Acc) -> instance(Source, I, Records, Acc) end, St,
                lists:sublist(Instances, 16)).

instance(Source, [Label | Rest] = Instance, Records, St = #st{me = Me, realm = Realm}) ->
    Srv = [{Ttl, Port, Target} || {N, srv, Ttl, {_, _, Port, Target}} <- Records,
                                  same_name(N, Instance)],
    Txt = lists:append([T || {N, txt, _, T} <- Records, same_name(N, Instance)]),
    case {same_name(Rest, ?SERVICE), Srv, lists:member(<<"realm=", Realm/binary>>, Txt)} of
        {true, _, _} when Label =:= Me -> St;
        {true, [{Ttl, Port, Target} | _], true} when Port > 0 ->
            found(Label, address(Source, Target, Records, St#st.links), Port, Ttl, St);
        {true, [_ | _], false} -> count(other_realm, St);
        _ -> count(incomplete, St)
    end;
instance(_Source, [], _Records, St) ->
    count(incomplete, St).

found(Node, Ip, Port, Ttl, St) ->
    case macula_names:node_parts(Node) of
        error -> count(not_a_node_name, St);
        _ when Ttl =:= 0 -> macula_discovery:gone(mdns, Node), St;
        _ ->
            macula_discovery:seen(mdns, Node, Ip, Port, min(Ttl, ?MAX_TTL_S) * 1000),
            count(announcements, St)
    end.

%% The packet's source, unless the target's addresses name another on
%% this link (a host announcing for its other address); never an address
%% off the link.
address(Source, Target, Records, Links) ->
    Ips = [Ip || {N, a, _, Ip} <- Records, same_name(N, Target), on_link(Ip, Links)],
    case lists:member(Source, Ips) orelse Ips =:= [] of
        true -> Source;
        false -> hd(Ips)
    end.

on_link({_, _, _, _} = Ip, Links) ->
    lists:any(fun({A, M}) -> mask(Ip, M) =:= mask(A, M) end, Links);
on_link(_Ip, _Links) ->
    false.

mask({A, B, C, D}, {M1, M2, M3, M4}) -> {A band M1, B band M2, C band M3, D band M4}.

links() ->
    case inet:getifaddrs() of
        {ok, Ifs} ->
            [{A, M} || {_, Opts} <- Ifs, {A, M} <- pairs(Opts), tuple_size(A) =:= 4];
        {error, _} -> []
    end.

%% getifaddrs lists each addr followed by its netmask.
pairs([{addr, A}, {netmask, M} | Rest]) -> [{A, M} | pairs(Rest)];
pairs([_ | Rest]) -> pairs(Rest);
pairs([]) -> [].

%% DNS names compare ASCII case-insensitively.
same_name(A, B) when length(A) =:= length(B) ->
    lists:all(fun({X, Y}) -> macula_names:lower(X) =:= macula_names:lower(Y) end,
              lists:zip(A, B));
same_name(_, _) ->
    false.

count(Key, St = #st{counts = Counts}) ->
    St#st{counts = maps:update_with(Key, fun(N) -> N + 1 end, 1, Counts)}.
