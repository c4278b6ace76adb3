%% @doc The relay modes' settings of macula_config, read at boot with the
%% same precedence (vm argument, kernel environment, OS environment):
%%   macula_dist_relays             "host:port,host:port" (port 4434 if left out)
%%   macula_dist_realm_secret_file  the realm's shared secret (>= 16 bytes,
%%                                  surrounding whitespace ignored, as the relay does)
%% A bad value raises macula_setting's error naming the setting.
-module(macula_relay_config).

-export([read/1, parse_relays/2, read_secret/2]).

-define(DEFAULT_RELAY_PORT, 4434).
-define(MIN_SECRET, 16).
-define(MAX_SECRET_FILE, 4096).

-type relay() :: {Host :: string(), 1..65535}.
-export_type([relay/0]).

%% @doc Extra configuration keys for Mode (none in direct mode).
-spec read(atom()) -> map().
read(direct) ->
    #{};
read(_RelayMode) ->
    #{relays => parse_relays(macula_dist_relays, setting(macula_dist_relays, "")),
      realm_secret => read_secret(macula_dist_realm_secret_file,
                                  setting(macula_dist_realm_secret_file, ""))}.

setting(Key, Default) ->
    case macula_setting:lookup(Key) of
        undefined -> Default;
        [H | _] = L when is_list(H); is_binary(H) ->  % kernel env: a list of relays
            lists:flatten(lists:join(",", [unicode:characters_to_list(I) || I <- L]));
        V when is_list(V) -> V;
        V when is_binary(V) -> binary_to_list(V);
        V when is_atom(V) -> atom_to_list(V);
        V -> macula_setting:invalid(Key, V, "expected a string")
    end.

%% @doc "h1:p1, h2" -> [{"h1", p1}, {"h2", 4434}]; "[::1]:5" for IPv6.
-spec parse_relays(atom(), string()) -> [relay()].
parse_relays(Key, Text) ->
    [relay(Key, string:trim(Item)) || Item <- string:lexemes(Text, ","),
                                      string:trim(Item) =/= ""].

relay(Key, "[" ++ Rest) ->
    case string:split(Rest, "]") of
        [Host, ""] when Host =/= "" -> {Host, ?DEFAULT_RELAY_PORT};
        [Host, ":" ++ Port] when Host =/= "" -> {Host, port(Key, "[" ++ Rest, Port)};
        _ -> bad_relay(Key, "[" ++ Rest)
    end;
relay(Key, Item) ->
    case string:split(Item, ":", all) of
        [Host] when Host =/= "" -> {Host, ?DEFAULT_RELAY_PORT};
        [Host, Port] when Host =/= "" -> {Host, port(Key, Item, Port)};
        _ -> bad_relay(Key, Item)
    end.

%% A bad port is refused naming the whole relay it belongs to.
port(Key, Item, Text) ->
    try list_to_integer(Text) of
        P when P >= 1, P =< 65535 -> P;
        _ -> bad_relay(Key, Item)
    catch error:badarg -> bad_relay(Key, Item)
    end.

bad_relay(Key, Item) ->
    macula_setting:invalid(Key, Item, "expected host:port, host or [ipv6]:port, "
                          "comma-separated").

%% @doc The secret in File; fails naming Key if it is missing or too short.
-spec read_secret(atom(), string()) -> binary().
read_secret(Key, "") ->
    macula_setting:invalid(Key, "", "the relay modes need the realm's shared secret file");
read_secret(Key, File) ->
    case macula_setting:read_head(File, ?MAX_SECRET_FILE + 1) of
        {ok, Bin} when byte_size(Bin) > ?MAX_SECRET_FILE ->
            macula_setting:invalid(Key, File, "larger than 4 KB");
        {ok, Bin} ->
            check_secret(Key, File, string:trim(Bin, both, " \t\r\n"));
        {error, Why} ->
            macula_setting:invalid(Key, File, "cannot read it: " ++ file:format_error(Why))
    end.

check_secret(Key, File, Secret) when byte_size(Secret) < ?MIN_SECRET ->
    macula_setting:invalid(Key, File, "the secret is shorter than 16 bytes");
check_secret(_Key, _File, Secret) ->
    Secret.
