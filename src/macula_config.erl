%% @doc Boot-time configuration. Each setting is read, in this order, from
%% a vm argument (`-macula_dist_port 4433`), the kernel environment
%% (`-kernel macula_dist_port 4433`) and the OS environment
%% (`MACULA_DIST_PORT=4433`), so every mode works straight from `erl`.
%% A bad value raises one clear error naming the setting and the value.
%% On the command line erl reads a value that starts with `-` as a flag of
%% its own (`-macula_dist_busy_poll_us -1` gives the setting no value):
%% a setting left without a value, or given several, is refused by name.
-module(macula_config).

-export([get/0, default_port/0]).
-export([relay_mode/0, listens/0, metrics/0]).

-import(macula_setting, [lookup/1, invalid/3, read_head/2, boolean/2]).

-define(KEY, {?MODULE, config}).
-define(DEFAULT_PORT, 4433).
%% The I/O thread may poll this long after each event before sleeping, to
%% skip a thread wake-up per hop of a round trip. Off by default: on a
%% 2-core machine it cut the median a little and doubled the p99.
-define(DEFAULT_BUSY_POLL_US, 0).
-define(MAX_PEM_FILE, 1 bsl 20).
%% Every connection sends a QUIC PING after this long without traffic: a
%% peer whose process is gone then draws an ICMP "port unreachable" (or,
%% restarted, a stateless reset) within this time, so nodedown comes in
%% about a second instead of at the tick timeout. Silence alone never
%% cuts: a frozen peer is still only cut by net_ticktime.
-define(DEFAULT_KEEP_ALIVE_MS, 1000).

-type config() :: #{port := 0..65535, bind := string(), mode := direct | dist_relay | relay,
                    trust := cookie | ca | insecure, cert_dir := string(),
                    cacertfile := string(), certfile := string(),
                    keyfile := string(), cc := cubic | reno | bbr | bbr2,
                    busy_poll_us := 0..10000, keep_alive_ms := 0..600000,
                    listen := boolean(), metrics := metrics(), atom() => term()}.
%% Where the Prometheus endpoint listens (macula_metrics_http), or off.
-type metrics() :: off | {inet:ip_address(), 1..65535}.
-export_type([metrics/0]).

%% @doc The validated configuration; read once, then cached. A bad
%% setting is logged once: the failure is kept too, and raised again
%% (net_kernel reads the configuration more than once at boot).
-spec get() -> config().
get() ->
    case persistent_term:get(?KEY, undefined) of
        undefined ->
            try read() of
                Config ->
                    persistent_term:put(?KEY, Config),
                    Config
            catch error:{macula_config, _} = Error ->
                persistent_term:put(?KEY, {failed, Error}),
                error(Error)
            end;
        {failed, Error} ->
            error(Error);
        Config ->
            Config
    end.

%% @doc The port of node names that do not give one.
-spec default_port() -> inet:port_number().
default_port() ->
    maps:get(port, ?MODULE:get()).

%% @doc False for a dial-only node (`macula_dist_listen false'): its
%% endpoint takes an ephemeral port and accepts nobody.
-spec listens() -> boolean().
listens() ->
    maps:get(listen, ?MODULE:get()).

%% @doc The metrics endpoint's settings (`macula_metrics_port`, off when
%% unset; `macula_metrics_bind`, 127.0.0.1 by default), read now: the
%% OTP application starts the endpoint, whether the distribution uses
%% macula or not. A bad value raises like every setting.
-spec metrics() -> metrics().
metrics() ->
    case integer(macula_metrics_port, off, 1, 65535) of
        off -> off;
        Port ->
            Text = local_address(macula_metrics_bind, string(macula_metrics_bind, "127.0.0.1")),
            {ok, Ip} = inet:parse_strict_address(Text),
            {Ip, Port}
    end.

%% @doc True in dist_relay and relay mode: peers come through relays.
-spec relay_mode() -> boolean().
relay_mode() ->
    maps:get(mode, ?MODULE:get()) =/= direct.

read() ->
    Cacert = string(macula_dist_cacertfile, ""),
    Insecure = boolean(macula_dist_insecure, false),
    Trust = if Insecure -> insecure;
               Cacert =/= "" -> ca;
               true -> cookie
            end,
    Mode = mode(),
    Discovery = macula_discovery_config:read(Mode),
    maps:merge(maps:merge(macula_relay_config:read(Mode), Discovery), #{
      port => port(Mode),
      bind => bind(Mode),
      mode => Mode,
      trust => Trust,
      cert_dir => cert_dir(),
      cacertfile => pem_file(macula_dist_cacertfile, Cacert, certificate),
      certfile => pem_file(macula_dist_certfile, string(macula_dist_certfile, ""), certificate),
      keyfile => pem_file(macula_dist_keyfile, string(macula_dist_keyfile, ""), private_key),
      cc => cc(),
      busy_poll_us => integer(macula_dist_busy_poll_us, ?DEFAULT_BUSY_POLL_US, 0, 10000),
      keep_alive_ms => integer(macula_dist_keep_alive_ms, ?DEFAULT_KEEP_ALIVE_MS, 0, 600000),
      %% The relay modes listen on loopback only, for their shim.
      listen => Mode =/= direct orelse boolean(macula_dist_listen, true),
      metrics => metrics()}).

%% In the relay modes the node's own endpoint only talks to the relay shim,
%% over loopback: nothing listens on the network.
bind(dist_relay) -> "127.0.0.1";
bind(relay) -> "127.0.0.1";
bind(direct) -> local_address(macula_dist_bind, string(macula_dist_bind, "::")).

%% The socket binds an IP literal of this host (or a wildcard).
local_address(Key, Text) ->
    case inet:parse_strict_address(Text) of
        {ok, Ip} ->
            Wildcard = Ip =:= {0, 0, 0, 0} orelse Ip =:= {0, 0, 0, 0, 0, 0, 0, 0},
            Wildcard orelse is_local(Ip) orelse
                invalid(Key, Text, "not an address of this host"),
            Text;
        {error, _} ->
            invalid(Key, Text, "expected an IPv4 or IPv6 address (:: or 0.0.0.0 for all)")
    end.

is_local(Ip) ->
    case inet:getifaddrs() of
        {ok, Ifs} -> lists:member(Ip, [A || {_, Opts} <- Ifs, {addr, A} <- Opts]);
        {error, _} -> true  % cannot tell: the bind will say
    end.

%% The directory must exist or be creatable, and hold (or take) the key.
cert_dir() ->
    Dir = case string(macula_dist_cert_dir, default) of
              default -> default_cert_dir();
              Given -> Given
          end,
    Dir =:= "" andalso invalid(macula_dist_cert_dir, Dir, "expected a directory"),
    %% prim_file: at boot the file server does not run yet.
    {ok, Cwd} = prim_file:get_cwd(),
    case existing_parent(filename:absname(Dir, Cwd)) of
        {ok, _, directory} -> Dir;  % the endpoint creates what is missing
        {ok, Part, _} -> invalid(macula_dist_cert_dir, Dir, Part ++ " is not a directory");
        {error, Part, Why} -> invalid(macula_dist_cert_dir, Dir, "cannot use " ++ Part ++ ": " ++
                                          file:format_error(Why))
    end.

%% The longest existing prefix of an absolute path, and its type.
existing_parent(Path) ->
    case prim_file:read_file_info(Path) of
        {ok, Info} -> {ok, Path, element(3, Info)};
        {error, enoent} ->
            case filename:dirname(Path) of
                Path -> {error, Path, enoent};
                Parent -> existing_parent(Parent)
            end;
        {error, Why} -> {error, Path, Why}
    end.

%% A certificate or key file must be readable and hold a PEM block of its
%% kind (GnuTLS alone would only say "The requested data were not
%% available."). Whether the key fits the certificate is the endpoint's
%% check, which names both settings.
pem_file(_Key, "", _Kind) ->
    "";
pem_file(Key, File, Kind) ->
    case read_head(File, ?MAX_PEM_FILE + 1) of
        {ok, Bin} when byte_size(Bin) > ?MAX_PEM_FILE ->
            invalid(Key, File, "larger than 1 MB");
        {ok, Bin} ->
            has_pem(Bin, Kind) orelse invalid(Key, File, pem_expected(Kind)),
            File;
        {error, Why} ->
            invalid(Key, File, "cannot read it: " ++ file:format_error(Why))
    end.

has_pem(Bin, certificate) ->
    binary:match(Bin, <<"-----BEGIN CERTIFICATE-----">>) =/= nomatch;
has_pem(Bin, private_key) ->
    case re:run(Bin, <<"-----BEGIN [A-Z ]*PRIVATE KEY-----">>) of
        {match, _} -> true;
        nomatch -> false
    end.

pem_expected(certificate) -> "no PEM certificate in it (-----BEGIN CERTIFICATE-----)";
pem_expected(private_key) -> "no PEM private key in it (-----BEGIN ... PRIVATE KEY-----)".

cc() ->
    case string(macula_dist_cc, "bbr2") of
        CC when CC =:= "cubic"; CC =:= "reno"; CC =:= "bbr"; CC =:= "bbr2" ->
            list_to_atom(CC);
        Other ->
            invalid(macula_dist_cc, Other, "expected cubic, reno, bbr or bbr2")
    end.

%% A service user may run without $HOME (a release started by init):
%% there is no default then, and the error says which setting to give.
default_cert_dir() ->
    case os:getenv("XDG_DATA_HOME") =/= false orelse os:getenv("HOME") =/= false of
        true -> filename:basedir(user_data, "macula");
        false -> invalid(macula_dist_cert_dir, unset,
                         "no default without $HOME or $XDG_DATA_HOME: give a directory "
                         "(-macula_dist_cert_dir /var/lib/NAME/macula)")
    end.

mode() ->
    case string(macula_dist_mode, "direct") of
        "direct" -> direct;
        "dist_relay" -> dist_relay;
        "relay" -> relay;
        Other -> invalid(macula_dist_mode, Other, "expected direct, dist_relay or relay")
    end.

string(Key, Default) ->
    case lookup(Key) of
        undefined -> Default;
        V when is_list(V) -> V;
        V when is_atom(V) -> atom_to_list(V);
        V when is_binary(V) -> binary_to_list(V);
        V -> invalid(Key, V, "expected a string")
    end.

%% 0: any free port, which peers learn from EPMD (macula_dist_epmd); a
%% node without EPMD could not be found there.
port(Mode) ->
    Why = "expected a port number 1..65535 (or 0, any free port, with EPMD)",
    case integer(macula_dist_port, ?DEFAULT_PORT, 0, 65535, Why) of
        0 when Mode =/= direct -> invalid(macula_dist_port, 0, Why);
        0 -> no_epmd() andalso invalid(macula_dist_port, 0, Why), 0;
        Port -> Port
    end.

no_epmd() ->
    init:get_argument(no_epmd) =/= error.

integer(Key, Default, Min, Max) ->
    integer(Key, Default, Min, Max,
            lists:flatten(io_lib:format("expected an integer ~p..~p", [Min, Max]))).

integer(Key, Default, Min, Max, Why) ->
    case lookup(Key) of
        undefined -> Default;
        I when is_integer(I), I >= Min, I =< Max -> I;
        V when is_list(V) ->
            try list_to_integer(V) of
                I when I >= Min, I =< Max -> I;
                _ -> invalid(Key, V, Why)
            catch error:badarg -> invalid(Key, V, Why)
            end;
        V -> invalid(Key, V, Why)
    end.
