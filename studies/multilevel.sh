#!/usr/bin/env bash
# The multilevel study in the paper's regime (studies/queues.py has the design, studies/RESULTS.md the results).
# Resumable: records land in studies/results/multilevel/ as each run ends; run it again to continue.
#   bash studies/multilevel.sh --plan                            # what is done, what is left, how long it takes
#   nohup bash studies/multilevel.sh > multilevel.log 2>&1 &     then: python -m studies.analyze multilevel
set -euo pipefail
cd "$(dirname "$0")/.."
source studies/lib.sh
[[ " $* " == *" --plan "* ]] || prepare_tinystories data/tinystories_study
exec python -m studies.runner multilevel "$@"
