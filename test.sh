#!/usr/bin/env bash
# The test command: formatting, lints, and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
cargo fmt --all -- --check
# fuzz/ is its own workspace (libFuzzer); its build and runs are .ci/run's last step.
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
