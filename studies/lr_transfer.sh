#!/usr/bin/env bash
# The learning-rate transfer study (studies/lr_transfer.py has the design, studies/RESULTS.md the results): GPT,
# nGPT, nuGPT swept over learning rate along width, depth and horizon through studies/runner.py (two one-thread
# jobs at a time), then the report. Resumable: records land in studies/results/lr_transfer/runs.jsonl; run it again.
#   bash studies/lr_transfer.sh --plan                            # what is done, what is left, how long it takes
#   nohup bash studies/lr_transfer.sh > lr_transfer.log 2>&1 &    then: python -m studies.lr_transfer --report
set -euo pipefail
cd "$(dirname "$0")/.."
source studies/lib.sh
[[ " $* " == *" --plan "* ]] || prepare_tinystories data/tinystories_study
python -m studies.runner lr_transfer "$@"
[[ " $* " == *" --plan "* ]] || python -m studies.lr_transfer --report
