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
import math
import shutil
from pathlib import Path

import numpy as np

import runlog
import utils
from studies import compare, lr_transfer, queues, spectral_plot

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


def unstable(run):
    """The geometry study's instability rule (studies/queues.py, fixed before the runs): diverged, or a val loss
    after step 300 more than 0.10 above the lowest val loss so far. Returns (unstable, where)."""
    if run.diverged:
        return True, f"diverged at iter {run.final.get('diverged_at')}"
    low = math.inf
    for e in run.evals():
        if e["iter"] > queues.UNSTABLE_AFTER and e["val_loss"] > low + queues.UNSTABLE_RISE:
            return True, f"val loss {e['val_loss']:.3f} at iter {e['iter']} vs {low:.3f} before"
        low = min(low, e["val_loss"])
    return False, ""


def paired(a, b):
    """(mean of a - b, paired t-test p) over common seeds of two {seed: loss}."""
    from scipy import stats
    seeds = sorted(set(a) & set(b))
    d = [a[s] - b[s] for s in seeds]
    p = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue) if len(seeds) > 1 else None
    return (float(np.mean(d)) if d else None), p, len(seeds)


def sigma_attn(rec):
    return max(v for k, v in rec["sigma_max"].items() if ".attn." in f".{k}.")


def geometry():
    """The comparison table (paired p against none-none), the pairwise tests, the instability rule, the mechanism
    (attention sigma_max growth, entropy, saturated rows), the sweep with its chosen rates, the clean retraction."""
    out = RESULTS / "geometry"
    arms = {a: [runlog.Run(d) for d in sorted((out / "runs" / a).glob("seed*"))] for a in GEOMETRY_ORDER
            if (out / "runs" / a).is_dir()}
    finished = {a: [r.dir for r in rs if r.finished] for a, rs in arms.items()}
    groups = {a: [compare.load_run(d) for d in ds] for a, ds in finished.items() if ds}
    table = ""
    if "none-none" in groups:
        _, table = compare.write_outputs(groups, "none-none", out / "compare", meta("geometry"))
    if any(finished.values()):
        spectral_plot.main(["--root", str(out / "runs"), "--out", str(out / "spectral")])
    final = {a: {r.config["seed"]: (r.final["final_val_loss"] if r.finished else math.inf) for r in rs}
             for a, rs in arms.items()}
    lines = ["", "## Geometry: verdict tables", "", "Final val loss per seed (inf: diverged) and the predeclared "
             "instability rule (diverged, or a val loss after step 300 more than 0.10 above its running minimum):", "",
             "| arm | seeds | final val (per seed) | mean | unstable runs |", "|---|---|---|---|---|"]
    for a, rs in arms.items():
        flags = [unstable(r) for r in rs]
        vals = [final[a][r.config["seed"]] for r in rs]
        lines.append(f"| {a} | {len(rs)} | {', '.join(f'{v:.4f}' for v in vals)} | {np.mean(vals):.4f} | "
                     f"{sum(f for f, _ in flags)}" + "".join(f"; seed {r.config['seed']}: {w}" for r, (f, w) in
                                                           zip(rs, flags) if f) + " |")
    lines += ["", "Pairwise (paired over seeds, final val loss):", "", "| comparison | mean difference | paired p | seeds |",
              "|---|---|---|---|"]
    for x, y in (("stiefel-dgram", "dgram-stiefel"), ("stiefel-dgram", "none-none"), ("stiefel-dgram", "stiefel-stiefel"),
                 ("stiefel-stiefel", "none-none"), ("dgram-stiefel", "none-none")):
        if x in final and y in final:
            d, p, n = paired(final[x], final[y])
            if d is not None:
                lines.append(f"| {x} - {y} | {d:+.4f} | {compare.fmt_p(p)} | {n} |")
    order = sorted(final, key=lambda a: np.mean(list(final[a].values())))
    lines += ["", "Ordering by mean final val loss (best first): " + " < ".join(order)]
    lines += ["", "Mechanism (spectral records every 100 steps; max over layers and seeds): the largest singular value "
              "of the attention matrices at step 100 and at the end, the lowest attention entropy and the highest share "
              "of saturated softmax rows at the end, the largest attention logit at the end:", "",
              "| arm | sigma_max attn @100 | @end | growth | entropy (min) | saturated rows (max) | logit max |",
              "|---|---|---|---|---|---|---|"]
    for a, rs in arms.items():
        spec = [r.of("spectral") for r in rs if r.of("spectral")]
        if not spec:
            continue
        at100 = max(sigma_attn(next((x for x in sp if x["iter"] >= 100), sp[0])) for sp in spec)
        end = [sp[-1] for sp in spec]
        s_end = max(sigma_attn(x) for x in end)
        ent = min(min(x["attn_entropy"].values()) for x in end) if "attn_entropy" in end[0] else math.nan
        sat = max(max(x["attn_saturated"].values()) for x in end) if "attn_saturated" in end[0] else math.nan
        logit = max(max(x["attn_logit_max"].values()) for x in end)
        lines.append(f"| {a} | {at100:.2f} | {s_end:.2f} | {s_end / at100:.2f}x | {ent:.3f} | {sat:.3f} | {logit:.1f} |")
    clean = {a: runlog.Run(out / "clean" / a / "seed0") for a in queues.DGRAM_MODULE
             if (out / "clean" / a / "seed0" / runlog.FILE).is_file()}
    if clean:
        lines += ["", "Retraction check (seed 0): the reference's SVD retraction (column norms re-sorted) against the "
                  "clean one (idempotent):", "", "| arm | reference | clean |", "|---|---|---|"]
        for a, r in clean.items():
            ref = final.get(a, {}).get(0)
            c = r.final["final_val_loss"] if r.finished else math.inf
            lines.append(f"| {a} | {'-' if ref is None else f'{ref:.4f}'} | {c:.4f} |")
    lines += long_runs(out)
    lines += ["", "Learning-rate sweep (500 steps, seed 0; final val loss; the main runs use each arm's best):", "",
              "| arm | run | final val |", "|---|---|---|"]
    for d in sorted((out / "sweep").glob("*/*")) if (out / "sweep").is_dir() else []:
        run = runlog.Run(d)
        if run.done:
            lines.append(f"| {d.parent.name} | {d.name} | "
                         + ("diverged" if run.diverged else f"{run.final['final_val_loss']:.4f}") + " |")
    (out / "compare").mkdir(parents=True, exist_ok=True)
    utils.atomic_write_text(table + "\n".join(lines) + "\n", out / "compare" / "results.md")
    print(table + "\n".join(lines))


def long_runs(out):
    """Table lines for the longer runs (long/<arm>/seed0, 4x the horizon): losses, the instability rule, and the
    mechanism at the main runs' horizon and at the end; their plots in long_spectral/."""
    runs = {a: runlog.Run(out / "long" / a / "seed0") for a in queues.LONG_ARMS
            if (out / "long" / a / "seed0" / runlog.FILE).is_file()}
    if not runs:
        return []
    spectral_plot.main(["--root", str(out / "long"), "--out", str(out / "long_spectral")])
    lines = ["", f"Longer runs (seed 0, {queues.GEOMETRY_LONG:,} steps = {queues.GEOMETRY_LONG // queues.GEOMETRY_STEPS}x "
             "the horizon, cosine over the whole run, the main runs' rates; the same instability rule; sigma_max and "
             f"the attention statistics as above, at step {queues.GEOMETRY_STEPS:,} and at the end):", "",
             "| arm | final val | lowest val (step) | final train | unstable | sigma_max attn "
             f"@{queues.GEOMETRY_STEPS} | @end | entropy min @end | saturated rows max @end | logit max @end |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for a, r in runs.items():
        ev = r.evals()
        if not r.finished or not ev:
            lines.append(f"| {a} | {'diverged' if r.diverged else 'not finished'} | | | | | | | | |")
            continue
        low = min(ev, key=lambda e: e["val_loss"])
        flag, where = unstable(r)
        spec = r.of("spectral")
        mid = next((x for x in spec if x["iter"] >= queues.GEOMETRY_STEPS), spec[-1])
        end = spec[-1]
        lines.append(f"| {a} | {ev[-1]['val_loss']:.4f} | {low['val_loss']:.4f} ({low['iter']}) | "
                     f"{ev[-1]['train_loss']:.4f} | {'yes: ' + where if flag else 'no'} | {sigma_attn(mid):.2f} | "
                     f"{sigma_attn(end):.2f} | {min(end['attn_entropy'].values()):.3f} | "
                     f"{max(end['attn_saturated'].values()):.3f} | {max(end['attn_logit_max'].values()):.1f} |")
    return lines


def reach(evals, key, target, x="flops"):
    """The value of x (a record field, or a function of the record) at which an eval curve first reaches target
    (linear interpolation between evaluations), or None."""
    get = x if callable(x) else (lambda r: r[x])
    for a, b in zip(evals, evals[1:]):
        if b[key] <= target:
            if a[key] <= target:
                return get(a)
            t = (a[key] - target) / (a[key] - b[key])
            return get(a) + t * (get(b) - get(a))
    return None


def head_free(run):
    """f(record) -> the record's FLOPs without the LM head's (every forward/backward pass pays 6 d V per token:
    the step's own and, at a corrected coarse phase start, k fine and k - 1 coarse passes more)."""
    import multilevel
    from types import SimpleNamespace
    c, m = run.config, run.model_args
    per_pass = run.header["tokens_per_iter"] * 6 * m["n_embd"] * m["vocab_size"]
    cfg = SimpleNamespace(**{k: c[k] for k in ("multilevel_levels", "multilevel_cycle", "multilevel_mode",
                                               "multilevel_until")})
    k = c.get("multilevel_correction_batches", 1) if c.get("multilevel_correction") else 0
    levels = [multilevel.level_at(i, cfg) for i in range(c["max_iters"])]
    extra = np.cumsum([0] + [(2 * k - 1) if k and lv[0] > 0 and (i == 0 or levels[i - 1] != lv) else 0
                             for i, lv in enumerate(levels)])
    return lambda r: r["flops"] - per_pass * (r["iter"] + extra[min(r["iter"], len(extra) - 1)])


def multilevel():
    """FLOPs (with and without the head) and wall time each multilevel arm needs to first reach the single-level
    final val loss (same seed), and the single run's FLOPs to reach each arm's final val loss; coarse fidelity."""
    import matplotlib.pyplot as plt
    plt.switch_backend("Agg")
    out = RESULTS / "multilevel"
    arms = {a: [r for r in (runlog.Run(d) for d in sorted((out / "runs" / a).glob("seed*"))) if r.finished]
            for a in queues.ML_ARMS if (out / "runs" / a).is_dir()}
    single = {r.config["seed"]: r for r in arms.get("single", [])}
    rows, summary = [], {}
    for arm, runs in arms.items():
        per = []
        for r in runs:
            ev, ref = r.evals(), single.get(r.config["seed"])
            rec = dict(seed=r.config["seed"], val=ev[-1]["val_loss"], flops=ev[-1]["flops"], wall=r.final["wall_time"],
                       coarse_gap=np.mean(list(ev[-1]["coarse_val_loss"].values())) - ev[-1]["val_loss"]
                       if "coarse_val_loss" in ev[-1] else None)
            if ref is not None and arm != "single":
                rev, target = ref.evals(), ref.evals()[-1]["val_loss"]
                f, nh, t = (reach(ev, "val_loss", target, x) for x in ("flops", head_free(r), "time"))
                rec["flops_ratio"] = None if f is None else f / rev[-1]["flops"]
                rec["flops_ratio_no_head"] = None if nh is None else nh / head_free(ref)(rev[-1])
                rec["wall_ratio"] = None if t is None else t / rev[-1]["time"]
                back = reach(rev, "val_loss", ev[-1]["val_loss"])  # the single run at this arm's final loss
                rec["single_flops_at_arm_loss"] = None if back is None else ev[-1]["flops"] / back
            per.append(rec)
        summary[arm] = per
        ms = lambda k: (np.mean([p[k] for p in per]), np.std([p[k] for p in per], ddof=1) if len(per) > 1 else 0.0)  # noqa: E731
        ratios = lambda k: ", ".join("not reached" if p.get(k) is None else f"{p[k]:.2f}x" for p in per)  # noqa: E731
        mean_ratio = lambda k: ("" if any(p.get(k) is None for p in per) else  # noqa: E731
                                f" (mean {np.mean([p[k] for p in per]):.2f}x)")
        gap = [p["coarse_gap"] for p in per if p["coarse_gap"] is not None]
        if arm == "single":
            rows.append(f"| single | {len(per)} | {ms('val')[0]:.4f} ± {ms('val')[1]:.4f} | - | {ms('flops')[0] / 1e15:.3f} "
                        f"| 1 | 1 | 1 | - | - | {ms('wall')[0] / 60:.0f} min |")
        else:
            diff, pval, n = paired({p["seed"]: p["val"] for p in per},
                                   {p["seed"]: p["val"] for p in summary.get("single", [])})
            summary[f"{arm}_vs_single"] = dict(diff=diff, p=pval, seeds=n)
            vs = "-" if diff is None else f"{diff:+.4f}" + ("" if pval is None else f" ({pval:.2g})")
            rows.append(f"| {arm} | {len(per)} | {ms('val')[0]:.4f} ± {ms('val')[1]:.4f} | {vs} | {ms('flops')[0] / 1e15:.3f} | "
                        f"{ratios('flops_ratio')}{mean_ratio('flops_ratio')} | {ratios('flops_ratio_no_head')}"
                        f"{mean_ratio('flops_ratio_no_head')} | {ratios('wall_ratio')} | "
                        f"{ratios('single_flops_at_arm_loss')} | {np.mean(gap) if gap else float('nan'):+.3f} | "
                        f"{ms('wall')[0] / 60:.0f} min |")
    lines = ["# Multilevel training with SGD (12 layers, width 256, 8 heads)", "",
             "Final val loss (mean ± std over seeds); FLOPs ratio: the FLOPs (with the head; without it) and the wall "
             "time at which the arm first reaches the single-level run's final val loss (same seed), over the single "
             "run's total (< 1: multilevel saves; the paper: 0.56x); single at arm's loss: the arm's total FLOPs over "
             "the single run's FLOPs to reach the arm's final loss (> 1: the single run got there cheaper). Coarse gap: "
             "the 6-layer coarse networks' val loss minus the fine one's at the shared weights, at the end.", "",
             "| arm | seeds | final val loss | vs single (same seeds; paired p) | PFLOPs | FLOPs ratio to single's final "
             "loss | without the head | wall ratio | single at arm's loss | coarse gap | wall |",
             "|---|---|---|---|---|---|---|---|---|---|---|", *rows]
    sweep = sorted((out / "sweep").glob("lr*"), key=lambda d: float(d.name[2:])) if (out / "sweep").is_dir() else []
    if sweep:
        lines += ["", "Single-level learning-rate sweep (constant lr after warmup, 1,000 steps, seed 0; final val "
                  "loss): " + ", ".join(f"{d.name[2:]}: " + ("diverged" if runlog.Run(d).diverged else
                                                             f"{runlog.Run(d).final['final_val_loss']:.4f}")
                                         for d in sweep if runlog.Run(d).done)]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    utils.atomic_write_text(json.dumps(summary, indent=1, default=float) + "\n", out / "summary.json")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = dict(single="tab:gray", plain="tab:blue", corrected="tab:green", coarse_heavy="tab:red",
                  coarse_heavy_corrected="tab:olive", plain_per_level="tab:purple")
    for arm, runs in arms.items():
        curves = [[e for e in r.evals() if e["iter"] > 0] for r in runs]
        n = min(len(c) for c in curves)
        f = np.mean([[e["flops"] for e in c[:n]] for c in curves], 0) / 1e15
        v = np.array([[e["val_loss"] for e in c[:n]] for c in curves])
        axes[0].plot(f, v.mean(0), color=colors[arm], label=f"{arm} ({len(runs)} seeds)")
        axes[0].fill_between(f, v.min(0), v.max(0), color=colors[arm], alpha=0.2)
        for i, r in enumerate(runs):
            ev = [e for e in r.evals() if e["iter"] > 0 and "coarse_val_loss" in e]
            if ev:
                axes[1].plot([e["iter"] for e in ev], [np.mean(list(e["coarse_val_loss"].values())) - e["val_loss"]
                                                        for e in ev], color=colors[arm], label=arm if i == 0 else None)
    axes[0].set(xlabel="training PFLOPs", ylabel="val loss", title="val loss against FLOPs (mean, seed range)")
    axes[0].set_ylim(top=min(axes[0].get_ylim()[1], 6))
    axes[1].set(xlabel="steps", ylabel="coarse - fine val loss", title="coarse-model fidelity at the shared weights",
                yscale="symlog")  # linear to 1, then log: the collapsed arms' gaps reach tens of nats
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
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
