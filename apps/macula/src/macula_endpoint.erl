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
