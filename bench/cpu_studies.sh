#!/usr/bin/env bash
# The CPU-scale studies of bench/RESULTS.md on real TinyStories, as one queue of train.py runs that share a model
# and budget: 4 layers, 4 heads, n_embd 128, T 128, batch 16, 300 steps, the *_cpu.py recipe (Muon + AdamW), eager,
# on TinyStories with its 4,095 most frequent GPT-2 tokens + <unk> (data/tinystories_top4096, made by
# bench/lr_transfer.py: 0.9% of tokens become <unk>), so that the transformer body, not a 50k-row head, dominates.
#   variants   : 7 update rules + nGPT                      -> out-studies/variants/<variant>/seed<k>
#   multilevel : baseline, yuriiformer with 2 levels         -> out-studies/multilevel/<variant>/seed<k>
#                baseline with momentum reset / cascade mode -> out-studies/multilevel-{reset,cascade}/baseline/seed<k>
#                (their single-level arm is the variants run of the same seed)
#   geometry   : manifold Muon, 4 (attention, MLP) geometries -> out-studies/geometry/<attn>-<mlp>/seed<k>
# Seed-major, JOBS (2) runs at a time with one thread each. Finished runs are skipped; checkpoints are deleted.
#   nohup bench/cpu_studies.sh > out-studies.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ROOT:-out-studies}
SEEDS=${SEEDS:-"0 1 2"}
JOBS=${JOBS:-2}
VARIANTS="baseline gd_euler polyak yuriiformer nesterov_euler imex imex2 ngpt"
GEOMETRIES="none-none stiefel-stiefel stiefel-dgram dgram-stiefel"
COMMON="config/tinystories_baseline_cpu.py --dataset=tinystories_top4096 --vocab_size=4096 --n_embd=128
        --max_iters=300 --lr_decay_iters=300 --warmup_iters=30 --eval_interval=25 --eval_iters=8 --log_interval=25
        --spectral_interval=50 --compile=False --always_save_checkpoint=False"
ML="--multilevel_levels=2 --multilevel_cycle=[4,4] --multilevel_until=225"
[ -f data/tinystories/meta.json ] || python data/tinystories/prepare.py --source ../shared/data/tinystories
python -m data.reduce_vocab data/tinystories --vocab 4096

job() {  # one line of the queue: skip when finished, else train with one thread and drop the checkpoints
  local dir=$1; shift
  echo "grep -q '\"kind\": \"final\"' $dir/metrics.jsonl 2>/dev/null || { mkdir -p $dir && OMP_NUM_THREADS=1" \
       "python train.py $(echo $COMMON) $* --out_dir=$dir > $dir/train.log 2>&1; rm -f $dir/*.pt; echo done $dir; }"
}
queue=$(mktemp)
for seed in $SEEDS; do
  for v in $VARIANTS; do job "$ROOT/variants/$v/seed$seed" --variant=$v --seed=$seed; done >> "$queue"
  for v in baseline yuriiformer; do job "$ROOT/multilevel/$v/seed$seed" --variant=$v --seed=$seed $ML; done >> "$queue"
  {  # two more multilevel arms for the baseline: momentum reset at level switches; cascade (60 coarse steps first)
    job "$ROOT/multilevel-reset/baseline/seed$seed" --variant=baseline --seed=$seed $ML --multilevel_reset_momentum=True
    job "$ROOT/multilevel-cascade/baseline/seed$seed" --variant=baseline --seed=$seed --multilevel_levels=2 \
        --multilevel_mode=cascade --multilevel_cycle=[1,60]
  } >> "$queue"
  for g in $GEOMETRIES; do
    job "$ROOT/geometry/$g/seed$seed" --optimizer=manifold_muon --geometry_attn=${g%-*} --geometry_mlp=${g#*-} \
        --seed=$seed
  done >> "$queue"
done
xargs -d "\n" -P "$JOBS" -I{} bash -c {} < "$queue"
rm -f "$queue"
