#!/usr/bin/env bash
# Runs the whole test suite (unit, integration and the Python-reference parity tests).
# Needs only the Rust toolchain and python3: libtorch and the reference packages are set up on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo check --benches --quiet  # the benchmarks build (they are run with cargo bench)
cargo test "$@"
