#!/usr/bin/env bash
# The paper's CCMA run on rstpreid: CLIP ViT-B/16 fine-tuned with the IMAL loss set (configs/rstpreid.yaml).
# usage: scripts/train_rstpreid.sh DATA_ROOT PATH/TO/ViT-B-16.pt [more ccma train flags, e.g. --device cuda:1]
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 DATA_ROOT ViT-B-16.pt [ccma train flags]" >&2; exit 2; }
root=$1 weights=$2
shift 2
source scripts/env.sh
cargo build --release
./target/release/ccma train --config configs/rstpreid.yaml --root-dir "$root" --pretrained "$weights" "$@"
