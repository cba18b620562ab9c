#!/usr/bin/env bash
# The linear-transformer lab in the paper's protocol (lab/run_study.py has the design, studies/results/lab the
# records): two one-thread jobs at a time through studies/runner.py, then the report. Resumable: run it again.
#   bash studies/lab.sh --plan                     # what is done, what is left, how long it takes
#   nohup bash studies/lab.sh > lab.log 2>&1 &     then: python -m lab.run_study --report
#   bash studies/lab.sh --quick                    # a smoke run of a tiny plan and its report (out-studies/lab_quick)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ " $* " == *" --quick "* ]]; then
  python -m studies.runner lab_quick
  exec python -m lab.run_study --report --quick --out out-studies/lab_quick
fi
python -m studies.runner lab "$@"
[[ " $* " == *" --plan "* ]] || python -m lab.run_study --report
