#!/usr/bin/env bash
# Tables and plots of the CPU-scale studies run by studies/cpu300.sh. The runs' metrics.jsonl and config.json
# (small) are copied into studies/results/cpu300/<study>/runs/ and every table and plot is built from those copies, so
# this script also works on a fresh clone without the run directories (ROOT absent: only re-analyse).
set -euo pipefail
set -f  # no globbing: arguments like multilevel_cycle=[10,10] stay as written
cd "$(dirname "$0")/.."
ROOT=${ROOT:-out-studies}
R=studies/results/cpu300
VARIANTS=baseline,gd_euler,polyak,yuriiformer,nesterov_euler,imex,imex2,ngpt

keep() {  # keep SRC_RUN DEST_RUN: copy a finished run's metrics and config
  if grep -q '"kind": "final"' "$1/metrics.jsonl" 2>/dev/null; then
    mkdir -p "$2" && cp "$1/metrics.jsonl" "$1/config.json" "$2/"
  fi
}
if [ -d "$ROOT" ]; then
  for run in "$ROOT"/variants/*/seed*; do keep "$run" "$R/variants/runs/${run#"$ROOT"/variants/}"; done
  for run in "$ROOT"/geometry/*/seed*; do keep "$run" "$R/geometry/runs/${run#"$ROOT"/geometry/}"; done
  for run in "$ROOT"/multilevel/*/seed*; do
    v=$(basename "$(dirname "$run")") s=$(basename "$run")
    keep "$run" "$R/multilevel/runs/$v-multilevel/$s"
    keep "$ROOT/variants/$v/$s" "$R/multilevel/runs/$v-single/$s"
  done
  for run in "$ROOT"/multilevel-*/baseline/seed*; do  # extra arms: baseline_reset, baseline_cascade
    arm=$(basename "$(dirname "$(dirname "$run")")") s=$(basename "$run")
    keep "$run" "$R/multilevel/runs/baseline_${arm#multilevel-}-multilevel/$s"
    keep "$ROOT/variants/baseline/$s" "$R/multilevel/runs/baseline_${arm#multilevel-}-single/$s"
  done
fi
seeds() { ls "$1" | sed 's/seed//' | sort -n | paste -sd, -; }

# variants: table with Welch p-values against the baseline, val loss vs steps/tokens/FLOPs, coefficients
python -m studies.compare --root "$R/variants/runs" --variants "$VARIANTS" --baseline baseline --out "$R/variants"
# multilevel: FLOPs to reach the single-level final val loss
python -m studies.multilevel_study --variants baseline,yuriiformer,baseline_reset,baseline_cascade --seeds "$(seeds "$R/multilevel/runs/baseline-multilevel")"
# geometry: spectral plots, and the loss table with p-values against unconstrained Muon
python -m studies.spectral_plot --root "$R/geometry/runs" --out "$R/geometry"
runs() { ls -d "$R/geometry/runs/$1"/seed* | paste -sd, -; }
python -m studies.compare --run "none-none=$(runs none-none)" --run "stiefel-stiefel=$(runs stiefel-stiefel)" \
  --run "stiefel-dgram=$(runs stiefel-dgram)" --run "dgram-stiefel=$(runs dgram-stiefel)" \
  --baseline none-none --out "$R/geometry/compare"
