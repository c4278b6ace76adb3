# An Elixir release whose nodes talk distribution over QUIC (macula).
# In your own project write the dependency as
#   {:macula, git: "URL of macula", tag: "TAG"}   or   {:macula, path: "..."}
# Here it is this repository (path "../..") unless MACULA_GIT and
# MACULA_TAG name another copy (see README.md).
defmodule GreeterEx.MixProject do
  use Mix.Project

  def project do
    [
      app: :greeter_ex,
      version: "0.1.0",
      elixir: "~> 1.14",
      deps: [macula()],
      releases: [greeter_ex: [include_executables_for: [:unix]]]
    ]
  end

  def application do
    [extra_applications: [:logger], mod: {GreeterEx.Application, []}]
  end

  defp macula do
    case {System.get_env("MACULA_GIT"), System.get_env("MACULA_TAG")} do
      {nil, _} -> {:macula, path: Path.expand("../..", __DIR__)}
      {url, nil} -> {:macula, git: url, branch: "main"}
      {url, tag} -> {:macula, git: url, tag: tag}
    end
  end
end
