%% @doc macula node names (`name@host', `port@host') and the address to
%% dial for their host. Used by the net_kernel callbacks and by every
%% process that dials; it calls nothing of the distribution itself.
-module(macula_node_name).

-export([parse/1, split/1, resolve/1]).

%% @doc The parsed name: `{ok, {Name, Host, Port, ipv4 | ipv6 | dns}}', or
%% the text of what is wrong with it.
-spec parse(node()) ->
          {ok, {binary(), binary(), inet:port_number(), ipv4 | ipv6 | dns}} | {error, binary()}.
parse(Node) ->
    macula_nif:parse_node_name(atom_to_binary(Node), macula_config:default_port()).

%% @doc `{Port, Host}' for a macula node name, or false for anything else.
-spec split(term()) -> {inet:port_number(), string()} | false.
split(Node) when is_atom(Node) ->
    case parse(Node) of
        {ok, {_Name, Host, Port, _Kind}} -> {Port, binary_to_list(Host)};
        {error, _} -> false
    end;
split(_) ->
    false.

%% @doc The IP address to dial for a host from a node name (IPv4 first),
%% or error.
-spec resolve(string()) -> inet:ip_address() | error.
resolve(Host) ->
    case inet:parse_address(Host) of
        {ok, Ip} -> Ip;
        {error, _} -> lookup(Host, [inet, inet6])
    end.

lookup(_Host, []) ->
    error;
lookup(Host, [Family | Rest]) ->
    case inet:getaddr(Host, Family) of
        {ok, Ip} -> Ip;
        {error, _} -> lookup(Host, Rest)
    end.
