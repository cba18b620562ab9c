#!/usr/bin/env bash
# The linear-transformer lab in the paper's protocol (lab/README.md, studies/results/lab): two one-thread shards of
# `python -m lab.run_study`, then the report. Runs already recorded in studies/results/lab/runs.jsonl are skipped.
#   nohup bash studies/lab.sh > lab.log 2>&1 &
set -euo pipefail
set -f  # no globbing: arguments like multilevel_cycle=[10,10] stay as written
cd "$(dirname "$0")/.."
OUT=${OUT:-studies/results/lab}
OMP_NUM_THREADS=1 python -m lab.run_study --out "$OUT" --shard 0/2 &
OMP_NUM_THREADS=1 python -m lab.run_study --out "$OUT" --shard 1/2
wait
python -m lab.run_study --out "$OUT" --report
