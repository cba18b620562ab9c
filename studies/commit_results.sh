#!/usr/bin/env bash
# Commit studies/results/ every INTERVAL minutes (default 25) while study queues run, so a stop loses no finished
# run: start it beside a queue and stop it (kill) when you stop.
#   nohup bash studies/geometry.sh > geometry.log 2>&1 &  nohup bash studies/commit_results.sh > commit.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
INTERVAL=${INTERVAL:-25}
while true; do
  sleep $((INTERVAL * 60))
  git add studies/results
  if ! git diff --cached --quiet -- studies/results; then
    git commit --quiet -m "studies/results: records of the running queues ($(date +%H:%M))" -- studies/results
    echo "$(date +%T) committed $(git log -1 --format=%h)"
  fi
done
