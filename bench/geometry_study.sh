#!/usr/bin/env bash
# CPU-scale geometry study (bench/RESULTS.md, "Geometry-aware optimizers"): manifold Muon with 4 attention/MLP
# geometry assignments x 3 seeds on real TinyStories (data/tinystories prepared from ../shared/data/tinystories),
# the model of config/tinystories_baseline_cpu.py at n_embd=128 (see RESULTS.md for why), spectral records every
# 25 steps, manifold Muon at its defaults (K=20, alpha=0.1, tol=1e-3). Each run holds the global CPU lock on its own, so other jobs interleave; finished runs are skipped.
#   nohup bench/geometry_study.sh > out-geometry-study.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ROOT:-out-geometry-study}
OUT=bench/results/geometry
SEEDS=${SEEDS:-"0 1 2"}
ASSIGNMENTS=${ASSIGNMENTS:-"none-none stiefel-stiefel stiefel-dgram dgram-stiefel"}
OVERRIDES=(--optimizer=manifold_muon --n_embd=128 --batch_size=8 --max_iters=200 --lr_decay_iters=200
           --warmup_iters=20 --eval_interval=25 --eval_iters=10 --log_interval=25 --spectral_interval=25
           --always_save_checkpoint=False)
[ -f data/tinystories/meta.json ] || python data/tinystories/prepare.py --source ../shared/data/tinystories

for seed in $SEEDS; do
  for a in $ASSIGNMENTS; do
    dir="$ROOT/$a/seed$seed"
    if grep -q '"kind": "final"' "$dir/metrics.jsonl" 2>/dev/null; then continue; fi
    flock /tmp/cpu.lock python train.py config/tinystories_baseline_cpu.py "${OVERRIDES[@]}" \
      --geometry_attn="${a%-*}" --geometry_mlp="${a#*-}" --seed="$seed" --out_dir="$dir" \
      || echo "run $dir failed (kept for the table: a diverged run is a result)"
  done
done
# keep the metrics files (small) in the repository and plot from those copies
for run in "$ROOT"/*/seed*/; do
  dest="$OUT/runs/${run#"$ROOT"/}"
  mkdir -p "$dest" && cp "$run/metrics.jsonl" "$run/config.json" "$dest"
done
python bench/spectral_plot.py --root "$OUT/runs" --out "$OUT"
