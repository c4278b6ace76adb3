-module(greeter_app).
-behaviour(application).
-export([start/2, stop/1]).

-spec start(application:start_type(), term()) -> {ok, pid()}.
start(_Type, _Args) ->
    supervisor:start_link({local, greeter_sup}, greeter_sup, []).

-spec stop(term()) -> ok.
stop(_State) ->
    ok.
