-module(greeter_sup).
-behaviour(supervisor).
-export([init/1]).

-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    {ok, {#{strategy => one_for_one},
          [#{id => greeter, start => {greeter, start_link, []}}]}}.
