# The two commands of README.md, and the fast path. Everything they need is
# installed by the project's own scripts.
.PHONY: demo test unit test-ground lint bench-peer

# Tests that need no control plane: every tests/*.rs but the end-to-end ones.
UNIT_TESTS := $(patsubst tests/%.rs,--test %,$(filter-out tests/e2e_% tests/bench_%,$(wildcard tests/*.rs)))

## Run the main job locally: control plane + intake up, evrelay, a burst, judged, dump, down.
demo:
	scripts/demo

## The whole test suite, as CI runs it.
## No backtraces: a CI log keeps the end of a failure, and the assertion's message
## is what says what went wrong (RUST_BACKTRACE_TESTS=1 make test brings them back).
test: test-ground
	RUST_BACKTRACE=$${RUST_BACKTRACE_TESTS:-0} cargo test --locked --all-targets

## Every test that needs no control plane (no Go, no test ground), in seconds.
unit:
	RUST_BACKTRACE=$${RUST_BACKTRACE_TESTS:-0} cargo test --locked --lib --bins $(UNIT_TESTS)

## Build kube-apiserver, etcd and fakeintake once per machine (cached in ~/.cache/evrelay).
test-ground:
	scripts/dev-cluster build

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings

## evrelay and the OpenTelemetry Collector side by side (on demand; ~30 min for 3 runs).
bench-peer: test-ground
	scripts/dev-cluster build-peer
	cargo test --locked --release --test bench_peer -- --ignored --nocapture
