#!/usr/bin/env bash
# A paper run: CLIP ViT-B/16 fine-tuned with CCMA's IMAL loss set, settings from a shipped config.
# usage: scripts/train.sh CONFIG DATA_ROOT PATH/TO/ViT-B-16.pt [more ccma train flags]
# Relative paths (CONFIG, DATA_ROOT, the weights, and those among the flags) are read from the
# folder it is started in, as ccma reads them; runs go to ./logs there unless --output-dir says.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 CONFIG DATA_ROOT ViT-B-16.pt [ccma train flags]" >&2; exit 2; }
config=$1 root=$2 weights=$3
shift 3
repo=$(cd "$(dirname "$0")/.." && pwd)
source "$repo/scripts/env.sh"
cargo build --release --manifest-path "$repo/Cargo.toml"
"$repo/target/release/ccma" train --config "$config" --root-dir "$root" --pretrained "$weights" "$@"
