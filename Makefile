# warden: the two commands a fresh machine needs are `make run` and `make test`.
.PHONY: run start stop test deps lint build bench

CARGO ?= cargo
NEXTEST_PROFILE ?= default

## Run the daemon in the foreground on the embedded SQLite default (Ctrl-C stops it).
run:
	$(CARGO) run --release -- serve

## Start / stop the daemon in the background.
start:
	$(CARGO) run --release -- start
stop:
	$(CARGO) run --release -- stop

build:
	$(CARGO) build --release

## Install what the test suite needs, then run all of it.
test: deps
	$(CARGO) nextest run --workspace --all-targets --profile $(NEXTEST_PROFILE)

## What the tests use beyond the Rust toolchain (cargo-nextest, Debian packages).
deps:
	@scripts/test-deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

## Benchmarks: a real daemon in a temp home driven over its API; figures to stdout and
## BENCHMARKS.md. Not part of the tests.
bench:
	$(CARGO) bench --bench warden-bench -- --write
