"""
Multilevel study (bench/RESULTS.md, "Multilevel training"): the training FLOPs needed to reach the single-level
run's final val loss, multilevel versus single-level, per variant and seed, on real TinyStories at CPU scale.

    studies/cpu300.sh && studies/analyze_cpu300.sh        # train the runs, then (among others) this analysis
    python -m studies.multilevel_study --variants baseline,yuriiformer --seeds 0,1,2   # tables + plots only

Arms: "single" (multilevel_levels=1) and "multilevel", the same config, seed, data order and LR schedule, trained by
studies/cpu300.sh; studies/analyze_cpu300.sh copies their metrics.jsonl and config.json to
<out>/runs/<variant>-<arm>/seed<k>/, which is all this script reads.
Saving = 1 - F_multilevel(L*) / F_single(L*), F(L) the training FLOPs at which a run's val loss first reaches L,
L* = the single-level final val loss when the multilevel run reaches it (the issue's metric), else the multilevel
final val loss (then the single-level run got there earlier and the saving is negative). Val loss is interpolated
linearly in the iteration between evaluations; the cumulative FLOPs (and active-layer steps, a head-free count) are
read off the schedule at that fractional iteration.
"""

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

import multilevel
import runlog
from model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]

ML_KEYS = ("multilevel_levels", "multilevel_cycle", "multilevel_mode", "multilevel_until")


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--variants", default="baseline,yuriiformer")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default="studies/results/cpu300/multilevel", help="holds runs/<variant>-<arm>/seed<k>/")
    a = p.parse_args(argv)
    a.variants, a.seeds = a.variants.split(","), [int(s) for s in a.seeds.split(",")]
    return a


def load(run):
    """Evals (iter, val) and the schedule's cumulative FLOPs and active-layer steps at every iteration."""
    recs = runlog.read(run)
    head = recs[0]
    cfg = SimpleNamespace(**{k: head["config"][k] for k in ML_KEYS})
    with torch.device("meta"):
        model = GPT(GPTConfig(**head["model_args"]))
    T, n = head["model_args"]["block_size"], head["config"]["max_iters"]
    levels = [multilevel.level_at(i, cfg)[0] for i in range(n)]
    flops = np.cumsum([0] + [head["tokens_per_iter"] * model.flops_per_token(T, j) for j in levels])
    layers = np.cumsum([0] + [len(model.layer_ids(j)) for j in levels])
    evals = [(r["iter"], r["val_loss"]) for r in recs if r["kind"] == "eval"]
    assert all(r["flops"] == flops[r["iter"]] for r in recs if r["kind"] == "eval"), run  # the counter is the schedule
    return dict(it=np.array([i for i, _ in evals]), val=np.array([v for _, v in evals]), flops=flops, layers=layers,
                levels=np.array(levels))


def reach(run, target):
    """(fractional iteration, FLOPs, active-layer steps) where val loss first reaches target (it must)."""
    k = np.nonzero(run["val"] <= target)[0][0]
    if k == 0:
        it = float(run["it"][0])
    else:
        (i0, i1), (v0, v1) = run["it"][k - 1:k + 1], run["val"][k - 1:k + 1]
        it = i0 + (v0 - target) / (v0 - v1) * (i1 - i0)
    grid = np.arange(len(run["flops"]))
    return it, float(np.interp(it, grid, run["flops"])), float(np.interp(it, grid, run["layers"]))


def analyze(a):
    base = Path(a.out) / "runs"
    rows, curves = [], {}
    for variant in a.variants:
        for seed in a.seeds:
            s, m = (load(base / f"{variant}-{arm}" / f"seed{seed}") for arm in ("single", "multilevel"))
            curves.setdefault(variant, []).append((seed, s, m))
            target = max(s["val"][-1], m["val"][-1])  # both runs reach it
            rs, rm = reach(s, target), reach(m, target)
            rows.append(dict(variant=variant, seed=seed, single_final=float(s["val"][-1]),
                             ml_final=float(m["val"][-1]), reached=bool(m["val"][-1] <= s["val"][-1]),
                             single_flops=float(s["flops"][-1]), ml_flops=float(m["flops"][-1]),
                             coarse_fraction=float(np.mean(m["levels"] > 0)), single_iter=rs[0], ml_iter=rm[0],
                             saving_flops=1 - rm[1] / rs[1], saving_layer_flops=1 - rm[2] / rs[2]))
    out = Path(a.out)
    (out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    write_table(rows, a.variants, out / "summary.md")
    plot(curves, out / "val_loss_vs_flops.png")
    print((out / "summary.md").read_text())


def write_table(rows, variants, path):
    lines = ["| variant | seed | single final val | multilevel final val | multilevel reaches single final | "
             "multilevel FLOPs / single (whole run) | iters to L* (single, multilevel) | FLOPs saving at L* | "
             "active-layer FLOPs saving at L* |", "|---|---:|---:|---:|:-:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['seed']} | {r['single_final']:.4f} | {r['ml_final']:.4f} | "
                     f"{'yes' if r['reached'] else 'no'} | {r['ml_flops'] / r['single_flops']:.3f} | "
                     f"{r['single_iter']:.0f}, {r['ml_iter']:.0f} | {100 * r['saving_flops']:+.1f}% | "
                     f"{100 * r['saving_layer_flops']:+.1f}% |")
    lines.append("")
    for v in variants:
        rs = [r for r in rows if r["variant"] == v]
        d = np.array([r["ml_final"] - r["single_final"] for r in rs])
        line = f"- {v} (n={len(rs)} seeds): final val multilevel - single {d.mean():+.4f} (sd {d.std(ddof=1):.4f})"
        for key, name in (("saving_flops", "FLOPs saving"), ("saving_layer_flops", "active-layer FLOPs saving")):
            x = 100 * np.array([r[key] for r in rs])
            line += f"; {name} {x.mean():+.1f}% (sd {x.std(ddof=1):.1f}, min {x.min():+.1f}, max {x.max():+.1f})"
        lines.append(line + f"; multilevel reached the single-level final val loss in "
                            f"{sum(r['reached'] for r in rs)}/{len(rs)} seeds")
    path.write_text("\n".join(lines) + "\n")


def plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.2), squeeze=False)
    for ax, (variant, runs) in zip(axes[0], curves.items()):
        for k, (seed, s, m) in enumerate(runs):
            for run, style, name in ((s, "-", "single-level"), (m, "--", "multilevel")):
                ax.plot(run["flops"][run["it"]] / 1e12, run["val"], style, color=f"C{k}",
                        label=f"{name}, seed {seed}")
            ax.axhline(s["val"][-1], color=f"C{k}", lw=0.5, alpha=0.6)
        finals = [r["val"][-1] for _, s, m in runs for r in (s, m)]
        ax.set_ylim(min(finals) - 0.05, min(finals) + 0.6)
        ax.set(title=f"{variant}: val loss vs training FLOPs", xlabel="training FLOPs (1e12)", ylabel="val loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    a = parse(sys.argv[1:] if argv is None else argv)
    analyze(a)


if __name__ == "__main__":
    main()
