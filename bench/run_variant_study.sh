#!/usr/bin/env bash
# CPU-scale variant study (bench/RESULTS.md, "Variant comparison (TinyStories, CPU scale)"):
# 7 update rules x 3 seeds on real TinyStories (data/tinystories prepared from ../shared/data/tinystories),
# the model of config/tinystories_baseline_cpu.py. Resumable: finished runs are skipped, interrupted ones resumed.
# Each seed (all 7 variants) holds the global CPU lock once, so other jobs on the machine can interleave.
#   nohup bench/run_variant_study.sh > out-variant-study.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ROOT:-out-variant-study}
OUT=bench/results/compare
VARIANTS=baseline,gd_euler,polyak,yuriiformer,nesterov_euler,imex,imex2
SEEDS=${SEEDS:-"0 1 2"}
# 250 steps of 16 x 128 tokens (the config's 500 would take 4 h for 21 runs); eval every 50 steps on 24 batches
OVERRIDES=(--max_iters=250 --lr_decay_iters=250 --eval_interval=50 --eval_iters=24 --log_interval=25
           --always_save_checkpoint=False)
[ -f data/tinystories/meta.json ] || python data/tinystories/prepare.py --source ../shared/data/tinystories

for seed in $SEEDS; do
  flock /tmp/cpu.lock python bench/compare.py --config config/tinystories_baseline_cpu.py --variants "$VARIANTS" \
    --seeds "$seed" --root "$ROOT" --train_only -- "${OVERRIDES[@]}" || echo "seed $seed: some runs failed"
done
# keep the metrics files (small) in the repository and build the table and plots from those copies
for run in "$ROOT"/*/seed*/; do
  dest="$OUT/runs/${run#"$ROOT"/}"
  mkdir -p "$dest" && cp "$run/metrics.jsonl" "$run/config.json" "$dest"
done
python bench/compare.py --root "$OUT/runs" --variants "$VARIANTS" --baseline baseline --out "$OUT"
