%% @doc Boot-time configuration. Each setting is read, in this order, from
%% a vm argument (`-macula_dist_port 4433`), the kernel environment
%% (`-kernel macula_dist_port 4433`) and the OS environment
%% (`MACULA_DIST_PORT=4433`), so every mode works straight from `erl`.
%% A bad value raises one clear error naming the setting.
-module(macula_config).

-export([get/0, default_port/0]).

-define(KEY, {?MODULE, config}).
-define(DEFAULT_PORT, 4433).

-type config() :: #{port := 1..65535, bind := string(), mode := direct,
                    trust := cookie | ca | insecure, cert_dir := string(),
                    cacertfile := string(), certfile := string(),
                    keyfile := string(), cc := cubic | reno | bbr | bbr2}.

%% @doc The validated configuration; read once, then cached.
-spec get() -> config().
get() ->
    case persistent_term:get(?KEY, undefined) of
        undefined ->
            Config = read(),
            persistent_term:put(?KEY, Config),
            Config;
        Config ->
            Config
    end.

default_port() ->
    maps:get(port, ?MODULE:get()).

read() ->
    Cacert = string(macula_dist_cacertfile, ""),
    Insecure = boolean(macula_dist_insecure, false),
    Trust = if Insecure -> insecure;
               Cacert =/= "" -> ca;
               true -> cookie
            end,
    #{port => port(macula_dist_port, ?DEFAULT_PORT),
      bind => string(macula_dist_bind, "::"),
      mode => mode(),
      trust => Trust,
      cert_dir => string(macula_dist_cert_dir, default_cert_dir()),
      cacertfile => Cacert,
      certfile => string(macula_dist_certfile, ""),
      keyfile => string(macula_dist_keyfile, ""),
      cc => cc()}.

cc() ->
    case string(macula_dist_cc, "bbr2") of
        CC when CC =:= "cubic"; CC =:= "reno"; CC =:= "bbr"; CC =:= "bbr2" ->
            list_to_atom(CC);
        Other ->
            invalid(macula_dist_cc, Other, "expected cubic, reno, bbr or bbr2")
    end.

default_cert_dir() ->
    filename:basedir(user_data, "macula").

mode() ->
    case string(macula_dist_mode, "direct") of
        "direct" -> direct;
        Other -> invalid(macula_dist_mode, Other,
                         "only direct mode is available in this build")
    end.

%% The raw value of a setting, or undefined.
lookup(Key) ->
    case init:get_argument(Key) of
        {ok, [[Value] | _]} -> Value;
        _ ->
            case application:get_env(kernel, Key) of
                {ok, Value} -> Value;
                undefined -> os:getenv(string:uppercase(atom_to_list(Key)), undefined)
            end
    end.

string(Key, Default) ->
    case lookup(Key) of
        undefined -> Default;
        V when is_list(V) -> V;
        V when is_atom(V) -> atom_to_list(V);
        V when is_binary(V) -> binary_to_list(V);
        V -> invalid(Key, V, "expected a string")
    end.

port(Key, Default) ->
    case lookup(Key) of
        undefined -> Default;
        P when is_integer(P), P >= 1, P =< 65535 -> P;
        V when is_list(V) ->
            try list_to_integer(V) of
                P when P >= 1, P =< 65535 -> P;
                _ -> invalid(Key, V, "expected a port number 1..65535")
            catch error:badarg -> invalid(Key, V, "expected a port number 1..65535")
            end;
        V -> invalid(Key, V, "expected a port number 1..65535")
    end.

boolean(Key, Default) ->
    case lookup(Key) of
        undefined -> Default;
        V when V =:= true; V =:= "true" -> true;
        V when V =:= false; V =:= "false" -> false;
        V -> invalid(Key, V, "expected true or false")
    end.

invalid(Key, Value, Why) ->
    Text = lists:flatten(io_lib:format("invalid ~s ~p: ~s", [Key, Value, Why])),
    logger:error("macula: ~s", [Text]),
    error({macula_config, Text}).
