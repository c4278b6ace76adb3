#!/usr/bin/env bash
# Runs OTP's own distribution test suite (erts/emulator/test/
# distribution_SUITE.erl of the installed OTP release, from Debian's erlang
# source package) with every node on one carrier, and prints one result
# line per carrier.
#
#   scripts/otp-dist-suite.sh [macula] [inet_tls] [inet_tcp]   (default: macula inet_tls)
#
# The suite is not part of this repository: the first run downloads the
# source package with apt-get (a deb-src line in a temporary sources list;
# nothing of the system's apt set-up changes) and keeps the few files it
# needs under build/otp-dist-suite/. OTP_DIST_SUITE_SRC=/path/to/otp-src
# uses an unpacked OTP source tree instead.
#
# How every node gets the carrier: the suite starts its peer nodes with
# `erl` (OTP's peer module) from the CT node's environment, so ERL_FLAGS
# carries `-proto_dist ...` to the CT node and to every peer. macula nodes
# run with EPMD and `-macula_dist_port 0` (each node on a free UDP port,
# registered with EPMD), like inet_tcp/inet_tls nodes with their TCP ports.
#
# Cases that cannot apply are listed, with the reason, in
# scripts/otp-dist-suite.skip; they are skipped for every carrier alike.
# Exit status: 0 when macula passed every case that inet_tls passed (or,
# without an inet_tls run, every case run).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$root/build/otp-dist-suite
carriers=${*:-macula inet_tls}
otp=$(erl -noshell -eval 'io:format("~s", [erlang:system_info(otp_release)]), halt().')
mkdir -p "$work"

# --- the suite's sources -------------------------------------------------
suite_files="erts/emulator/test/distribution_SUITE.erl
erts/emulator/test/distribution_SUITE_data/run.erl
erts/emulator/test/erts_test_utils.erl
lib/common_test/test_server/ts_install_cth.erl"

fetch() {
  local src=$work/src
  [ -f "$src/distribution_SUITE.erl" ] && return 0
  local tree=${OTP_DIST_SUITE_SRC:-}
  local tmp
  tmp=$(mktemp -d)
  if [ -z "$tree" ]; then
    local ver
    ver=$(dpkg-query -W -f '${source:Version}' erlang-base 2>/dev/null)
    . /etc/os-release
    echo "== fetching Debian's erlang source package $ver ($VERSION_CODENAME)"
    mkdir -p "$tmp/lists/partial"
    cat >"$tmp/sources.list" <<EOF
deb-src http://deb.debian.org/debian $VERSION_CODENAME main
deb-src http://deb.debian.org/debian $VERSION_CODENAME-updates main
deb-src http://deb.debian.org/debian-security $VERSION_CODENAME-security main
EOF
    local apt=(apt-get -q -o Dir::Etc::SourceList="$tmp/sources.list"
               -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists="$tmp/lists"
               -o APT::Sandbox::User=root)
    "${apt[@]}" update >"$tmp/update.log" 2>&1 || { cat "$tmp/update.log"; return 1; }
    (cd "$tmp" && "${apt[@]}" source --download-only "erlang=$ver") >"$tmp/source.log" 2>&1 ||
      (cd "$tmp" && "${apt[@]}" source --download-only erlang) >>"$tmp/source.log" 2>&1 ||
      { cat "$tmp/source.log"; return 1; }
    local orig
    orig=$(ls "$tmp"/erlang_*.orig.tar.* | head -1)
    local top
    top=$(tar -tf "$orig" | head -1 | cut -d/ -f1)
    # shellcheck disable=SC2086
    tar -xf "$orig" -C "$tmp" $(for f in $suite_files; do echo "$top/$f"; done) || return 1
    tree=$tmp/$top
  fi
  mkdir -p "$src/distribution_SUITE_data"
  for f in $suite_files; do
    case $f in
      */distribution_SUITE_data/*) cp "$tree/$f" "$src/distribution_SUITE_data/" ;;
      *) cp "$tree/$f" "$src/" ;;
    esac
  done
  rm -rf "$tmp"
}

fetch || { echo "cannot fetch OTP's distribution_SUITE"; exit 1; }

# --- build -----------------------------------------------------------------
test=$work/test
rm -rf "$test" && mkdir -p "$test/distribution_SUITE_data"
erlc -W0 -o "$test" "$work"/src/*.erl || exit 1
cp "$work/src/distribution_SUITE_data/run.erl" "$test/distribution_SUITE_data/"
erlc -W0 -o "$test/distribution_SUITE_data" "$test/distribution_SUITE_data/run.erl" || exit 1

# inet_tls_dist: a throwaway CA and a certificate for this host's names.
tls_optfile() {
  local d=$work/tls host
  host=$(hostname)
  mkdir -p "$d"
  if [ ! -f "$d/ssl_dist.conf" ]; then
    (cd "$d" &&
     openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null &&
     openssl req -x509 -new -key ca.key -sha256 -days 30 -subj "/CN=otp-dist-suite CA" -out ca.pem 2>/dev/null &&
     openssl ecparam -name prime256v1 -genkey -noout -out node.key 2>/dev/null &&
     openssl req -new -key node.key -subj "/CN=$host" -out node.csr 2>/dev/null &&
     printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\n' "$host" >san.ext &&
     openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
       -sha256 -extfile san.ext -out node.pem 2>/dev/null) || return 1
    cat >"$d/ssl_dist.conf" <<EOF
[{server, [{certfile, "$d/node.pem"}, {keyfile, "$d/node.key"}, {cacertfile, "$d/ca.pem"},
           {verify, verify_peer}, {fail_if_no_peer_cert, true}, {versions, ['tlsv1.3']}]},
 {client, [{certfile, "$d/node.pem"}, {keyfile, "$d/node.key"}, {cacertfile, "$d/ca.pem"},
           {verify, verify_peer}, {versions, ['tlsv1.3']}]}].
EOF
  fi
  echo "$d/ssl_dist.conf"
}

flags_for() {
  case $1 in
    macula) echo "-pa $root/ebin -proto_dist macula -macula_dist_port 0" ;;
    inet_tls) echo "-proto_dist inet_tls -ssl_dist_optfile $(tls_optfile)" ;;
    inet_tcp) echo "" ;;
  esac
}

# --- run ---------------------------------------------------------------------
summary=()
for c in $carriers; do
  logs=$work/logs/$c
  rm -rf "$logs" && mkdir -p "$logs"
  echo "== distribution_SUITE (OTP $otp) over $c"
  start=$(date +%s)
  # A test specification: the suite, the skip list with its reasons, and a
  # JUnit report to count from.
  {
    echo "{logdir, \"$logs\"}."
    echo "{auto_compile, false}."
    echo "{ct_hooks, [{cth_surefire, [{path, \"$logs/junit.xml\"}]}]}."
    echo "{suites, \"$test\", distribution_SUITE}."
    grep -v '^#' scripts/otp-dist-suite.skip | grep -v '^[[:space:]]*$' |
      while read -r tc why; do
        echo "{skip_cases, \"$test\", distribution_SUITE, [$tc], \"${why//\"/\'}\"}."
      done
  } >"$logs/run.spec"
  (cd "$logs" &&
   ERL_FLAGS="$(flags_for "$c")" MACULA_DIST_CERT_DIR="$work/certs" ERL_CRASH_DUMP_SECONDS=0 \
     timeout 3000 ct_run -noshell -sname "otpdist_${c}_$$" -spec "$logs/run.spec" \
       >"$logs/ct.out" 2>&1)
  secs=$(( $(date +%s) - start ))
  # Cases: each testcase's result from the surefire report; skipped ones
  # by request are marked and not counted.
  erl -noshell -eval '
    [Logs, Carrier, Secs | Skip] = init:get_plain_arguments(),
    Bin = case file:read_file(filename:join(Logs, "junit.xml")) of
              {ok, B} -> B;
              {error, _} -> <<>>
          end,
    Cases = re:run(Bin, "<testcase [^>]*name=\"([a-z0-9_]+)\"[^>]*?(/>|>(.*?)</testcase>)",
                   [global, dotall, {capture, [1, 3], list}]),
    Res = case Cases of
              {match, L} -> [{N, case B of
                                     "" -> passed;
                                     _ -> case string:find(B, "<skipped") of
                                              nomatch -> failed; _ -> skipped end
                                 end} || [N, B] <- L,
                                          N =/= "init_per_suite", N =/= "end_per_suite",
                                          N =/= "init_per_group", N =/= "end_per_group"];
              nomatch -> []
          end,
    Count = fun(K) -> length([x || {_, R} <- Res, R =:= K]) end,
    ok = file:write_file(filename:join(Logs, "cases.txt"),
                         [[N, " ", atom_to_list(R), "\n"] || {N, R} <- lists:sort(Res)]),
    io:format("~s: ~b passed, ~b failed, ~b skipped of ~b cases (~s s)~n",
              [Carrier, Count(passed), Count(failed), Count(skipped), length(Res), Secs]),
    [io:format("  failed: ~s~n", [N]) || {N, failed} <- Res],
    halt().' -extra "$logs" "$c" "$secs" | tee "$logs/result.txt"
done

echo
echo "== distribution_SUITE (OTP $otp), one line per carrier"
for c in $carriers; do head -1 "$work/logs/$c/result.txt"; done
if [ -f "$work/logs/macula/cases.txt" ] && [ -f "$work/logs/inet_tls/cases.txt" ]; then
  missing=$(join <(grep ' passed$' "$work/logs/inet_tls/cases.txt" | cut -d' ' -f1) \
                 <(grep -v ' passed$' "$work/logs/macula/cases.txt" | cut -d' ' -f1))
  if [ -n "$missing" ]; then
    echo "passed over inet_tls but not over macula:" $missing
    exit 1
  fi
  echo "macula passes every case inet_tls passes"
elif [ -f "$work/logs/macula/cases.txt" ]; then
  ! grep -q ' failed$' "$work/logs/macula/cases.txt"
fi
