#!/usr/bin/env bash
# The paper's CCMA run on cuhk-pedes: CLIP ViT-B/16 fine-tuned with the IMAL loss set (configs/cuhk-pedes.yaml).
# usage: scripts/train_cuhk-pedes.sh DATA_ROOT PATH/TO/ViT-B-16.pt [more ccma train flags, e.g. --device cuda:1]
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 DATA_ROOT ViT-B-16.pt [ccma train flags]" >&2; exit 2; }
root=$1 weights=$2
shift 2
source scripts/env.sh
cargo build --release
./target/release/ccma train --config configs/cuhk-pedes.yaml --root-dir "$root" --pretrained "$weights" "$@"
