%% @doc A connection's input process: receives the data frames the I/O
%% thread delivers and passes them to the VM, then returns the receive
%% credit so the peer may send more. Frames that arrive before the
%% handshake completes wait in order.
-module(macula_dist_input).

-export([start_link/0]).

-spec start_link() -> pid().
start_link() ->
    spawn_opt(fun() -> wait_handshake([]) end, [link, {priority, max}]).

wait_handshake(Early) ->
    receive
        {handshake_complete, Conn, DHandle} ->
            [deliver(Conn, DHandle, Frames, Credit) || {Frames, Credit} <- lists:reverse(Early)],
            loop(Conn, DHandle);
        {macula_data, _Id, Frames, Credit} ->
            wait_handshake([{Frames, Credit} | Early]);
        {macula_closed, _Id, Reason} ->
            exit({shutdown, Reason})
    end.

loop(Conn, DHandle) ->
    receive
        {macula_data, _Id, Frames, Credit} ->
            deliver(Conn, DHandle, Frames, Credit),
            loop(Conn, DHandle);
        {macula_closed, _Id, Reason} ->
            %% The reason every process of the connection exits with, and
            %% so the nodedown reason: the one inet_tcp_dist gives for a
            %% closed socket, whatever QUIC said.
            logger:debug("macula: connection closed: ~p", [Reason]),
            exit(connection_closed)
    end.

deliver(Conn, DHandle, Frames, Credit) ->
    try put_all(DHandle, Frames)
    catch error:notsup ->
        %% The VM took the connection down (disconnect) while frames were
        %% on their way: nothing to deliver them to.
        exit({shutdown, connection_closed})
    end,
    macula_nif:consumed(Conn, Credit).

put_all(_DHandle, []) ->
    ok;
put_all(DHandle, [Frame | Rest]) ->
    erlang:dist_ctrl_put_data(DHandle, Frame),
    put_all(DHandle, Rest).
