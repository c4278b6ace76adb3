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
    uses_atom_cache(Frame) andalso corrupt_header(Frame),
    erlang:dist_ctrl_put_data(DHandle, Frame),
    put_all(DHandle, Rest).

%% Atom cache references in a distribution header. The handshake turned
%% the atom cache off, so the VM keeps no cache for this connection, and
%% erts 13 would write through the missing cache (a crash of the whole
%% VM) instead of refusing the header. Only a broken or hostile peer
%% sends them.
uses_atom_cache(<<131, $D, N, _/binary>>) -> N =/= 0;
uses_atom_cache(<<131, $E, _Seq:64, _Frag:64, N, _/binary>>) -> N =/= 0;
uses_atom_cache(_) -> false.

%% What the VM does with a header it cannot use: log it and kill the
%% connection; `killed` is the nodedown reason it gives then.
corrupt_header(Frame) ->
    Head = binary:part(Frame, 0, min(byte_size(Frame), 32)),
    logger:warning("macula: corrupted distribution header (atom cache references "
                   "on a connection without the atom cache): ~w...", [Head]),
    exit(killed).
