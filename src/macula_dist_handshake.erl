%% @doc One distribution connection's handshake process. It dials or
%% accepts the QUIC connection, proves the cookie over the TLS session
%% (a man in the middle cannot), runs dist_util's handshake on the control
%% stream and then stays as dist_util's tick loop (con_loop) for the life
%% of the connection. The input and output processes are linked to it:
%% if any of the three dies, the connection goes down.
-module(macula_dist_handshake).

-export([setup/5, accept/6]).
%% dist_util callbacks
-export([tick/1, getstat/1, setopts/2, getopts/2, handshake_complete/3]).

-include_lib("kernel/include/dist.hrl").
-include_lib("kernel/include/dist_util.hrl").
-include_lib("kernel/include/net_address.hrl").
-include("macula_dist.hrl").

%% @doc Starts the handshake of an outgoing connection to `Node`.
-spec setup(pid(), node(), atom(), node(), non_neg_integer()) -> pid().
setup(Kernel, Node, Type, MyNode, SetupTime) ->
    spawn_opt(fun() -> do_setup(Kernel, Node, Type, MyNode, SetupTime) end,
              [link, {priority, max}]).

%% @doc Starts the handshake of a connection the acceptor got.
-spec accept(pid(), pid(), reference(), node(), list(), non_neg_integer()) -> pid().
accept(Kernel, AcceptPid, Conn, MyNode, Allowed, SetupTime) ->
    spawn_opt(fun() -> do_accept(Kernel, AcceptPid, Conn, MyNode, Allowed, SetupTime) end,
              [link, {priority, max}]).

%%% Outgoing

do_setup(Kernel, Node, Type, MyNode, SetupTime) ->
    Timer = dist_util:start_timer(SetupTime),
    {Host, Port, Ip} = route(Node),
    {Input, Output} = start_workers(),
    {ok, Conn, Id} = macula_nif:dial(macula_endpoint:get(), inet:ntoa(Ip), Port,
                                     Host, self(), Input),
    Ctx = #macula_ctx{conn = Conn, id = Id, input = Input, output = Output},
    wait_connected(Ctx, Node),
    client_proof(Ctx, Node, MyNode),
    dist_util:reset_timer(Timer),
    HSData = (hs_data(Ctx, Kernel, MyNode, Timer))#hs_data{
               other_node = Node,
               request_type = Type,
               f_address = fun(_, _) -> net_address(Host, Ip, Port) end},
    dist_util:handshake_we_started(HSData).

%% In the relay modes the peer is at the loopback end of a relay tunnel;
%% the host stays the one of its name (CA mode checks it).
route(Node) ->
    case macula_config:relay_mode() of
        true -> macula_dist_relay:route(Node);
        false -> target(Node)
    end.

target(Node) ->
    case macula_dist_epmd:locate(Node) of
        {ok, {Host, Ip, Port}} ->
            {Host, Port, Ip};
        {error, {unresolved_host, Host} = Why} ->
            logger:error("macula: cannot resolve host ~s of node ~p", [Host, Node]),
            ?shutdown2(Node, {macula, Why});
        {error, Why} ->
            ?shutdown2(Node, {macula, Why})
    end.

wait_connected(#macula_ctx{id = Id}, Node) ->
    receive
        {macula_connected, Id} ->
            ok;
        {macula_closed, Id, Reason} ->
            logger:warning("macula: cannot connect to ~p: ~p", [Node, Reason]),
            ?shutdown2(Node, {macula, Reason})
    end.

client_proof(Ctx = #macula_ctx{conn = Conn}, Node, MyNode) ->
    Cookie = cookie_binary(auth:get_cookie(Node)),
    MyName = atom_to_binary(MyNode),
    send_control(Ctx, macula_nif:proof_frame(Conn, client, MyName, Cookie)),
    case macula_nif:parse_proof_frame(recv_control(Ctx, Node)) of
        {ok, Theirs, Name} ->
            Name =:= atom_to_binary(Node) orelse
                refuse(Ctx, Node, bad_proof_frame, ?CLOSE_PROTOCOL,
                       io_lib:format("the node answering is ~s", [Name])),
            check_proof(Ctx, server, Name, Cookie, Theirs, Node),
            ok = macula_nif:authenticated(Conn);
        error ->
            refuse(Ctx, Node, bad_proof_frame, ?CLOSE_PROTOCOL, "bad cookie proof frame")
    end.

%%% Incoming

do_accept(Kernel, AcceptPid, Conn, MyNode, Allowed, SetupTime) ->
    receive {AcceptPid, controller} -> ok end,
    Timer = dist_util:start_timer(SetupTime),
    {Input, Output} = start_workers(),
    Id = macula_nif:attach(Conn, self(), Input),
    Ctx = #macula_ctx{conn = Conn, id = Id, input = Input, output = Output},
    {IpBin, Port} = macula_nif:peer_address(Conn),
    {ok, Ip} = inet:parse_address(binary_to_list(IpBin)),
    macula_config:relay_mode() andalso macula_dist_relay:accepted(Port),
    Proven = server_proof(Ctx, MyNode, Ip),
    dist_util:reset_timer(Timer),
    HSData = (hs_data(Ctx#macula_ctx{proven = Proven}, Kernel, MyNode, Timer))#hs_data{
               allowed = Allowed,
               f_address = fun(_, Node) -> peer_net_address(Node, Ip, Port) end},
    dist_util:handshake_other_started(HSData).

server_proof(Ctx = #macula_ctx{conn = Conn}, MyNode, Ip) ->
    case macula_nif:parse_proof_frame(recv_control(Ctx, Ip)) of
        {ok, Theirs, Name} ->
            Cookie = cookie_binary(cookie_for(Name)),
            check_proof(Ctx, client, Name, Cookie, Theirs, Ip),
            check_cert_host(Ctx, Name, Ip),
            %% Only now may the peer send more than the proof.
            ok = macula_nif:authenticated(Conn),
            MyName = atom_to_binary(MyNode),
            send_control(Ctx, macula_nif:proof_frame(Conn, server, MyName, Cookie)),
            Name;
        error ->
            refuse(Ctx, Ip, bad_proof_frame, ?CLOSE_PROTOCOL, "bad cookie proof frame")
    end.

%% The cookie we share with the node called `Name`. Only existing atoms
%% can have a cookie of their own; others get the default cookie, so an
%% unauthenticated peer cannot create atoms here.
cookie_for(Name) ->
    try binary_to_existing_atom(Name) of
        Node -> auth:get_cookie(Node)
    catch error:badarg -> auth:get_cookie()
    end.

%% In CA mode the client's certificate must be valid for the host of the
%% node name it claims.
check_cert_host(Ctx = #macula_ctx{conn = Conn}, Name, From) ->
    case trust() of
        ca ->
            Host = case string:split(Name, "@") of
                       [_, H] -> H;
                       _ -> <<>>
                   end,
            case macula_nif:peer_cert_matches(Conn, Host) of
                true -> ok;
                false -> refuse(Ctx, From, bad_cert_host, ?CLOSE_BAD_CERT_HOST,
                                io_lib:format("certificate not valid for ~s", [Name]))
            end;
        _ ->
            ok
    end.

%%% Both sides

check_proof(Ctx = #macula_ctx{conn = Conn}, Role, Name, Cookie, Proof, Peer) ->
    case trust() of
        insecure ->
            macula_log_limit:event(insecure_peer, "macula: INSECURE connection with ~s (~p): "
                                   "peer identity not verified", [Name, Peer]);
        _ ->
            case macula_nif:check_cookie_proof(Conn, Role, Name, Cookie, Proof) of
                true -> ok;
                false -> refuse(Ctx, Peer, bad_cookie, ?CLOSE_BAD_COOKIE,
                                io_lib:format("~s does not know our cookie "
                                              "(or a man in the middle)", [Name]))
            end
    end.

%% The peer has proven nothing yet: the line is rate limited and counted.
refuse(#macula_ctx{conn = Conn}, Peer, Reason, Code, Why) ->
    Text = lists:flatten(Why),
    macula_log_limit:event(Reason, "macula: connection with ~p refused: ~s", [Peer, Text]),
    macula_nif:close(Conn, Code, Text),
    ?shutdown2(Peer, {macula, Text}).

trust() ->
    maps:get(trust, macula_config:get()).

cookie_binary(Cookie) when is_atom(Cookie) -> atom_to_binary(Cookie);
cookie_binary(Cookie) -> iolist_to_binary(Cookie).

start_workers() ->
    Input = macula_dist_input:start_link(),
    Output = macula_dist_output:start_link(Input),
    {Input, Output}.

hs_data(Ctx, Kernel, MyNode, Timer) ->
    #hs_data{kernel_pid = Kernel,
             this_node = MyNode,
             socket = Ctx,
             timer = Timer,
             this_flags = 0,
             %% Without the atom cache every frame stands alone, so frames
             %% of different senders may take different streams.
             reject_flags = ?DFLAG_DIST_HDR_ATOM_CACHE,
             f_send = fun send_handshake/2,
             f_recv = fun recv_handshake/3,
             f_setopts_pre_nodeup = fun(_) -> ok end,
             f_setopts_post_nodeup = fun(_) -> ok end,
             f_getll = fun(#macula_ctx{output = Output}) -> {ok, Output} end,
             mf_tick = fun ?MODULE:tick/1,
             mf_getstat = fun ?MODULE:getstat/1,
             mf_setopts = fun ?MODULE:setopts/2,
             mf_getopts = fun ?MODULE:getopts/2,
             f_handshake_complete = fun ?MODULE:handshake_complete/3}.

net_address(Host, Ip, Port) ->
    #net_address{address = {Ip, Port}, host = Host, protocol = macula,
                 family = family(Ip)}.

peer_net_address(Node, Ip, Port) ->
    Host = case string:split(atom_to_list(Node), "@") of
               [_, H] -> H;
               _ -> inet:ntoa(Ip)
           end,
    net_address(Host, Ip, Port).

family(Ip) when tuple_size(Ip) =:= 8 -> inet6;
family(_) -> inet.

send_control(#macula_ctx{conn = Conn}, Frame) ->
    case macula_nif:send(Conn, control, [Frame]) of
        closed -> {error, closed};
        _ -> ok
    end.

send_handshake(Ctx, Data) ->
    send_control(Ctx, Data).

recv_handshake(Ctx, 0, _Timeout) ->
    Frame = recv_control(Ctx, handshake),
    check_name(Ctx, Frame),
    {ok, binary_to_list(Frame)}.

%% The accepting side: the name the peer gives in the Erlang handshake
%% (its first message) must be the one its cookie proof is for. A node
%% with a dynamic name (DFLAG_NAME_ME) proves `undefined@Host` and sends
%% only Host; the name it gets is ours to choose, on that host.
check_name(#macula_ctx{proven = undefined}, _Frame) ->
    ok;
check_name(Ctx = #macula_ctx{proven = Proven}, Frame) ->
    case handshake_name(Frame) of
        {static, Proven} -> ok;
        {dynamic, Host} when Proven =:= <<"undefined@", Host/binary>> -> ok;
        not_a_name -> ok;
        {_, Name} -> refuse(Ctx, Proven, bad_proof_frame, ?CLOSE_PROTOCOL,
                            io_lib:format("handshake name ~s is not the proven ~s",
                                          [Name, Proven]))
    end.

handshake_name(<<$N, Flags:64, _Creation:32, Len:16, Name:Len/binary, _/binary>>) ->
    {name_type(Flags), Name};
handshake_name(<<$n, _Version:16, Flags:32, Name/binary>>) ->
    {name_type(Flags), Name};
handshake_name(_) ->
    not_a_name.

name_type(Flags) when Flags band ?DFLAG_NAME_ME =/= 0 -> dynamic;
name_type(_) -> static.

%% The next control frame; the setup timer bounds the wait.
recv_control(#macula_ctx{id = Id}, Peer) ->
    receive
        {macula_ctl, Id, Frame} ->
            Frame;
        {macula_closed, Id, Reason} ->
            ?shutdown2(Peer, {macula, Reason})
    end.

%%% Callbacks from dist_util's con_loop

-spec tick(#macula_ctx{}) -> ok.
tick(#macula_ctx{conn = Conn}) ->
    _ = macula_nif:tick(Conn),
    ok.

-spec getstat(#macula_ctx{}) ->
          {ok, non_neg_integer(), non_neg_integer(), non_neg_integer()}.
getstat(#macula_ctx{conn = Conn}) ->
    macula_nif:getstat(Conn).

-spec setopts(#macula_ctx{}, list()) -> {error, enotsup}.
setopts(_Ctx, _Opts) ->
    {error, enotsup}.

-spec getopts(#macula_ctx{}, list()) -> {error, enotsup}.
getopts(_Ctx, _Opts) ->
    {error, enotsup}.

-spec handshake_complete(#macula_ctx{}, node(), term()) -> ok.
handshake_complete(#macula_ctx{conn = Conn, output = Output}, Node, DHandle) ->
    Output ! {handshake_complete, Conn, DHandle},
    macula_endpoint:connected(Node, Conn).
