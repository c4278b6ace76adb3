%% @doc Erlang side of the relay shim binding (relay/nif/macula_relay_nif.cc),
%% used by the relay modes (macula_dist_relay). A shim is one connection
%% to a macula-relay, identified under the node's name, with a loopback
%% UDP port per tunnel for the node's own endpoint to dial or be dialled
%% on. Every function checks its arguments and raises `{badarg, Which}'
%% naming the bad one, then returns at once; the shim's threads report to
%% the process that called open/1, with `Tag' as given there:
%%
%%   {macula_relay, Tag, {identified, RelayName}}
%%   {macula_relay, Tag, {tunnel_ready, Request, Tunnel, Port}}
%%   {macula_relay, Tag, {tunnel_failed, Request, Reason}}
%%   {macula_relay, Tag, {tunnel_incoming, Tunnel, SourceNode, Port}}
%%   {macula_relay, Tag, {tunnel_closed, Tunnel, Reason}}
%%   {macula_relay, Tag, {node_list, Request, [{Node, Relay}], More}}
%%   {macula_relay, Tag, {request_failed, Request, Reason}}
%%   {macula_relay, Tag, {closed, macula_nif:close_reason()}}
%%
%% Names and reasons are binaries. The shim closes when that process dies.
-module(macula_relay_nif).

-export([open/1, tunnel/2, list_nodes/2, close_tunnel/2, close/1, stats/1]).

-nifs([open/1, tunnel/2, list_nodes/2, close_tunnel/2, close/1, stats/1]).

-type shim() :: reference().
-type tunnel() :: non_neg_integer().
-type shim_opts() ::
        #{relay_ip := iodata(), relay_port := inet:port_number(), relay_host => iodata(),
          node := iodata(), secret := iodata(), inner_port := inet:port_number(),
          tag := non_neg_integer(), bind => iodata(), cert_dir => iodata(),
          certfile => iodata(), keyfile => iodata(), cacertfile => iodata()}.
-export_type([shim/0, tunnel/0]).

-define(NIF_LIB, "macula_relay_nif").
-include("macula_nif_load.hrl").

%% @doc Dials the relay at `relay_ip':`relay_port' and identifies as
%% `node' with the realm `secret'; tunnels lead to 127.0.0.1:`inner_port'.
%% With a `cacertfile' the relay's certificate must chain to that CA and be
%% valid for `relay_host'. The error text names the cause.
-spec open(shim_opts()) -> {ok, shim()} | {error, binary()}.
open(Opts) -> ?NIF([Opts]).

%% @doc Asks the relay for a tunnel to node `Target'; the answer comes as
%% `tunnel_ready' or `tunnel_failed' with the returned request number.
-spec tunnel(shim(), Target :: iodata()) -> Request :: pos_integer().
tunnel(Shim, Target) -> ?NIF([Shim, Target]).

%% @doc Asks the relay which nodes of the realm are online there and at
%% its linked relays: one page of names after `After' (`<<>>' first), as
%% `node_list' (More = true: ask again after its last name) or
%% `request_failed' with the returned request number (0: the relay
%% connection is gone, nothing will come).
-spec list_nodes(shim(), After :: binary()) -> Request :: non_neg_integer().
list_nodes(Shim, After) -> ?NIF([Shim, After]).

%% @doc Closes our end of a tunnel (the relay tells the other end);
%% unknown tunnels are ignored.
-spec close_tunnel(shim(), tunnel()) -> ok.
close_tunnel(Shim, Tunnel) -> ?NIF([Shim, Tunnel]).

%% @doc Ends the relay connection and its tunnels. A dirty call: it waits
%% for the shim's threads.
-spec close(shim()) -> ok.
close(Shim) -> ?NIF([Shim]).

%% @doc Packet counters and the number of open tunnels.
-spec stats(shim()) -> #{packets_out := non_neg_integer(), packets_in := non_neg_integer(),
                         dropped_busy := non_neg_integer(), dropped_other := non_neg_integer(),
                         tunnels := non_neg_integer()}.
stats(Shim) -> ?NIF([Shim]).
