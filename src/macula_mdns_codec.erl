%% @doc DNS messages as mDNS uses them (RFC 1035 wire format, RFC 6762,
%% RFC 6763 DNS-SD): encoding of macula's announcement and query, and a
%% bounded decoder for whatever arrives on 224.0.0.251:5353.
%%
%% The decoder never raises: anything malformed is `{error, Why}'. Limits:
%% a packet of at most ?MAX_PACKET bytes, at most ?MAX_RECORDS questions
%% and records in all, names of at most 255 bytes and 63-byte labels,
%% compression pointers that only point backwards and at most ?MAX_JUMPS
%% of them per name (so no loop and no blow-up).
-module(macula_mdns_codec).

-export([announcement/1, query/1, decode/1]).

-define(MAX_PACKET, 9000).
-define(MAX_RECORDS, 64).
-define(MAX_JUMPS, 16).
-define(MAX_NAME, 255).
-define(T_A, 1).
-define(T_PTR, 12).
-define(T_TXT, 16).
-define(T_AAAA, 28).
-define(T_SRV, 33).
-define(CLASS_IN, 1).
-define(CACHE_FLUSH, 16#8000).

-type name() :: [binary()].
-type record() :: {name(), ptr | srv | txt | a | aaaa | integer(), non_neg_integer(), term()}.
-type message() :: #{response := boolean(), questions := [{name(), integer()}],
                     records := [record()]}.
-export_type([name/0, record/0, message/0]).

%% @doc An unsolicited response announcing an instance: PTR service ->
%% instance, SRV instance -> target:port, TXT instance, A/AAAA target.
%% TTL 0 says goodbye.
-spec announcement(#{service := name(), instance := name(), target := name(),
                     port := inet:port_number(), txt := [binary()],
                     addresses := [inet:ip_address()], ttl := non_neg_integer()}) -> binary().
announcement(#{service := Service, instance := Instance, target := Target, port := Port,
               txt := Txt, addresses := Ips, ttl := Ttl}) ->
    Records = [rr(Service, ?T_PTR, ?CLASS_IN, Ttl, name(Instance)),
               rr(Instance, ?T_SRV, ?CLASS_IN bor ?CACHE_FLUSH, Ttl,
                  <<0:16, 0:16, Port:16, (name(Target))/binary>>),
               rr(Instance, ?T_TXT, ?CLASS_IN bor ?CACHE_FLUSH, Ttl,
                  << <<(byte_size(T)):8, T/binary>> || T <- Txt >>)]
        ++ [address_rr(Target, Ip, Ttl) || Ip <- Ips],
    <<0:16, 16#8400:16, 0:16, (length(Records)):16, 0:16, 0:16,
      (iolist_to_binary(Records))/binary>>.

%% @doc A query for the PTR records of Service.
-spec query(name()) -> binary().
query(Service) ->
    <<0:16, 0:16, 1:16, 0:16, 0:16, 0:16, (name(Service))/binary, ?T_PTR:16, ?CLASS_IN:16>>.

address_rr(Target, {A, B, C, D}, Ttl) ->
    rr(Target, ?T_A, ?CLASS_IN bor ?CACHE_FLUSH, Ttl, <<A, B, C, D>>);
address_rr(Target, Ip, Ttl) when tuple_size(Ip) =:= 8 ->
    rr(Target, ?T_AAAA, ?CLASS_IN bor ?CACHE_FLUSH, Ttl, << <<W:16>> || W <- tuple_to_list(Ip) >>).

rr(Name, Type, Class, Ttl, Data) ->
    [name(Name), <<Type:16, Class:16, Ttl:32, (byte_size(Data)):16>>, Data].

name(Labels) ->
    iolist_to_binary([[<<(byte_size(L)):8>>, L] || L <- Labels] ++ [<<0>>]).

%%% ------------------------------------------------------------------
%%% Decoding

%% @doc The questions and records of a packet, or why it is refused.
-spec decode(binary()) -> {ok, message()} | {error, atom()}.
decode(Packet) when byte_size(Packet) > ?MAX_PACKET ->
    {error, too_big};
decode(<<_Id:16, Flags:16, QD:16, AN:16, NS:16, AR:16, _/binary>> = Packet)
  when QD + AN + NS + AR =< ?MAX_RECORDS ->
    try
        {Questions, Pos} = questions(Packet, 12, QD, []),
        {Records, _} = records(Packet, Pos, AN + NS + AR, []),
        {ok, #{response => Flags band 16#8000 =/= 0, questions => Questions,
               records => Records}}
    catch throw:Why -> {error, Why}
    end;
decode(<<_:12/binary, _/binary>>) ->
    {error, too_many_records};
decode(_) ->
    {error, short_header}.

questions(_Packet, Pos, 0, Acc) ->
    {lists:reverse(Acc), Pos};
questions(Packet, Pos, N, Acc) ->
    {Name, P1} = read_name(Packet, Pos),
    case Packet of
        <<_:P1/binary, Type:16, _Class:16, _/binary>> ->
            questions(Packet, P1 + 4, N - 1, [{Name, Type} | Acc]);
        _ -> throw(truncated_question)
    end.

records(_Packet, Pos, 0, Acc) ->
    {lists:reverse(Acc), Pos};
records(Packet, Pos, N, Acc) ->
    {Name, P1} = read_name(Packet, Pos),
    case Packet of
        <<_:P1/binary, Type:16, _Class:16, Ttl:32, Len:16, Data:Len/binary, _/binary>> ->
            Record = {Name, type(Type), Ttl, data(Type, Data, Packet, P1 + 10)},
            records(Packet, P1 + 10 + Len, N - 1, [Record | Acc]);
        _ -> throw(truncated_record)
    end.

type(?T_A) -> a;
type(?T_PTR) -> ptr;
type(?T_TXT) -> txt;
type(?T_AAAA) -> aaaa;
type(?T_SRV) -> srv;
type(T) -> T.

%% Names inside data may be compressed: they are read from the packet.
data(?T_A, <<A, B, C, D>>, _, _) -> {A, B, C, D};
data(?T_AAAA, <<W1:16, W2:16, W3:16, W4:16, W5:16, W6:16, W7:16, W8:16>>, _, _) ->
    {W1, W2, W3, W4, W5, W6, W7, W8};
data(?T_PTR, _Data, Packet, Pos) -> element(1, read_name(Packet, Pos));
data(?T_SRV, <<Prio:16, Weight:16, Port:16, _/binary>>, Packet, Pos) ->
    {Prio, Weight, Port, element(1, read_name(Packet, Pos + 6))};
data(?T_TXT, Data, _, _) -> txt(Data, []);
data(T, _Data, _, _) when T =:= ?T_A; T =:= ?T_AAAA; T =:= ?T_SRV -> throw(bad_rdata);
data(_, Data, _, _) -> Data.

txt(<<>>, Acc) -> lists:reverse(Acc);
txt(<<Len, S:Len/binary, Rest/binary>>, Acc) when length(Acc) < 32 -> txt(Rest, [S | Acc]);
txt(_, _) -> throw(bad_txt).

%% {Labels, position after the name in the packet}.
read_name(Packet, Pos) ->
    read_name(Packet, Pos, [], 0, 0, undefined).

read_name(_Packet, _Pos, _Acc, _Size, Jumps, _End) when Jumps > ?MAX_JUMPS ->
    throw(too_many_pointers);
read_name(_Packet, _Pos, _Acc, Size, _Jumps, _End) when Size > ?MAX_NAME ->
    throw(name_too_long);
read_name(Packet, Pos, Acc, Size, Jumps, End) ->
    case Packet of
        <<_:Pos/binary, 0, _/binary>> ->
            {lists:reverse(Acc), after_name(End, Pos + 1)};
        <<_:Pos/binary, 2#11:2, Ptr:14, _/binary>> when Ptr < Pos ->
            read_name(Packet, Ptr, Acc, Size, Jumps + 1, after_name(End, Pos + 2));
        <<_:Pos/binary, 0:2, Len:6, Label:Len/binary, _/binary>> ->
            read_name(Packet, Pos + 1 + Len, [Label | Acc], Size + Len + 1, Jumps, End);
        _ ->
            throw(bad_name)
    end.

%% Where the name ends in the packet: after its first pointer, if any.
after_name(undefined, Pos) -> Pos;
after_name(End, _Pos) -> End.
