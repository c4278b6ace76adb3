%% @doc What makes macula a drop-in for inet_tcp_dist beyond message
%% passing: the distribution controller's test hook (hand-built frames, as
%% OTP's distribution_SUITE injects them; a malformed one must take the
%% connection down with the nodedown reasons inet_tcp_dist gives, run in
%% the same suite for comparison), dynamic node names (`undefined@Host`,
%% the name assigned by the accepting node and bound by the cookie proof),
%% `-dist_listen false`, and EPMD as the port directory for `name@host`
%% nodes with `macula_dist_port 0`.
-module(macula_compat_SUITE).

-include_lib("common_test/include/ct.hrl").

-export([all/0, groups/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_group/2, end_per_group/2, init_per_testcase/2,
         end_per_testcase/2]).
-export([malformed_frame/1, hook_frame_delivered/1, dynamic_name/1,
         dynamic_name_wrong_cookie/1, dist_listen_false/1, epmd_ports/1]).
%% run on the peers
-export([inject/2, bad_frame/1, watch_reason/1, wait_reason/2, hook_sink/1]).

-define(FIRST_PORT, 15600).
-define(HOST, "127.0.0.1").

suite() ->
    [{timetrap, {minutes, 2}}].

all() ->
    [{group, macula}, {group, inet_tcp}, {group, macula_only}].

groups() ->
    [{macula, [], hook_cases()},
     {inet_tcp, [], hook_cases()},
     {macula_only, [], [dynamic_name, dynamic_name_wrong_cookie,
                        dist_listen_false, epmd_ports]}].

hook_cases() ->
    [malformed_frame, hook_frame_delivered].

init_per_suite(Config) ->
    ok = ensure_epmd(),
    macula_ct:init_suite(Config, ?FIRST_PORT).

end_per_suite(Config) ->
    macula_ct:end_suite(Config).

init_per_group(inet_tcp, Config) ->
    [{proto, inet_tcp} | Config];
init_per_group(_, Config) ->
    [{proto, macula} | Config].

end_per_group(_, _Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    Config.

end_per_testcase(_Case, _Config) ->
    macula_ct:stop_all().

ensure_epmd() ->
    case erl_epmd:names(?HOST) of
        {ok, _} -> ok;
        _ ->
            _ = os:cmd("epmd -daemon"),
            macula_ct:poll(fun() -> element(1, erl_epmd:names(?HOST)) =:= ok end,
                           5000, epmd_not_started)
    end.

%%% ------------------------------------------------------------------
%%% Cases

%% Malformed frames written through the controller, as OTP's
%% distribution_SUITE writes them: a distribution header that claims 255
%% atom cache references and has none (send_bad_dhdr), then a header with
%% three atom cache entries followed by a control message that refers to
%% entry 137 (send_bad_ctl). The receiving VM kills the connection. Both
%% ends must see what inet_tcp_dist gives (the offender connection_closed,
%% the victim killed), the carrier must survive it, and the two nodes must
%% connect again afterwards.
malformed_frame(Config) ->
    {Offender, NO} = start(Config, #{}),
    {Victim, NV} = start(Config, #{}),
    [begin
         pong = peer:call(Victim, net_adm, ping, [NO], 30000),
         WO = peer:call(Offender, ?MODULE, watch_reason, [NV]),
         WV = peer:call(Victim, ?MODULE, watch_reason, [NO]),
         Frame = peer:call(Offender, ?MODULE, bad_frame, [Kind]),
         ok = peer:call(Offender, ?MODULE, inject, [NV, Frame], 10000),
         {nodedown, ReasonO} = peer:call(Offender, ?MODULE, wait_reason, [WO, 10000], 15000),
         {nodedown, ReasonV} = peer:call(Victim, ?MODULE, wait_reason, [WV, 10000], 15000),
         ct:pal("~p, ~p: nodedown reasons: offender ~p, victim ~p",
                [?config(proto, Config), Kind, ReasonO, ReasonV]),
         {Kind, connection_closed, killed} = {Kind, ReasonO, ReasonV}
     end || Kind <- [bad_header, bad_atom_cache_ref]],
    pong = peer:call(Offender, net_adm, ping, [NV], 30000),
    ok.

%% A well-formed frame written through the hook arrives like any message
%% (a REG_SEND from the offender's process to a registered name), and
%% the controller answers `{Ref, ok}` (the hook's contract).
hook_frame_delivered(Config) ->
    {A, _NA} = start(Config, #{}),
    {B, NB} = start(Config, #{}),
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    Msg = {hello_through_the_hook, 42},
    Frame = peer:call(A, erlang, apply,
                      [fun() ->
                               Ctl = term_to_binary({6, self(), '', ct_hook_sink}),
                               <<131, C/binary>> = Ctl,
                               <<131, M/binary>> = term_to_binary(Msg),
                               [131, $D, 0, C, M]
                       end, []]),
    Sink = peer:call(B, erlang, apply,
                     [fun() ->
                              Parent = self(),
                              P = spawn(fun() -> hook_sink(Parent) end),
                              receive {P, registered} -> P end
                      end, []]),
    ok = peer:call(A, ?MODULE, inject, [NB, Frame], 10000),
    {got, Msg} = peer:call(B, ?MODULE, wait_reason, [Sink, 10000], 15000),
    ok.

%% Keeps the first message it gets until asked for it (wait_reason/2).
hook_sink(Parent) ->
    register(ct_hook_sink, self()),
    Parent ! {self(), registered},
    receive
        {get, From} ->
            receive M -> From ! {self(), {got, M}}
            after 10000 -> From ! {self(), nothing}
            end;
        M ->
            receive {get, From} -> From ! {self(), {got, M}} end
    after 20000 -> exit(nothing)
    end.

%% `-name undefined@127.0.0.1`: the node has no name until it connects;
%% the accepting node names it, on the host it proved, and it is hidden.
dynamic_name(Config) ->
    {S, NS} = start(Config, #{}),
    {D, _} = start(Config, #{name => "undefined"}),
    nonode@nohost = peer:call(D, erlang, node, []),
    true = peer:call(D, net_kernel, connect_node, [NS], 30000),
    Named = peer:call(D, erlang, node, []),
    ct:pal("dynamic node named ~p", [Named]),
    [Name, ?HOST] = string:split(atom_to_list(Named), "@"),
    true = Name =/= "undefined" andalso Name =/= "",
    [Named] = peer:call(S, erlang, nodes, [hidden]),
    [] = peer:call(S, erlang, nodes, []),
    %% both ways over the connection the dynamic node made
    Named = peer:call(S, rpc, call, [Named, erlang, node, []], 15000),
    NS = peer:call(D, rpc, call, [NS, erlang, node, []], 15000),
    ok.

%% A dynamic node without the cookie gets no name and no connection.
dynamic_name_wrong_cookie(Config) ->
    {_S, NS} = start(Config, #{}),
    {D, _} = start(Config, #{name => "undefined", cookie => "not_the_cookie"}),
    false = peer:call(D, net_kernel, connect_node, [NS], 30000),
    nonode@nohost = peer:call(D, erlang, node, []),
    ok.

%% `-dist_listen false`: the node dials but accepts nothing, and is hidden.
dist_listen_false(Config) ->
    {S, NS} = start(Config, #{}),
    Port = macula_ct:next_port(Config),
    NameD = integer_to_list(Port),
    {D, ND} = start(Config, #{name => NameD, args => ["-dist_listen", "false"]}),
    pong = peer:call(D, net_adm, ping, [NS], 30000),
    [ND] = peer:call(S, erlang, nodes, [hidden]),
    %% nothing listens on the port of its name: a third node cannot dial it
    true = macula_ct_port_free(Port),
    {T, _} = start(Config, #{}),
    pang = peer:call(T, net_adm, ping, [ND], 30000),
    ok.

%% With EPMD and `macula_dist_port 0`, `name@host` nodes each take a free
%% UDP port, register it with EPMD, and find each other there.
epmd_ports(Config) ->
    Args = ["-proto_dist", "macula", "-macula_dist_port", "0"],
    Uniq = integer_to_list(erlang:unique_integer([positive])),
    {A, NA} = start(Config, #{proto => inet_tcp, name => "epa" ++ Uniq, args => Args}),
    {B, NB} = start(Config, #{proto => inet_tcp, name => "epb" ++ Uniq, args => Args}),
    pong = peer:call(A, net_adm, ping, [NB], 30000),
    [NA] = peer:call(B, erlang, nodes, []),
    {ok, Names} = erl_epmd:names(?HOST),
    PortA = proplists:get_value("epa" ++ Uniq, Names),
    PortB = proplists:get_value("epb" ++ Uniq, Names),
    true = is_integer(PortA) andalso is_integer(PortB) andalso PortA =/= PortB,
    %% the registered port is the node's UDP port
    PortA = maps:get(port, peer:call(A, macula, info, [])),
    ok.

%%% ------------------------------------------------------------------
%%% Helpers

start(Config, Opts) ->
    macula_ct:start_node(Config, Opts).

macula_ct_port_free(Port) ->
    case gen_udp:open(Port, [inet]) of
        {ok, S} -> gen_udp:close(S), true;
        _ -> false
    end.

%%% ------------------------------------------------------------------
%%% Peer side

%% Writes Data through the controller of the connection to Node, the way
%% OTP's distribution_SUITE does: port_command for a port controller
%% (inet_tcp_dist), the `{send, From, Ref, Data}` hook for a process.
inject(Node, Data) ->
    case lists:keyfind(Node, 1, erlang:system_info(dist_ctrl)) of
        {Node, Port} when is_port(Port) ->
            true = port_command(Port, Data),
            ok;
        {Node, Pid} when is_pid(Pid) ->
            Ref = make_ref(),
            Pid ! {send, self(), Ref, Data},
            receive {Ref, Res} -> Res
            after 5000 -> {error, no_reply}
            end;
        false ->
            {error, not_connected}
    end.

bad_frame(bad_header) ->
    [131, $D, 255];
bad_frame(bad_atom_cache_ref) ->
    <<131, Replace/binary>> = term_to_binary(replace),
    <<131, Ctl/binary>> = term_to_binary({6, self(), '', replace}),
    Begin = byte_size(Ctl) - byte_size(Replace),
    <<CtlBegin:Begin/binary, Replace/binary>> = Ctl,
    <<131, Msg/binary>> = term_to_binary({a, message}),
    A1 = <<"fake header atom 1">>, A2 = <<"atom 2">>, A3 = <<"atom 3">>,
    [131, $D, 3, 16#88, 16#08,
     0, byte_size(A1), A1, 1, byte_size(A2), A2, 2, byte_size(A3), A3,
     CtlBegin, $R, 137, Msg].

%% A process that reports the first nodedown of Node with its reason.
watch_reason(Node) ->
    Parent = self(),
    W = spawn(fun() ->
                      ok = net_kernel:monitor_nodes(true, [nodedown_reason]),
                      Parent ! {self(), watching},
                      receive
                          {nodedown, Node, Info} ->
                              R = proplists:get_value(nodedown_reason, Info),
                              receive {get, From} -> From ! {self(), {nodedown, R}} end
                      end
              end),
    receive {W, watching} -> W end.

wait_reason(W, Timeout) ->
    W ! {get, self()},
    receive {W, Res} -> Res
    after Timeout -> timeout
    end.
