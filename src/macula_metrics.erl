%% @doc The node's metrics (macula:metrics/0) and their Prometheus text
%% form (macula_metrics_http serves it). Built from what the transport
%% already counts: the endpoint's counters (macula_nif:endpoint_info/1),
%% each distribution connection's path figures (macula_nif:conn_info/1),
%% the refusals counted by macula_log_limit and the relay modes' state.
%% Names follow the relay's exporter (relay/server/relay_metrics.cc):
%% `macula_` prefix, `_total` on counters, HELP and TYPE lines.
-module(macula_metrics).

-export([snapshot/0, snapshot/1, render/1]).

%% @doc The figures now. Totals count every connection since the endpoint
%% opened (closed ones included; up to 100 ms behind); `per_connection'
%% holds the distribution connections open now. Without a macula
%% endpoint (distribution off, or another carrier) `endpoint' is `down'
%% and the counters are 0.
-spec snapshot() -> map().
snapshot() ->
    snapshot(infinity).

%% @doc snapshot/0 with at most Timeout ms per call to another process
%% (the endpoint's, the relay modes'): one that does not answer in time
%% exits the caller with `{timeout, _}' rather than be reported as down.
-spec snapshot(timeout()) -> map().
snapshot(T) ->
    Ep = case guarded(fun() -> macula_endpoint:info(T) end) of
             M when is_map(M) -> M;
             _ -> #{}
         end,
    Get = fun(K) -> maps:get(K, Ep, 0) end,
    #{endpoint => case map_size(Ep) of 0 -> down; _ -> up end,
      connections => Get(connections),
      bytes_sent => Get(bytes_sent),
      bytes_received => Get(bytes_received),
      packets_lost => Get(lost_packets),
      migrations => Get(migrations),
      failed_migrations => Get(failed_migrations),
      failed_handshakes => Get(failed_handshakes),
      accepted => Get(accepted),
      dropped_packets => Get(dropped_packets),
      stateless_resets => Get(stateless_resets),
      retries => Get(retries),
      handshakes_refused => refused(),
      per_connection => per_connection(T),
      relays => relays(T),
      priority => priority()}.

refused() ->
    Counts = macula_log_limit:counts(),
    maps:without([failed_handshake], Counts).

%% A process that went away counts as off; one too slow is not hidden.
guarded(F) ->
    try F()
    catch
        exit:{timeout, _} = Why -> exit(Why);
        _:_ -> error
    end.

per_connection(T) ->
    Conns = case guarded(fun() -> macula_endpoint:connections(T) end) of
                L when is_list(L) -> L;
                _ -> []
            end,
    [conn_figures(Node, Info) || {Node, Conn} <- Conns,
                                 Info <- [catch macula_nif:conn_info(Conn)],
                                 is_map(Info)].

conn_figures(Node, I) ->
    #{node => Node, role => maps:get(role, I),
      bytes_sent => maps:get(bytes_sent, I), bytes_received => maps:get(bytes_received, I),
      packets_lost => maps:get(lost_packets, I), srtt_us => maps:get(srtt_us, I),
      min_rtt_us => maps:get(min_rtt_us, I), migrations => maps:get(migrations, I)}.

relays(T) ->
    Rs = case guarded(fun() -> macula_dist_relay:info(T) end) of
             L when is_list(L) -> L;
             _ -> []
         end,
    [#{relay => R, state => S} || #{relay := R, state := S} <- Rs].

priority() ->
    case catch macula_nif:priority_info() of
        #{processes := N, frames := F} -> #{processes => N, frames => F};
        _ -> #{processes => 0, frames => 0}
    end.

%% @doc The Prometheus text exposition format (version 0.0.4) of a
%% snapshot/0.
-spec render(map()) -> binary().
render(S) ->
    unicode:characters_to_binary(families(S)).

families(S) ->
    [metric("macula_endpoint_up", gauge, "1 if the node's QUIC endpoint is open.",
            case maps:get(endpoint, S) of up -> 1; down -> 0 end),
     metric("macula_connections", gauge,
            "QUIC connections open now (distribution, relay tunnels, handshakes).",
            maps:get(connections, S)),
     metric("macula_bytes_sent_total", counter,
            "UDP payload bytes sent, all connections since start.", maps:get(bytes_sent, S)),
     metric("macula_bytes_received_total", counter,
            "UDP payload bytes received, all connections since start.",
            maps:get(bytes_received, S)),
     metric("macula_packets_lost_total", counter,
            "Packets with stream data declared lost (spurious losses included).",
            maps:get(packets_lost, S)),
     metric("macula_migrations_total", counter, "Validated connection path changes.",
            maps:get(migrations, S)),
     metric("macula_failed_migrations_total", counter, "Path validations that failed.",
            maps:get(failed_migrations, S)),
     metric("macula_connections_total", counter, "Connections accepted since start.",
            maps:get(accepted, S)),
     metric("macula_failed_handshakes_total", counter,
            "Peers' connections that ended before their handshake did.",
            maps:get(failed_handshakes, S)),
     labelled("macula_handshakes_refused_total", counter,
              "Connections refused before the peer proved itself, by reason.",
              [{[{reason, R}], N} || {R, N} <- lists:sort(maps:to_list(
                                                             maps:get(handshakes_refused, S)))]),
     metric("macula_udp_dropped_total", counter,
            "UDP datagrams dropped before reaching a connection.",
            maps:get(dropped_packets, S)),
     metric("macula_stateless_resets_total", counter,
            "Stateless resets received (a peer lost its connection).",
            maps:get(stateless_resets, S)),
     metric("macula_retries_total", counter, "QUIC Retry packets sent.", maps:get(retries, S)),
     metric("macula_priority_processes", gauge,
            "Processes marked high priority (macula:set_priority/2).",
            maps:get(processes, maps:get(priority, S))),
     metric("macula_priority_frames_total", counter,
            "Distribution frames sent on priority streams.",
            maps:get(frames, maps:get(priority, S))),
     per_connection_metrics(maps:get(per_connection, S)),
     labelled("macula_relay_state", gauge,
              "Relays of the relay modes: 1 for the relay's current state.",
              [{[{relay, R}, {state, St}], 1} || #{relay := R, state := St} <- maps:get(relays, S)])].

per_connection_metrics(Conns) ->
    L = fun(Key, Scale) ->
                [{[{node, N}], maps:get(Key, C) / Scale} || C = #{node := N} <- Conns]
        end,
    [labelled("macula_connection_bytes_sent_total", counter,
              "UDP payload bytes sent on a distribution connection.", L(bytes_sent, 1)),
     labelled("macula_connection_bytes_received_total", counter,
              "UDP payload bytes received on a distribution connection.", L(bytes_received, 1)),
     labelled("macula_connection_packets_lost_total", counter,
              "Packets declared lost on a distribution connection.", L(packets_lost, 1)),
     labelled("macula_connection_smoothed_rtt_seconds", gauge,
              "Smoothed round-trip time of a distribution connection.", L(srtt_us, 1.0e6)),
     labelled("macula_connection_min_rtt_seconds", gauge,
              "Minimum round-trip time of a distribution connection.", L(min_rtt_us, 1.0e6))].

metric(Name, Type, Help, Value) ->
    labelled(Name, Type, Help, [{[], Value}]).

labelled(Name, Type, Help, Samples) ->
    [family(Name, Type, Help) | [[Name, labels(Ls), $\s, number(V), $\n] || {Ls, V} <- Samples]].

family(Name, Type, Help) ->
    ["# HELP ", Name, $\s, Help, "\n# TYPE ", Name, $\s, atom_to_list(Type), $\n].

labels([]) ->
    [];
labels(Ls) ->
    [${, lists:join($,, [[atom_to_list(K), "=\"", escape(text(V)), $"] || {K, V} <- Ls]), $}].

text(V) when is_atom(V) -> atom_to_list(V);
text(V) when is_list(V) -> V;
text(V) when is_binary(V) -> binary_to_list(V).

%% Label values: backslash, double quote and newline escaped.
escape(S) ->
    lists:flatmap(fun($\\) -> "\\\\";
                     ($") -> "\\\"";
                     ($\n) -> "\\n";
                     (C) -> [C]
                  end, S).

number(V) when is_integer(V) -> integer_to_list(V);
number(V) when is_float(V) -> float_to_list(V, [{decimals, 6}, compact]).
