%% @doc The net_kernel callbacks of `-proto_dist macula`: Erlang
%% distribution over QUIC. Only the callbacks live here; each connection's
%% processes are in macula_dist_handshake, macula_dist_input and
%% macula_dist_output, the accept loop in macula_dist_acceptor.
-module(macula_dist).

-export([listen/1, listen/2, accept/1, accept_connection/5, setup/5,
         close/1, select/1, is_node_name/1, splitname/1, address/0,
         childspecs/0, setopts/2, getopts/2]).
-export([resolve/1, parse/1, relay_mode/0]).

-include_lib("kernel/include/net_address.hrl").

-define(PROTOCOL, macula).

listen(Name) ->
    {ok, Host} = inet:gethostname(),
    listen(Name, Host).

%% Name is the part before '@': `4433` in `4433@host` chooses the port.
%% A node that runs with EPMD registers its port there (see
%% macula_dist_epmd), and takes EPMD's creation as inet_tcp_dist does.
listen(Name, Host) ->
    try listen_port(Name, Host) of
        Port ->
            case listen_endpoint(Name, Host, Port) of
                {ok, Ep} ->
                    Bound = bound_port(Ep, Port),
                    case macula_dist_epmd:register(Name, Bound) of
                        {ok, Creation} ->
                            Address = #net_address{address = {Host, Bound}, host = Host,
                                                   protocol = ?PROTOCOL, family = inet},
                            {ok, {Ep, Address, creation(Creation)}};
                        {error, Text} = Error ->
                            logger:error("macula: ~s", [Text]),
                            Error
                    end;
                {error, _} = Error ->
                    Error
            end
    catch error:{macula_config, Text} ->
        {error, Text}
    end.

%% Port 0 asks for any free port: the one the endpoint got.
bound_port(Ep, 0) -> maps:get(port, macula_nif:endpoint_info(Ep));
bound_port(_Ep, Port) -> Port.

creation(none) -> new_creation();
creation(Creation) -> Creation.

%% The relay modes (dist_relay, relay): nothing listens on the network;
%% peers come through the relays (macula_dist_relay).
listen_endpoint(Name, Host, Port) ->
    case relay_mode() of
        true -> macula_dist_relay:listen(list_to_atom(atom_to_list(Name) ++ "@" ++ Host));
        false -> macula_endpoint:listen(Port)
    end.

%% @doc True in dist_relay and relay mode.
-spec relay_mode() -> boolean().
relay_mode() ->
    maps:get(mode, macula_config:get()) =/= direct.

%% The port to listen on: the one of the name (`port@host`), or the
%% default port, or the one EPMD gives (see macula_dist_epmd). A name
%% peers could not dial stops the node here, with a message. Reading the
%% configuration first makes a bad setting fail here too, with its own
%% message rather than a stack trace from the endpoint opener.
listen_port(Name, Host) ->
    _ = macula_config:get(),
    Node = list_to_atom(atom_to_list(Name) ++ "@" ++ Host),
    case parse(Node) of
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

accept(Ep) ->
    macula_dist_acceptor:start(Ep, self()).

accept_connection(AcceptPid, Conn, MyNode, Allowed, SetupTime) ->
    macula_dist_handshake:accept(self(), AcceptPid, Conn, MyNode, Allowed, SetupTime).

setup(Node, Type, MyNode, _LongOrShortNames, SetupTime) ->
    macula_dist_handshake:setup(self(), Node, Type, MyNode, SetupTime).

%% Only the listen handle is closed here; the endpoint lives as long as
%% the node, so there is nothing to do.
close(_Listen) ->
    ok.

%% Claims a node only if its name parses and its host resolves (through
%% the EPMD module's address_please/3, when the node uses one).
select(Node) ->
    case parse(Node) of
        {ok, {Name, Host, _Port, _Kind}} ->
            relay_mode() orelse
                macula_dist_epmd:address(binary_to_list(Name), binary_to_list(Host)) =/= error;
        {error, _} ->
            false
    end.

is_node_name(Node) ->
    splitname(Node) =/= false.

%% @doc `{Port, Host}` for a macula node name, or false.
splitname(Node) when is_atom(Node) ->
    case parse(Node) of
        {ok, {_Name, Host, Port, _Kind}} -> {Port, binary_to_list(Host)};
        {error, _} -> false
    end;
splitname(_) ->
    false.

%% @doc The parsed name: `{ok, {Name, Host, Port, ipv4 | ipv6 | dns}}`.
parse(Node) ->
    macula_nif:parse_node_name(atom_to_binary(Node), macula_config:default_port()).

%% @doc The IP address to dial for a host from a node name, or error.
resolve(Host) ->
    macula_dist_epmd:resolve(Host).

address() ->
    {ok, Host} = inet:gethostname(),
    #net_address{host = Host, protocol = ?PROTOCOL, family = inet}.

%% The relay modes' relay connections live under net_sup, like
%% net_kernel. A configuration error shows at listen, with its message.
childspecs() ->
    case catch relay_mode() of
        true -> {ok, [macula_dist_relay:childspec()]};
        _ -> {ok, []}
    end.

setopts(_Listen, []) -> ok;
setopts(_Listen, _Opts) -> {error, enotsup}.

getopts(_Listen, _Opts) -> {ok, []}.
