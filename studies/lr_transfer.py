"""
Learning-rate transfer: final val loss against learning rate, one curve per width (or depth, or horizon), for the
standard parametrization (gpt: GPT + AdamW), nGPT and nuGPT, trained with train.py on real TinyStories at CPU scale.

    python -m studies.lr_transfer --params gpt ngpt nugpt --axis width --values 64 128 256 \\
        --lrs 1e-3 2e-3 4e-3 8e-3 1.6e-2 --lock /tmp/cpu.lock --out studies/results/cpu300/ngpt
    python -m studies.lr_transfer --params nugpt --axis horizon --values 100 200 400 --lrs ...     # m_T
    python -m studies.lr_transfer --report_only --out studies/results/cpu300/ngpt --axis width              # table + plot
    python -m studies.lr_transfer --curves GPT=out/a nGPT=out/b --png studies/results/cpu300/ngpt/curves.png  # val loss curves

Every finished run appends a line to <out>/runs.jsonl and runs already there are skipped, so a sweep can be
stopped and continued; --lock takes the CPU lock per run, so other jobs interleave. Where the best learning rate of
a curve is at the edge of the grid, the grid grows by one factor-2 step that way (up to --extend times). The optimum
is the grid minimum refined by a parabola in log2(lr) through it and its neighbours; "shift" is log2 of the
optimum's ratio to the first value's optimum (0: it stays put; 1: it doubled).
--vocab K (default 4096) keeps the K-1 most frequent training tokens and maps the rest (0.9% of tokens) to one
<unk> id, so that the transformer body and not a 50k-row head dominates these tiny models; --vocab 0 keeps GPT-2's.
"""

import argparse
import contextlib
import fcntl
import io
import json
import math
import sys
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
AXES = {"width": "n_embd", "depth": "n_layer", "horizon": "max_iters"}


def settings(a, param, value, lr):
    """train.py keys of one run: the swept axis at `value`, everything else at the base model."""
    width, depth, steps = a.width, a.depth, a.steps
    width, depth, steps = {"width": (value, depth, steps), "depth": (width, value, steps),
                           "horizon": (width, depth, value)}[a.axis]
    keys = dict(n_embd=width, n_head=width // a.head_dim, n_layer=depth, block_size=a.block, batch_size=a.batch,
                vocab_size=a.vocab_size, bias=False, dropout=0.0, max_iters=steps, lr_decay_iters=steps,
                learning_rate=lr, min_lr=lr / 10, optimizer="adamw", eval_interval=steps, eval_iters=a.eval_iters,
                log_interval=steps, device="cpu", dtype="bfloat16", seed=a.seed, always_save_checkpoint=False)
    if param == "gpt":  # nanoGPT's recipe: weight decay 0.1 (default), linear warmup over 10% of the steps
        keys.update(variant="baseline", warmup_iters=steps // 10)
    else:  # nGPT: no weight decay, no warmup (train.py's defaults for the normalized family)
        keys.update(variant="ngpt")
    if param == "nugpt":
        base = {**dict(width=a.width, depth=a.depth, horizon=a.steps), a.axis: a.values[0]}  # default references
        keys.update(arch="nugpt", ref_width=a.ref_width or base["width"], ref_depth=a.ref_depth or base["depth"],
                    ref_steps=a.ref_steps or base["horizon"])
    return keys


def run_key(keys):
    return json.dumps({k: keys.get(k) for k in sorted(keys) if k not in ("device", "log_interval")}, sort_keys=True)


def train_once(keys, data_dir, lock):
    """(final val loss, wall seconds) of one train.py run in this process; inf if it diverged."""
    with tempfile.TemporaryDirectory() as out, contextlib.ExitStack() as stack:
        if lock:
            fcntl.flock(stack.enter_context(open(lock, "a")), fcntl.LOCK_EX)  # released when the file closes
        cfg, mcfg, raw = train.load_config([f"--{k}={v}" for k, v in {**keys, "data_dir": data_dir,
                                                                       "out_dir": out}.items()])
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                s = train.train(cfg, mcfg, raw)
        except FloatingPointError:
            return math.inf, math.nan
        return s["final_val_loss"], s["wall_time"]


def load_runs(path):
    return runlog.read(path) if path.exists() else []


def curve(runs, param, axis, value):
    """{lr: final val loss} of one parametrization at one value of the axis."""
    return {r["lr"]: r["loss"] for r in runs if (r["param"], r["axis"], r["value"]) == (param, axis, value)}


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


def sweep(a, data_dir, path):
    """Run every (param, value, lr) not yet in runs.jsonl; grow a grid whose minimum sits at an edge."""
    for value in a.values:
        for param in a.params:
            lrs, grown = sorted(a.lrs), 0
            while True:
                for lr in lrs:
                    keys = settings(a, param, value, lr)
                    done = {r["key"] for r in load_runs(path)}
                    if run_key(keys) in done:
                        continue
                    loss, wall = train_once(keys, data_dir, a.lock)
                    rec = dict(param=param, axis=a.axis, value=value, lr=lr, loss=loss, wall=wall, key=run_key(keys),
                               git=utils.git_commit())
                    with open(path, "a") as f:
                        f.write(json.dumps(rec) + "\n")
                    print(f"{param} {a.axis}={value} lr={lr:.3g}: final val loss {loss:.4f} ({wall:.0f}s)", flush=True)
                pts = curve(load_runs(path), param, a.axis, value)
                losses = [pts.get(x, math.inf) for x in lrs]
                i = int(np.argmin(losses))
                if grown >= a.extend or 0 < i < len(lrs) - 1 or not math.isfinite(losses[i]):
                    break
                lrs, grown = (lrs + [lrs[-1] * 2] if i == len(lrs) - 1 else [lrs[0] / 2] + lrs), grown + 1


def report(runs, axis, out):
    """Markdown table (loss per lr, optimum, shift) and a PNG with one panel per parametrization."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = [p for p in PARAMS if any(r["param"] == p and r["axis"] == axis for r in runs)]
    lines, fig = [], plt.figure(figsize=(4.2 * len(params), 3.6))
    for k, param in enumerate(params):
        values = sorted({r["value"] for r in runs if r["param"] == param and r["axis"] == axis})
        lrs = sorted({r["lr"] for r in runs if r["param"] == param and r["axis"] == axis})
        lines += [f"**{LABELS[param]}**", "", f"| {axis} | " + " | ".join(f"{x:.3g}" for x in lrs)
                  + " | best lr | best loss | shift (log2) |", "|---" * (len(lrs) + 4) + "|"]
        ax, ref, lo = fig.add_subplot(1, len(params), k + 1), None, math.inf
        for value in values:
            pts = curve(runs, param, axis, value)
            best, best_loss = optimum(pts)
            ref = ref or best
            lo = min(lo, best_loss)
            cells = [f"{pts[x]:.4f}" if x in pts and math.isfinite(pts[x]) else ("diverged" if x in pts else "")
                     for x in lrs]
            lines.append(f"| {value} | " + " | ".join(cells) + f" | {best:.3g} | {best_loss:.4f} | "
                         f"{math.log2(best / ref):+.2f} |")
            xs = sorted(x for x in pts if math.isfinite(pts[x]))
            line, = ax.plot(xs, [pts[x] for x in xs], "o-", ms=3, label=f"{axis} {value}")
            ax.plot([best], [best_loss], "*", ms=12, color=line.get_color())
        lines.append("")
        ax.set(xscale="log", xlabel="learning rate" + (" (base, at the reference)" if param == "nugpt" else ""),
               ylabel="final val loss", title=LABELS[param], ylim=(lo - 0.05, lo + 1.0))
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"lr_transfer_{axis}.png", dpi=110)
    (out / f"lr_transfer_{axis}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def plot_curves(specs, png):
    """Val loss against iteration from the metrics.jsonl of train.py runs, given as LABEL=DIR (repeat a label
    for seeds: the mean is drawn, the spread shaded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups, top = {}, -math.inf
    for spec in specs:
        label, _, d = spec.partition("=")
        evals = runlog.Run(d).evals()
        groups.setdefault(label, []).append(([r["iter"] for r in evals], [r["val_loss"] for r in evals]))
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, runs in groups.items():
        n = min(len(x) for x, _ in runs)
        y = np.array([v[:n] for _, v in runs])
        ax.plot(runs[0][0][:n], y.mean(0), label=f"{label} ({len(runs)} seed{'s' * (len(runs) > 1)})")
        ax.fill_between(runs[0][0][:n], y.min(0), y.max(0), alpha=0.2)
        top = max(top, float(y[:, 1:].max()))
        print(f"{label}: final val loss " + ", ".join(f"{v[-1]:.4f}" for v in y) + f" (mean {y[:, -1].mean():.4f})")
    ax.set(xlabel="iteration", ylabel="val loss", ylim=(None, top + 0.2))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--params", nargs="+", choices=PARAMS, default=list(PARAMS))
    p.add_argument("--axis", choices=tuple(AXES), default="width")
    p.add_argument("--values", nargs="+", type=int, default=[], help="widths, depths or step counts")
    p.add_argument("--lrs", nargs="+", type=float, default=[1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2])
    p.add_argument("--extend", type=int, default=2, help="grow a grid whose best lr is at an edge this often")
    p.add_argument("--width", type=int, default=128, help="base n_embd (axes not swept stay at the base)")
    p.add_argument("--depth", type=int, default=2, help="base n_layer")
    p.add_argument("--steps", type=int, default=200, help="base max_iters")
    p.add_argument("--head_dim", type=int, default=32)
    p.add_argument("--ref_width", type=int, default=0, help="nuGPT reference width (0: the first value / base)")
    p.add_argument("--ref_depth", type=int, default=0, help="nuGPT reference depth (0: the first value / base)")
    p.add_argument("--ref_steps", type=int, default=0, help="nuGPT reference horizon (0: the first value / base)")
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--eval_iters", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab", type=int, default=4096, help="keep this many token ids (0: GPT-2's full vocabulary)")
    p.add_argument("--data", default=str(ROOT / "data" / "tinystories"), help="prepared TinyStories (train.py bins)")
    p.add_argument("--lock", default="", help="a lock file to hold during each run, e.g. /tmp/cpu.lock")
    p.add_argument("--out", default=str(ROOT / "studies" / "results" / "cpu300" / "ngpt"), help="runs.jsonl, tables and plots")
    p.add_argument("--report_only", action="store_true")
    p.add_argument("--curves", nargs="+", metavar="LABEL=DIR", help="only plot val loss curves of finished runs")
    p.add_argument("--png", default="", help="with --curves: the PNG to write")
    a = p.parse_args(argv)
    if a.curves:
        return plot_curves(a.curves, a.png or Path(a.out) / "curves.png")
    out, data = Path(a.out), Path(a.data)
    if not a.report_only:
        if not (data / "meta.json").exists():
            sys.exit(f"error: no prepared data in {data}: run python data/tinystories/prepare.py --sample "
                     "(or --source PATH for your own TinyStories text)")
        if not a.values:
            sys.exit("error: give --values (the widths, depths or step counts to sweep)")
        if a.vocab:
            data = reduced_data(data, a.vocab, data.with_name(f"{data.name}_top{a.vocab}"))
        a.vocab_size = -(-json.loads((data / "meta.json").read_text())["vocab_size"] // 64) * 64  # 50257 -> 50304
        out.mkdir(parents=True, exist_ok=True)
        sweep(a, str(data), out / "runs.jsonl")
    report(load_runs(out / "runs.jsonl"), a.axis, out)


if __name__ == "__main__":
    main()
