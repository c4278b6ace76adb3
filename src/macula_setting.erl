%% @doc One boot-time setting: where its raw value comes from and how a
%% bad one is reported. Shared by macula_config and macula_relay_config.
-module(macula_setting).

-export([lookup/1, invalid/3, read_head/2, boolean/2]).

%% @doc The raw value of a setting, from a vm argument (`-Key Value'), the
%% kernel environment or the OS environment (`KEY'), in this order; or
%% undefined. On the command line erl reads a value that starts with `-'
%% as a flag of its own (`-macula_dist_busy_poll_us -1' leaves the setting
%% without a value): a setting without a value, or with several, is
%% refused by name.
-spec lookup(atom()) -> term().
lookup(Key) ->
    case init:get_argument(Key) of
        {ok, [[Value] | _]} -> Value;
        {ok, [[] | _]} -> invalid(Key, flag_after(Key), no_value_why());
        {ok, [Values | _]} -> invalid(Key, Values, "expected one value");
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
    Text = lists:flatten(io_lib:format("invalid ~s ~tp: ~ts", [Key, Value, Why])),
    logger:error("macula: ~ts", [Text]),
    error({macula_config, Text}).

%% @doc A true/false setting (atom or string), Default when unset.
-spec boolean(atom(), boolean()) -> boolean().
boolean(Key, Default) ->
    case lookup(Key) of
        undefined -> Default;
        V when V =:= true; V =:= "true" -> true;
        V when V =:= false; V =:= "false" -> false;
        V -> invalid(Key, V, "expected true or false")
    end.

%% What erl took for a flag after `-Key' (the intended value, most likely).
flag_after(Key) ->
    case lists:dropwhile(fun({K, _}) -> K =/= Key end, init:get_arguments()) of
        [_, {Next, Values} | _] -> lists:flatten(lists:join(" ", ["-" ++ atom_to_list(Next) | Values]));
        _ -> ""
    end.

no_value_why() ->
    "no value on the command line (erl reads a value that starts with '-' as a "
    "flag of its own; give such a value in the kernel environment or the OS environment)".

%% @doc At most `Max' bytes of `File'. prim_file: at boot net_kernel
%% starts before the file server.
-spec read_head(string(), pos_integer()) -> {ok, binary()} | {error, term()}.
read_head(File, Max) ->
    case prim_file:open(File, [read, binary]) of
        {ok, Fd} ->
            Result = case prim_file:read(Fd, Max) of
                         eof -> {ok, <<>>};
                         Other -> Other
                     end,
            prim_file:close(Fd),
            Result;
        {error, _} = Error ->
            Error
    end.
