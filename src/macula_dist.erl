%% @doc The net_kernel callbacks of `-proto_dist macula`: Erlang
%% distribution over QUIC. Only the callbacks live here; each connection's
%% processes are in macula_dist_handshake, macula_dist_input and
%% macula_dist_output, the accept loop in macula_dist_acceptor.
-module(macula_dist).

-export([listen/1, listen/2, accept/1, accept_connection/5, setup/5,
         close/1, select/1, is_node_name/1, splitname/1, address/0,
         childspecs/0, setopts/2, getopts/2]).

-include_lib("kernel/include/net_address.hrl").

-define(PROTOCOL, macula).
-define(LOGGED_ABOVE, "macula could not start: see the error logged above").

-spec listen(atom()) -> {ok, {macula_nif:endpoint(), #net_address{}, pos_integer()}}
                      | {error, term()}.
listen(Name) ->
    {ok, Host} = inet:gethostname(),
    listen(Name, Host).

%% Name is the part before '@': `4433` in `4433@host` chooses the port.
%% A node that runs with EPMD registers its port there (see
%% macula_dist_epmd), and takes EPMD's creation as inet_tcp_dist does.
%% Whatever stops the node here was logged already, in one line naming
%% the setting and the value: the VM's own line (`register/listen error`)
%% only points to it rather than repeating it.
-spec listen(atom(), string()) ->
          {ok, {macula_nif:endpoint(), #net_address{}, pos_integer()}} | {error, term()}.
listen(Name, Host) ->
    try listen_port(Name, Host) of
        NamePort ->
            %% A dial-only node takes any free port (0), not its name's.
            Port = case macula_config:listens() of
                       true -> NamePort;
                       false -> 0
                   end,
            case listen_endpoint(Name, Host, Port) of
                {ok, Ep} ->
                    Bound = bound_port(Ep, Port),
                    case register_port(Name, Bound) of
                        {ok, Creation} ->
                            Address = #net_address{address = {Host, Bound}, host = Host,
                                                   protocol = ?PROTOCOL, family = inet},
                            {ok, {Ep, Address, creation(Creation)}};
                        {error, Text} ->
                            logger:error("macula: ~s", [Text]),
                            stopped()
                    end;
                {error, _} ->
                    stopped()
            end
    catch error:{macula_config, _Text} ->
        stopped()
    end.

%% The VM halts right after listen fails: the log handlers must have
%% written the line first (they write asynchronously).
stopped() ->
    [catch M:filesync(Id) || #{id := Id, module := M} <- logger:get_handler_config(),
                             erlang:function_exported(M, filesync, 1)],
    drain(whereis(logger_simple_h), 50),
    {error, ?LOGGED_ABOVE}.

%% At boot only logger's simple handler may run yet: a process that
%% prints each event it takes and answers nothing, so wait (at most
%% 0.5 s) until its queue is empty, and a moment for the last print.
drain(undefined, _) ->
    ok;
drain(_Pid, 0) ->
    ok;
drain(Pid, N) ->
    timer:sleep(10),
    case process_info(Pid, message_queue_len) of
        {message_queue_len, 0} -> ok;
        _ -> drain(Pid, N - 1)
    end.

%% A dial-only node has no port to tell EPMD.
register_port(Name, Port) ->
    case macula_config:listens() of
        true -> macula_dist_epmd:register(Name, Port);
        false -> {ok, none}
    end.

%% Port 0 asks for any free port: the one the endpoint got.
bound_port(Ep, 0) -> maps:get(port, macula_nif:endpoint_info(Ep));
bound_port(_Ep, Port) -> Port.

creation(none) -> new_creation();
creation(Creation) -> Creation.

%% The relay modes (dist_relay, relay): nothing listens on the network;
%% peers come through the relays (macula_dist_relay). A dial-only node
%% (`macula_dist_listen false', e.g. a release tool's helper node, which
%% cannot be given `-dist_listen false') binds an ephemeral port instead
%% of its name's, so it never collides with the node it talks to.
listen_endpoint(Name, Host, Port) ->
    case {macula_config:relay_mode(), macula_config:listens()} of
        {true, _} -> macula_dist_relay:listen(list_to_atom(atom_to_list(Name) ++ "@" ++ Host));
        {false, true} -> macula_endpoint:listen(Port);
        {false, false} -> macula_endpoint:dial_only()
    end.

%% The port to listen on: the one of the name (`port@host`), or the
%% default port, or the one EPMD gives (see macula_dist_epmd). A name
%% peers could not dial stops the node here, with a message. Reading the
%% configuration first makes a bad setting fail here too, with its own
%% message rather than a stack trace from the endpoint opener.
listen_port(Name, Host) ->
    _ = macula_config:get(),
    macula_log_limit:init(),
    Node = list_to_atom(atom_to_list(Name) ++ "@" ++ Host),
    case macula_node_name:parse(Node) of
        {ok, {NameBin, _Host, Port, _Kind}} ->
            Kind = case macula_dist_epmd:is_port_name(binary_to_list(NameBin)) of
                       true -> explicit;
                       false -> default
                   end,
            macula_dist_epmd:listen_port(Name, Host, {Kind, Port});
        {error, Why} ->
            Text = lists:flatten(io_lib:format("invalid node name ~s: ~s", [Node, Why])),
            logger:error("macula: ~s", [Text]),
            error({macula_config, Text})
    end.

%% OTP avoids creations 0..3; a fresh one at each start lets peers tell
%% this incarnation's pids and refs from the previous one's.
new_creation() ->
    rand:uniform(16#fffffff0 - 4) + 3.

-spec accept(macula_nif:endpoint()) -> pid().
accept(Ep) ->
    macula_dist_acceptor:start(Ep, self()).

-spec accept_connection(pid(), macula_nif:conn(), node(), list(), non_neg_integer()) -> pid().
accept_connection(AcceptPid, Conn, MyNode, Allowed, SetupTime) ->
    macula_dist_handshake:accept(self(), AcceptPid, Conn, MyNode, Allowed, SetupTime).

-spec setup(node(), atom(), node(), shortnames | longnames, non_neg_integer()) -> pid().
setup(Node, Type, MyNode, _LongOrShortNames, SetupTime) ->
    macula_dist_handshake:setup(self(), Node, Type, MyNode, SetupTime).

%% Only the listen handle is closed here; the endpoint belongs to
%% macula_endpoint and goes when distribution stops, so there is nothing
%% to do.
-spec close(macula_nif:endpoint()) -> ok.
close(_Listen) ->
    ok.

%% Claims a node only if its name parses and its host resolves (through
%% the EPMD module's address_please/3, when the node uses one).
-spec select(term()) -> boolean().
select(Node) ->
    case is_atom(Node) andalso macula_node_name:parse(Node) of
        {ok, {Name, Host, _Port, _Kind}} ->
            macula_config:relay_mode() orelse
                macula_dist_epmd:address(binary_to_list(Name), binary_to_list(Host)) =/= error;
        _ ->
            false
    end.

-spec is_node_name(term()) -> boolean().
is_node_name(Node) ->
    splitname(Node) =/= false.

%% @doc `{Port, Host}` for a macula node name, or false.
-spec splitname(term()) -> {inet:port_number(), string()} | false.
splitname(Node) ->
    macula_node_name:split(Node).

-spec address() -> #net_address{}.
address() ->
    {ok, Host} = inet:gethostname(),
    #net_address{host = Host, protocol = ?PROTOCOL, family = inet}.

%% The endpoint's owner and, in the relay modes, the relay connections
%% (in direct mode, the discovery sources) live under net_sup, started before net_kernel calls listen. A
%% configuration error shows at listen, with its message.
-spec childspecs() -> {ok, [supervisor:child_spec()]}.
childspecs() ->
    case catch macula_config:get() of
        #{mode := direct} = Config -> {ok, [macula_endpoint:childspec() | discovery(Config)]};
        #{} = Config -> {ok, [macula_endpoint:childspec(), macula_dist_relay:childspec()
                              | discovery(Config)]};
        _ -> {ok, []}
    end.

%% The discovery table (and mDNS) only when a source is set; in the relay
%% modes, when cluster formation is on (the relays are the source).
discovery(Config) ->
    case {macula_discovery:enabled(Config), Config} of
        {true, #{mdns := true}} -> [macula_discovery:childspec(), macula_mdns:childspec()];
        {true, _} -> [macula_discovery:childspec()];
        {false, _} -> []
    end.

-spec setopts(macula_nif:endpoint(), [inet:socket_setopt()]) -> ok | {error, enotsup}.
setopts(_Listen, []) -> ok;
setopts(_Listen, _Opts) -> {error, enotsup}.

-spec getopts(macula_nif:endpoint(), [atom()]) -> {ok, []}.
getopts(_Listen, _Opts) -> {ok, []}.
