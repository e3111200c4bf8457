#!/usr/bin/env bash
# Formatting and lints, as CI checks them: rustfmt's layout and clippy with warnings as errors.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
