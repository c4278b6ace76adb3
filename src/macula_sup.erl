%% @doc The macula application's supervisor: the metrics endpoint
%% (macula_metrics_http) when it is configured, nothing otherwise.
-module(macula_sup).
-behaviour(supervisor).

-export([start_link/1, init/1]).

-spec start_link(macula_config:metrics()) -> {ok, pid()} | {error, term()}.
start_link(Metrics) ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, Metrics).

-spec init(macula_config:metrics()) ->
          {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init(off) ->
    {ok, {#{strategy => one_for_one, intensity => 5, period => 10}, []}};
init({Ip, Port}) ->
    Child = #{id => macula_metrics_http,
              start => {macula_metrics_http, start_link, [Ip, Port]},
              type => worker, shutdown => 2000, modules => [macula_metrics_http]},
    {ok, {#{strategy => one_for_one, intensity => 5, period => 10}, [Child]}}.
