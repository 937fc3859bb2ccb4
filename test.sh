#!/usr/bin/env bash
# The test command: formatting, lints, and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
cargo fmt --all -- --check
# fuzz/ is its own workspace (libFuzzer); its build and runs are .ci/run's last step.
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
# ... and its lock file must list what qcc depends on (fuzz/run.sh builds with --locked).
cargo metadata --manifest-path fuzz/Cargo.toml --locked --format-version 1 >/dev/null
cargo clippy --workspace --all-targets --locked -- -D warnings
# examples/rust-build: `cargo build` alone compiles the model in its build script and
# links it; compiler/tests/examples.rs runs the binary (required when CI=true).
cargo build --manifest-path examples/rust-build/Cargo.toml --locked
cargo test --workspace --locked
