%% @doc One boot-time setting: where its raw value comes from and how a
%% bad one is reported. Shared by macula_config and macula_relay_config.
-module(macula_setting).

-export([lookup/1, invalid/3]).

%% @doc The raw value of a setting, from a vm argument (`-Key Value'), the
%% kernel environment or the OS environment (`KEY'), in this order; or
%% undefined.
-spec lookup(atom()) -> term().
lookup(Key) ->
    case init:get_argument(Key) of
        {ok, [[Value] | _]} -> Value;
        _ ->
            case application:get_env(kernel, Key) of
                {ok, Value} -> Value;
                undefined -> os:getenv(string:uppercase(atom_to_list(Key)), undefined)
            end
    end.

%% @doc Logs one line naming the setting, its value and `Why', and raises
%% `{macula_config, Text}' with that text.
-spec invalid(atom(), term(), string()) -> no_return().
invalid(Key, Value, Why) ->
    Text = lists:flatten(io_lib:format("invalid ~s ~p: ~s", [Key, Value, Why])),
    logger:error("macula: ~s", [Text]),
    error({macula_config, Text}).
