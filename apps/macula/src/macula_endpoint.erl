%% @doc The node's single QUIC endpoint (one UDP port, one I/O thread),
%% kept in a persistent term for the life of the node.
-module(macula_endpoint).

-export([listen/1, get/0, info/0]).

-define(KEY, {?MODULE, endpoint}).

%% @doc Opens the endpoint on the configured address and `Port`, accepting
%% peers. Called from macula_dist:listen at distribution start.
-spec listen(1..65535) -> {ok, reference()} | {error, string()}.
listen(Port) ->
    open(Port, true).

%% @doc The endpoint; a node that never listened gets a dial-only endpoint
%% on an ephemeral port.
-spec get() -> reference().
get() ->
    case persistent_term:get(?KEY, undefined) of
        undefined ->
            {ok, Ep} = open(0, false),
            Ep;
        Ep ->
            Ep
    end.

info() ->
    case persistent_term:get(?KEY, undefined) of
        undefined -> undefined;
        Ep -> macula_nif:endpoint_info(Ep)
    end.

%% A short-lived process holding a registered name serialises concurrent
%% first use (the caller may be net_kernel, which has a name already).
open(Port, Accept) ->
    Caller = self(),
    Ref = make_ref(),
    {_, MRef} = spawn_monitor(
                  fun() ->
                          Reply = try register(macula_endpoint_opener, self()) of
                                      true -> open_locked(Port, Accept)
                                  catch error:badarg -> retry
                                  end,
                          Caller ! {Ref, Reply}
                  end),
    receive
        {Ref, retry} ->
            erlang:demonitor(MRef, [flush]),
            timer:sleep(1),
            open(Port, Accept);
        {Ref, Reply} ->
            erlang:demonitor(MRef, [flush]),
            Reply;
        {'DOWN', MRef, process, _, Reason} ->
            {error, lists:flatten(io_lib:format("endpoint open failed: ~p", [Reason]))}
    end.

open_locked(Port, Accept) ->
    case persistent_term:get(?KEY, undefined) of
        undefined ->
            Config = macula_config:get(),
            Opts = #{ip => maps:get(bind, Config),
                     port => Port,
                     accept => bool_int(Accept),
                     trust => maps:get(trust, Config),
                     cert_dir => maps:get(cert_dir, Config),
                     cacertfile => maps:get(cacertfile, Config),
                     certfile => maps:get(certfile, Config),
                     keyfile => maps:get(keyfile, Config),
                     cc => maps:get(cc, Config),
                     busy_poll_us => maps:get(busy_poll_us, Config)},
            case macula_nif:open_endpoint(Opts) of
                {ok, Ep} ->
                    start_reader(Ep),
                    persistent_term:put(?KEY, Ep),
                    {ok, Ep};
                {error, Text} ->
                    logger:error("macula: ~s", [Text]),
                    {error, binary_to_list(Text)}
            end;
        Ep ->
            {ok, Ep}
    end.

bool_int(true) -> 1;
bool_int(false) -> 0.

%% The schedulers poll the endpoint's socket and read it themselves, like
%% their own sockets (dist/nif/macula_drv.cc): no thread hand-off on a round
%% trip. The port lives in a process of its own for the node's life (a
%% driver stays loaded while the process that loaded it lives); if it ever
%% goes, the I/O thread reads again.
start_reader(Ep) ->
    Id = maps:get(reader_id, macula_nif:endpoint_info(Ep)),
    Priv = filename:join([filename:dirname(code:which(macula_nif)), "..", "priv"]),
    Caller = self(),
    Pid = spawn(fun() ->
                        Result = case erl_ddll:load_driver(Priv, "macula_nif") of
                                     ok -> open_reader(Id);
                                     {error, E} -> {error, erl_ddll:format_error(E)}
                                 end,
                        Caller ! {self(), Result},
                        receive after infinity -> ok end
                end),
    receive
        {Pid, ok} ->
            register(macula_endpoint_reader, Pid);
        {Pid, {error, Why}} ->
            exit(Pid, kill),
            logger:warning("macula: the I/O thread reads the socket (~p)", [Why])
    end.

open_reader(Id) ->
    try open_port({spawn_driver, "macula_nif " ++ integer_to_list(Id)}, []) of
        _Port -> ok
    catch error:Why -> {error, Why}
    end.
