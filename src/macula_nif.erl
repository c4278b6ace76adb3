%% @doc Erlang side of the distribution binding (dist/nif/macula_nif.cc):
%% the node's QUIC endpoint and its connections. Every function checks its
%% arguments and raises `{badarg, Which}' naming the bad one, then returns
%% at once: the work is done by whichever thread holds the endpoint's loop
%% lock (the I/O thread, or this scheduler if the lock is free). Results
%% that come later arrive as messages:
%%
%%   {macula_accept, EndpointPort, Conn}       to the acceptor (set_acceptor/2)
%%   {macula_handshake_failed, EndpointPort, address(), close_reason()}
%%                                             to the acceptor, for a peer whose
%%                                             handshake did not complete
%%   {macula_connected, Id}                    to the control pid
%%   {macula_ctl, Id, Frame}                   to the control pid
%%   {macula_data, Id, [Frame], Credit}        to the data pid
%%   {macula_writable, Id}                     to the pid whose send/3 got busy
%%   {macula_closed, Id, close_reason()}       to the control and data pids
%%   {macula_migrate_count, Ref, N}, then N times
%%   {macula_migrated, Ref, Id, Result, Local} to the caller of migrate/4
%%
%% A connection closes when its data pid dies or its resource is garbage.
-module(macula_nif).

-export([open_endpoint/1, set_acceptor/2, endpoint_info/1,
         dial/6, attach/3, send/3, tick/1, consumed/2, close/3, authenticated/1, getstat/1,
         conn_id/1, peer_address/1, conn_info/1, migrate/4, proof_frame/4,
         parse_proof_frame/1, check_cookie_proof/5, peer_cert_matches/2, parse_node_name/2,
         set_priority/2, priority/1, priority_info/0]).

-nifs([open_endpoint/1, set_acceptor/2, endpoint_info/1,
       dial/6, attach/3, send/3, tick/1, consumed/2, close/3, authenticated/1, getstat/1,
       conn_id/1, peer_address/1, conn_info/1, migrate/4, proof_frame/4,
       parse_proof_frame/1, check_cookie_proof/5, peer_cert_matches/2, parse_node_name/2,
       set_priority/2, priority/1, priority_info/0]).

-type endpoint() :: reference().
-type conn() :: reference().
-type conn_id() :: non_neg_integer().
%% A binary, or an iolist that becomes one.
-type text() :: iodata().
-type address() :: {IpText :: binary(), inet:port_number()}.
-type send_status() :: ok | busy | closed.
-type role() :: client | server.
%% How a connection ended, as {macula_closed, Id, Reason} reports it.
-type close_reason() :: local_close | idle_timeout | handshake_timeout | unreachable
                      | endpoint_stopped | auth_timeout
                      | {peer_closed | tls_alert | protocol_error, Code :: non_neg_integer(),
                         Text :: binary()}.
-type endpoint_opts() ::
        #{ip => text(), port => 0..65535, accept => 0 | 1,
          trust => cookie | ca | insecure, cc => cubic | reno | bbr | bbr2,
          cert_dir => text(), cacertfile => text(), certfile => text(), keyfile => text(),
          idle_timeout_ms => non_neg_integer(), handshake_timeout_ms => non_neg_integer(),
          send_high_water => non_neg_integer(), send_low_water => non_neg_integer(),
          busy_poll_us => non_neg_integer(),
          auth_timeout_ms => non_neg_integer()}.
-export_type([endpoint/0, conn/0, conn_id/0, address/0, close_reason/0, endpoint_opts/0]).

-define(NIF_LIB, "macula_nif").
-include("macula_nif_load.hrl").

%% @doc Binds the UDP socket (port 0: any free one) and starts the
%% endpoint's I/O thread; with `accept => 0' it only dials. Keys left out
%% take the core's defaults. A dirty I/O call: it may create the node's
%% key and certificate in `cert_dir'. The error text names the cause.
-spec open_endpoint(endpoint_opts()) -> {ok, endpoint()} | {error, binary()}.
open_endpoint(Opts) -> ?NIF([Opts]).

%% @doc `Pid' gets a `{macula_accept, ...}' message for each connection the
%% endpoint accepts from now on; until an acceptor is set they are closed.
-spec set_acceptor(endpoint(), pid()) -> ok.
set_acceptor(Ep, Pid) -> ?NIF([Ep, Pid]).

%% @doc The endpoint's port and counters; `reader_id' names the endpoint
%% to the driver (`open_port({spawn_driver, "macula_drv <reader_id>"}, [])').
-spec endpoint_info(endpoint()) ->
          #{port := inet:port_number(), connections := non_neg_integer(),
            accepted := non_neg_integer(), dropped_packets := non_neg_integer(),
            stateless_resets := non_neg_integer(), trust := cookie | ca | insecure,
            follows_address_changes := boolean(), reader_id := pos_integer(),
            %% admission (transport/admission.h): connections not yet
            %% authenticated, Retry packets sent, Initials with a bad
            %% token, half-open connections displaced by a validated
            %% peer, connections accepted with a valid token
            ignored_unreachable := non_neg_integer(),
            %% peers' connections that ended before their handshake did
            %% (each also a macula_handshake_failed message to the acceptor)
            failed_handshakes := non_neg_integer(),
            half_open := non_neg_integer(), retries := non_neg_integer(),
            bad_tokens := non_neg_integer(), evicted_half_open := non_neg_integer(),
            validated := non_neg_integer(),
            %% every connection's traffic since the endpoint opened, closed
            %% ones included (up to 100 ms behind): UDP payload bytes,
            %% packets declared lost, validated and failed path changes
            bytes_sent := non_neg_integer(), bytes_received := non_neg_integer(),
            lost_packets := non_neg_integer(), migrations := non_neg_integer(),
            failed_migrations := non_neg_integer()}.
endpoint_info(Ep) -> ?NIF([Ep]).

%% @doc Starts a connection to Ip:Port; `Host' is what the peer's
%% certificate must be valid for in CA mode. `{macula_connected, Id}' or
%% `{macula_closed, Id, Reason}' follows. The connection closes when
%% `DataPid' dies.
-spec dial(endpoint(), Ip :: text(), inet:port_number(), Host :: text(),
           ControlPid :: pid(), DataPid :: pid()) -> {ok, conn(), conn_id()}.
dial(Ep, Ip, Port, Host, CtlPid, DataPid) -> ?NIF([Ep, Ip, Port, Host, CtlPid, DataPid]).

%% @doc Gives an accepted connection its control and data pids (once);
%% frames that came before wait for it. It closes when `DataPid' dies.
-spec attach(conn(), ControlPid :: pid(), DataPid :: pid()) -> conn_id().
attach(Conn, CtlPid, DataPid) -> ?NIF([Conn, CtlPid, DataPid]).

%% @doc Queues each element of `Frames' (1..4096 of them) as one frame on
%% the control stream or the data streams. `busy': queued, but the send
%% queue is over its high-water mark; the caller gets `{macula_writable,
%% Id}' once it has drained. `closed': the connection is gone.
-spec send(conn(), control | data, [iodata(), ...]) -> send_status().
send(Conn, Channel, Frames) -> ?NIF([Conn, Channel, Frames]).

%% @doc An empty control frame: a tick that never waits behind data.
-spec tick(conn()) -> send_status().
tick(Conn) -> ?NIF([Conn]).

%% @doc Returns `Credit' bytes (as given by `{macula_data, ...}') to the
%% peer's flow-control window once the frames are delivered.
-spec consumed(conn(), non_neg_integer()) -> ok.
consumed(Conn, Credit) -> ?NIF([Conn, Credit]).

%% @doc Closes the connection, sending the peer application code `Code'
%% and `Reason'.
-spec close(conn(), non_neg_integer(), text()) -> ok.
close(Conn, Code, Reason) -> ?NIF([Conn, Code, Reason]).

%% @doc The peer proved the cookie (and in CA mode its certificate's
%% host): the transport opens its data streams and full windows. Until
%% then it may send only what the proof needs.
-spec authenticated(conn()) -> ok.
authenticated(Conn) -> ?NIF([Conn]).

%% @doc Frames received and sent (dist_util's tick accounting) and bytes
%% still queued.
-spec getstat(conn()) -> {ok, In :: non_neg_integer(), Out :: non_neg_integer(),
                          Queued :: non_neg_integer()}.
getstat(Conn) -> ?NIF([Conn]).

%% @doc The connection's id, the one its messages carry.
-spec conn_id(conn()) -> conn_id().
conn_id(Conn) -> ?NIF([Conn]).

%% @doc The peer's current address.
-spec peer_address(conn()) -> address().
peer_address(Conn) -> ?NIF([Conn]).

%% @doc The connection's path and recovery state (see macula:paths/0);
%% `local' and `remote' are undefined before the first packet.
-spec conn_info(conn()) -> #{id := conn_id(), role := role(),
                             local := address() | undefined,
                             remote := address() | undefined,
                             migrating := boolean(), atom() => non_neg_integer()}.
conn_info(Conn) -> ?NIF([Conn]).

%% @doc Moves the endpoint's client connections to local address `Target'
%% (one of this host's), or with `auto' to the source address the routing
%% table prefers for each peer. `Pid' gets `{macula_migrate_count, Ref,
%% N}', then one `{macula_migrated, Ref, Id, Result, Local}' per connection.
-spec migrate(endpoint(), auto | text(), pid(), reference()) -> ok.
migrate(Ep, Target, Pid, Ref) -> ?NIF([Ep, Target, Pid, Ref]).

%% @doc This side's first control frame: "MCP1", its proof (32 bytes)
%% that it knows `Cookie' (an HMAC of the cookie over this TLS session's
%% exporter value, the role and the node name), then `Node'. Raises
%% `{badarg, conn}' before the TLS handshake is done.
-spec proof_frame(conn(), role(), Node :: text(), Cookie :: text()) -> binary().
proof_frame(Conn, Role, Node, Cookie) -> ?NIF([Conn, Role, Node, Cookie]).

%% @doc The peer's first control frame, from a peer that has proven
%% nothing yet: its proof and its node name, or `error' unless it has the
%% tag, a whole proof and a valid node name (dist/cookie_proof.h).
-spec parse_proof_frame(binary()) -> {ok, Proof :: binary(), Node :: binary()} | error.
parse_proof_frame(Frame) -> ?NIF([Frame]).

%% @doc Whether `Proof' is the proof the peer in `Role' named `Node' must
%% send if it knows `Cookie' (compared in constant time).
-spec check_cookie_proof(conn(), role(), Node :: text(), Cookie :: text(), binary()) ->
          boolean().
check_cookie_proof(Conn, Role, Node, Cookie, Proof) -> ?NIF([Conn, Role, Node, Cookie, Proof]).

%% @doc Whether the peer's certificate is valid for `Host' (CA mode).
-spec peer_cert_matches(conn(), Host :: text()) -> boolean().
peer_cert_matches(Conn, Host) -> ?NIF([Conn, Host]).

%% @doc Parses `name@host' or `port@host' (the port used when the name is
%% not a number is `DefaultPort'); the error text says what is wrong.
-spec parse_node_name(text(), inet:port_number()) ->
          {ok, {Name :: binary(), Host :: binary(), inet:port_number(), ipv4 | ipv6 | dns}}
        | {error, binary()}.
parse_node_name(Name, DefaultPort) -> ?NIF([Name, DefaultPort]).

%% @doc Marks local process `Pid' high priority (its distribution signals
%% go on each connection's priority stream) or back to normal. The mark
%% goes when the process exits; at most `limit' (priority_info/0)
%% processes are marked at a time.
-spec set_priority(pid(), high | normal) -> ok | {error, too_many | not_alive}.
set_priority(Pid, Priority) -> ?NIF([Pid, Priority]).

%% @doc Whether local process `Pid' is marked high priority.
-spec priority(pid()) -> high | normal.
priority(Pid) -> ?NIF([Pid]).

%% @doc Processes marked high priority now, the most there may be, and
%% the frames sent on priority streams so far (marked senders' and OTP 28
%% priority signals).
-spec priority_info() -> #{processes := non_neg_integer(), limit := pos_integer(),
                           frames := non_neg_integer()}.
priority_info() -> ?NIF([]).
