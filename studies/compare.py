"""
Compare update-rule variants: train them on identical data and seeds (or read finished runs), then write a
results table (Markdown + JSON, Welch t-test against the baseline) and PNG plots, from metrics.jsonl files only.

    python -m studies.compare --config config/tinystories_baseline_cpu.py --variants baseline,polyak,yuriiformer \\
        --seeds 0,1,2 --root out-compare --out studies/results/cpu300/variants -- --max_iters=1000 --lr_decay_iters=300 \\
        --eval_interval=50 --shortlist=0 --compile=True
    python -m studies.compare --root out-compare --out studies/results/cpu300/variants          # analyse existing runs only
    python -m studies.compare --run baseline=out-tinystories-baseline --run yuriiformer=out-tinystories-nesterov
    python -m studies.compare --config config/tinystories_baseline.py --variants baseline,yuriiformer --seeds 0 \\
        --root out-gpu --launcher=torchrun --nproc_per_node=8 --dry_run                # print the GPU commands

Runs live in <root>/<variant>/seed<k>/ (train.py --variant --seed --out_dir). Every run of a given seed sees the
same batches (the loader is seeded with the run seed). A run whose metrics.jsonl has a complete "final" record is
skipped, one with a ckpt.pt but no final record is resumed (--init_from=resume), so a study can be interrupted.
"""

import argparse
import math
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

import runlog
import utils
from studies.runner import report_json

ROOT = Path(__file__).resolve().parents[1]

COEF_ORDER = ("mu", "beta", "mu_a", "beta_a", "gamma_a", "mu_m", "beta_m", "gamma_m", "alpha_a", "alpha_m")


# ----------------------------------------------------------------------------- training

def run_dir(root, variant, seed):
    return Path(root) / variant / f"seed{seed}"


def is_complete(out_dir):
    """A run is complete when metrics.jsonl has a final record that was not written by an interrupt."""
    try:
        return runlog.Run(out_dir).finished
    except FileNotFoundError:
        return False


def train_command(config, variant, seed, out_dir, extra=(), launcher="python", nproc_per_node=1, resume=False):
    """argv of one training run: `python train.py CONFIG --variant --seed --out_dir ...` or its torchrun form."""
    head = ([sys.executable] if launcher == "python" else
            ["torchrun", "--standalone", f"--nproc_per_node={nproc_per_node}"])
    args = [config, f"--variant={variant}", f"--seed={seed}", f"--out_dir={out_dir}",
            f"--wandb_run_name={variant}-seed{seed}", *extra]
    return head + ["train.py", *args] + (["--init_from=resume"] if resume else [])


def train_all(args):
    """Train every (seed, variant) not yet complete, seed-major so a partial study has whole seeds."""
    from tqdm import tqdm

    jobs = [(s, v) for s in args.seeds for v in args.variants]
    failed = []
    for seed, variant in (bar := tqdm(jobs, desc="runs", unit="run", disable=args.dry_run)):
        out = run_dir(args.root, variant, seed)
        bar.set_postfix_str(f"{variant} seed {seed}")
        if is_complete(out):
            continue
        cmd = train_command(args.config, variant, seed, out, args.extra, args.launcher, args.nproc_per_node,
                            resume=(out / "ckpt.pt").is_file())
        if args.dry_run:
            print(shlex.join(cmd))
            continue
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "train.log", "a") as log:
            log.write(f"$ {shlex.join(cmd)}\n")
            log.flush()
            rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
        if rc != 0 or not is_complete(out):
            tail = (out / "train.log").read_text().splitlines()[-3:]
            tqdm.write(f"run {out} failed (exit {rc}): {' | '.join(tail)}")
            failed.append(str(out))
    return failed


# ----------------------------------------------------------------------------- reading runs

def load_run(out_dir):
    """Header, eval records and final record of one run directory (metrics.jsonl only)."""
    run = runlog.Run(out_dir).require_finished()
    return {"dir": str(out_dir), "header": run.header, "final": run.final, "evals": run.evals()}


def discover(root, variants=None):
    """{variant: [run dirs]} from <root>/<variant>/seed*/metrics.jsonl (all variants found, or the given ones)."""
    root, found = Path(root), {}
    if not variants:
        variants = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for name in variants:
        dirs = sorted((p.parent for p in (root / name).glob("seed*/metrics.jsonl")),
                      key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else p.name)
        if dirs:
            found[name] = dirs
    return found


# ----------------------------------------------------------------------------- statistics

def mean_std(xs):
    xs = np.asarray(xs, dtype=float)
    return float(xs.mean()), (float(xs.std(ddof=1)) if len(xs) > 1 else None)


def welch_p(a, b):
    """Two-sided Welch t-test p-value, None with fewer than 2 samples per group or zero variance in both."""
    from scipy.stats import ttest_ind

    if len(a) < 2 or len(b) < 2:
        return None
    p = float(ttest_ind(a, b, equal_var=False).pvalue)
    return None if math.isnan(p) else p


def paired_p(a, b, seeds_a, seeds_b):
    """Two-sided paired t-test over the seeds both have (same seed: same data order and init), None below 2 pairs."""
    from scipy.stats import ttest_rel

    pairs = [(x, b[seeds_b.index(s)]) for x, s in zip(a, seeds_a) if s in seeds_b]
    if len(pairs) < 2:
        return None
    p = float(ttest_rel(*zip(*pairs)).pvalue)
    return None if math.isnan(p) else p


def paired(a, b):
    """(mean of a - b, paired t-test p, seeds) over the common seeds of two {seed: loss}."""
    from scipy import stats
    seeds = sorted(set(a) & set(b))
    d = [a[s] - b[s] for s in seeds]
    p = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue) if len(seeds) > 1 else None
    return (float(np.mean(d)) if d else None), p, len(seeds)


def run_record(r):
    """The per-run numbers kept in results.json."""
    head, final = r["header"], r["final"]
    path = Path(r["dir"]).resolve()
    where = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)  # the same in every clone
    return {"dir": where, "seed": head["config"]["seed"], "git_commit": head["git_commit"], "device": head["device"],
            "best_val_loss": final["best_val_loss"], "final_val_loss": final["final_val_loss"],
            "iters": final["iter"], "tokens": final["tokens"], "flops": final["flops"], "wall_time": final["wall_time"]}


def summarize(groups, baseline):
    """Per-variant numbers: best/final val mean and std over seeds, differences to the baseline, Welch p."""
    rows = []
    for name, runs in groups.items():
        recs, head = [run_record(r) for r in runs], runs[0]["header"]
        best, final = [r["best_val_loss"] for r in recs], [r["final_val_loss"] for r in recs]
        row = {"variant": name, "n_seeds": len(runs), "seeds": [r["seed"] for r in recs],
               "best_val": best, "final_val": final, "tokens": int(np.mean([r["tokens"] for r in recs])),
               "iters": int(np.mean([r["iters"] for r in recs])),
               "wall_time": float(np.mean([r["wall_time"] for r in recs])),
               "num_params": head["num_params"], "num_params_no_pos_v0": head.get("num_params_no_pos_v0"),
               "flops_per_token": head["flops_per_token"], "total_flops": float(np.mean([r["flops"] for r in recs])),
               "runs": recs}
        row["best_val_mean"], row["best_val_std"] = mean_std(best)
        row["final_val_mean"], row["final_val_std"] = mean_std(final)
        rows.append(row)
    base = next((r for r in rows if r["variant"] == baseline), None)
    if base is None:
        raise ValueError(f"baseline {baseline!r} has no runs: choose one of {', '.join(groups)} with --baseline")
    for row in rows:
        for key in ("best_val", "final_val"):
            row[f"{key}_delta"] = row[f"{key}_mean"] - base[f"{key}_mean"]
            row[f"{key}_p"] = None if row is base else welch_p(row[key], base[key])
            row[f"{key}_p_paired"] = None if row is base else paired_p(row[key], base[key], row["seeds"], base["seeds"])
    return rows


def fmt(x, digits=4):
    return "-" if x is None else f"{x:.{digits}f}"


def fmt_p(p):
    return "-" if p is None else (f"{p:.1e}" if p < 1e-3 else f"{p:.3f}")


def markdown(rows, baseline):
    """Results table (loss columns: mean +- sample std over seeds; delta, Welch and paired p against the baseline)."""
    lines = [f"| variant | seeds | best val | final val | best - {baseline} | p (best) | final - {baseline} | "
             "p (final) | p paired (final) | tokens | wall time | params | params w/o pos, V_0 | FLOPs/token |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    mil = lambda n: "-" if n is None else f"{n / 1e6:.2f}M"  # noqa: E731
    pm = lambda m, s: fmt(m) + ("" if s is None else f" ± {fmt(s)}")  # noqa: E731
    for r in rows:
        lines.append(f"| {r['variant']} | {r['n_seeds']} | {pm(r['best_val_mean'], r['best_val_std'])} | "
                     f"{pm(r['final_val_mean'], r['final_val_std'])} | {r['best_val_delta']:+.4f} | "
                     f"{fmt_p(r['best_val_p'])} | {r['final_val_delta']:+.4f} | {fmt_p(r['final_val_p'])} | "
                     f"{fmt_p(r['final_val_p_paired'])} | {r['tokens'] / 1e6:.2f}M | {r['wall_time']:.0f} s | "
                     f"{mil(r['num_params'])} | "
                     f"{mil(r['num_params_no_pos_v0'])} | {r['flops_per_token'] / 1e6:.1f}M |")
    order = sorted(rows, key=lambda r: r["best_val_mean"])
    lines += ["", "Ordering by mean best val loss (lower is better): "
              + " < ".join(f"{r['variant']} ({r['best_val_mean']:.4f})" for r in order)]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- plots

def curve(runs, x_key, y_of):
    """(x, mean y, std y or None) over seeds on the eval points all runs share."""
    common = set.intersection(*({e["iter"] for e in r["evals"]} for r in runs))
    per_run = [[e for e in r["evals"] if e["iter"] in common] for r in runs]
    x = np.array([e[x_key] for e in per_run[0]], dtype=float)
    y = np.array([[y_of(e) for e in evals] for evals in per_run], dtype=float)  # (seeds, points)
    return x, y.mean(0), (y.std(0, ddof=1) if len(runs) > 1 else None)


def plot_val(groups, out, x_key, xlabel):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    tops = []
    for name, runs in groups.items():
        x, y, s = curve(runs, x_key, lambda e: e["val_loss"])
        (line,) = ax.plot(x, y, marker=".", ms=3, label=f"{name} (n={len(runs)})")
        if s is not None:
            ax.fill_between(x, y - s, y + s, color=line.get_color(), alpha=0.2, lw=0)
        tops.append(y[len(y) // 4] if len(y) > 4 else y[0])
    lows = [curve(runs, x_key, lambda e: e["val_loss"])[1].min() for runs in groups.values()]
    span = max(tops) - min(lows)
    ax.set_ylim(min(lows) - 0.05 * span, max(tops) + 0.05 * span)  # the last three quarters of training
    ax.set(xlabel=xlabel, ylabel="val loss", title="validation loss (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def differences(groups, baseline):
    """{variant: (iters, mean, std, per-seed array)} of val loss minus the same seed's baseline, on shared evals."""
    base = {r["header"]["config"]["seed"]: {e["iter"]: e["val_loss"] for e in r["evals"]} for r in groups[baseline]}
    out = {}
    for name, runs in groups.items():
        if name == baseline:
            continue
        per_seed = []
        for r in runs:
            b = base.get(r["header"]["config"]["seed"])
            if b:
                per_seed.append({e["iter"]: e["val_loss"] - b[e["iter"]] for e in r["evals"] if e["iter"] in b})
        if per_seed:
            iters = sorted(set.intersection(*(set(d) for d in per_seed)))
            y = np.array([[d[i] for i in iters] for d in per_seed])
            out[name] = (np.array(iters), y.mean(0), y.std(0, ddof=1) if len(y) > 1 else np.zeros(len(iters)), y)
    return out


def crossings(iters, mean):
    """Steps after which the mean difference changes sign (the orderings cross)."""
    s = np.sign(mean)
    return [int(iters[i + 1]) for i in range(len(s) - 1) if s[i] != 0 and s[i + 1] != 0 and s[i] != s[i + 1]]


def plot_differences(diffs, baseline, out):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (x, m, sd, _) in diffs.items():
        keep = x > 0
        (line,) = ax.plot(x[keep], m[keep], label=name)
        ax.fill_between(x[keep], (m - sd)[keep], (m + sd)[keep], color=line.get_color(), alpha=0.15, lw=0)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="steps", ylabel=f"val loss - {baseline} (same seed)", title="difference to the baseline (mean ± std)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_coefficients(name, runs, out):
    """One subplot per coefficient name, one line per layer (mean over seeds), against steps."""
    import matplotlib.pyplot as plt

    keys = sorted(runs[0]["evals"][0].get("coef", {}))
    names = {k.split(".", 1)[1] for k in keys}
    if not names:
        return False
    coefs = [c for c in COEF_ORDER if c in names] + sorted(names - set(COEF_ORDER))
    per_substep = sum(c.endswith("_a") for c in coefs if c.startswith(("mu", "beta", "gamma")))
    ncols = per_substep if "beta_a" in names else len(coefs)  # lie_trotter: attention row, then MLP row
    nrows = math.ceil(len(coefs) / ncols)
    layers = sorted({int(k.split(".", 1)[0]) for k in keys})
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.9 * nrows + 0.5), squeeze=False)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(layers)))
    for ax in axes.flat[len(coefs):]:
        ax.set_visible(False)
    for ax, c in zip(axes.flat, coefs):
        for layer, color in zip(layers, colors):
            x, y, _ = curve(runs, "iter", lambda e: e["coef"][f"{layer}.{c}"])
            ax.plot(x, y, color=color, label=f"layer {layer}")
        ax.set(title=c, xlabel="step")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{name}: learned update coefficients (mean over {len(runs)} seed{'s' * (len(runs) > 1)})")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True


def write_outputs(groups, baseline, out_dir, meta):
    """results.md, results.json, val_loss_{steps,tokens,flops}.png and coef_<variant>.png in out_dir."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summarize(groups, baseline)
    table = markdown(rows, baseline)
    utils.atomic_write_text(table, out_dir / "results.md")
    utils.atomic_write_text(report_json({**meta, "baseline": baseline, "variants": rows}),
                            out_dir / "results.json")
    for x_key, label in (("iter", "steps"), ("tokens", "tokens"), ("flops", "training FLOPs")):
        plot_val(groups, out_dir / f"val_loss_{label.split()[-1].lower()}.png", x_key, label)
    diffs = differences(groups, baseline)
    if diffs:
        plot_differences(diffs, baseline, out_dir / "val_loss_difference.png")
        lines = ["", f"Difference to {baseline} over training (val loss, same seed; mean over seeds): sign changes", ""]
        for name, (x, m, _, _) in diffs.items():
            cross = crossings(x[x > 0], m[x > 0])
            lines.append(f"- {name}: at step {int(x[-1])} {m[-1]:+.4f}; " + (
                "crosses zero after step " + ", ".join(map(str, cross)) if cross else "no crossing after step 0"))
        table += "\n".join(lines) + "\n"
        utils.atomic_write_text(table, out_dir / "results.md")
    for name, runs in groups.items():
        plot_coefficients(name, runs, out_dir / f"coef_{name}.png")
    return rows, table


# ----------------------------------------------------------------------------- command line

def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", help="base train.py config file; with it, missing runs are trained first")
    p.add_argument("--variants", help="comma-separated model.PRESETS names (default: all found under --root)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--root", help="run directories live in ROOT/<variant>/seed<k>/")
    p.add_argument("--run", action="append", default=[], metavar="LABEL=DIR[,DIR..]",
                   help="existing run directories (one per seed) to compare under LABEL; repeatable")
    p.add_argument("--baseline", help="variant the others are tested against (default: the first)")
    p.add_argument("--out", default="studies/results/cpu300/variants", help="folder for the table and plots")
    p.add_argument("--launcher", choices=("python", "torchrun"), default="python")
    p.add_argument("--nproc_per_node", type=int, default=1)
    p.add_argument("--dry_run", action="store_true", help="print the training commands, train nothing")
    p.add_argument("--train_only", action="store_true", help="train missing runs, skip the table and plots")
    p.add_argument("extra", nargs="*", help="train.py overrides after --, e.g. -- --max_iters=1000")
    args = p.parse_args(argv)
    args.variants = [v for v in (args.variants or "").split(",") if v]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    if args.config and not (args.root and args.variants):
        p.error("--config needs --root and --variants (where to put the runs, which presets to train)")
    if not args.root and not args.run:
        p.error("give --root (runs in ROOT/<variant>/seed<k>/) or --run LABEL=DIR")
    return args


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.config:
        from model import PRESETS

        unknown = [v for v in args.variants if v not in PRESETS]
        if unknown:
            sys.exit(f"error: unknown variant(s) {', '.join(unknown)}: choose from {', '.join(PRESETS)}")
        failed = train_all(args)
        if failed:
            sys.exit(f"error: {len(failed)} run(s) failed, see their train.log: {', '.join(failed)}")
        if args.dry_run or args.train_only:
            return
    dirs = discover(args.root, args.variants) if args.root else {}
    if args.root and args.config:  # only the seeds asked for
        dirs = {v: [d for d in ds if d.name in {f"seed{s}" for s in args.seeds}] for v, ds in dirs.items()}
    for spec in args.run:
        label, _, paths = spec.partition("=")
        dirs.setdefault(label, []).extend(Path(p) for p in paths.split(",") if p)
    if not dirs:
        sys.exit(f"error: no runs found (looked for {args.root}/<variant>/seed*/metrics.jsonl and --run)")
    groups, skipped = {}, []
    for name, ds in dirs.items():
        for d in ds:
            try:
                groups.setdefault(name, []).append(load_run(d))
            except (FileNotFoundError, ValueError) as e:  # unfinished or diverged: report it, compare the rest
                print(f"skipping {d}: {e}", file=sys.stderr)
                skipped.append(str(d))
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        sys.exit(f"error: no finished runs among {sum(map(len, dirs.values()))} run directories (see above)")
    try:
        meta = {"command": shlex.join(["python", "-m", "studies.compare", *(sys.argv[1:] if argv is None else argv)]),
                "git_commit": utils.git_commit(), "skipped_runs": skipped}
        _, table = write_outputs(groups, args.baseline or next(iter(groups)), args.out, meta)
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(table)
    print(f"wrote {args.out}/results.md, results.json and plots")


if __name__ == "__main__":
    main()
