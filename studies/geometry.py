"""
The geometry study: manifold Muon with a geometry per module. Results:
studies/RESULTS.md#geometry-which-constraint-each-module-prefers-manifold-muon-1500-steps

    python -m studies geometry plan|run|report      # the queue (resumable), then the tables and plots

The design, fixed before the runs: manifold Muon at the variant comparison's model (4 layers, 4 heads, width 128,
T 128, batch 8, TinyStories top-4096 vocabulary, fp32, eager), 1,500 steps (warmup 150, cosine to 0.1x). The paper's
settings where they decide the comparison: DGram weights start at their own singular values (mm_init=reference), its
SVD retraction (mm_retraction=reference), weight decay 0.1 on the unconstrained baseline only; the dual ascent is ours
(mm_scaling=rms, K=2, alpha 0.3: see docs/manifold-muon.md).
  1. sweep/<arm>/lr<lr>: muon_lr 0.01 .. 0.08 (factors of 2), 500 steps, seed 0, grown by a factor 2 past an edge
     optimum (0.0025 .. 0.32); the mixed arms then x0.5 and x2 on the DGram module's lr (grown the same way)
  2. runs/<arm>/seed<k>: the four assignments at their best rates, 3 seeds, spectral records every 100 steps
  3. clean/<arm>/seed0: the mixed arms with mm_retraction=clean (the reference's SVD re-sorting of column norms off)
  4. long/<arm>/seed0: 4x the horizon (6,000 steps, 2.4 epochs of the sample, cosine over 6,000, the same warmup and
     rates), the mixed arms first, to look for the paper's late instability and its precursor
Instability rule, fixed before the runs: a run is unstable when it diverges (non-finite loss) or when its val loss at
an evaluation after step 300 lies more than 0.10 above its lowest val loss so far.

    python -m studies.geometry --root RUNS --out DIR   # the spectral plots of any manifold-Muon runs under RUNS

The report (studies/results/geometry/): compare/ (the loss table with paired p against unconstrained Muon, the
verdict tables: instability, pairwise tests, mechanism, retraction check, longer runs, the sweep), spectral/ and
long_spectral/ (from the runs' "spectral" records: validation loss per assignment, the largest singular value of the
attention and MLP matrices, the largest attention logit per layer, attention entropy and saturation, against the step).
"""

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

import runlog
import utils
from studies import compare
from studies.runner import Job, Study, bracket, final_loss, fmt, landed_values

GEOMETRY_ARMS = {
    "none-none": "--geometry_attn=none --geometry_mlp=none --muon_weight_decay=0.1",
    "stiefel-stiefel": "--geometry_attn=stiefel --geometry_mlp=stiefel",
    "stiefel-dgram": "--geometry_attn=stiefel --geometry_mlp=dgram",
    "dgram-stiefel": "--geometry_attn=dgram --geometry_mlp=stiefel",
}
DGRAM_MODULE = {"stiefel-dgram": "mlp", "dgram-stiefel": "attn"}
GEOMETRY_DATA = "data/tinystories_study_top4096"
GEOMETRY_COMMON = (f"config/tinystories_baseline_cpu.py --data_dir={GEOMETRY_DATA} --vocab_size=4096 --n_embd=128 "
                   "--batch_size=8 --dtype=float32 --compile=False --always_save_checkpoint=False "
                   "--optimizer=manifold_muon --mm_init=reference --mm_retraction=reference --eval_iters=16 --shortlist=0")
GEOMETRY_SWEEP = "--max_iters=500 --lr_decay_iters=500 --warmup_iters=50 --eval_interval=100 --log_interval=50 --seed=0"
GEOMETRY_STEPS, GEOMETRY_LONG = 1500, 6000
GEOMETRY_MAIN = "--warmup_iters=150 --eval_interval=100 --log_interval=25 --spectral_interval=100"
LONG_ARMS = ("stiefel-dgram", "dgram-stiefel", "none-none", "stiefel-stiefel")
GEOMETRY_LRS, GEOMETRY_LR_RANGE = (0.01, 0.02, 0.04, 0.08), (0.0025, 0.32)
MULTS, MULT_RANGE = (0.5, 1.0, 2.0), (0.125, 8.0)
SEEDS = (0, 1, 2)
UNSTABLE_RISE, UNSTABLE_AFTER = 0.10, 300


def jobs(study, seeds=SEEDS):
    """The queue (studies/runner.py) given the records so far; called with None: the Study."""
    if study is None:
        return Study("geometry", guess={"4L128-sweep": 280, "4L128-main": 300})
    out, best, mult = [], {}, {}

    def train_job(key, args, steps, shape, waits=""):
        return Job(key, ["train.py", *args.split()], steps, shape, waits=waits)
    for arm, arm_args in GEOMETRY_ARMS.items():  # 1. the lr sweep, grown past an edge optimum
        losses = {}
        for lr in set(GEOMETRY_LRS) | landed_values(study, f"sweep/{arm}/lr"):
            run = study.run(f"sweep/{arm}/lr{fmt(lr)}")
            losses[lr] = None if run is None else final_loss(run)
        grid, best[arm], _ = bracket(losses, GEOMETRY_LRS, *GEOMETRY_LR_RANGE)
        for lr in grid:
            out.append(train_job(f"sweep/{arm}/lr{fmt(lr)}",
                                 f"{GEOMETRY_COMMON} {arm_args} {GEOMETRY_SWEEP} --muon_lr={lr}", 500, "4L128-sweep"))
    for arm, mod in DGRAM_MODULE.items():  # ... and the DGram module's multiplier at the arm's best rate
        lr = best[arm]
        if lr is None:
            out += [train_job(f"sweep/{arm}/lr?-{mod}{fmt(m)}", "", 500, "4L128-sweep", waits=f"the {arm} lr sweep")
                    for m in MULTS if m != 1.0]
            mult[arm] = None
            continue
        losses = {1.0: final_loss(study.run(f"sweep/{arm}/lr{fmt(lr)}"))}
        for m in set(MULTS) | landed_values(study, f"sweep/{arm}/lr{fmt(lr)}-{mod}"):
            if m != 1.0:
                run = study.run(f"sweep/{arm}/lr{fmt(lr)}-{mod}{fmt(m)}")
                losses[m] = None if run is None else final_loss(run)
        grid, mult[arm], _ = bracket(losses, MULTS, *MULT_RANGE)
        for m in grid:
            if m != 1.0:
                out.append(train_job(f"sweep/{arm}/lr{fmt(lr)}-{mod}{fmt(m)}",
                                     f"{GEOMETRY_COMMON} {GEOMETRY_ARMS[arm]} {GEOMETRY_SWEEP} --muon_lr={lr} "
                                     f"--group_lr_mult={{'{mod}':{m}}}", 500, "4L128-sweep"))
    for seed in seeds:  # 2. the main runs
        for arm in GEOMETRY_ARMS:
            out.append(main_job(arm, best, mult, seed, f"runs/{arm}/seed{seed}", train_job))
    for arm in DGRAM_MODULE:  # 3. the reference's retraction off
        out.append(main_job(arm, best, mult, 0, f"clean/{arm}/seed0", train_job, "--mm_retraction=clean"))
    for arm in LONG_ARMS:  # 4. the longer runs
        out.append(main_job(arm, best, mult, 0, f"long/{arm}/seed0", train_job, steps=GEOMETRY_LONG))
    return out


def main_job(arm, best, mult, seed, key, train_job, extra="", steps=GEOMETRY_STEPS):
    if best[arm] is None or (arm in DGRAM_MODULE and mult.get(arm) is None):
        return train_job(key, "", steps, "4L128-main", waits=f"the {arm} sweep")
    m = mult.get(arm)
    group = f" --group_lr_mult={{'{DGRAM_MODULE[arm]}':{m}}}" if m not in (None, 1.0) else ""
    return train_job(key, f"{GEOMETRY_COMMON} {GEOMETRY_ARMS[arm]} --max_iters={steps} --lr_decay_iters={steps} "
                     f"{GEOMETRY_MAIN} --muon_lr={best[arm]}{group} --seed={seed} {extra}".strip(), steps, "4L128-main")


def compare_meta(command):
    return {"command": command, "git_commit": utils.git_commit(), "skipped_runs": []}


# ----------------------------------------------------------------------------- the report

GEOMETRY_ORDER = ["none-none", "stiefel-stiefel", "stiefel-dgram", "dgram-stiefel"]


def unstable(run):
    """The geometry study's instability rule (studies/py, fixed before the runs): diverged, or a val loss
    after step 300 more than 0.10 above the lowest val loss so far. Returns (unstable, where)."""
    if run.diverged:
        return True, f"diverged at iter {run.final.get('diverged_at')}"
    low = math.inf
    for e in run.evals():
        if e["iter"] > UNSTABLE_AFTER and e["val_loss"] > low + UNSTABLE_RISE:
            return True, f"val loss {e['val_loss']:.3f} at iter {e['iter']} vs {low:.3f} before"
        low = min(low, e["val_loss"])
    return False, ""


def sigma_attn(rec):
    return max(v for k, v in rec["sigma_max"].items() if ".attn." in f".{k}.")


def report(out, command):
    """The comparison table (paired p against none-none), the pairwise tests, the instability rule, the mechanism
    (attention sigma_max growth, entropy, saturated rows), the sweep with its chosen rates, the clean retraction."""
    out = Path(out)
    arms = {a: [runlog.Run(d) for d in sorted((out / "runs" / a).glob("seed*"))] for a in GEOMETRY_ORDER
            if (out / "runs" / a).is_dir()}
    finished = {a: [r.dir for r in rs if r.finished] for a, rs in arms.items()}
    groups = {a: [compare.load_run(d) for d in ds] for a, ds in finished.items() if ds}
    table = ""
    if "none-none" in groups:
        _, table = compare.write_outputs(groups, "none-none", out / "compare", compare_meta(command))
    if any(finished.values()):
        spectral(out / "runs", out / "spectral")
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
            d, p, n = compare.paired(final[x], final[y])
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
    clean = {a: runlog.Run(out / "clean" / a / "seed0") for a in DGRAM_MODULE
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
    runs = {a: runlog.Run(out / "long" / a / "seed0") for a in LONG_ARMS
            if (out / "long" / a / "seed0" / runlog.FILE).is_file()}
    if not runs:
        return []
    spectral(out / "long", out / "long_spectral")
    lines = ["", f"Longer runs (seed 0, {GEOMETRY_LONG:,} steps = {GEOMETRY_LONG // GEOMETRY_STEPS}x "
             "the horizon, cosine over the whole run, the main runs' rates; the same instability rule; sigma_max and "
             f"the attention statistics as above, at step {GEOMETRY_STEPS:,} and at the end):", "",
             "| arm | final val | lowest val (step) | final train | unstable | sigma_max attn "
             f"@{GEOMETRY_STEPS} | @end | entropy min @end | saturated rows max @end | logit max @end |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for a, r in runs.items():
        ev = r.evals()
        if not r.finished or not ev:
            lines.append(f"| {a} | {'diverged' if r.diverged else 'not finished'} | | | | | | | | |")
            continue
        low = min(ev, key=lambda e: e["val_loss"])
        flag, where = unstable(r)
        spec = r.of("spectral")
        mid = next((x for x in spec if x["iter"] >= GEOMETRY_STEPS), spec[-1])
        end = spec[-1]
        lines.append(f"| {a} | {ev[-1]['val_loss']:.4f} | {low['val_loss']:.4f} ({low['iter']}) | "
                     f"{ev[-1]['train_loss']:.4f} | {'yes: ' + where if flag else 'no'} | {sigma_attn(mid):.2f} | "
                     f"{sigma_attn(end):.2f} | {min(end['attn_entropy'].values()):.3f} | "
                     f"{max(end['attn_saturated'].values()):.3f} | {max(end['attn_logit_max'].values()):.1f} |")
    return lines


# ----------------------------------------------------------------------------- the spectral plots

LABELS = ("none/none", "stiefel/stiefel", "stiefel/dgram", "dgram/stiefel")


def load(path):
    """(label, seed, records by kind) of one metrics.jsonl."""
    run = runlog.Run(Path(path).parent)
    recs = defaultdict(list)
    for r in run.records:
        recs[r["kind"]].append(r)
    return f"{run.config['geometry_attn']}/{run.config['geometry_mlp']}", run.config["seed"], recs


def runs_by_label(root):
    out = defaultdict(list)
    for path in sorted(Path(root).rglob("metrics.jsonl")):
        label, seed, recs = load(path)
        out[label].append((seed, recs))
    return dict(sorted(out.items(), key=lambda kv: LABELS.index(kv[0]) if kv[0] in LABELS else len(LABELS)))


def series(recs, kind, value):
    """(iters, values) of value(record) over the records of one kind."""
    rs = recs[kind]
    return np.array([r["iter"] for r in rs]), np.array([value(r) for r in rs], dtype=float)


def band(ax, runs, kind, value, label, color):
    """Mean over seeds with a min-max band (runs cut to the shortest, e.g. a diverged one)."""
    curves = [series(recs, kind, value) for _, recs in runs]
    n = min(len(x) for x, _ in curves)
    x, ys = curves[0][0][:n], np.stack([y[:n] for _, y in curves])
    ax.plot(x, ys.mean(0), color=color, label=label)
    ax.fill_between(x, ys.min(0), ys.max(0), color=color, alpha=0.2)


def matrix_max(rec, stat, part):
    """Largest value of a per-matrix stat over the matrices whose name has `part` ('.attn.' or '.mlp.')."""
    return max(v for k, v in rec[stat].items() if part in f".{k}.")


def spectral_summary(runs_by):
    """Per label: final and best val loss (mean, std over seeds), end-of-run max sigma/logit (max over seeds)."""
    rows = {}
    for label, runs in runs_by.items():
        final = [recs["final"][0].get("final_val_loss") or math.inf if recs["final"] else math.nan for _, recs in runs]
        best = [recs["final"][0]["best_val_loss"] if recs["final"] else math.nan for _, recs in runs]
        spec = [recs["spectral"][-1] for _, recs in runs if recs["spectral"]]
        rows[label] = {
            "seeds": [s for s, _ in runs], "final_val_loss": final, "best_val_loss": best,
            "final_mean": float(np.mean(final)), "final_std": float(np.std(final, ddof=1)) if len(final) > 1 else 0.0,
            "sigma_max_attn": max((matrix_max(r, "sigma_max", ".attn.") for r in spec), default=None),
            "sigma_max_mlp": max((matrix_max(r, "sigma_max", ".mlp.") for r in spec), default=None),
            "attn_logit_max": max((max(r["attn_logit_max"].values()) for r in spec), default=None),
            "violation_attn": max((matrix_max(r, "violation", ".attn.") for r in spec), default=None),
            "attn_entropy_min": min((min(r["attn_entropy"].values()) for r in spec if "attn_entropy" in r), default=None),
            "attn_saturated_max": max((max(r["attn_saturated"].values()) for r in spec if "attn_saturated" in r),
                                      default=None),
        }
    return rows


def spectral_plots(runs_by, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(zip(runs_by, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, runs in runs_by.items():
        band(ax, runs, "eval", lambda r: r["val_loss"], label, colors[label])
    ax.set(xlabel="step", ylabel="val loss", title="Validation loss (mean, min-max over seeds)")
    lo = min(r["val_loss"] for runs in runs_by.values() for _, recs in runs for r in recs["eval"])
    ax.set_ylim(lo - 0.1, lo + 2.0)
    ax.legend(title="attention/MLP geometry")
    fig.tight_layout()
    fig.savefig(out / "val_loss.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = ((".attn.", "sigma_max", "largest singular value, attention (max over layers)"),
              (".mlp.", "sigma_max", "largest singular value, MLP (max over layers)"))
    for ax, (part, stat, title) in zip(axes, panels):
        for label, runs in runs_by.items():
            band(ax, runs, "spectral", lambda r: matrix_max(r, stat, part), label, colors[label])
        ax.set(xlabel="step", title=title, yscale="log")
    for label, runs in runs_by.items():
        band(axes[2], runs, "spectral", lambda r: max(r["attn_logit_max"].values()), label, colors[label])
    axes[2].set(xlabel="step", title="largest attention logit (max over layers)", yscale="log")
    axes[0].legend(title="attention/MLP geometry")
    fig.tight_layout()
    fig.savefig(out / "spectral.png", dpi=120)
    plt.close(fig)

    if all("attn_entropy" in recs["spectral"][0] for runs in runs_by.values() for _, recs in runs if recs["spectral"]):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for label, runs in runs_by.items():
            band(axes[0], runs, "spectral", lambda r: min(r["attn_entropy"].values()), label, colors[label])
            band(axes[1], runs, "spectral", lambda r: max(r["attn_saturated"].values()), label, colors[label])
        axes[0].set(xlabel="step", title="attention entropy, nats (the lowest layer)")
        axes[1].set(xlabel="step", title="share of saturated softmax rows (max >= 0.99; the highest layer)")
        axes[0].legend(title="attention/MLP geometry")
        fig.tight_layout()
        fig.savefig(out / "attention_saturation.png", dpi=120)
        plt.close(fig)

    layers = sorted({k for runs in runs_by.values() for _, recs in runs for r in recs["spectral"]
                     for k in r["attn_logit_max"]}, key=int)
    fig, axes = plt.subplots(1, len(runs_by), figsize=(4 * len(runs_by), 3.5), sharey=True, squeeze=False)
    for ax, (label, runs) in zip(axes[0], runs_by.items()):
        for i, layer in enumerate(layers):
            band(ax, runs, "spectral", lambda r, layer=layer: r["attn_logit_max"][layer], f"layer {layer}", f"C{i}")
        ax.set(xlabel="step", title=label, yscale="log")
    axes[0][0].set_ylabel("largest attention logit")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(out / "attn_logits_per_layer.png", dpi=120)
    plt.close(fig)


def spectral(root, out):
    """summary.json and the PNGs of the runs under root (any folder holding a metrics.jsonl; the label is
    "<geometry_attn>/<geometry_mlp>" from the run's header) in out."""
    runs_by = runs_by_label(root)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(spectral_summary(runs_by), indent=1) + "\n")
    spectral_plots(runs_by, out)


def main(argv=None):
    p = argparse.ArgumentParser(description="summary.json and the spectral plots of the runs under a folder (train.py "
                                "--spectral_interval=N), one curve per <geometry_attn>/<geometry_mlp>")
    p.add_argument("--root", required=True, help="folder searched for <run>/metrics.jsonl")
    p.add_argument("--out", required=True, help="folder for the PNGs and summary.json")
    a = p.parse_args(argv)
    if not runs_by_label(a.root):
        sys.exit(f"error: no metrics.jsonl under {a.root}")
    spectral(a.root, a.out)


if __name__ == "__main__":
    main()
