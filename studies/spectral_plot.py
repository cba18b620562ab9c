"""
Plots and a table for geometry runs, from their metrics.jsonl only: validation loss per geometry assignment
(mean and range over seeds), and from the "spectral" records (train.py --spectral_interval=N) the largest singular
value of the attention and MLP matrices and the largest attention logit per layer, against the step.

    python -m studies.spectral_plot --root studies/results/cpu300/geometry/runs --out studies/results/cpu300/geometry

Runs are <root>/<attn>-<mlp>/seed<k>/metrics.jsonl (any run directory holding a metrics.jsonl is found); the label
is "<geometry_attn>/<geometry_mlp>" from the run's header record.
"""

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

import runlog

ORDER = ("none/none", "stiefel/stiefel", "stiefel/dgram", "dgram/stiefel")


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
    return dict(sorted(out.items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else len(ORDER)))


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


def summary(runs_by):
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


def plot(runs_by, out):
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


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True, help="folder searched for <run>/metrics.jsonl")
    p.add_argument("--out", required=True, help="folder for the PNGs and summary.json")
    a = p.parse_args(argv)
    runs_by = runs_by_label(a.root)
    if not runs_by:
        raise SystemExit(f"error: no metrics.jsonl under {a.root}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = summary(runs_by)
    (out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("| attention/MLP | seeds | final val loss (mean +- std) | max sigma attn | max sigma MLP | max attn logit |")
    print("|---|---:|---:|---:|---:|---:|")
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for label, r in rows.items():
        print(f"| {label} | {len(r['seeds'])} | {r['final_mean']:.4f} +- {r['final_std']:.4f} | "
              f"{fmt(r['sigma_max_attn'])} | {fmt(r['sigma_max_mlp'])} | {fmt(r['attn_logit_max'])} |")
    plot(runs_by, out)


if __name__ == "__main__":
    main()
