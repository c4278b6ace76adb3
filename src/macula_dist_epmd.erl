%% @doc Where a macula node listens and where its peers are, for nodes
%% that run with EPMD (no `-no_epmd`), the way inet_tcp_dist uses it:
%% the node registers its UDP port with net_kernel's EPMD module (erl_epmd
%% or the `-epmd_module`), and a `name@host` peer's port and address come
%% from that module. `port@host` names never ask it, and a node started
%% with `-no_epmd` never does: its `name@host` peers are on the default
%% port (macula_dist_port).
%%
%% Discovery only says where to dial; whom to trust is decided by TLS and
%% the cookie proof.
-module(macula_dist_epmd).

-export([in_use/0, listen_port/3, register/2, locate/1, address/2, is_port_name/1]).

-define(PORT_PLEASE_TIMEOUT, 5000).

-type location() :: {Host :: string(), inet:ip_address(), inet:port_number()}.

%% @doc True when the node runs with an EPMD module: `-no_epmd` not given
%% and the node is in direct mode (the relay modes find peers through
%% their relays).
-spec in_use() -> boolean().
in_use() ->
    init:get_argument(no_epmd) =:= error andalso not macula_config:relay_mode().

%% @doc The UDP port a node called Name@Host listens on. `Parsed` is the
%% port its name gives (explicit, or the default port). With EPMD, a
%% `name@host` node takes the module's listen_port_please/2 answer when it
%% names a port (erl_epmd: `-erl_epmd_port`); 0 means any free port.
-spec listen_port(atom(), string(), {explicit | default, 0..65535}) -> 0..65535.
listen_port(_Name, _Host, {explicit, Port}) ->
    Port;
listen_port(Name, Host, {default, Port}) ->
    case in_use() of
        false -> Port;
        true ->
            Mod = net_kernel:epmd_module(),
            case optional(Mod, listen_port_please, [Name, Host]) of
                {ok, P} when is_integer(P), P > 0 -> P;
                %% erl_epmd's 0 means "not set": the default port stays.
                %% Another module's 0 asks for any free port, which it
                %% then tells peers (macula_epmd does).
                {ok, 0} when Mod =/= erl_epmd -> 0;
                _ -> Port
            end
    end.

%% @doc Registers the node's port with the EPMD module; returns the
%% creation it gives, or `none` (no EPMD, or a module that gives none).
%% A node that uses EPMD and cannot register does not start, as with
%% inet_tcp_dist.
-spec register(atom(), inet:port_number()) -> {ok, pos_integer() | none} | {error, string()}.
register(Name, Port) ->
    case in_use() of
        false -> {ok, none};
        true ->
            Mod = net_kernel:epmd_module(),
            case Mod:register_node(Name, Port, inet_tcp) of
                {ok, Creation} when is_integer(Creation), Creation > 0 -> {ok, Creation};
                {ok, _} -> {ok, none};
                Error -> {error, lists:flatten(io_lib:format(
                                                  "cannot register ~s with ~s: ~p",
                                                  [Name, Mod, Error]))}
            end
    end.

%% @doc Where to dial Node: the host of its name, its IP address and UDP
%% port, or why not.
-spec locate(node()) -> {ok, location()} | {error, term()}.
locate(Node) ->
    case macula_node_name:parse(Node) of
        {ok, {NameBin, HostBin, Port, _Kind}} ->
            Name = binary_to_list(NameBin),
            Host = binary_to_list(HostBin),
            case address(Name, Host) of
                error -> {error, {unresolved_host, Host}};
                {Ip, P} -> {ok, {Host, Ip, P}};
                Ip -> with_port(Host, Ip, peer_port(Name, Ip, Port))
            end;
        {error, Why} ->
            {error, {invalid_node_name, Why}}
    end.

%% @doc The address of the node Name@Host: an IP address, or with a port
%% when the EPMD module gave both, or error. Only a custom EPMD module is
%% asked (erl_epmd would resolve IPv4 only); others resolve the host.
-spec address(string(), string()) ->
          inet:ip_address() | {inet:ip_address(), inet:port_number()} | error.
address(Name, Host) ->
    Mod = net_kernel:epmd_module(),
    case in_use() andalso Mod =/= erl_epmd andalso
        optional(Mod, address_please, [Name, Host, family(Host)]) of
        {ok, Ip} -> Ip;
        {ok, Ip, Port, _Version} -> {Ip, Port};
        {error, _} -> error;
        _ -> macula_node_name:resolve(Host)
    end.

with_port(_Host, _Ip, 0) -> {error, noport};
with_port(Host, Ip, Port) -> {ok, {Host, Ip, Port}}.

%% A `port@host` peer is where its name says. A `name@host` peer that did
%% not register (it runs with -no_epmd, or its host has no EPMD) is on
%% the default port, when there is one.
peer_port(Name, Ip, Port) ->
    case in_use() andalso not is_port_name(Name) of
        false -> Port;
        true ->
            Mod = net_kernel:epmd_module(),
            _ = code:ensure_loaded(Mod),
            Result = case erlang:function_exported(Mod, port_please, 3) of
                         true -> Mod:port_please(Name, Ip, ?PORT_PLEASE_TIMEOUT);
                         false -> Mod:port_please(Name, Ip)
                     end,
            case Result of
                {port, P, _Version} -> P;
                _ -> Port
            end
    end.

family(Host) ->
    case inet:parse_address(Host) of
        {ok, Ip} when tuple_size(Ip) =:= 8 -> inet6;
        _ -> inet
    end.

%% @doc True for the `port` of a `port@host` name.
-spec is_port_name(string()) -> boolean().
is_port_name(Name) ->
    Name =/= "" andalso lists:all(fun(C) -> C >= $0 andalso C =< $9 end, Name).

%% Calls an optional callback of the EPMD module; undefined when the
%% module does not have it.
optional(Mod, Fun, Args) ->
    _ = code:ensure_loaded(Mod),
    case erlang:function_exported(Mod, Fun, length(Args)) of
        true -> apply(Mod, Fun, Args);
        false -> undefined
    end.
