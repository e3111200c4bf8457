#!/usr/bin/env bash
# The paper's CCMA run on cuhk-pedes (configs/cuhk-pedes.yaml).
# usage: scripts/train_cuhk-pedes.sh DATA_ROOT PATH/TO/ViT-B-16.pt [more ccma train flags, e.g. --device cuda:1]
exec "$(dirname "$0")/train.sh" "$(dirname "$0")/../configs/cuhk-pedes.yaml" "$@"
