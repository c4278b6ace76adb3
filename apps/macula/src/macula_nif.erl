%% @doc Erlang side of the C++ core binding. See dist/nif/macula_nif.cc for the
%% contract of each function and the messages the I/O thread sends.
-module(macula_nif).
-on_load(init/0).

-export([open_endpoint/1, close_endpoint/1, set_acceptor/2, endpoint_info/1,
         dial/6, attach/3, send/3, tick/1, consumed/2, close/3, getstat/1,
         conn_id/1, peer_address/1, conn_info/1, migrate/4, cookie_proof/4, check_cookie_proof/5,
         peer_cert_matches/2, parse_node_name/2]).

-nifs([open_endpoint/1, close_endpoint/1, set_acceptor/2, endpoint_info/1,
       dial/6, attach/3, send/3, tick/1, consumed/2, close/3, getstat/1,
       conn_id/1, peer_address/1, conn_info/1, migrate/4, cookie_proof/4, check_cookie_proof/5,
       peer_cert_matches/2, parse_node_name/2]).

init() ->
    Ebin = filename:dirname(code:which(?MODULE)),
    Lib = filename:join([Ebin, "..", "priv", "macula_nif"]),
    erlang:load_nif(Lib, 0).

-define(NIF, erlang:nif_error({not_loaded, ?MODULE})).

open_endpoint(_Opts) -> ?NIF.
close_endpoint(_Ep) -> ?NIF.
set_acceptor(_Ep, _Pid) -> ?NIF.
endpoint_info(_Ep) -> ?NIF.
dial(_Ep, _Ip, _Port, _Host, _CtlPid, _DataPid) -> ?NIF.
attach(_Conn, _CtlPid, _DataPid) -> ?NIF.
send(_Conn, _Channel, _Frames) -> ?NIF.
tick(_Conn) -> ?NIF.
consumed(_Conn, _Credit) -> ?NIF.
close(_Conn, _Code, _Reason) -> ?NIF.
getstat(_Conn) -> ?NIF.
conn_id(_Conn) -> ?NIF.
peer_address(_Conn) -> ?NIF.
conn_info(_Conn) -> ?NIF.
migrate(_Ep, _Target, _Pid, _Ref) -> ?NIF.
cookie_proof(_Conn, _Role, _Node, _Cookie) -> ?NIF.
check_cookie_proof(_Conn, _Role, _Node, _Cookie, _Proof) -> ?NIF.
peer_cert_matches(_Conn, _Host) -> ?NIF.
parse_node_name(_Name, _DefaultPort) -> ?NIF.
