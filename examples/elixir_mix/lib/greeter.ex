defmodule Greeter do
  @moduledoc """
  A GenServer registered as `Greeter` on every node of the release:
  `Greeter.hello(node, who)` calls the one on `node`, over macula when
  `node` is another node.
  """
  use GenServer

  def start_link(_), do: GenServer.start_link(__MODULE__, 0, name: __MODULE__)

  @doc "Greets `who` on `node`; the answer names the node that answered."
  def hello(node, who), do: GenServer.call({__MODULE__, node}, {:hello, who})

  @doc "How many greetings `node`'s Greeter has answered."
  def count(node), do: GenServer.call({__MODULE__, node}, :count)

  @impl true
  def init(n), do: {:ok, n}

  @impl true
  def handle_call({:hello, who}, _from, n), do: {:reply, {:hello, who, :from, node()}, n + 1}
  def handle_call(:count, _from, n), do: {:reply, n, n}
end

defmodule GreeterEx.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    Supervisor.start_link([Greeter], strategy: :one_for_one, name: GreeterEx.Supervisor)
  end
end
