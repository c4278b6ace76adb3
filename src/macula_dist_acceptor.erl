%% @doc The accept loop: hands each connection the endpoint accepted to
%% net_kernel, which starts its handshake (macula_dist:accept_connection).
-module(macula_dist_acceptor).

-export([start/2]).

-spec start(reference(), pid()) -> pid().
start(Ep, Kernel) ->
    spawn_opt(fun() -> init(Ep, Kernel) end, [link, {priority, max}]).

init(Ep, Kernel) ->
    ok = macula_nif:set_acceptor(Ep, self()),
    loop(Kernel).

loop(Kernel) ->
    receive
        {macula_accept, _Port, Conn} ->
            Kernel ! {accept, self(), Conn, inet, macula},
            hand_over(Kernel),
            loop(Kernel);
        {macula_handshake_failed, _Port, {Ip, Port}, Why} ->
            macula_log_limit:event(failed_handshake, "macula: handshake from ~s:~b failed: ~s",
                                   [Ip, Port, why(Why)]),
            loop(Kernel)
    end.

why({tls_alert, Code, Text}) -> io_lib:format("TLS alert ~b (~s)", [Code, Text]);
why({peer_closed, Code, Text}) -> io_lib:format("the peer closed it (~b ~s)", [Code, Text]);
why({protocol_error, Code, Text}) -> io_lib:format("protocol error ~b (~s)", [Code, Text]);
why(Other) -> atom_to_list(Other).

hand_over(Kernel) ->
    receive
        {Kernel, controller, Pid} ->
            Pid ! {self(), controller};
        {Kernel, unsupported_protocol} ->
            exit(unsupported_protocol)
    end.
