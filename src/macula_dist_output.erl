%% @doc A connection's output process, the distribution controller the VM
%% knows: it drains the VM's distribution queue into the connection's send
%% queue, many frames per NIF call. When the send queue is full it stops
%% draining until the I/O thread says it is writable again, so the VM's
%% buffer fills and senders see busy_dist_port instead of memory growing.
%%
%% It also answers the test hook of inet_tls_dist and OTP's gen_tcp_dist
%% example, which OTP's distribution_SUITE uses to inject hand-built
%% frames: `{send, From, Ref, IoData}` sends IoData as one distribution
%% frame, routed like every other, and replies `From ! {Ref, ok}`.
-module(macula_dist_output).

-export([start_link/1]).

-define(MAX_BATCH_FRAMES, 256).
-define(MAX_BATCH_BYTES, 4 * 1024 * 1024).

-spec start_link(pid()) -> pid().
start_link(Input) ->
    spawn_opt(fun() -> init(Input) end, [link, {priority, max}]).

init(Input) ->
    receive
        {handshake_complete, Conn, DHandle} ->
            erlang:dist_ctrl_input_handler(DHandle, Input),
            erlang:dist_ctrl_set_opt(DHandle, get_size, true),
            Input ! {handshake_complete, Conn, DHandle},
            drain(Conn, DHandle)
    end.

%% Sends everything the VM has queued, then waits for more.
drain(Conn, DHandle) ->
    case collect(DHandle, ?MAX_BATCH_FRAMES, ?MAX_BATCH_BYTES, []) of
        [] ->
            erlang:dist_ctrl_get_data_notification(DHandle),
            receive
                dist_data -> drain(Conn, DHandle);
                {send, From, Ref, Data} -> inject(Conn, DHandle, From, Ref, Data)
            end;
        Frames ->
            case macula_nif:send(Conn, data, Frames) of
                ok -> drain(Conn, DHandle);
                busy -> wait_writable(Conn, DHandle);
                closed -> exit(connection_closed)
            end
    end.

collect(_DHandle, 0, _Bytes, Acc) ->
    lists:reverse(Acc);
collect(_DHandle, _N, Bytes, Acc) when Bytes =< 0 ->
    lists:reverse(Acc);
collect(DHandle, N, Bytes, Acc) ->
    case erlang:dist_ctrl_get_data(DHandle) of
        none -> lists:reverse(Acc);
        {Size, Data} -> collect(DHandle, N - 1, Bytes - Size, [Data | Acc])
    end.

wait_writable(Conn, DHandle) ->
    Id = macula_nif:conn_id(Conn),
    receive
        {macula_writable, Id} -> drain(Conn, DHandle)
    end.

%% The frame goes behind what the VM queued before it: a full send queue
%% holds it back like any other frame, so it is never refused as busy.
inject(Conn, DHandle, From, Ref, Data) ->
    case macula_nif:send(Conn, data, [Data]) of
        closed ->
            From ! {Ref, {error, closed}},
            exit(connection_closed);
        Status ->
            From ! {Ref, ok},
            case Status of
                ok -> drain(Conn, DHandle);
                busy -> wait_writable(Conn, DHandle)
            end
    end.
