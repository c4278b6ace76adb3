%% Included by the NIF stub modules (macula_nif, macula_relay_nif), which
%% define NIF_LIB (the library's name in priv/) first: erlang:load_nif/2
%% loads for the module that calls it, so the loader is included, not
%% called.
%%
%% The library is loaded by the first call to any of its functions, not
%% by -on_load: a release boots in embedded mode, where on_load functions
%% run only once kernel's safe supervisor starts, after the distribution
%% (-proto_dist macula calls this module while net_kernel starts), and a
%% module whose on_load is pending cannot be called.
-define(NIF(Args), load_then_call(?FUNCTION_NAME, Args)).
-define(CALLING, {?MODULE, calling_after_load}).

load_then_call(Fun, Args) ->
    case get(?CALLING) of
        undefined ->
            case load() of
                ok ->
                    put(?CALLING, true),
                    try apply(?MODULE, Fun, Args) after erase(?CALLING) end;
                {error, Why} ->
                    erlang:nif_error({not_loaded, ?MODULE, Why})
            end;
        true ->
            %% Loaded, yet this stub still runs: the library lacks Fun.
            erlang:nif_error({not_loaded, ?MODULE, Fun})
    end.

load() ->
    Ebin = filename:dirname(code:which(?MODULE)),
    Lib = filename:join([Ebin, "..", "priv", ?NIF_LIB]),
    case erlang:load_nif(Lib, 0) of
        ok -> ok;
        {error, {reload, _}} -> ok;  % another process loaded it first
        {error, {_, Text}} -> {error, Text}
    end.
