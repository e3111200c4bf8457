#!/usr/bin/env bash
# Builds the release binary against the project's libtorch (set up on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release "$@"
echo "built target/release/ccma (run it after: source scripts/env.sh)"
