#!/usr/bin/env bash
# Noisy correspondences at the demo's scale (README, "Noisy correspondences"): trains the arms on
# the generated TOY-PEDES with configs/demo.yaml at several noise rates and seeds, and prints one
# markdown row per run: test t2i R@1 at the epoch the validation split chose, and the clean
# division's precision and recall before that epoch (the arms that divide).
#
# Arms: `ccma` (the demo's CCMA loss set), `rde` (RDE's recipe on the demo's model: TSE layers,
# TAL, txt_aug, the consensus clean division after CCD_WARMUP epochs on all pairs, 3 by default:
# a from-scratch model's first losses do not separate clean from wrong pairs) and `ccma+ccd`
# (CCMA's loss set plus TAL on the TSE layers, every term weighted by the same division after the
# same warm-up; CCMA's data path, without txt_aug).
#
#   scripts/noise_evidence.sh                          # each arm: noise 0.5 with seeds 1-3, 0 and 0.2 with seed 1
#   RUNS="rde:0.5:1 ccma+ccd:0.5:1" scripts/noise_evidence.sh   # a chosen subset (arm:rate:seed)
#   CCMA_BIN=path/to/ccma scripts/noise_evidence.sh           # another binary (default: release)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
if [ -z "${CCMA_BIN:-}" ]; then
  cargo build --release
  CCMA_BIN=./target/release/ccma
fi
if [ -z "${RUNS:-}" ]; then
  RUNS=""
  for arm in ccma rde ccma+ccd; do
    RUNS="$RUNS $arm:0.5:1 $arm:0.5:2 $arm:0.5:3 $arm:0:1 $arm:0.2:1"
  done
fi
CCD_WARMUP="${CCD_WARMUP:-3}"
out="logs/TOY-PEDES/noise-evidence-$(date +%Y%m%d_%H%M%S)"  # a new folder each time
mkdir -p "$out"
echo "| arm | noisy_rate | seed | best epoch (val) | test R@1 | division precision | division recall |"
echo "|---|---|---|---|---|---|---|"
for run in $RUNS; do
  IFS=: read -r arm rate seed <<<"$run"
  case "$arm" in
    ccma) extra=() ;;
    rde) extra=(--set tse=true --set loss_names=tal --set MLM=false --set txt_aug=true
                --set noise_filter=ccd --set "ccd_warmup=$CCD_WARMUP") ;;
    ccma+ccd) extra=(--set tse=true --set loss_names=imal+tal --set noise_filter=ccd
                     --set "ccd_warmup=$CCD_WARMUP") ;;
    *) echo "unknown arm $arm (expected ccma, rde or ccma+ccd)" >&2; exit 2 ;;
  esac
  dir="$out/$arm-$rate-s$seed"
  "$CCMA_BIN" train --config configs/demo.yaml --run-dir "$dir" --set "noisy_rate=$rate" \
    --set "seed=$seed" "${extra[@]}" >"$dir.log" 2>&1
  python3 - "$dir" "$arm" "$rate" "$seed" <<'PY'
import json, sys
d, arm, rate, seed = sys.argv[1:]
res = json.load(open(f"{d}/results.json"))
best = res["best_epoch"]
rec = [json.loads(l) for l in open(f"{d}/metrics.jsonl")]
at = next(r for r in rec if r["epoch"] == best)
pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"
print(f"| {arm} | {rate} | {seed} | {best} | {res['t2i']['R1']:.2f} | "
      f"{pct(at.get('ccd_precision'))} | {pct(at.get('ccd_recall'))} |")
PY
done
