# The two commands of README.md. Everything they need is installed by the scripts.
.PHONY: demo test test-ground lint

## Run the main job locally: control plane + intake up, evrelay, a burst, dump, down.
demo:
	scripts/demo

## The whole test suite, as CI runs it.
## No backtraces: a CI log keeps the end of a failure, and the assertion's message
## is what says what went wrong (RUST_BACKTRACE_TESTS=1 make test brings them back).
test: test-ground
	RUST_BACKTRACE=$${RUST_BACKTRACE_TESTS:-0} cargo test --locked --all-targets

## Build kube-apiserver, etcd and fakeintake once per machine (cached in ~/.cache/evrelay).
test-ground:
	scripts/dev-cluster build

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings
