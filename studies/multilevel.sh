#!/usr/bin/env bash
# The multilevel study in the paper's regime scaled to this CPU (studies/RESULTS.md#multilevel): 12 layers, width 256,
# 8 heads, T 64, batch 8, SGD with momentum 0.9 on every parameter (no weight decay, clipping 1.0, warmup 100, cosine
# to 0.1x), 3,000 steps, fp32, TinyStories with its 4,095 most frequent tokens + <unk>, 2 seeds. Every run evaluates
# its 6-layer coarse networks too (eval_coarse: their loss at the shared weights).
#   1. single-level lr sweep: 0.05 0.1 0.2 0.4 0.8, 1,000 steps, seed 0       -> $ROOT/multilevel/sweep/lr<lr>
#   2. at the best lr, 3,000 steps, 2 seeds: single-level; multilevel 2 levels, cycles of 10 coarse + 10 fine steps
#      until step 2,400 (plain); the same with the first-order coherence correction (tau = 1)
#                                                                            -> $ROOT/multilevel/<arm>/seed<k>
#   nohup bash studies/multilevel.sh > multilevel.log 2>&1 &      then: python -m studies.analyze multilevel
set -euo pipefail
set -f  # no globbing: arguments like multilevel_cycle=[10,10] stay as written
cd "$(dirname "$0")/.."
source studies/lib.sh
ROOT=${ROOT:-out-studies}
DATA=${DATA:-data/tinystories_study}
SEEDS=${SEEDS:-"0 1"}
prepare_tinystories "$DATA"
COMMON="config/tinystories_baseline_cpu.py --data_dir=${DATA}_top4096 --vocab_size=4096 --n_layer=12 --n_head=8
        --n_embd=256 --block_size=64 --batch_size=8 --dtype=float32 --compile=False --always_save_checkpoint=False
        --optimizer=sgd --sgd_momentum=0.9 --weight_decay=0.0 --grad_clip=1.0 --warmup_iters=100 --eval_iters=16
        --eval_coarse=True"
LRS="0.05 0.1 0.2 0.4 0.8"
queue=$(mktemp)
for lr in $LRS; do
  job "$ROOT/multilevel/sweep/lr$lr" $(echo $COMMON) --max_iters=1000 --lr_decay_iters=1000 --eval_interval=250 \
      --log_interval=50 --learning_rate=$lr --min_lr=$(python -c "print($lr / 10)") --seed=0
done > "$queue"
run_queue "$queue"
LR=$(python -m studies.best $(for lr in $LRS; do echo "$lr=$ROOT/multilevel/sweep/lr$lr"; done))
echo "best single-level learning rate: $LR"
MAIN="--max_iters=3000 --lr_decay_iters=3000 --eval_interval=100 --log_interval=25 --learning_rate=$LR
      --min_lr=$(python -c "print($LR / 10)")"
ML="--multilevel_levels=2 --multilevel_cycle=[10,10] --multilevel_until=2400"
for seed in $SEEDS; do
  job "$ROOT/multilevel/single/seed$seed" $(echo $COMMON $MAIN) --seed=$seed
  job "$ROOT/multilevel/plain/seed$seed" $(echo $COMMON $MAIN $ML) --seed=$seed
  job "$ROOT/multilevel/corrected/seed$seed" $(echo $COMMON $MAIN $ML) --multilevel_correction=1.0 --seed=$seed
done > "$queue"
run_queue "$queue"
rm -f "$queue"
