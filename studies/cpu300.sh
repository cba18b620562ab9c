#!/usr/bin/env bash
# The first CPU-scale studies (300 steps; studies/RESULTS.md#first-cpu-studies-300-steps) on real TinyStories, as one queue of train.py runs that share a model
# and budget: 4 layers, 4 heads, n_embd 128, T 128, batch 16, 300 steps, the *_cpu.py recipe (Muon + AdamW), eager,
# on TinyStories with its 4,095 most frequent GPT-2 tokens + <unk> (data/tinystories_top4096, made by
# data/reduce_vocab.py: 0.9% of tokens become <unk>), so that the transformer body, not a 50k-row head, dominates.
#   variants   : 7 update rules + nGPT                      -> out-studies/variants/<variant>/seed<k>
#   multilevel : baseline, yuriiformer with 2 levels         -> out-studies/multilevel/<variant>/seed<k>
#                baseline with momentum reset / cascade mode -> out-studies/multilevel-{reset,cascade}/baseline/seed<k>
#                (the committed reset records zeroed only first moments, a reset no longer offered: see
#                studies/RESULTS.md; this line now runs the full reset)
#                (their single-level arm is the variants run of the same seed)
#   geometry   : manifold Muon, 4 (attention, MLP) geometries -> out-studies/geometry/<attn>-<mlp>/seed<k>
# Seed-major, JOBS (2) runs at a time with one thread each. Finished runs are skipped; checkpoints are deleted.
#   nohup studies/cpu300.sh > out-studies.log 2>&1 &
set -euo pipefail
set -f  # no globbing: arguments like multilevel_cycle=[10,10] stay as written
cd "$(dirname "$0")/.."
ROOT=${ROOT:-out-studies}
SEEDS=${SEEDS:-"0 1 2"}
VARIANTS="baseline gd_euler polyak yuriiformer nesterov_euler imex imex2 ngpt"
GEOMETRIES="none-none stiefel-stiefel stiefel-dgram dgram-stiefel"
COMMON="config/tinystories_baseline_cpu.py --dataset=tinystories_top4096 --vocab_size=4096 --n_embd=128
        --max_iters=300 --lr_decay_iters=300 --warmup_iters=30 --eval_interval=25 --eval_iters=8 --log_interval=25
        --spectral_interval=50 --compile=False --always_save_checkpoint=False --dtype=bfloat16 --shortlist=0"
ML="--multilevel_levels=2 --multilevel_cycle=[4,4] --multilevel_until=225"
# SOURCE: TinyStories text (default: the embedded sample); the committed records (studies/results/cpu300) were made
# from a local folder of six TinyStories files (13,279 documents, 2.73M train tokens), of which the sample keeps five.
source studies/lib.sh
prepare_tinystories data/tinystories

queue=$(mktemp)
for seed in $SEEDS; do
  for v in $VARIANTS; do job "$ROOT/variants/$v/seed$seed" $(echo $COMMON) --variant=$v --seed=$seed; done >> "$queue"
  for v in baseline yuriiformer; do job "$ROOT/multilevel/$v/seed$seed" $(echo $COMMON) --variant=$v --seed=$seed $ML; done >> "$queue"
  {  # two more multilevel arms for the baseline: momentum reset at level switches; cascade (60 coarse steps first)
    job "$ROOT/multilevel-reset/baseline/seed$seed" $(echo $COMMON) --variant=baseline --seed=$seed $ML --multilevel_momentum=reset
    job "$ROOT/multilevel-cascade/baseline/seed$seed" $(echo $COMMON) --variant=baseline --seed=$seed --multilevel_levels=2 \
        --multilevel_mode=cascade --multilevel_cycle=[1,60]
  } >> "$queue"
  for g in $GEOMETRIES; do
    job "$ROOT/geometry/$g/seed$seed" $(echo $COMMON) --optimizer=manifold_muon --geometry_attn=${g%-*} --geometry_mlp=${g#*-} \
        --seed=$seed
  done >> "$queue"
done
run_queue "$queue"
rm -f "$queue"
