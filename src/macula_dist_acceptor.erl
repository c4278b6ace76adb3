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
            loop(Kernel)
    end.

hand_over(Kernel) ->
    receive
        {Kernel, controller, Pid} ->
            Pid ! {self(), controller};
        {Kernel, unsupported_protocol} ->
            exit(unsupported_protocol)
    end.
