%% @doc Erlang side of the relay shim binding (dist_relay mode). See
%% relay/nif/macula_relay_nif.cc for the contract of each function and the
%% messages the shim sends to the process that opened it.
-module(macula_relay_nif).
-on_load(init/0).

-export([open/1, tunnel/2, close_tunnel/2, close/1, stats/1]).

-nifs([open/1, tunnel/2, close_tunnel/2, close/1, stats/1]).

init() ->
    Ebin = filename:dirname(code:which(?MODULE)),
    Lib = filename:join([Ebin, "..", "priv", "macula_relay_nif"]),
    erlang:load_nif(Lib, 0).

-define(NIF, erlang:nif_error({not_loaded, ?MODULE})).

open(_Opts) -> ?NIF.
tunnel(_Shim, _Target) -> ?NIF.
close_tunnel(_Shim, _Tunnel) -> ?NIF.
close(_Shim) -> ?NIF.
stats(_Shim) -> ?NIF.
