%% @doc A custom EPMD module for macula_discovery_SUITE, after the idea of
%% OTP's distribution_SUITE case `epmd_module': no registry at all, every
%% node's port comes from one table given to each node in the kernel
%% environment (`-kernel macula_ct_epmd_ports "name=port,..."'), and a
%% node listens on its own entry's port. No process: start_link is
%% `ignore'.
-module(macula_ct_epmd).

-export([start_link/0, register_node/2, register_node/3, port_please/2, port_please/3,
         address_please/3, names/1, listen_port_please/2]).

-spec start_link() -> ignore.
start_link() -> ignore.

-spec register_node(term(), integer()) -> {ok, integer()}.
register_node(_Name, _Port) -> {ok, -1}.

-spec register_node(term(), integer(), atom()) -> {ok, integer()}.
register_node(_Name, _Port, _Family) -> {ok, -1}.

-spec port_please(term(), term()) -> {port, integer(), 6} | noport.
port_please(Name, _Ip) ->
    case lists:keyfind(to_list(Name), 1, table()) of
        {_, Port} -> {port, Port, 6};
        false -> noport
    end.

-spec port_please(term(), term(), timeout()) -> {port, integer(), 6} | noport.
port_please(Name, Ip, _Timeout) -> port_please(Name, Ip).

-spec address_please(term(), string(), atom()) -> {ok, inet:ip_address()} | {error, term()}.
address_please(_Name, Host, Family) -> inet:getaddr(Host, Family).

-spec names(term()) -> {ok, [{string(), integer()}]}.
names(_Host) -> {ok, table()}.

-spec listen_port_please(term(), term()) -> {ok, integer()}.
listen_port_please(Name, _Host) ->
    case lists:keyfind(to_list(Name), 1, table()) of
        {_, Port} -> {ok, Port};
        false -> {ok, 0}
    end.

table() ->
    {ok, Text} = application:get_env(kernel, macula_ct_epmd_ports),
    [{N, list_to_integer(P)} || Item <- string:lexemes(Text, ","),
                                [N, P] <- [string:split(Item, "=")]].

to_list(A) when is_atom(A) -> atom_to_list(A);
to_list(S) -> S.
