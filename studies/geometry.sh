#!/usr/bin/env bash
# The geometry study (studies/RESULTS.md#geometry): manifold Muon with per-module geometries, at the model of the
# variant comparison (4 layers, 4 heads, width 128, T 128) with batch 8, 1,500 steps (warmup 150, cosine to 0.1x),
# fp32, 3 seeds, TinyStories top-4096 vocabulary. The paper's settings where they decide the comparison: DGram weights
# start at their own singular values (mm_init=reference), its SVD retraction (mm_retraction=reference), weight decay
# 0.1 on the unconstrained baseline only; the dual ascent is ours (mm_scaling=rms, K=2, alpha 0.3: see the README).
#   1. lr sweep, each assignment its own: muon_lr 0.01 0.02 0.04 0.08, 500 steps, seed 0; the hetero arms then x0.5 and
#      x2 on the DGram module's lr                                          -> $ROOT/geometry/sweep/<arm>/lr<lr>...
#   2. the four assignments at their best lr, 3 seeds, spectral records every 100 steps -> $ROOT/geometry/<arm>/seed<k>
#   nohup bash studies/geometry.sh > geometry.log 2>&1 &      then: python -m studies.analyze geometry
set -euo pipefail
set -f  # no globbing: arguments like multilevel_cycle=[10,10] stay as written
cd "$(dirname "$0")/.."
source studies/lib.sh
ROOT=${ROOT:-out-studies}
DATA=${DATA:-data/tinystories_study}
SEEDS=${SEEDS:-"0 1 2"}
prepare_tinystories "$DATA"
COMMON="config/tinystories_baseline_cpu.py --data_dir=${DATA}_top4096 --vocab_size=4096 --n_embd=128 --batch_size=8
        --dtype=float32 --compile=False --always_save_checkpoint=False --optimizer=manifold_muon --mm_init=reference
        --mm_retraction=reference --eval_iters=16"
declare -A ARMS=(
  [none-none]="--geometry_attn=none --geometry_mlp=none --muon_weight_decay=0.1"
  [stiefel-stiefel]="--geometry_attn=stiefel --geometry_mlp=stiefel"
  [stiefel-dgram]="--geometry_attn=stiefel --geometry_mlp=dgram"
  [dgram-stiefel]="--geometry_attn=dgram --geometry_mlp=stiefel"
)
DGRAM_MODULE=([stiefel-dgram]=mlp [dgram-stiefel]=attn)
ORDER="none-none stiefel-stiefel stiefel-dgram dgram-stiefel"
SWEEP="--max_iters=500 --lr_decay_iters=500 --warmup_iters=50 --eval_interval=100 --log_interval=50 --seed=0"
queue=$(mktemp)
for arm in $ORDER; do
  for lr in 0.01 0.02 0.04 0.08; do
    job "$ROOT/geometry/sweep/$arm/lr$lr" $(echo $COMMON) ${ARMS[$arm]} $SWEEP --muon_lr=$lr
  done
done > "$queue"
run_queue "$queue"
declare -A LR
for arm in $ORDER; do
  LR[$arm]=$(python -m studies.best $(for lr in 0.01 0.02 0.04 0.08; do echo "$lr=$ROOT/geometry/sweep/$arm/lr$lr"; done))
  echo "$arm: best muon_lr ${LR[$arm]}"
done
declare -A MULT=([none-none]="" [stiefel-stiefel]="")
for arm in stiefel-dgram dgram-stiefel; do
  mod=${DGRAM_MODULE[$arm]}
  for m in 0.5 2.0; do
    job "$ROOT/geometry/sweep/$arm/lr${LR[$arm]}-$mod$m" $(echo $COMMON) ${ARMS[$arm]} $SWEEP --muon_lr=${LR[$arm]} \
        "--group_lr_mult={'$mod':$m}"
  done
done > "$queue"
run_queue "$queue"
for arm in stiefel-dgram dgram-stiefel; do
  mod=${DGRAM_MODULE[$arm]}
  m=$(python -m studies.best "1.0=$ROOT/geometry/sweep/$arm/lr${LR[$arm]}" \
      "0.5=$ROOT/geometry/sweep/$arm/lr${LR[$arm]}-${mod}0.5" "2.0=$ROOT/geometry/sweep/$arm/lr${LR[$arm]}-${mod}2.0")
  MULT[$arm]="--group_lr_mult={'$mod':$m}"
  echo "$arm: best $mod multiplier $m"
done
MAIN="--max_iters=1500 --lr_decay_iters=1500 --warmup_iters=150 --eval_interval=100 --log_interval=25
      --spectral_interval=100"
for seed in $SEEDS; do
  for arm in $ORDER; do
    job "$ROOT/geometry/$arm/seed$seed" $(echo $COMMON) ${ARMS[$arm]} $(echo $MAIN) --muon_lr=${LR[$arm]} \
        ${MULT[$arm]} --seed=$seed
  done
done > "$queue"
run_queue "$queue"
rm -f "$queue"
