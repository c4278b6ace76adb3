%% @doc macula's EPMD module, for `-epmd_module macula_epmd -start_epmd
%% false' (without -no_epmd): names resolve without an EPMD daemon.
%%
%%   - register_node: the node's name and UDP port go into this host's
%%     registry (macula_registry, files under macula_dist_registry_dir);
%%     the registration is this process's and goes when it stops.
%%   - port_please / address_please: the discovery sources first (static
%%     list, hosts file, DNS SRV, mDNS: macula_discovery), then this
%%     host's registry for a local address, then the host of the name.
%%   - names: this host's registry; for another host, what the sources
%%     know of it.
%%   - listen_port_please: 0 (any free port) unless macula_dist_port is
%%     given: several `name@host' nodes share a host, as with `-sname'.
%%
%% A supervised role of its own: net_sup starts it (start_link/0) before
%% net_kernel, as it starts erl_epmd. Discovery only says where to dial;
%% TLS and the cookie proof decide whom to trust.
-module(macula_epmd).
-behaviour(gen_server).

-export([start_link/0, register_node/2, register_node/3, port_please/2, port_please/3,
         address_please/3, names/0, names/1, listen_port_please/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

%% The distribution protocol version erl_epmd reports for OTP 23+ nodes.
-define(VERSION, 6).

-type name() :: atom() | string().

%%% ------------------------------------------------------------------
%%% The EPMD module interface (see erl_epmd)

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

-spec register_node(name(), inet:port_number()) -> {ok, pos_integer()} | {error, term()}.
register_node(Name, Port) ->
    register_node(Name, Port, inet_tcp).

%% @doc Enters Name on Port in this host's registry; the creation is fresh.
-spec register_node(name(), inet:port_number(), atom()) ->
          {ok, pos_integer()} | {error, term()}.
register_node(Name, Port, _Family) ->
    gen_server:call(?MODULE, {register, to_list(Name), Port}, infinity).

-spec port_please(name(), inet:ip_address() | string()) ->
          {port, inet:port_number(), pos_integer()} | noport.
port_please(Name, Host) ->
    port_please(Name, Host, infinity).

%% @doc The port of Name at Host: what a discovery source knows, else
%% this host's registry when Host is a local address, else noport.
-spec port_please(name(), inet:ip_address() | string(), timeout()) ->
          {port, inet:port_number(), pos_integer()} | noport.
port_please(Name0, Host, _Timeout) ->
    Name = to_list(Name0),
    Ips = ips(Host),
    case macula_discovery:port(Name, Ips) of
        {ok, Port} -> {port, Port, ?VERSION};
        error -> local_port(Name, Ips)
    end.

local_port(Name, Ips) ->
    case lists:any(fun is_local/1, Ips) andalso macula_registry:lookup(registry_dir(), Name) of
        {ok, Port} -> {port, Port, ?VERSION};
        _ -> noport
    end.

%% @doc Where Name@Host is: address and port when a discovery source
%% knows the node, else Host's address (its port then comes from
%% port_please/3).
-spec address_please(name(), string(), inet | inet6) ->
          {ok, inet:ip_address(), inet:port_number(), pos_integer()}
              | {ok, inet:ip_address()} | {error, term()}.
address_please(Name, Host, _Family) ->
    case macula_discovery:lookup(to_list(Name), Host) of
        {ok, Ip, Port} -> {ok, Ip, Port, ?VERSION};
        error ->
            case macula_node_name:resolve(Host) of
                error -> {error, nxdomain};
                Ip -> {ok, Ip}
            end
    end.

-spec names() -> {ok, [{string(), inet:port_number()}]} | {error, term()}.
names() ->
    {ok, Host} = inet:gethostname(),
    names(Host).

%% @doc The nodes at Host: this host's registry for a local host, and
%% what the discovery sources know at Host's addresses.
-spec names(atom() | string() | inet:ip_address()) ->
          {ok, [{string(), inet:port_number()}]} | {error, term()}.
names(Host) ->
    Ips = ips(Host),
    Local = case is_local_host(Host, Ips) of
                true -> macula_registry:names(registry_dir());
                false -> []
            end,
    case lists:usort(Local ++ macula_discovery:names(Ips)) of
        [] when Ips =:= [] -> {error, address};
        Names -> {ok, Names}
    end.

%% @doc 0 (any free port) unless macula_dist_port is given.
-spec listen_port_please(name(), string()) -> {ok, inet:port_number()}.
listen_port_please(_Name, _Host) ->
    case macula_setting:lookup(macula_dist_port) of
        undefined -> {ok, 0};
        _ -> {ok, macula_config:default_port()}
    end.

%%% ------------------------------------------------------------------
%%% gen_server: owns the node's registry entry

-spec init([]) -> {ok, undefined}.
init([]) ->
    process_flag(trap_exit, true),
    {ok, undefined}.

-spec handle_call(term(), {pid(), term()}, undefined | string()) ->
          {reply, term(), undefined | string()}.
handle_call({register, Name, Port}, _From, Registered) ->
    release(Registered),
    case macula_registry:claim(registry_dir(), Name, Port) of
        ok -> {reply, {ok, new_creation()}, Name};
        {error, Text} -> {reply, {error, Text}, undefined}
    end;
handle_call(_Request, _From, St) ->
    {reply, {error, unknown_call}, St}.

-spec handle_cast(term(), undefined | string()) -> {noreply, undefined | string()}.
handle_cast(_Msg, St) ->
    {noreply, St}.

-spec handle_info(term(), undefined | string()) -> {noreply, undefined | string()}.
handle_info(_Msg, St) ->
    {noreply, St}.

-spec terminate(term(), undefined | string()) -> ok.
terminate(_Why, Registered) ->
    release(Registered).

release(undefined) -> ok;
release(Name) -> macula_registry:release(registry_dir(), Name).

%%% ------------------------------------------------------------------
%%% Helpers

registry_dir() ->
    maps:get(registry_dir, macula_config:get()).

%% OTP avoids creations 0..3.
new_creation() ->
    rand:uniform(16#fffffff0 - 4) + 3.

to_list(Name) when is_atom(Name) -> atom_to_list(Name);
to_list(Name) when is_binary(Name) -> binary_to_list(Name);
to_list(Name) -> Name.

ips(Ip) when is_tuple(Ip) -> [Ip];
ips(Host) when is_atom(Host) -> ips(atom_to_list(Host));
ips(Host) ->
    case inet:parse_strict_address(Host) of
        {ok, Ip} -> [Ip];
        {error, _} ->
            lists:append([Ips || F <- [inet, inet6], {ok, Ips} <- [inet:getaddrs(Host, F)]])
    end.

is_local_host(Host, Ips) ->
    {ok, Me} = inet:gethostname(),
    lists:member(Host, [Me, list_to_atom(Me)]) orelse lists:any(fun is_local/1, Ips).

%% An address of this host (network namespace), loopback included.
is_local({127, _, _, _}) -> true;
is_local({0, 0, 0, 0, 0, 0, 0, 1}) -> true;
is_local(Ip) ->
    case inet:getifaddrs() of
        {ok, Ifs} -> lists:member(Ip, [A || {_, Opts} <- Ifs, {addr, A} <- Opts]);
        {error, _} -> false
    end.
