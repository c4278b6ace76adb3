%% @doc Operator API of macula.
-module(macula).

-export([info/0, paths/0, migrate/0, migrate/1, join_dist_relay/1, join_mesh/1, relays/0,
         relay_nodes/0, discovered/0, set_priority/2, priority/1, metrics/0]).

-define(MIGRATE_TIMEOUT, 30000).

%% @doc The node's QUIC endpoint (port, trust mode, connection count,
%% packets dropped, whether it follows address changes); under `paths`,
%% the path of each distribution connection (see paths/0); under
%% `refused`, connections refused before the peer proved anything, by
%% reason (`bad_cookie`, `bad_proof_frame`, `bad_cert_host`; and
%% `insecure_peer`, peers let in unverified in insecure mode). Only the
%% first few of these are logged in full in each 10 s (macula_log_limit).
-spec info() -> map() | undefined.
info() ->
    case macula_endpoint:info() of
        undefined -> undefined;
        Info -> Info#{paths => paths(), refused => macula_log_limit:counts()}
    end.

%% @doc One map per macula distribution connection: `node`, `role`
%% (client: we dialled; only those can migrate), the current path
%% (`local`, `remote` as {Ip, Port}), `migrations` (validated path
%% changes: ours, or the peer's as seen by the server, NAT rebinding
%% included), `failed_migrations`, `migrating`, RTT in microseconds
%% (`srtt_us`, `min_rtt_us`, `latest_rtt_us`), `lost_packets`,
%% `pto_count`, `cwnd`, `bytes_sent` and `bytes_received` (UDP payload).
-spec paths() -> [map()].
paths() ->
    [Info#{node => Node} || {Node, Conn} <- macula_endpoint:connections(),
                            Info <- [catch macula_nif:conn_info(Conn)],
                            is_map(Info)].

%% @doc Moves every connection this node dialled to the source address the
%% routing table now prefers for its peer (the node also does this by
%% itself when its addresses or routes change). See migrate/1.
-spec migrate() -> {ok, [map()]} | {error, term()}.
migrate() ->
    migrate(auto).

%% @doc Moves every connection this node dialled to local address `Ip`
%% (a tuple or a string; it must be one of this host's addresses), or with
%% `auto` as migrate/0. Each move is validated first (the peer must answer
%% on the new path); until then, and for good if it does not, the old path
%% carries the traffic. Returns once every connection has an outcome (a
%% dead path takes several seconds), one map per connection: `node`,
%% `result` (`migrated`, `same_path`, `path_validation_failed`,
%% `not_local`, `no_route`, `in_progress`, `no_spare_connection_id`,
%% `bound_socket` when macula_dist_bind is not a wildcard, ...) and
%% `local`, the path's local address afterwards. After a move to `Ip`, the
%% node's own checks on address and route changes leave the connections
%% there while `Ip` exists; `auto` hands them back. Connections this node
%% accepted cannot migrate (QUIC forbids the server role to); they follow
%% their peer when it moves.
-spec migrate(auto | inet:ip_address() | string()) -> {ok, [map()]} | {error, term()}.
migrate(Target) ->
    case target(Target) of
        error -> {error, {invalid_address, Target}};
        T -> run_migration(T)
    end.

target(auto) -> auto;
target(Ip) when is_tuple(Ip) ->
    case inet:ntoa(Ip) of
        {error, _} -> error;
        S -> list_to_binary(S)
    end;
target(Ip) when is_list(Ip); is_binary(Ip) ->
    Text = unicode:characters_to_list(Ip),
    case is_list(Text) andalso inet:parse_strict_address(Text) of
        {ok, _} -> list_to_binary(Text);
        _ -> error
    end;
target(_) -> error.

run_migration(Target) ->
    Ref = make_ref(),
    case macula_endpoint:migrate(Target, Ref) of
        ok -> migration_results(Ref);
        {error, _} = Error -> Error
    end.

migration_results(Ref) ->
    Deadline = erlang:monotonic_time(millisecond) + ?MIGRATE_TIMEOUT,
    receive
        {macula_migrate_count, Ref, N} ->
            Nodes = nodes_by_conn_id(),
            {ok, [R#{node => maps:get(Id, Nodes, undefined)}
                  || {Id, R} <- collect(Ref, N, Deadline)]}
    after ?MIGRATE_TIMEOUT ->
            {error, timeout}
    end.

nodes_by_conn_id() ->
    maps:from_list([{macula_nif:conn_id(C), Node} || {Node, C} <- macula_endpoint:connections()]).

collect(_Ref, 0, _Deadline) ->
    [];
collect(Ref, N, Deadline) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {macula_migrated, Ref, Id, Result, Local} ->
            [{Id, #{result => Result, local => Local}} | collect(Ref, N - 1, Deadline)]
    after Left ->
            [{undefined, #{result => timeout}}]
    end.


%% @doc dist_relay mode: adds relays at run time ("host:port", comma-
%% separated, port 4434 if left out). The node registers there under its
%% node name and can then reach, and be reached by, the realm's nodes.
-spec join_dist_relay(string() | binary()) -> ok | {error, term()}.
join_dist_relay(Relays) ->
    macula_dist_relay:join(dist_relay, Relays).

%% @doc relay mode: adds relays of the mesh at run time (same format). The
%% node registers at one of them at a time, reaches the nodes at every
%% relay of the mesh, and fails over to the next one when it loses it.
-spec join_mesh(string() | binary()) -> ok | {error, term()}.
join_mesh(Relays) ->
    macula_dist_relay:join(relay, Relays).

%% @doc The relay modes: each relay, its state and its packet counters.
-spec relays() -> [map()].
relays() ->
    macula_dist_relay:info().

%% @doc The relay modes: the nodes of the realm online at this node's
%% relays (and at the relays linked to them), each with the relays that
%% hold it, asked now over the authenticated relay connections (at most
%% 5 s). Names are binaries: they come from the realm, not from this node.
-spec relay_nodes() -> [#{node := binary(), relays := [binary()]}].
relay_nodes() ->
    macula_dist_relay:online_nodes().

%% @doc What the discovery sources know (static list, hosts file, DNS
%% SRV, mDNS), one map per node and source: `node' (binary), `source'
%% (`static', `dns', `mdns'), `address', `port', `age_ms' (time since the
%% source last confirmed it). Empty when no source is set.
-spec discovered() -> [map()].
discovered() ->
    macula_discovery:discovered().

%% @doc Marks a local process high priority, or back to normal: the
%% distribution signals it sends (messages, links, monitors, exits...) go
%% on each connection's priority stream, which is written before the
%% streams of other processes (bulk slows down under priority load, it
%% never stops). Its signals keep their order through a change: they
%% move to the other stream only once the peer acknowledged those sent
%% before. The mark goes when the process exits; at most 4096 processes
%% are marked at a time (`{error, too_many}`). Signals that OTP 28 sends
%% with priority (EEP 76, `erlang:send(Alias, Msg, [priority])`) take
%% the priority stream too, marked or not.
-spec set_priority(pid(), high | normal) -> ok | {error, too_many | not_alive}.
set_priority(Pid, Priority) when is_pid(Pid), node(Pid) =:= node(),
                                 (Priority =:= high orelse Priority =:= normal) ->
    macula_nif:set_priority(Pid, Priority);
set_priority(Pid, Priority) when is_pid(Pid), node(Pid) =:= node() ->
    error({badarg, {priority, Priority}});
set_priority(Pid, _Priority) ->
    error({badarg, {not_a_local_pid, Pid}}).

%% @doc `high` if the local process is marked by set_priority/2.
-spec priority(pid()) -> high | normal.
priority(Pid) when is_pid(Pid), node(Pid) =:= node() ->
    macula_nif:priority(Pid);
priority(Pid) ->
    error({badarg, {not_a_local_pid, Pid}}).

%% @doc The node's figures: `connections` (QUIC connections open now),
%% since the endpoint opened (closed connections included, up to 100 ms
%% behind) `bytes_sent`, `bytes_received` (UDP payload), `packets_lost`,
%% `migrations`, `failed_migrations`, `accepted`, `failed_handshakes`,
%% `dropped_packets`, `stateless_resets`, `retries`; `handshakes_refused`
%% by reason (as info/0's `refused`); `per_connection`, one map per
%% distribution connection open now (`node`, `role`, `bytes_sent`,
%% `bytes_received`, `packets_lost`, `srtt_us`, `min_rtt_us`,
%% `migrations`); `relays` (the relay modes: each relay and its state);
%% `priority` (processes marked by set_priority/2, frames sent on
%% priority streams); `endpoint`, `down` when this node has no macula
%% endpoint (then the counters are 0). The Prometheus endpoint
%% (`macula_metrics_port`) serves the same figures.
-spec metrics() -> map().
metrics() ->
    macula_metrics:snapshot().
