#!/usr/bin/env bash
# Evaluates a finished run on its test split (t2i and i2t), as the table and test_results.*.json.
# usage: scripts/test_run.sh RUN_DIR [more ccma test flags, e.g. --visualize 20]
# RUN_DIR and any path among the flags are read from the folder it is started in.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 RUN_DIR [ccma test flags]" >&2; exit 2; }
run=$1
shift
repo=$(cd "$(dirname "$0")/.." && pwd)
source "$repo/scripts/env.sh"
cargo build --release --manifest-path "$repo/Cargo.toml"
"$repo/target/release/ccma" test --config "$run/configs.yaml" --i2t "$@"
