%% @doc The DNS source of macula_discovery: the SRV records of
%% `_erlang-dist._udp.<macula_dist_dns_domain>' (RFC 2782), each a node
%% `<basename>@<target>' on the record's port, at the target's A/AAAA
%% addresses (from the answer's additional section, else asked for).
%% The servers are `macula_dist_dns_servers', else the system's resolver
%% configuration. Bounded: at most ?MAX_RECORDS records are used, at most
%% ?MAX_ASKS targets without addresses in the answer are asked for them,
%% each query waits at most ?TIMEOUT ms and the whole query at most
%% ?DEADLINE ms.
%%
%% DNS is trusted to say where to dial, nothing more: an answer that
%% points a name at another host ends at TLS and the cookie proof.
-module(macula_discovery_dns).

-export([query/2]).

-define(TIMEOUT, 2000).
-define(MAX_RECORDS, 64).
-define(MAX_ASKS, 16).
-define(DEADLINE, 5000).

%% @doc `{ok, [{Node, Ip, Port}]}', or an error when the SRV query got no
%% answer (a name with no records answers `{ok, []}').
-spec query(map(), string()) ->
          {ok, [{binary(), inet:ip_address(), inet:port_number()}]} | {error, term()}.
query(_Config, "") ->
    {error, no_basename};
query(Config = #{dns_domain := Domain}, Basename) ->
    Opts = options(Config),
    case inet_res:resolve("_erlang-dist._udp." ++ Domain, in, srv, Opts, ?TIMEOUT) of
        {ok, Msg} ->
            Srv = lists:sublist(records(Msg, anlist, srv), ?MAX_RECORDS),
            Extra = records(Msg, arlist, a) ++ records(Msg, arlist, aaaa),
            Deadline = erlang:monotonic_time(millisecond) + ?DEADLINE,
            {ok, found(Basename, [S || S = {_, _, Port, _} <- Srv, Port > 0], Extra, Opts,
                       Deadline, ?MAX_ASKS)};
        {error, {nxdomain, _}} -> {ok, []};
        {error, {noanswer, _}} -> {ok, []};
        {error, Why} -> {error, Why}
    end.

options(#{dns_servers := []}) -> [];
options(#{dns_servers := Servers}) -> [{nameservers, Servers}].

%% The answer's SRV data, or the additional section's {Domain, Ip}.
records(Msg, anlist, Type) ->
    [inet_dns:rr(RR, data) || RR <- inet_dns:msg(Msg, anlist), inet_dns:rr(RR, type) =:= Type];
records(Msg, arlist, Type) ->
    [{lower(inet_dns:rr(RR, domain)), inet_dns:rr(RR, data)}
     || RR <- inet_dns:msg(Msg, arlist), inet_dns:rr(RR, type) =:= Type].

%% Each record's target at the addresses given with the answer, or asked
%% for (IPv4 first) while asks and time are left.
found(_Basename, [], _Extra, _Opts, _Deadline, _Asks) ->
    [];
found(Basename, [{_, _, Port, Target} | Rest], Extra, Opts, Deadline, Asks) ->
    {Ips, Asks1} = case [Ip || {D, Ip} <- Extra, D =:= lower(Target)] of
                       [] when Asks > 0 ->
                           {lists:append([ask(Target, T, Opts, Deadline) || T <- [a, aaaa]]),
                            Asks - 1};
                       Given -> {Given, Asks}
                   end,
    [{node(Basename, Target), Ip, Port} || Ip <- Ips]
        ++ found(Basename, Rest, Extra, Opts, Deadline, Asks1).

ask(Target, Type, Opts, Deadline) ->
    case Deadline - erlang:monotonic_time(millisecond) of
        Left when Left > 0 ->
            case inet_res:resolve(Target, in, Type, Opts, min(Left, ?TIMEOUT)) of
                {ok, Msg} -> lists:sublist(records(Msg, anlist, Type), 16);
                {error, _} -> []
            end;
        _ -> []
    end.

node(Basename, Target) ->
    list_to_binary(Basename ++ "@" ++ string:trim(Target, trailing, ".")).

lower(Name) ->
    macula_names:lower(string:trim(Name, trailing, ".")).
