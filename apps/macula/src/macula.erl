%% @doc Operator API of macula.
-module(macula).

-export([info/0]).

%% @doc The node's QUIC endpoint: port, trust mode, connection count and
%% packets dropped (garbage or for unknown connections).
-spec info() -> map() | undefined.
info() ->
    macula_endpoint:info().
