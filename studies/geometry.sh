#!/usr/bin/env bash
# The geometry study: manifold Muon with a geometry per module (studies/queues.py has the design, studies/RESULTS.md
# the results). Resumable: records land in studies/results/geometry/ as each run ends; run it again to continue.
#   bash studies/geometry.sh --plan                          # what is done, what is left, how long it takes
#   nohup bash studies/geometry.sh > geometry.log 2>&1 &     then: python -m studies.analyze geometry
set -euo pipefail
cd "$(dirname "$0")/.."
source studies/lib.sh
[[ " $* " == *" --plan "* ]] || prepare_tinystories data/tinystories_study
exec python -m studies.runner geometry "$@"
