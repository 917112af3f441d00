# opskit — build, test, lint, demo, bench, install.
#
# `make test` is what CI runs (.ci/run calls it and nothing else). On a fresh
# Debian machine it installs what it needs that is missing and says so.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
PREFIX ?= /usr/local
DESTDIR ?=
SCRIPTS := $(wildcard scripts/*.sh) $(wildcard scripts/lib/*.sh) $(wildcard tests/bench/*.sh)

.PHONY: all build test lint fmt fmt-check clippy shellcheck unit deps demo bench install uninstall clean

all: build

build:
	$(CARGO) build --release --workspace --bins

# Everything CI runs.
test: deps lint unit

deps:
	@scripts/ensure-deps.sh

lint: fmt-check clippy shellcheck

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --quiet -- -D warnings

shellcheck:
	shellcheck -x $(SCRIPTS)

# Every tool binary first: cross-tool tests run binaries of packages that
# have no tests of their own, which `cargo test` alone does not build.
unit:
	$(CARGO) build --workspace --bins
	target/debug/logrotate-lite --check examples/logrotate.conf >/dev/null
	$(CARGO) test --workspace
	@echo "offsite's tests again, against moto's S3 server over https:"
	OPSKIT_TEST_S3=moto $(CARGO) test -p offsite

# The procedures against a throwaway PostgreSQL under ./.demo (nothing is
# left running).
demo:
	scripts/ensure-deps.sh
	$(CARGO) build --profile demo --workspace --bins
	OPSKIT_BIN=$(CURDIR)/target/demo scripts/demo.sh

# Every benchmark under tests/bench/, one table of ratios.
bench: build
	@tests/bench/run-all.sh

# Binaries, procedures, units, runbooks and an example env file; honours
# DESTDIR and PREFIX (see scripts/install.sh --help).
install: build
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" scripts/install.sh

uninstall:
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" scripts/install.sh --uninstall

clean:
	$(CARGO) clean
