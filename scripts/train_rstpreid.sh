#!/usr/bin/env bash
# The paper's CCMA run on rstpreid (configs/rstpreid.yaml).
# usage: scripts/train_rstpreid.sh DATA_ROOT PATH/TO/ViT-B-16.pt [more ccma train flags, e.g. --device cuda:1]
exec "$(dirname "$0")/train.sh" "$(dirname "$0")/../configs/rstpreid.yaml" "$@"
