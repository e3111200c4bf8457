#!/usr/bin/env bash
# The demo: generates TOY-PEDES under data/ (once), trains a small CCMA model from scratch with
# configs/demo.yaml, then evaluates the best checkpoint on the test split.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release
run_dir="logs/TOY-PEDES/demo-$(date +%Y%m%d_%H%M%S)"  # a new folder each run: nothing is deleted
./target/release/ccma train --config configs/demo.yaml --run-dir "$run_dir" "$@"
./target/release/ccma test --config "$run_dir/configs.yaml"
