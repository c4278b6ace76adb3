%% @doc The discovery settings of macula_config, read at boot with the same
%% precedence (vm argument, kernel environment, OS environment):
%%   macula_dist_registry_dir       macula_epmd's per-host registry
%%   macula_dist_nodes              static list "NODE=ADDRESS:PORT,..."
%%   macula_dist_hosts_file         the same, one entry a line, in a file
%%   macula_dist_dns_domain         DNS SRV _erlang-dist._udp.<domain>
%%   macula_dist_dns_servers        "ip[:port],..." (default: the system's)
%%   macula_dist_dns_basename       name part of SRV-found nodes
%%   macula_dist_mdns               true: mDNS / DNS-SD announce and browse
%%   macula_dist_mdns_realm         the realm announced and browsed for
%%   macula_dist_discovery_interval_ms  refresh and query period
%%   macula_dist_cluster            true: connect to every discovered node
%% A bad value raises macula_setting's error naming the setting. The
%% sources answer through macula_epmd, so a node that sets one must run
%% with `-epmd_module macula_epmd' (and without -no_epmd).
-module(macula_discovery_config).

-export([read/1, parse_nodes/2, parse_hosts_file/2]).

-import(macula_setting, [lookup/1, invalid/3, boolean/2]).

-define(DEFAULT_REGISTRY_DIR, "/tmp/macula-registry").
-define(MAX_HOSTS_FILE, 1 bsl 20).
-define(MAX_ENTRIES, 1024).
-define(DEFAULT_INTERVAL_MS, 5000).

-type entry() :: {Node :: binary(), Host :: string(), inet:port_number()}.
-export_type([entry/0]).

%% @doc The discovery keys of the configuration in Mode.
-spec read(atom()) -> map().
read(Mode) ->
    Config = #{registry_dir => registry_dir(),
               nodes => parse_nodes(macula_dist_nodes, list_setting(macula_dist_nodes)),
               hosts_file => hosts_file(),
               dns_domain => dns_domain(),
               dns_servers => dns_servers(),
               dns_basename => basename(),
               mdns => boolean(macula_dist_mdns, false),
               mdns_realm => realm(),
               discovery_interval_ms => interval(),
               cluster => boolean(macula_dist_cluster, false)},
    check_epmd_module(Mode, Config),
    Config.

%% Sources answer through macula_epmd; without it they would be ignored.
%% In the relay modes the relays are the only source (their registry):
%% cluster formation alone applies there.
check_epmd_module(direct, Config) ->
    case [K || {K, V} <- used(Config), V] of
        [] -> ok;
        [Key | _] ->
            Ok = init:get_argument(no_epmd) =:= error andalso
                init:get_argument(epmd_module) =:= {ok, [["macula_epmd"]]},
            Ok orelse invalid(Key, lookup(Key),
                              "needs -epmd_module macula_epmd (and no -no_epmd)")
    end;
check_epmd_module(_RelayMode, Config) ->
    case [K || {K, V} <- used(Config), V, K =/= macula_dist_cluster] of
        [] -> ok;
        [Key | _] -> invalid(Key, lookup(Key), "the relay modes find nodes through their "
                             "relays: only macula_dist_cluster applies there")
    end.

used(#{nodes := Nodes, hosts_file := File, dns_domain := Domain, mdns := Mdns,
       cluster := Cluster}) ->
    [{macula_dist_nodes, Nodes =/= []}, {macula_dist_hosts_file, File =/= ""},
     {macula_dist_dns_domain, Domain =/= ""}, {macula_dist_mdns, Mdns},
     {macula_dist_cluster, Cluster}].

registry_dir() ->
    Dir = string(macula_dist_registry_dir, ?DEFAULT_REGISTRY_DIR),
    filename:pathtype(Dir) =:= absolute orelse
        invalid(macula_dist_registry_dir, Dir, "expected an absolute directory path"),
    Dir.

hosts_file() ->
    case string(macula_dist_hosts_file, "") of
        "" -> "";
        File -> _ = parse_hosts_file(macula_dist_hosts_file, File), File
    end.

%% @doc The entries of a hosts file (checked at boot, re-read at each
%% refresh): `NODE ADDRESS:PORT' a line, `#' comments.
-spec parse_hosts_file(atom(), string()) -> [entry()].
parse_hosts_file(Key, File) ->
    case macula_setting:read_head(File, ?MAX_HOSTS_FILE + 1) of
        {ok, Bin} when byte_size(Bin) > ?MAX_HOSTS_FILE -> invalid(Key, File, "larger than 1 MB");
        {ok, Bin} -> hosts_lines(Key, File, string:split(Bin, "\n", all), 1, []);
        {error, Why} -> invalid(Key, File, "cannot read it: " ++ file:format_error(Why))
    end.

hosts_lines(_Key, _File, [], _N, Acc) ->
    limit(lists:reverse(Acc));
hosts_lines(Key, File, [Line | Rest], N, Acc) ->
    Where = File ++ ":" ++ integer_to_list(N),
    Chars = case unicode:characters_to_list(Line) of
                L when is_list(L) -> L;
                _ -> invalid(Key, Where, "not UTF-8 text")
            end,
    Text = string:trim(hd(string:split(Chars, "#"))),
    case string:lexemes(Text, " \t") of
        [] -> hosts_lines(Key, File, Rest, N + 1, Acc);
        [Node, Address] ->
            hosts_lines(Key, File, Rest, N + 1, [entry(Key, Where, Node, Address) | Acc]);
        _ -> invalid(Key, Where, "expected NODE ADDRESS:PORT")
    end.

%% @doc "a@h=10.0.0.1:4500, b@h2=[::1]:4501, c@h3=host:4502".
-spec parse_nodes(atom(), string()) -> [entry()].
parse_nodes(Key, Text) ->
    limit([item(Key, string:trim(I)) || I <- string:lexemes(Text, ","), string:trim(I) =/= ""]).

item(Key, Item) ->
    case string:split(Item, "=") of
        [Node, Address] -> entry(Key, Item, string:trim(Node), string:trim(Address));
        _ -> invalid(Key, Item, "expected NODE=ADDRESS:PORT, comma-separated")
    end.

limit(Entries) when length(Entries) =< ?MAX_ENTRIES -> Entries;
limit(Entries) -> lists:sublist(Entries, ?MAX_ENTRIES).

entry(Key, Where, Node, Address) ->
    macula_names:node_parts(Node) =/= error orelse
        invalid(Key, Where, "expected a node name NAME@HOST before the address"),
    {Host, PortText} = split_address(Key, Where, Address),
    Port = try list_to_integer(PortText) of
               P when P >= 1, P =< 65535 -> P;
               _ -> invalid(Key, Where, "expected a port 1..65535")
           catch error:badarg -> invalid(Key, Where, "expected a port 1..65535")
           end,
    {list_to_binary(Node), Host, Port}.

%% "[v6]:port" or "host:port"; the port is required.
split_address(Key, Where, "[" ++ Rest) ->
    case string:split(Rest, "]:") of
        [Host, Port] when Host =/= "" -> {Host, Port};
        _ -> invalid(Key, Where, "expected ADDRESS:PORT ([v6]:PORT for IPv6)")
    end;
split_address(Key, Where, Address) ->
    case string:split(Address, ":", all) of
        [Host, Port] when Host =/= "" -> {Host, Port};
        _ -> invalid(Key, Where, "expected ADDRESS:PORT ([v6]:PORT for IPv6)")
    end.

dns_domain() ->
    case string(macula_dist_dns_domain, "") of
        "" -> "";
        Domain ->
            Labels = string:split(string:trim(Domain, trailing, "."), ".", all),
            lists:all(fun(L) -> L =/= "" andalso length(L) < 64 andalso
                                    macula_names:valid_host(L) end, Labels)
                andalso length(Domain) < 200
                orelse invalid(macula_dist_dns_domain, Domain, "expected a DNS domain name"),
            string:trim(Domain, trailing, ".")
    end.

dns_servers() ->
    Key = macula_dist_dns_servers,
    [server(Key, I) || I0 <- string:lexemes(list_setting(Key), ","),
                       I <- [string:trim(I0)], I =/= ""].

%% "ip", "ip:port", "[v6]" or "[v6]:port"; port 53 if left out.
server(Key, Item) ->
    Why = "expected IP, IP:PORT or [IPv6]:PORT, comma-separated",
    {Host, PortText} = split_address(Key, Item, with_port(Item)),
    case {inet:parse_strict_address(Host), catch list_to_integer(PortText)} of
        {{ok, Ip}, Port} when is_integer(Port), Port >= 1, Port =< 65535 -> {Ip, Port};
        _ -> invalid(Key, Item, Why)
    end.

with_port("[" ++ _ = I) -> case lists:suffix("]", I) of true -> I ++ ":53"; false -> I end;
with_port(I) -> case length(string:split(I, ":", all)) of 1 -> I ++ ":53"; _ -> I end.

basename() ->
    case string(macula_dist_dns_basename, "") of
        "" -> "";
        Name -> macula_names:valid_name(Name) orelse
                    invalid(macula_dist_dns_basename, Name,
                            "expected a node name's part before '@' (A-Z a-z 0-9 _ - .)"),
                Name
    end.

realm() ->
    Realm = string(macula_dist_mdns_realm, "macula"),
    macula_names:valid_name(Realm) andalso length(Realm) =< 63 orelse
        invalid(macula_dist_mdns_realm, Realm, "expected 1-63 characters of A-Z a-z 0-9 _ - ."),
    Realm.

interval() ->
    Key = macula_dist_discovery_interval_ms,
    Why = "expected an integer 100..3600000",
    case lookup(Key) of
        undefined -> ?DEFAULT_INTERVAL_MS;
        I when is_integer(I), I >= 100, I =< 3600000 -> I;
        V when is_list(V) ->
            try list_to_integer(V) of
                I when I >= 100, I =< 3600000 -> I;
                _ -> invalid(Key, V, Why)
            catch error:badarg -> invalid(Key, V, Why)
            end;
        V -> invalid(Key, V, Why)
    end.

list_setting(Key) ->
    case lookup(Key) of
        undefined -> "";
        [H | _] = L when is_list(H); is_binary(H) ->
            try lists:flatten(lists:join(",", [unicode:characters_to_list(I) || I <- L]))
            catch _:_ -> invalid(Key, L, "expected a string or a list of strings")
            end;
        V -> to_string(Key, V)
    end.

string(Key, Default) ->
    case lookup(Key) of
        undefined -> Default;
        V -> to_string(Key, V)
    end.

to_string(_Key, V) when is_atom(V) -> atom_to_list(V);
to_string(Key, V) when is_list(V); is_binary(V) ->
    case catch unicode:characters_to_list(V) of
        S when is_list(S) -> S;
        _ -> invalid(Key, V, "expected a string")
    end;
to_string(Key, V) ->
    invalid(Key, V, "expected a string").
