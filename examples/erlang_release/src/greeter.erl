%% A gen_server registered as `greeter' on every node of the release:
%% greeter:hello(Node, Who) calls the one on Node, over macula when Node
%% is another node.
-module(greeter).
-behaviour(gen_server).
-export([start_link/0, hello/2, count/1]).
-export([init/1, handle_call/3, handle_cast/2]).

-spec start_link() -> {ok, pid()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, 0, []).

%% @doc Greets Who on Node; the answer names the node that answered.
-spec hello(node(), binary()) -> {hello, binary(), from, node()}.
hello(Node, Who) ->
    gen_server:call({?MODULE, Node}, {hello, Who}).

%% @doc How many greetings Node's greeter has answered.
-spec count(node()) -> non_neg_integer().
count(Node) ->
    gen_server:call({?MODULE, Node}, count).

-spec init(non_neg_integer()) -> {ok, non_neg_integer()}.
init(N) ->
    {ok, N}.

-spec handle_call(term(), gen_server:from(), non_neg_integer()) ->
          {reply, term(), non_neg_integer()}.
handle_call({hello, Who}, _From, N) ->
    {reply, {hello, Who, from, node()}, N + 1};
handle_call(count, _From, N) ->
    {reply, N, N}.

-spec handle_cast(term(), non_neg_integer()) -> {noreply, non_neg_integer()}.
handle_cast(_Msg, N) ->
    {noreply, N}.
