# macula as a mix dependency: `{:macula, git: URL, tag: T}` or `path: DIR`.
# An Erlang application: mix compiles src/ and first runs the macula_nif
# compiler below, which builds the C++ NIF into priv/ (CMake; see
# scripts/build-nif.sh). Name, version and description come from
# src/macula.app.src, the one place they are written.
defmodule Macula.MixProject do
  use Mix.Project

  def project do
    [
      app: :macula,
      version: app_src(:vsn),
      description: app_src(:description),
      language: :erlang,
      erlc_paths: ["src"],
      erlc_options: [:debug_info],
      compilers: [:macula_nif | Mix.compilers()],
      deps: []
    ]
  end

  def application do
    [applications: app_src(:applications), mod: app_src(:mod)]
  end

  defp app_src(key) do
    {:ok, [{:application, :macula, props}]} = :file.consult(Path.join(__DIR__, "src/macula.app.src"))
    value = Keyword.fetch!(props, key)
    if is_list(value) and key != :applications, do: to_string(value), else: value
  end
end

defmodule Mix.Tasks.Compile.MaculaNif do
  @moduledoc "Builds macula's NIF libraries into priv/ (scripts/build-nif.sh)."
  use Mix.Task.Compiler

  @impl true
  def run(_args) do
    dir = Path.dirname(__ENV__.file)
    case System.cmd("sh", [Path.join(dir, "scripts/build-nif.sh")],
           cd: dir, into: IO.stream(:stdio, :line), stderr_to_stdout: true) do
      {_, 0} ->
        # priv/ now holds the libraries: make sure _build links it.
        Mix.Project.build_structure()
        {:ok, []}
      {_, status} ->
        Mix.raise("macula: the NIF build failed (exit status #{status}), see above")
    end
  end
end
