%% @doc The macula OTP application. The distribution itself runs under
%% kernel's net_sup (-proto_dist macula starts it before any application);
%% the application adds what is optional, under macula_sup: the
%% Prometheus metrics endpoint (macula_metrics_http) when
%% `macula_metrics_port` is set.
-module(macula_app).
-behaviour(application).

-export([start/2, stop/1]).

%% A bad metrics setting stops the start with the setting's error text.
-spec start(application:start_type(), term()) -> {ok, pid()} | {error, term()}.
start(_Type, _Args) ->
    try macula_config:metrics() of
        Metrics -> macula_sup:start_link(Metrics)
    catch error:{macula_config, Text} ->
        {error, {macula_config, Text}}
    end.

-spec stop(term()) -> ok.
stop(_State) ->
    ok.
