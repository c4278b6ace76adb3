%% @doc Operator API of macula.
-module(macula).

-export([info/0, join_dist_relay/1, relays/0]).

%% @doc The node's QUIC endpoint: port, trust mode, connection count and
%% packets dropped (garbage or for unknown connections).
-spec info() -> map() | undefined.
info() ->
    macula_endpoint:info().

%% @doc dist_relay mode: adds relays at run time ("host:port", comma-
%% separated, port 4434 if left out). The node registers there under its
%% node name and can then reach, and be reached by, the realm's nodes.
-spec join_dist_relay(string() | binary()) -> ok | {error, term()}.
join_dist_relay(Relays) ->
    macula_dist_relay:join(Relays).

%% @doc dist_relay mode: each relay, its state and its packet counters.
-spec relays() -> [map()].
relays() ->
    macula_dist_relay:info().
