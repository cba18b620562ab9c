"""
Every table and plot of studies/RESULTS.md, rebuilt from the committed raw run records in studies/results/:

    python -m studies.analyze all                      # variants, geometry, multilevel, lr_transfer, lab
    python -m studies.analyze variants --root out-studies    # first copy the finished runs of a queue, then analyse

With --root, the metrics.jsonl and config.json of every finished run under ROOT/<study>/ (written by the study's
queue script, studies/<study>.sh) are copied into studies/results/<study>/runs/ first; without it, only the
committed copies are read, so a fresh clone rebuilds everything.
"""

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

import runlog
import utils
from studies import compare, lr_transfer, spectral_plot

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "studies" / "results"
STUDIES = ("variants", "geometry", "multilevel", "lr_transfer", "lab")


def keep(src_root, dst_root):
    """Copy metrics.jsonl and config.json of every finished run under src_root (keeping the relative paths)."""
    n = 0
    for m in sorted(Path(src_root).rglob(runlog.FILE)):
        run = runlog.Run(m.parent)
        if run.finished:
            dst = Path(dst_root) / m.parent.relative_to(src_root)
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy2(m, dst / runlog.FILE)
            if (m.parent / "config.json").exists():
                shutil.copy2(m.parent / "config.json", dst / "config.json")
            n += 1
    return n


def groups_of(root, names=None):
    """{arm: [loaded runs]} of root/<arm>/seed<k>."""
    found = compare.discover(root, names)
    return {name: [compare.load_run(d) for d in dirs] for name, dirs in found.items()}


def meta(study):
    return {"command": f"python -m studies.analyze {study}", "git_commit": utils.git_commit(), "skipped_runs": []}


# ----------------------------------------------------------------------------- the studies

VARIANT_ORDER = ["baseline", "baseline_embed", "gd_euler", "polyak", "yuriiformer", "yuriiformer_v0zero",
                 "nesterov_euler", "imex"]


def variants():
    out = RESULTS / "variants"
    groups = groups_of(out / "runs")
    groups = {k: groups[k] for k in VARIANT_ORDER if k in groups} | {k: v for k, v in groups.items() if k not in VARIANT_ORDER}
    _, table = compare.write_outputs(groups, "baseline", out, meta("variants"))
    lines = ["", "Vocabulary check (300 steps, the same model and recipe; yuriiformer - baseline, final val loss):", "",
             "| vocabulary | seeds | baseline | yuriiformer | difference (per seed) |", "|---|---|---|---|---|"]
    for vocab in ("top4096", "full"):
        g = groups_of(out / "vocab" / vocab) if (out / "vocab" / vocab).is_dir() else {}
        if {"baseline", "yuriiformer"} <= set(g):
            b = {r["header"]["config"]["seed"]: r["final"]["final_val_loss"] for r in g["baseline"]}
            y = {r["header"]["config"]["seed"]: r["final"]["final_val_loss"] for r in g["yuriiformer"]}
            seeds = sorted(set(b) & set(y))
            d = [y[s] - b[s] for s in seeds]
            lines.append(f"| {vocab} | {len(seeds)} | {np.mean([b[s] for s in seeds]):.4f} | "
                         f"{np.mean([y[s] for s in seeds]):.4f} | {np.mean(d):+.4f} ({', '.join(f'{x:+.4f}' for x in d)}) |")
    with open(out / "results.md", "a") as f:
        f.write("\n".join(lines) + "\n")
    print(table + "\n".join(lines))


GEOMETRY_ORDER = ["none-none", "stiefel-stiefel", "stiefel-dgram", "dgram-stiefel"]


def geometry():
    out = RESULTS / "geometry"
    groups = groups_of(out / "runs", [a for a in GEOMETRY_ORDER if (out / "runs" / a).is_dir()])
    _, table = compare.write_outputs(groups, "none-none", out / "compare", meta("geometry"))
    spectral_plot.main(["--root", str(out / "runs"), "--out", str(out)])
    lines = ["", "Learning-rate sweep (500 steps, seed 0; final val loss):", "", "| assignment | run | final val |",
             "|---|---|---|"]
    for d in sorted((out / "sweep").glob("*/*")) if (out / "sweep").is_dir() else []:
        run = runlog.Run(d)
        if run.finished:
            lines.append(f"| {d.parent.name} | {d.name} | {run.final['final_val_loss']:.4f} |")
    with open(out / "compare" / "results.md", "a") as f:
        f.write("\n".join(lines) + "\n")
    print(table + "\n".join(lines))


def reach(evals, key, target):
    """The FLOPs at which an eval curve first reaches target (linear interpolation), or None."""
    for a, b in zip(evals, evals[1:]):
        if b[key] <= target:
            if a[key] <= target:
                return a["flops"]
            t = (a[key] - target) / (a[key] - b[key])
            return a["flops"] + t * (b["flops"] - a["flops"])
    return None


def multilevel():
    """FLOPs saving at equal loss (training loss, the paper's metric; and val loss), coarse-model fidelity."""
    import matplotlib.pyplot as plt
    plt.switch_backend("Agg")
    out = RESULTS / "multilevel"
    arms = {a: [runlog.Run(d) for d in sorted((out / "runs" / a).glob("seed*")) if runlog.Run(d).finished]
            for a in ("single", "plain", "corrected") if (out / "runs" / a).is_dir()}
    single = {r.config["seed"]: r for r in arms.get("single", [])}
    rows, summary = [], {}
    for arm, runs in arms.items():
        per = []
        for r in runs:
            ev, ref = r.evals(), single.get(r.config["seed"])
            rec = dict(seed=r.config["seed"], train=ev[-1]["train_loss"], val=ev[-1]["val_loss"], flops=ev[-1]["flops"],
                       coarse_gap=np.mean(list(ev[-1]["coarse_train_loss"].values())) - ev[-1]["train_loss"]
                       if "coarse_train_loss" in ev[-1] else None, wall=r.final["wall_time"])
            if ref is not None and arm != "single":
                for key in ("train_loss", "val_loss"):
                    target, total = ref.evals()[-1][key], ref.evals()[-1]["flops"]
                    f = reach(ev, key, target)
                    rec[f"saving_{key}"] = None if f is None else 1 - f / total
            per.append(rec)
        summary[arm] = per
        ms = lambda k: (np.mean([p[k] for p in per]), np.std([p[k] for p in per], ddof=1) if len(per) > 1 else 0.0)  # noqa: E731
        sav = lambda k: [p.get(k) for p in per]  # noqa: E731
        fmt_s = lambda xs: ", ".join("not reached" if x is None else f"{100 * x:+.1f}%" for x in xs) if xs else "-"  # noqa: E731
        rows.append(f"| {arm} | {len(per)} | {ms('train')[0]:.4f} ± {ms('train')[1]:.4f} | {ms('val')[0]:.4f} ± "
                    f"{ms('val')[1]:.4f} | {ms('flops')[0] / 1e15:.2f} | "
                    f"{fmt_s(sav('saving_train_loss')) if arm != 'single' else '-'} | "
                    f"{fmt_s(sav('saving_val_loss')) if arm != 'single' else '-'} | "
                    f"{ms('coarse_gap')[0]:+.3f} | {ms('wall')[0] / 60:.0f} min |")
    lines = ["# Multilevel training with SGD (12 layers, width 256)", "",
             "Final train loss (fixed train batches) and val loss, mean ± std over seeds; FLOPs saving: the fraction "
             "of the single-level run's FLOPs (same seed) that the arm did not need to reach the single-level final "
             "loss (negative: it needed more; not reached: never within its steps). Coarse gap: the 6-layer coarse "
             "networks' train loss minus the fine one's at the shared weights, at the end.", "",
             "| arm | seeds | final train loss | final val loss | PFLOPs | saving (train loss) | saving (val loss) "
             "| coarse gap | wall |", "|---|---|---|---|---|---|---|---|---|", *rows]
    sweep = sorted((out / "sweep").glob("lr*")) if (out / "sweep").is_dir() else []
    if sweep:
        lines += ["", "Single-level learning-rate sweep (1,000 steps, seed 0): " + ", ".join(
            f"{d.name[2:]}: {runlog.Run(d).final['final_val_loss']:.4f}" for d in sweep if runlog.Run(d).finished)]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    utils.atomic_write_text(json.dumps(summary, indent=1, default=float) + "\n", out / "summary.json")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    colors = dict(single="tab:gray", plain="tab:blue", corrected="tab:green")
    for arm, runs in arms.items():
        for i, r in enumerate(runs):
            ev = [e for e in r.evals() if e["iter"] > 0]
            f = np.array([e["flops"] for e in ev]) / 1e15
            lab = arm if i == 0 else None
            axes[0].plot(f, [e["train_loss"] for e in ev], color=colors[arm], label=lab, alpha=0.8)
            axes[1].plot(f, [e["val_loss"] for e in ev], color=colors[arm], label=lab, alpha=0.8)
            if "coarse_train_loss" in ev[0]:
                gap = [np.mean(list(e["coarse_train_loss"].values())) - e["train_loss"] for e in ev]
                axes[2].plot([e["iter"] for e in ev], gap, color=colors[arm], label=lab, alpha=0.8)
    for ax, (xl, yl) in zip(axes, (("PFLOPs", "train loss"), ("PFLOPs", "val loss"), ("steps", "coarse - fine train loss"))):
        ax.set(xlabel=xl, ylabel=yl)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylim(top=min(axes[0].get_ylim()[1], 6))
    axes[1].set_ylim(top=min(axes[1].get_ylim()[1], 6))
    axes[2].set_title("coarse-model fidelity at the shared weights")
    fig.tight_layout()
    fig.savefig(out / "loss_vs_flops.png", dpi=100)
    plt.close(fig)
    print("\n".join(lines))


def lr_transfer_study():
    lr_transfer.report(lr_transfer.load_runs(RESULTS / "lr_transfer" / "runs.jsonl"), RESULTS / "lr_transfer")


def lab():
    from lab import run_study
    run_study.report(RESULTS / "lab", "python -m studies.analyze lab")


def has_records(study):
    """Whether studies/results/<study>/ holds any run record to analyse."""
    folder = RESULTS / study
    return (folder / "runs.jsonl").exists() if study in ("lr_transfer", "lab") else (folder / "runs").is_dir()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", choices=(*STUDIES, "all"))
    p.add_argument("--root", help="copy the finished runs of ROOT/<study>/ into studies/results/<study>/runs first")
    a = p.parse_args(argv)
    todo = STUDIES if a.study == "all" else (a.study,)
    for study in todo:
        if a.root and study in ("variants", "geometry", "multilevel"):
            src = Path(a.root) / study
            if study == "variants":
                n = keep(src, RESULTS / "variants" / "runs") + keep(Path(a.root) / "vocab", RESULTS / "variants" / "vocab")
            else:
                n = keep(src, RESULTS / study / "runs")
                for sub in ("sweep",):  # the tuning runs sit beside the arms: move them out of runs/
                    moved = RESULTS / study / "runs" / sub
                    if moved.is_dir():
                        shutil.rmtree(RESULTS / study / sub, ignore_errors=True)
                        moved.rename(RESULTS / study / sub)
            print(f"{study}: copied {n} finished runs from {src}")
        if not has_records(study):
            msg = f"{study}: no run records in studies/results/{study}/ yet: run bash studies/{study}.sh first"
            if a.study != "all":
                raise SystemExit(f"error: {msg}")
            print(msg)
            continue
        {"variants": variants, "geometry": geometry, "multilevel": multilevel, "lr_transfer": lr_transfer_study,
         "lab": lab}[study]()


if __name__ == "__main__":
    main()
