%% @doc Rules the application's code keeps, checked on the compiled
%% modules (built with debug_info): no two modules call each other, even
%% through others, and every exported function has a -spec.
-module(macula_code_SUITE).

-include_lib("common_test/include/ct.hrl").

-export([all/0, no_module_cycles/1, every_export_has_spec/1]).

all() ->
    [no_module_cycles, every_export_has_spec].

%% xref's strongly connected components of the module call graph: one
%% with more than one module is a cycle.
no_module_cycles(_Config) ->
    {ok, Xref} = xref:start([{xref_mode, functions}]),
    try
        ok = xref:set_default(Xref, [{warnings, false}]),
        {ok, Modules} = xref:add_directory(Xref, ebin()),
        true = length(Modules) >= 10,
        {ok, Components} = xref:q(Xref, "components (ME || AM)"),
        [] = [Cycle || Cycle <- Components, length(Cycle) > 1]
    after
        xref:stop(Xref)
    end.

every_export_has_spec(_Config) ->
    Beams = filelib:wildcard(filename:join(ebin(), "*.beam")),
    true = length(Beams) >= 10,
    [] = lists:append([missing_specs(Beam) || Beam <- Beams]).

missing_specs(Beam) ->
    {ok, {Module, [{abstract_code, {raw_abstract_v1, Forms}}]}} =
        beam_lib:chunks(Beam, [abstract_code]),
    Exports = lists:append([E || {attribute, _, export, E} <- Forms]),
    Specs = [FA || {attribute, _, spec, {FA, _}} <- Forms],
    [{Module, FA} || FA <- Exports -- Specs].

ebin() ->
    filename:dirname(code:which(macula_dist)).
