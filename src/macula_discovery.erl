%% @doc What the discovery sources know: node name -> address and port,
%% per source, with when it was last confirmed; and the cluster-formation
%% mode (`macula_dist_cluster true'), which connects to every node found.
%%
%% A child of net_sup (macula_dist:childspecs/0) when a source is set. It
%% owns an ETS table that macula_epmd reads without calling it (lookups
%% run in net_kernel's and the dialling processes' calls). Every
%% `macula_dist_discovery_interval_ms' a worker re-reads the static list
%% and hosts file and asks DNS (macula_discovery_dns), or in the relay
%% modes asks the relays which nodes of the realm are online
%% (macula_dist_relay:online_nodes/0); mDNS (macula_mdns) reports what it
%% hears as it hears it.
%%
%% Bounds: at most ?MAX_ENTRIES entries per source (new ones beyond are
%% dropped and counted), so mDNS cannot crowd out configured entries; node names become atoms only to connect to them, at most
%% ?MAX_ATOMS over the node's life. Nothing here decides trust: a dial to
%% a wrong address ends at TLS and the cookie proof.
-module(macula_discovery).
-behaviour(gen_server).

-export([childspec/0, start_link/0, enabled/1, port/2, lookup/2, names/1, discovered/0,
         seen/5, gone/2, info/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(TABLE, macula_discovered).
-define(MAX_ENTRIES, 1024).
-define(MAX_ATOMS, 4096).
-define(MAX_DIALS, 8).

-type source() :: static | dns | mdns | relay.

-record(st, {interval :: pos_integer(),
             refreshing = false :: boolean(),
             refresher :: pid() | undefined,
             atoms_logged = false :: boolean(),
             dials = #{} :: #{pid() => binary()},
             tried = #{} :: #{binary() => integer()},
             atoms = 0 :: non_neg_integer(),
             dropped = 0 :: non_neg_integer()}).

%%% ------------------------------------------------------------------
%%% API

-spec childspec() -> supervisor:child_spec().
childspec() ->
    #{id => ?MODULE, start => {?MODULE, start_link, []}, restart => permanent,
      shutdown => 2000, type => worker, modules => [?MODULE]}.

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc True when the configuration sets a source or cluster formation.
-spec enabled(map()) -> boolean().
enabled(#{nodes := N, hosts_file := F, dns_domain := D, mdns := M, cluster := C}) ->
    N =/= [] orelse F =/= "" orelse D =/= "" orelse M orelse C;
enabled(_) ->
    false.

%% @doc The port of a node called Name at one of Ips (the most recently
%% confirmed), or error.
-spec port(string(), [inet:ip_address()]) -> {ok, inet:port_number()} | error.
port(Name, Ips) ->
    best([{K, Seen, Port} || {K, N, _H, Ip, Port, Seen} <- entries(),
                            N =:= Name, lists:member(Ip, Ips)]).

%% @doc Where Name@Host is, if a source knows it.
-spec lookup(string(), string()) -> {ok, inet:ip_address(), inet:port_number()} | error.
lookup(Name, Host) ->
    case best([{K, Seen, {Ip, Port}} || {K, N, H, Ip, Port, Seen} <- entries(),
                                       N =:= Name, H =:= Host]) of
        {ok, {Ip, Port}} -> {ok, Ip, Port};
        error -> error
    end.

%% @doc `[{Name, Port}]' of the nodes known at one of Ips.
-spec names([inet:ip_address()]) -> [{string(), inet:port_number()}].
names(Ips) ->
    lists:usort([{N, Port} || {_, N, _H, Ip, Port, _} <- entries(), lists:member(Ip, Ips)]).

%% @doc One map per node a source knows: `node' (binary), `source',
%% `address', `port', `age_ms' (since the source last confirmed it). A
%% node the relays list has address `relay' and port 0.
-spec discovered() -> [map()].
discovered() ->
    Now = now_ms(),
    lists:sort([#{node => Node, source => Source, address => Ip, port => Port,
                  age_ms => Now - Seen}
                || {{Source, Node}, _N, _H, Ip, Port, Seen} <- entries()]).

%% @doc Bounds at work: entries per source, entries dropped (a source at
%% its quota), dials in progress, nodes marked as tried this interval,
%% node-name atoms made.
-spec info() -> map().
info() ->
    gen_server:call(?MODULE, info).

%% @doc A source (mDNS) heard of Node at Ip:Port.
-spec seen(source(), binary(), inet:ip_address(), inet:port_number(), non_neg_integer()) -> ok.
seen(Source, Node, Ip, Port, TtlMs) ->
    gen_server:cast(?MODULE, {seen, Source, Node, Ip, Port, TtlMs}).

%% @doc A source (mDNS) heard that Node is gone.
-spec gone(source(), binary()) -> ok.
gone(Source, Node) ->
    gen_server:cast(?MODULE, {gone, Source, Node}).

%%% ------------------------------------------------------------------
%%% gen_server

-spec init([]) -> {ok, #st{}}.
init([]) ->
    process_flag(trap_exit, true),
    ets:new(?TABLE, [named_table, protected, set, {read_concurrency, true}]),
    Interval = maps:get(discovery_interval_ms, macula_config:get()),
    self() ! tick,
    {ok, #st{interval = Interval}}.

-spec handle_call(term(), {pid(), term()}, #st{}) -> {reply, term(), #st{}}.
handle_call(info, _From, St = #st{dropped = Dropped, dials = Dials, tried = Tried,
                                   atoms = Atoms}) ->
    Sources = lists:foldl(fun({{S, _}, _, _, _, _, _}, Acc) ->
                                  maps:update_with(S, fun(N) -> N + 1 end, 1, Acc)
                          end, #{}, entries()),
    {reply, #{entries => Sources, dropped => Dropped, dialling => map_size(Dials),
              tried => map_size(Tried), atoms => Atoms}, St};
handle_call(_Request, _From, St) ->
    {reply, {error, unknown_call}, St}.

-spec handle_cast(term(), #st{}) -> {noreply, #st{}}.
handle_cast({seen, Source, Node, Ip, Port, TtlMs}, St) ->
    New = not ets:member(?TABLE, {Source, Node}),
    St1 = insert(Source, Node, Ip, Port, now_ms() + TtlMs, St),
    {noreply, case New of true -> form_cluster(St1); false -> St1 end};
handle_cast({gone, Source, Node}, St) ->
    ets:delete(?TABLE, {Source, Node}),
    {noreply, St};
handle_cast(_Msg, St) ->
    {noreply, St}.

-spec handle_info(term(), #st{}) -> {noreply, #st{}}.
handle_info(tick, St = #st{interval = Interval}) ->
    erlang:send_after(Interval, self(), tick),
    expire(),
    {noreply, form_cluster(refresh(prune_tried(St)))};
handle_info({refreshed, Source, Found}, St) ->
    {noreply, form_cluster(replace(Source, Found, St))};
handle_info({refresh_done, _Pid}, St) ->
    {noreply, St#st{refreshing = false}};
handle_info({'EXIT', Pid, _}, St = #st{refresher = Pid}) ->
    {noreply, St#st{refreshing = false, refresher = undefined}};
handle_info({'EXIT', Pid, _}, St = #st{dials = Dials}) ->
    {noreply, St#st{dials = maps:remove(Pid, Dials)}};
handle_info(_Msg, St) ->
    {noreply, St}.

%%% ------------------------------------------------------------------
%%% The table: {{Source, Node}, Name, Host, Ip, Port, Seen, Expires}

%% The table may go (distribution stopping) while a caller reads it.
entries() ->
    Now = now_ms(),
    try ets:tab2list(?TABLE) of
        All -> [{K, N, H, Ip, P, Seen} || {K, N, H, Ip, P, Seen, Exp} <- All, Exp > Now]
    catch error:badarg -> []
    end.

%% What the most trusted source says: configuration (static) before DNS
%% before mDNS before the relays; within one source, the newest.
best([]) -> error;
best(Found) ->
    Ranked = [{rank(Source), -Seen, Value} || {{Source, _}, Seen, Value} <- Found],
    {ok, element(3, lists:min(Ranked))}.

rank(static) -> 0;
rank(dns) -> 1;
rank(mdns) -> 2;
rank(relay) -> 3.

insert(Source, Node, Ip, Port, Expires, St = #st{dropped = Dropped}) ->
    Full = not ets:member(?TABLE, {Source, Node}) andalso
        ets:select_count(?TABLE, [{{{Source, '_'}, '_', '_', '_', '_', '_', '_'}, [], [true]}])
        >= ?MAX_ENTRIES,
    case {Full, macula_names:node_parts(Node)} of
        {false, {Name, Host}} ->
            ets:insert(?TABLE, {{Source, Node}, Name, Host, Ip, Port, now_ms(), Expires}),
            St;
        _ ->
            St#st{dropped = Dropped + 1}
    end.

%% A refreshed source's set replaces what it knew.
replace(Source, Found, St) ->
    New = [Node || {Node, _, _} <- Found],
    [ets:delete(?TABLE, K) || K = {S, Node} <- ets:select(?TABLE, [{{'$1', '_', '_', '_', '_', '_', '_'}, [], ['$1']}]),
                              S =:= Source, not lists:member(Node, New)],
    lists:foldl(fun({Node, Ip, Port}, Acc) -> insert(Source, Node, Ip, Port, infinity_ms(), Acc) end,
                St, Found).

expire() ->
    Now = now_ms(),
    ets:select_delete(?TABLE, [{{'_', '_', '_', '_', '_', '_', '$1'}, [{'=<', '$1', Now}], [true]}]).

%%% ------------------------------------------------------------------
%%% Refresh: static list, hosts file, DNS, in a worker (DNS may be slow)

refresh(St = #st{refreshing = true}) ->
    St;
refresh(St) ->
    Config = macula_config:get(),
    Owner = self(),
    Pid = spawn_link(fun() ->
                             refresh_sources(Owner, Config),
                             Owner ! {refresh_done, self()}
                     end),
    St#st{refreshing = true, refresher = Pid}.

refresh_sources(Owner, #{mode := Mode}) when Mode =/= direct ->
    Me = atom_to_binary(node()),
    Online = [N || #{node := N} <- macula_dist_relay:online_nodes(), N =/= Me],
    Owner ! {refreshed, relay, [{N, relay, 0} || N <- Online]};
refresh_sources(Owner, Config = #{nodes := Nodes, hosts_file := File, dns_domain := Domain}) ->
    case Nodes =/= [] orelse File =/= "" of
        true -> Owner ! {refreshed, static, resolve(Nodes ++ hosts_file(File))};
        false -> ok
    end,
    case Domain of
        "" -> ok;
        _ ->
            case macula_discovery_dns:query(Config, basename(Config)) of
                {ok, Found} -> Owner ! {refreshed, dns, Found};
                {error, _} -> ok  % keep what DNS said last
            end
    end.

%% A hosts file that became unreadable or bad is logged and read as empty.
hosts_file("") ->
    [];
hosts_file(File) ->
    try macula_discovery_config:parse_hosts_file(macula_dist_hosts_file, File)
    catch error:{macula_config, _} -> []
    end.

resolve(Entries) ->
    [{Node, Ip, Port} || {Node, Host, Port} <- Entries,
                         Ip <- [macula_node_name:resolve(Host)], Ip =/= error].

basename(#{dns_basename := ""}) ->
    case string:split(atom_to_list(node()), "@") of
        [Name, _] -> Name;
        _ -> ""
    end;
basename(#{dns_basename := Name}) ->
    Name.

%%% ------------------------------------------------------------------
%%% Cluster formation: dial every discovered node not connected yet, each
%%% at most once an interval, at most ?MAX_DIALS at a time.

form_cluster(St) ->
    case maps:get(cluster, macula_config:get()) andalso node() =/= nonode@nohost of
        true -> lists:foldl(fun dial/2, St, candidates());
        false -> St
    end.

candidates() ->
    Connected = [atom_to_binary(N) || N <- [node() | nodes()]],
    lists:usort([Node || {{_, Node}, _, _, _, _, _} <- entries()]) -- Connected.

dial(_Node, St = #st{dials = Dials}) when map_size(Dials) >= ?MAX_DIALS ->
    St;
dial(Node, St = #st{tried = Tried, interval = Interval}) ->
    Now = now_ms(),
    case Now - maps:get(Node, Tried, Now - Interval) >= Interval of
        true -> start_dial(Node, Now, St);
        false -> St
    end.

start_dial(Node, Now, St = #st{atoms = Atoms, dials = Dials, tried = Tried}) ->
    case to_atom(Node, Atoms) of
        {ok, Atom, New} ->
            Pid = spawn_link(fun() -> net_kernel:connect_node(Atom) end),
            St#st{atoms = Atoms + New, dials = Dials#{Pid => Node}, tried = Tried#{Node => Now}};
        full when not St#st.atoms_logged ->
            logger:warning("macula: cluster formation: ~b node names from discovery made "
                           "atoms already; new names are not dialled", [?MAX_ATOMS]),
            St#st{atoms_logged = true};
        full ->
            St
    end.

%% A node tried an interval ago may be tried again: its mark goes.
prune_tried(St = #st{tried = Tried, interval = Interval}) ->
    Now = now_ms(),
    St#st{tried = maps:filter(fun(_, T) -> Now - T < Interval end, Tried)}.

to_atom(Node, Atoms) ->
    try {ok, binary_to_existing_atom(Node), 0}
    catch error:badarg when Atoms < ?MAX_ATOMS -> {ok, binary_to_atom(Node), 1};
          error:badarg -> full
    end.

now_ms() ->
    erlang:monotonic_time(millisecond).

%% Static entries stay until the source drops them.
infinity_ms() ->
    now_ms() + (1 bsl 50).
