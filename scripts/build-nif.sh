#!/bin/sh
# Builds the two NIF libraries and the driver (priv/macula_nif.so,
# priv/macula_relay_nif.so, priv/macula_drv.so)
# with CMake: the compile step of rebar3 (pre_hooks in rebar.config) and of
# mix (the macula_nif compiler in mix.exs) when macula is a dependency.
# Only those three targets are built, not the tests or tools (`make build`).
# Build directory: $MACULA_BUILD_DIR, default build/ in this repository.
set -eu
cd "$(dirname "$0")/.."
debs="cmake g++ make pkg-config erlang-dev libngtcp2-dev libngtcp2-crypto-gnutls-dev libgnutls28-dev"

# Check everything first, so that a missing piece gives one error that
# names the Debian packages, not a page of CMake output.
missing=""
for tool in cmake c++ make pkg-config erl; do
  command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if command -v pkg-config >/dev/null 2>&1; then
  for lib in libngtcp2 libngtcp2_crypto_gnutls gnutls; do
    pkg-config --exists "$lib" || missing="$missing $lib"
  done
fi
if command -v erl >/dev/null 2>&1; then
  inc=$(erl -noshell -eval 'io:format("~s", [filename:join([code:root_dir(), "usr", "include"])]), halt().')
  [ -f "$inc/erl_nif.h" ] || missing="$missing erl_nif.h"
fi
if [ -n "$missing" ]; then
  echo "macula: cannot build its NIF, missing:$missing." >&2
  echo "macula: on Debian 12 install them with: apt-get install $debs" >&2
  exit 1
fi

build=${MACULA_BUILD_DIR:-build}
jobs=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
if [ ! -f "$build/CMakeCache.txt" ]; then
  echo "macula: building the NIF (CMake, $build/)"
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" -j"$jobs" --target macula_nif macula_drv macula_relay_nif >/dev/null
