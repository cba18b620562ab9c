#!/usr/bin/env bash
# The learning-rate transfer study (studies/RESULTS.md#learning-rate-transfer): GPT, nGPT, nuGPT swept over learning
# rate along width (64 128 256 512), depth (2 4 8) and horizon (100 200 400 steps), 2 seeds, then nuGPT's per-group
# multipliers at width 512 (seed 0); base model 2 layers, width 128, T 64, batch 16, 200 steps, fp32, TinyStories with
# its 4,095 most frequent tokens + <unk>. Two one-thread shards per axis; finished runs are skipped.
#   nohup bash studies/lr_transfer.sh > lr_transfer.log 2>&1 &
set -euo pipefail
set -f  # no globbing: arguments like multilevel_cycle=[10,10] stay as written
cd "$(dirname "$0")/.."
source studies/lib.sh
DATA=${DATA:-data/tinystories_study}
OUT=${OUT:-studies/results/lr_transfer}
prepare_tinystories "$DATA"
both() {  # both ARGS: the two shards of one sweep, side by side
  OMP_NUM_THREADS=1 python -m studies.lr_transfer --data "$DATA" --out "$OUT" "$@" --shard 0/2 &
  OMP_NUM_THREADS=1 python -m studies.lr_transfer --data "$DATA" --out "$OUT" "$@" --shard 1/2
  wait
}
for axis in width depth horizon; do both --axis $axis; done
both --axis groups --params nugpt --seeds 0
python -m studies.lr_transfer --out "$OUT" --report
