#!/usr/bin/env bash
# The controlled variant comparison (studies/RESULTS.md#variants): 4 layers, 4 heads, width 128, T 128, batch 8,
# 1,500 steps (warmup 150, cosine to 0.1x), the *_cpu.py Muon + AdamW recipe, fp32, eager, 3 seeds, the same data
# order per seed, TinyStories with its 4,095 most frequent tokens + <unk>.
#   arms:   baseline gd_euler polyak yuriiformer nesterov_euler imex,
#           yuriiformer_v0zero (V_0 = 0: no V_0 tables),
#           baseline_embed (the baseline plus a zero-initialised second token + position table on X_0: exactly the
#           V_0 tables' parameter count at the baseline's FLOPs)            -> $ROOT/variants/<arm>/seed<k>
#   vocab:  baseline, yuriiformer at 300 steps with the 4,096 and the full 50,304 vocabulary, 2 seeds
#                                                                            -> $ROOT/vocab/<vocab>/<arm>/seed<k>
#   nohup bash studies/variants.sh > variants.log 2>&1 &
# SOURCE: local TinyStories text (default: the embedded sample). Then: python -m studies.analyze variants
set -euo pipefail
set -f  # no globbing: arguments like multilevel_cycle=[10,10] stay as written
cd "$(dirname "$0")/.."
source studies/lib.sh
ROOT=${ROOT:-out-studies}
DATA=${DATA:-data/tinystories_study}
SEEDS=${SEEDS:-"0 1 2"}
prepare_tinystories "$DATA"
MODEL="config/tinystories_baseline_cpu.py --vocab_size=4096 --n_embd=128 --batch_size=8 --dtype=float32 --compile=False
       --always_save_checkpoint=False --shortlist=0"
COMMON="$MODEL --data_dir=${DATA}_top4096 --max_iters=1500 --lr_decay_iters=1500 --warmup_iters=150
        --eval_interval=100 --eval_iters=16 --log_interval=25"
declare -A ARMS=(
  [baseline]="--variant=baseline" [gd_euler]="--variant=gd_euler" [polyak]="--variant=polyak"
  [yuriiformer]="--variant=yuriiformer" [nesterov_euler]="--variant=nesterov_euler" [imex]="--variant=imex"
  [yuriiformer_v0zero]="--variant=yuriiformer --v0=zero" [baseline_embed]="--variant=baseline --embed_extra=True"
)
ORDER="baseline yuriiformer yuriiformer_v0zero baseline_embed polyak gd_euler nesterov_euler imex"
queue=$(mktemp)
for seed in $SEEDS; do
  for arm in $ORDER; do job "$ROOT/variants/$arm/seed$seed" $(echo $COMMON) ${ARMS[$arm]} --seed=$seed; done
done > "$queue"
SHORT="$MODEL --max_iters=300 --lr_decay_iters=300 --warmup_iters=30 --eval_interval=50 --eval_iters=16 --log_interval=25"
for seed in 0 1; do
  for arm in baseline yuriiformer; do
    job "$ROOT/vocab/top4096/$arm/seed$seed" $(echo $SHORT) --data_dir=${DATA}_top4096 ${ARMS[$arm]} --seed=$seed
    job "$ROOT/vocab/full/$arm/seed$seed" $(echo $SHORT) --data_dir=$DATA --vocab_size=50304 ${ARMS[$arm]} --seed=$seed
  done
done >> "$queue"
run_queue "$queue"
rm -f "$queue"
