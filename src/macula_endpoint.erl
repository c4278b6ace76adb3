%% @doc The owner of the node's single QUIC endpoint (one UDP port, one
%% I/O thread), of the driver port through which the schedulers read its
%% socket, and of the list of which connection carries which node.
%%
%% A child of net_sup (macula_dist:childspecs/0): erl_distribution starts
%% the protocol's children before net_kernel, at boot (`erl -name') as for
%% net_kernel:start/1, so this process is there when net_kernel calls
%% macula_dist:listen. The endpoint is opened by a call to it, so the
%% first users (listen, or a dial on a node that does not listen) are
%% served one at a time. It lives and dies with distribution: when net_sup
%% stops, the port closes and the endpoint goes with the last reference.
-module(macula_endpoint).
-behaviour(gen_server).

-export([childspec/0, start_link/0, listen/1, dial_only/0, get/0, info/0, info/1, migrate/2,
         connected/2, connections/0, connections/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(SERVER, ?MODULE).
%% The driver beside the binding's library (dist/nif/macula_drv.cc, macula_drv.so).
-define(DRIVER, "macula_drv").
%% A stranger has this long after TLS to prove the cookie (the proof is
%% one round trip; net_setuptime, 7 s by default, bounds the rest).
-define(AUTH_TIMEOUT_MS, 5000).

-record(st, {ep :: macula_nif:endpoint() | undefined,
             reader :: port() | undefined,
             conns = #{} :: #{reference() => {node(), macula_nif:conn()}}}).

%%% ------------------------------------------------------------------
%%% API

%% @doc The child spec for net_sup.
-spec childspec() -> supervisor:child_spec().
childspec() ->
    #{id => ?SERVER, start => {?MODULE, start_link, []}, restart => permanent,
      shutdown => 2000, type => worker, modules => [?MODULE]}.

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?SERVER}, ?MODULE, [], []).

%% @doc Opens the endpoint on the configured address and `Port', accepting
%% peers. Called from macula_dist:listen at distribution start; if the
%% endpoint is open already, it is the one returned.
-spec listen(inet:port_number()) -> {ok, macula_nif:endpoint()} | {error, string()}.
listen(Port) ->
    gen_server:call(?SERVER, {open, Port, true}, infinity).

%% @doc Opens the endpoint dial-only on an ephemeral port: a node with
%% `macula_dist_listen false'. Called from macula_dist:listen.
-spec dial_only() -> {ok, macula_nif:endpoint()} | {error, string()}.
dial_only() ->
    gen_server:call(?SERVER, {open, 0, false}, infinity).

%% @doc The endpoint; a node that never listened gets a dial-only endpoint
%% on an ephemeral port.
-spec get() -> macula_nif:endpoint().
get() ->
    {ok, Ep} = gen_server:call(?SERVER, {open, 0, false}, infinity),
    Ep.

%% @doc The endpoint's port and counters (macula_nif:endpoint_info/1), or
%% undefined while there is none.
-spec info() -> map() | undefined.
info() ->
    info(infinity).

%% @doc info/0 within Timeout ms (else exit `{timeout, _}').
-spec info(timeout()) -> map() | undefined.
info(Timeout) ->
    ask(info, undefined, Timeout).

%% @doc Starts the migration of the endpoint's client connections (see
%% macula_nif:migrate/4); the caller gets the messages, tagged `Ref'.
-spec migrate(auto | binary(), reference()) -> ok | {error, term()}.
migrate(Target, Ref) ->
    ask({migrate, Target, self(), Ref}, {error, not_started}).

%% @doc The calling process carries the distribution connection `Conn' to
%% `Node' until it exits.
-spec connected(node(), macula_nif:conn()) -> ok.
connected(Node, Conn) ->
    gen_server:cast(?SERVER, {connected, Node, Conn, self()}).

%% @doc `{Node, Conn}' for each distribution connection.
-spec connections() -> [{node(), macula_nif:conn()}].
connections() ->
    connections(infinity).

%% @doc connections/0 within Timeout ms (else exit `{timeout, _}').
-spec connections(timeout()) -> [{node(), macula_nif:conn()}].
connections(Timeout) ->
    ask(connections, [], Timeout).

ask(Request, IfNone) ->
    ask(Request, IfNone, infinity).

%% Distribution may be off: no owner, nothing to report.
ask(Request, IfNone, Timeout) ->
    try gen_server:call(?SERVER, Request, Timeout)
    catch exit:{noproc, _} -> IfNone
    end.

%%% ------------------------------------------------------------------
%%% gen_server
%%% Under net_sup (one_for_all, no restarts) a crash here takes
%%% distribution down: nothing that can raise runs unguarded.

-spec init([]) -> {ok, #st{}}.
init([]) ->
    %% The reader port is linked: losing it must not take us down.
    process_flag(trap_exit, true),
    {ok, #st{}}.

-spec handle_call(term(), {pid(), term()}, #st{}) -> {reply, term(), #st{}}.
handle_call({open, Port, Accept}, _From, St = #st{ep = undefined}) ->
    case open(Port, Accept) of
        {ok, Ep} -> {reply, {ok, Ep}, St#st{ep = Ep, reader = start_reader(Ep)}};
        {error, _} = Error -> {reply, Error, St}
    end;
handle_call({open, _Port, _Accept}, _From, St = #st{ep = Ep}) ->
    {reply, {ok, Ep}, St};
handle_call(Request, _From, St = #st{ep = undefined}) ->
    {reply, none(Request), St};
handle_call(info, _From, St = #st{ep = Ep}) ->
    {reply, macula_nif:endpoint_info(Ep), St};
handle_call({migrate, Target, Pid, Ref}, _From, St = #st{ep = Ep}) ->
    {reply, guard(fun() -> macula_nif:migrate(Ep, Target, Pid, Ref) end), St};
handle_call(connections, _From, St = #st{conns = Conns}) ->
    {reply, maps:values(Conns), St};
handle_call(_Request, _From, St) ->
    {reply, {error, unknown_call}, St}.

-spec handle_cast(term(), #st{}) -> {noreply, #st{}}.
handle_cast({connected, Node, Conn, Pid}, St = #st{conns = Conns}) ->
    {noreply, St#st{conns = Conns#{monitor(process, Pid) => {Node, Conn}}}};
handle_cast(_Msg, St) ->
    {noreply, St}.

-spec handle_info(term(), #st{}) -> {noreply, #st{}}.
handle_info({'DOWN', MRef, process, _, _}, St = #st{conns = Conns}) ->
    {noreply, St#st{conns = maps:remove(MRef, Conns)}};
handle_info({'EXIT', Port, Why}, St = #st{reader = Port}) ->
    logger:warning("macula: the reader port closed (~p): the I/O thread reads the socket",
                   [Why]),
    {noreply, St#st{reader = undefined}};
handle_info(_Msg, St) ->
    {noreply, St}.

%% What a request gets before the endpoint is opened.
none(info) -> undefined;
none(connections) -> [];
none(_) -> {error, not_started}.

guard(Fun) ->
    try Fun()
    catch error:Why -> {error, Why}
    end.

%%% ------------------------------------------------------------------
%%% Opening

open(Port, Accept) ->
    Config = macula_config:get(),
    Opts = #{ip => maps:get(bind, Config),
             port => Port,
             accept => bool_int(Accept),
             trust => maps:get(trust, Config),
             cert_dir => maps:get(cert_dir, Config),
             cacertfile => maps:get(cacertfile, Config),
             certfile => maps:get(certfile, Config),
             keyfile => maps:get(keyfile, Config),
             cc => maps:get(cc, Config),
             busy_poll_us => maps:get(busy_poll_us, Config),
             keep_alive_ms => maps:get(keep_alive_ms, Config),
             %% A peer that has not proved the cookie within this long
             %% after TLS is closed (it never gets more than the proof
             %% needs meanwhile).
             auth_timeout_ms => ?AUTH_TIMEOUT_MS},
    case guard(fun() -> macula_nif:open_endpoint(Opts) end) of
        {ok, Ep} ->
            {ok, Ep};
        {error, Why} ->
            Text = error_text(Why),
            logger:error("macula: ~s", [Text]),
            {error, Text}
    end.

error_text(Text) when is_binary(Text) -> binary_to_list(Text);
error_text(Why) -> lists:flatten(io_lib:format("endpoint open failed: ~p", [Why])).

bool_int(true) -> 1;
bool_int(false) -> 0.

%% The schedulers poll the endpoint's socket and read it themselves, like
%% their own sockets (dist/nif/macula_drv.cc): no thread hand-off on a round
%% trip. A driver stays loaded while the process that loaded it lives, so
%% this process loads it and holds its port. Without the port (it failed,
%% or it closed later) the I/O thread reads.
start_reader(Ep) ->
    try
        Id = maps:get(reader_id, macula_nif:endpoint_info(Ep)),
        ok = load_driver(),
        open_port({spawn_driver, ?DRIVER ++ " " ++ integer_to_list(Id)}, [])
    catch
        Class:Why ->
            logger:warning("macula: the I/O thread reads the socket (~p)", [{Class, Why}]),
            undefined
    end.

load_driver() ->
    Priv = filename:join([filename:dirname(code:which(macula_nif)), "..", "priv"]),
    case erl_ddll:load_driver(Priv, ?DRIVER) of
        ok -> ok;
        {error, E} -> error({load_driver, erl_ddll:format_error(E)})
    end.
