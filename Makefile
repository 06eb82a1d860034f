# The two commands of README.md. Everything they need is installed by the scripts.
.PHONY: demo test test-ground lint

## Run the main job locally: control plane + intake up, evrelay, a burst, dump, down.
demo:
	scripts/demo

## The whole test suite, as CI runs it.
test: test-ground
	cargo test --locked --all-targets

## Build kube-apiserver, etcd and fakeintake once per machine (cached in ~/.cache/evrelay).
test-ground:
	scripts/dev-cluster build

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings
