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
-define(LOGGED_ABOVE, "macula could not start: see the error logged above").

listen(Name) ->
    {ok, Host} = inet:gethostname(),
    listen(Name, Host).

%% Name is the part before '@': `4433` in `4433@host` chooses the port.
%% Whatever stops the node here was logged already, in one line naming
%% the setting and the value: the VM's own line (`register/listen error`)
%% only points to it rather than repeating it.
listen(Name, Host) ->
    try listen_port(Name, Host) of
        Port ->
            case listen_endpoint(Name, Host, Port) of
                {ok, Ep} ->
                    Address = #net_address{address = {Host, Port}, host = Host,
                                           protocol = ?PROTOCOL, family = inet},
                    {ok, {Ep, Address, new_creation()}};
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

%% The port peers will dial: the one splitname/1 gives for the full node
%% name. A name they could not dial stops the node here, with a message.
%% Reading the configuration first makes a bad setting fail here too, with
%% its own message rather than a stack trace from the endpoint opener.
listen_port(Name, Host) ->
    _ = macula_config:get(),
    macula_log_limit:init(),
    Node = list_to_atom(atom_to_list(Name) ++ "@" ++ Host),
    case parse(Node) of
        {ok, {_Name, _Host, Port, _Kind}} ->
            Port;
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

%% Claims a node only if its name parses and its host resolves.
select(Node) ->
    case splitname(Node) of
        {_Port, Host} -> relay_mode() orelse resolve(Host) =/= error;
        false -> false
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
    case inet:parse_address(Host) of
        {ok, Ip} -> Ip;
        {error, _} ->
            case inet:getaddr(Host, inet) of
                {ok, Ip} -> Ip;
                {error, _} ->
                    case inet:getaddr(Host, inet6) of
                        {ok, Ip} -> Ip;
                        {error, _} -> error
                    end
            end
    end.

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
