# macula: Erlang distribution over QUIC.
#   make demo   install what is missing, build, run two nodes talking over QUIC
#   make test   install what is missing, build, run every test (C++ and Erlang)
#   make bench  install what is missing, build, compare with inet_tcp/inet_tls
#   make otp-suite  OTP's own distribution_SUITE over macula and over inet_tls
.PHONY: all deps build core nif erlang demo test test-core test-erlang bench otp-suite clean

BUILD    ?= build
ERL_SRC  := $(wildcard src/*.erl)
DEB_PKGS := erlang-nox erlang-dev erlang-src erlang-common-test \
            libngtcp2-dev libngtcp2-crypto-gnutls-dev libgnutls28-dev \
            googletest libgtest-dev cmake g++ make pkg-config \
            iproute2 nftables conntrack openssl tcpdump dnsmasq-base \
            rebar3 elixir git

all: build

deps:
	@scripts/install-deps.sh $(DEB_PKGS)

build: deps core erlang

core:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j$$(nproc)

erlang: ebin/macula.app

ebin/macula.app: $(ERL_SRC) src/macula.app.src src/*.hrl
	@mkdir -p ebin
	@erlc -Wall +debug_info -o ebin -I src $(ERL_SRC)
	@scripts/make-app-file.sh .

demo: build
	@scripts/demo.sh

test: build
	@scripts/run-tests.sh

otp-suite: build
	@scripts/otp-dist-suite.sh macula inet_tls

bench: build
	@scripts/bench.sh
	@scripts/bench-memory.sh
	@scripts/bench-relay.sh
	@scripts/bench-relay-scale.sh

clean:
	rm -rf $(BUILD) ebin priv/*.so logs _build
