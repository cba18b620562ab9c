"""
Learning-rate transfer: final val loss against learning rate, one curve per width, depth or horizon (and per seed),
for the standard parametrization (gpt: GPT-2 + AdamW), nGPT and nuGPT, trained with train.py on real TinyStories.

    python -m studies.lr_transfer --axis width --values 64 128 256 512 --seeds 0 1 --shard 0/2   # one of 2 processes
    python -m studies.lr_transfer --axis groups --params nugpt --seeds 0 1 --shard 0/2           # per-group sweep
    python -m studies.lr_transfer --report                                                      # tables and plots

Runs: every finished run appends a line to <out>/runs.jsonl; runs already there are skipped, so a sweep can be
stopped and continued, and --shard i/n splits it between processes by curve. Where a curve's best learning rate
sits at the edge of its grid, the grid grows by one factor-2 step that way (up to --extend times).

Settings per parametrization: gpt is nanoGPT's recipe (AdamW, weight decay 0.1, warmup 10% of the steps, cosine to
lr/10, learned positions, GELU); ngpt is nGPT as published (no weight decay, no warmup, cosine to 0, RoPE, SwiGLU,
Adam eps 1e-8); nugpt adds the nuGPT parametrization (model.py, optim.lr_multipliers; cosine to lr/10, eps 1e-16,
c_out 0.5), with the reference width, depth and horizon at the first value of each axis.
The optimum of a curve is its grid minimum refined by a parabola in log2(lr) through it and its two neighbours;
per axis value: the mean and std of the optimum over seeds; "shift" is log2(optimum / optimum at the first value).
The groups axis multiplies one group's learning rate at a time (group_lr_mult: matrix, embed, head, scalar) at the
largest width, all others at the optimum found at the reference width: a group whose best multiplier is not 1 is
the one that does not transfer.
"""

import argparse
import contextlib
import fcntl
import io
import json
import math
import tempfile
from pathlib import Path

import numpy as np

import runlog
import train
import utils
from data.reduce_vocab import reduced_data

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ("gpt", "ngpt", "nugpt")
LABELS = {"gpt": "GPT (standard, AdamW)", "ngpt": "nGPT", "nugpt": "nuGPT"}
AXES = ("width", "depth", "horizon", "groups")
GRIDS = {"gpt": [5e-4, 1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2], "ngpt": [4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2, 0.128]}
GRIDS["nugpt"] = GRIDS["ngpt"]
GROUPS, MULTS = ("matrix", "embed", "head", "scalar"), (0.25, 0.5, 1.0, 2.0, 4.0)


def settings(a, param, axis, value, lr, seed, group=None):
    """train.py keys of one run: the swept axis at `value`, everything else at the base model."""
    base = dict(zip(("width", "depth", "horizon"), a.base))
    point = {**base, "width": max(a.widths)} if axis == "groups" else {**base, axis: value}
    width, depth, steps = point["width"], point["depth"], point["horizon"]
    keys = dict(n_embd=width, n_head=width // a.head_dim, n_layer=depth, block_size=a.block, batch_size=a.batch,
                vocab_size=a.vocab_size, bias=False, dropout=0.0, max_iters=steps, lr_decay_iters=steps,
                learning_rate=lr, optimizer="adamw", eval_interval=steps, eval_iters=a.eval_iters, log_interval=steps,
                device="cpu", dtype="float32", seed=seed, always_save_checkpoint=False)
    if param == "gpt":  # nanoGPT's recipe: weight decay 0.1 (default), linear warmup over 10% of the steps
        keys.update(variant="baseline", warmup_iters=steps // 10, min_lr=lr / 10)
    else:  # the published nGPT: RoPE, SwiGLU, no weight decay or warmup (train.py's defaults for the family)
        keys.update(variant="ngpt", position="rope", activation="swiglu", min_lr=0.0 if param == "ngpt" else lr / 10)
    if param == "nugpt":  # the reference: the base model, with the swept axis at its first value
        first = {"width": min(a.widths), "depth": min(a.depths), "horizon": min(a.horizons)}
        swept = "width" if axis == "groups" else axis
        ref = {**base, swept: first[swept]}
        keys.update(arch="nugpt", ref_width=ref["width"], ref_depth=ref["depth"], ref_steps=ref["horizon"])
    if group is not None:
        keys["group_lr_mult"] = {group: value}
    return keys


def run_key(keys):
    return json.dumps({k: keys.get(k) for k in sorted(keys) if k not in ("device", "log_interval")}, sort_keys=True)


def train_once(keys, data_dir):
    """(final val loss, wall seconds) of one train.py run in this process; inf if it diverged."""
    with tempfile.TemporaryDirectory() as out:
        argv = [f"--{k}={v}" for k, v in {**keys, "data_dir": data_dir, "out_dir": out}.items()]
        cfg, mcfg, raw = train.load_config(argv)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                s = train.train(cfg, mcfg, raw)
        except FloatingPointError:
            return math.inf, math.nan
        return s["final_val_loss"], s["wall_time"]


def load_runs(path):
    return runlog.read(path) if Path(path).exists() else []


def curve(runs, param, axis, value, seed=None):
    """{lr: final val loss} of one parametrization at one axis value (one seed, or the mean over seeds)."""
    pts = {}
    for r in runs:
        if (r["param"], r["axis"], r["value"]) == (param, axis, value) and seed in (None, r["seed"]):
            pts.setdefault(r["lr"], []).append(r["loss"])
    return {lr: float(np.mean(v)) for lr, v in pts.items()}


def optimum(points):
    """(best lr, its loss): the grid argmin refined by a parabola in log2(lr) through it and its neighbours."""
    lrs = sorted(points)
    losses = [points[x] if math.isfinite(points[x]) else math.inf for x in lrs]
    i = int(np.argmin(losses))
    if 0 < i < len(lrs) - 1 and all(map(math.isfinite, losses[i - 1:i + 2])):
        x, y = np.log2(lrs[i - 1:i + 2]), losses[i - 1:i + 2]
        a, b, c = np.polyfit(x, y, 2)
        if a > 0:
            xm = float(np.clip(-b / (2 * a), x[0], x[2]))
            return 2**xm, float(np.polyval([a, b, c], xm))
    return lrs[i], losses[i]


def curves_of(a):
    """The (param, axis, value, seed, group) curves of this invocation, in a fixed order."""
    if a.axis == "groups":
        return [(p, "groups", m, s, g) for p in a.params for g in GROUPS for m in MULTS for s in a.seeds]
    values = {"width": a.widths, "depth": a.depths, "horizon": a.horizons}[a.axis]
    return [(p, a.axis, v, s, None) for v in values for p in a.params for s in a.seeds]


def base_lr(runs, param):
    """The optimum at the reference width (mean over seeds), rounded to the nearest point of the width grid."""
    widths = {r["value"] for r in runs if r["param"] == param and r["axis"] == "width"}
    if not widths:
        raise SystemExit(f"error: no width sweep of {param} in runs.jsonl yet: run --axis width first")
    pts = curve(runs, param, "width", min(widths))
    best, _ = optimum(pts)
    return min(pts, key=lambda x: abs(math.log2(x / best)))


def sweep(a, data_dir, path):
    """Run the shard's curves; grow a grid whose minimum sits at an edge."""
    todo = curves_of(a)
    if a.axis == "groups":  # one curve per group: the multipliers at the base learning rate
        todo = [(p, ax, m, s, g) for p, ax, m, s, g in todo if hash_shard((p, g, s), a.shards) == a.shard]
        for param, axis, mult, seed, group in todo:
            do_run(a, path, data_dir, param, axis, mult, base_lr(load_runs(path), param), seed, group)
        return
    for param, axis, value, seed, _ in todo:
        if hash_shard((param, value, seed), a.shards) != a.shard:
            continue
        lrs, grown = list(a.lrs or GRIDS[param]), 0
        while True:
            for lr in lrs:
                do_run(a, path, data_dir, param, axis, value, lr, seed)
            pts = curve(load_runs(path), param, axis, value, seed)
            losses = [pts.get(x, math.inf) for x in lrs]
            i = int(np.argmin(losses))
            if grown >= a.extend or 0 < i < len(lrs) - 1 or not math.isfinite(losses[i]):
                break
            lrs, grown = (lrs + [lrs[-1] * 2] if i == len(lrs) - 1 else [lrs[0] / 2] + lrs), grown + 1


def hash_shard(item, n):
    """A curve's shard: a stable hash of its identity (the same in every process)."""
    return int.from_bytes(json.dumps(item).encode(), "little") % 2**61 % n if n > 1 else 0


def do_run(a, path, data_dir, param, axis, value, lr, seed, group=None):
    keys = settings(a, param, axis, value, lr, seed, group)
    if run_key(keys) in {r["key"] for r in load_runs(path)}:
        return
    loss, wall = train_once(keys, data_dir)
    rec = dict(param=param, axis=axis, value=value, group=group, lr=lr, seed=seed, loss=loss, wall=wall,
               key=run_key(keys), git=utils.git_commit(), device=utils.device_name("cpu"))
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(rec) + "\n")
    tag = f"{group} x{value}" if group else f"{axis}={value}"
    print(f"{param} {tag} lr={lr:.3g} seed {seed}: final val loss {loss:.4f} ({wall:.0f}s)", flush=True)


# ----------------------------------------------------------------------------- the report

def summarize(runs, param, axis):
    """Per axis value: optimum per seed (log2), mean, std, the seed-mean curve's optimum and loss."""
    out = {}
    values = sorted({r["value"] for r in runs if r["param"] == param and r["axis"] == axis})
    for v in values:
        seeds = sorted({r["seed"] for r in runs if (r["param"], r["axis"], r["value"]) == (param, axis, v)})
        opts = [math.log2(optimum(curve(runs, param, axis, v, s))[0]) for s in seeds]
        best, loss = optimum(curve(runs, param, axis, v))
        out[v] = dict(log2_opt=float(np.mean(opts)), log2_std=float(np.std(opts, ddof=1)) if len(opts) > 1 else 0.0,
                      seeds=len(seeds), opt=best, loss=loss, curve=curve(runs, param, axis, v))
    ref = out[values[0]]["log2_opt"] if values else 0.0
    for v in out:
        out[v]["shift"] = out[v]["log2_opt"] - ref
        out[v]["shift_err"] = math.hypot(out[v]["log2_std"], out[values[0]]["log2_std"]) / math.sqrt(
            max(1, out[v]["seeds"]))
    return out


def report(runs, out):
    """Markdown tables per axis (loss per lr, optimum with its seed spread, shift) and one PNG per axis with one
    panel per parametrization; returns the summary dict (also written to summary.json)."""
    import matplotlib.pyplot as plt
    plt.switch_backend("Agg")
    lines, summary = ["# Learning-rate transfer", ""], {}
    for axis in ("width", "depth", "horizon"):
        params = [p for p in PARAMS if any(r["param"] == p and r["axis"] == axis for r in runs)]
        if not params:
            continue
        fig = plt.figure(figsize=(4.2 * len(params), 3.6))
        lines += [f"## Axis: {axis}", ""]
        for k, param in enumerate(params):
            s = summarize(runs, param, axis)
            summary[f"{axis}/{param}"] = {str(v): {x: y for x, y in r.items() if x != "curve"} for v, r in s.items()}
            lrs = sorted({lr for r in s.values() for lr in r["curve"]})
            lines += [f"**{LABELS[param]}** (val loss, mean over seeds)", "", f"| {axis} | "
                      + " | ".join(f"{x:.3g}" for x in lrs) + " | optimum (log2, mean ± std over seeds) | best loss "
                      "| shift (log2) |", "|---" * (len(lrs) + 4) + "|"]
            ax, lo = fig.add_subplot(1, len(params), k + 1), math.inf
            for v, r in s.items():
                cells = [f"{r['curve'][x]:.4f}" if x in r["curve"] and math.isfinite(r["curve"][x]) else
                         ("diverged" if x in r["curve"] else "") for x in lrs]
                lines.append(f"| {v} | " + " | ".join(cells) + f" | {2 ** r['log2_opt']:.3g} ({r['log2_opt']:+.2f} ± "
                             f"{r['log2_std']:.2f}) | {r['loss']:.4f} | {r['shift']:+.2f} ± {r['shift_err']:.2f} |")
                xs = sorted(x for x in r["curve"] if math.isfinite(r["curve"][x]))
                line, = ax.plot(xs, [r["curve"][x] for x in xs], "o-", ms=3, label=f"{axis} {v}")
                ax.plot([2 ** r["log2_opt"]], [r["loss"]], "*", ms=11, color=line.get_color())
                lo = min(lo, r["loss"])
            lines.append("")
            ax.set(xscale="log", xlabel="learning rate" + (" (base, at the reference)" if param == "nugpt" else ""),
                   ylabel="final val loss", title=LABELS[param], ylim=(lo - 0.05, lo + 1.0))
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / f"lr_transfer_{axis}.png", dpi=100)
        plt.close(fig)
    group_runs = [r for r in runs if r["axis"] == "groups"]
    for param in sorted({r["param"] for r in group_runs}):
        lines += [f"## Per-group multipliers at width {max(r['value'] for r in runs if r['axis'] == 'width')} "
                  f"({LABELS[param]}, base lr {group_runs[0]['lr']:.3g})", "",
                  "| group | " + " | ".join(f"x{m:g}" for m in MULTS) + " | best multiplier |", "|---" * 7 + "|"]
        for g in GROUPS:
            pts = {}
            for r in group_runs:
                if r["param"] == param and r["group"] == g:
                    pts.setdefault(r["value"], []).append(r["loss"])
            pts = {m: float(np.mean(v)) for m, v in pts.items()}
            if pts:
                best, _ = optimum(pts)
                summary[f"groups/{param}/{g}"] = dict(points={str(m): v for m, v in pts.items()}, best=best)
                lines.append(f"| {g} | " + " | ".join(f"{pts[m]:.4f}" if m in pts else "" for m in MULTS)
                             + f" | {best:.2f} |")
        lines.append("")
    (out / "lr_transfer.md").write_text("\n".join(lines) + "\n")
    utils.atomic_write_text(json.dumps(summary, indent=1) + "\n", out / "summary.json")
    print("\n".join(lines))
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--params", nargs="+", choices=PARAMS, default=list(PARAMS))
    p.add_argument("--axis", choices=AXES, default="width")
    p.add_argument("--widths", nargs="+", type=int, default=[64, 128, 256, 512])
    p.add_argument("--depths", nargs="+", type=int, default=[2, 4, 8])
    p.add_argument("--horizons", nargs="+", type=int, default=[100, 200, 400])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--base", nargs=3, type=int, default=[128, 2, 200], metavar=("WIDTH", "DEPTH", "STEPS"),
                   help="the model the other axes are swept around")
    p.add_argument("--lrs", nargs="+", type=float, help="one learning-rate grid for every parametrization "
                   "(default: gpt 5e-4 .. 1.6e-2, ngpt / nugpt 4e-3 .. 0.128, factors of 2)")
    p.add_argument("--shard", default="0/1", help="i/n: this process runs the curves of shard i of n")
    p.add_argument("--extend", type=int, default=2, help="grow a grid whose best lr is at an edge this often")
    p.add_argument("--head_dim", type=int, default=32)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--eval_iters", type=int, default=20)
    p.add_argument("--vocab", type=int, default=4096, help="keep this many token ids (0: GPT-2's full vocabulary)")
    p.add_argument("--data", default=str(ROOT / "data" / "tinystories"), help="prepared TinyStories (train.py bins)")
    p.add_argument("--out", default=str(ROOT / "studies" / "results" / "lr_transfer"), help="runs.jsonl, tables, plots")
    p.add_argument("--report", action="store_true", help="only the tables and plots")
    a = p.parse_args(argv)
    a.shard, a.shards = map(int, a.shard.split("/"))
    out, data = Path(a.out), Path(a.data)
    out.mkdir(parents=True, exist_ok=True)
    if not a.report:
        if not (data / "meta.json").exists():
            raise SystemExit(f"error: no prepared data in {data}: run python data/tinystories/prepare.py --sample "
                             "(or --source PATH for your own TinyStories text)")
        if a.vocab:
            data = reduced_data(data, a.vocab)
        a.vocab_size = -(-json.loads((data / "meta.json").read_text())["vocab_size"] // 64) * 64  # 50257 -> 50304
        sweep(a, str(data), out / "runs.jsonl")
        if a.shards > 1:
            return
    report(load_runs(out / "runs.jsonl"), out)


if __name__ == "__main__":
    main()
