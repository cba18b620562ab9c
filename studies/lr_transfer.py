"""
Learning-rate transfer: final val loss against learning rate, one curve per width, depth or horizon (and per seed),
for the standard parametrization (gpt: GPT-2 + AdamW), nGPT and nuGPT, trained with train.py on real TinyStories.

    python -m studies lr_transfer run         # the queue (studies/runner.py: two one-thread jobs, resumable), the report
    python -m studies lr_transfer plan        # what is done, what is left, how long it takes
    python -m studies lr_transfer report      # tables and plots from studies/results/lr_transfer/runs.jsonl alone

Runs: each is one line of runs.jsonl, keyed <param>/<axis>/<value>/lr<lr>/seed<s> (groups: nugpt/groups/<group>
x<mult>/seed<s>). The base model (width 128, 2 layers, 200 steps) sits on every axis: a run whose train.py settings
equal a recorded one is recorded again under its own key with reused_from (no second training). Curves: gpt along
width only; ngpt and nugpt along width (64 128 256), depth (2 4 8) and horizon (100 200 400 steps); 2 seeds; the
grid (5 factor-2 points) grows past an edge optimum until the seed-mean optimum is interior, and gets half-step
(x sqrt 2) points around the optimum where a value's shift lies within 0.3 .. 0.7 (log2). nuGPT's per-group
multipliers (group_lr_mult: matrix, embed, head, scalar) at width 256 run only when its width shift exceeds 0.5.
Validation only at the end of each run (eval_interval = the horizon).

Settings per parametrization: gpt is nanoGPT's recipe (AdamW, weight decay 0.1, warmup 10% of the steps, cosine to
lr/10, learned positions, GELU); ngpt is nGPT as published (no weight decay, no warmup, cosine to 0, RoPE, SwiGLU,
Adam eps 1e-8); nugpt adds the nuGPT parametrization (model.py, optim.lr_multipliers; cosine to lr/10, eps 1e-16,
c_out 0.5), with the reference width, depth and horizon at the first value of each axis. nugpt_mult1 (issue 40) is
nugpt with m_w = m_T = 1 in its learning-rate multipliers (train.py nu_lr_scaling=False; the rest of its recipe kept:
cosine to lr/10, eps 1e-16, c_out 0.5, the 0.03 gain storage, the s_z and alpha initialisations), at the first and
last width and horizon: how much of nuGPT's transfer its multipliers carry. At the reference it is nugpt's run (reused).
The optimum of a curve is its grid minimum refined by a parabola in log2(lr) through it and its two neighbours;
per axis value: the mean and std of the optimum over seeds; "shift" is log2(optimum / optimum at the first value),
per seed against the same seed's reference, with a pooled seed-noise estimate; "regret" is the loss lost by using
the reference value's optimum (the nearest grid point) at this value.
"""

import argparse
import contextlib
import hashlib
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import trainer
import utils
from runlog import append_line, read_lines
from studies.runner import Job, Study, bracket, report_json

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ("gpt", "ngpt", "nugpt", "nugpt_mult1")
LABELS = {"gpt": "GPT (standard, AdamW)", "ngpt": "nGPT", "nugpt": "nuGPT", "nugpt_mult1": "nuGPT, m_w = m_T = 1"}
AXES = ("width", "depth", "horizon", "groups")
GRIDS = {"gpt": (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2), "ngpt": (4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2)}
GRIDS["nugpt"] = GRIDS["nugpt_mult1"] = GRIDS["ngpt"]
LR_RANGE = (1.25e-4, 1.024)
GROUPS, MULTS = ("matrix", "embed", "head", "scalar"), (0.25, 0.5, 1.0, 2.0, 4.0)
HALF_STEP, GROUP_SHIFT = (0.3, 0.7), 0.5


@dataclass(frozen=True)
class Design:
    """What the study sweeps and the base model the other axes are swept around."""
    widths: tuple = (64, 128, 256)
    depths: tuple = (2, 4, 8)
    horizons: tuple = (100, 200, 400)
    seeds: tuple = (0, 1)
    base: tuple = (128, 2, 200)  # width, depth, steps
    axes: dict = None  # param -> its axes (default: gpt width; ngpt, nugpt width depth horizon; nugpt_mult1 width
    # horizon)
    only: dict = None  # param -> {axis: the values it runs at} (default: nugpt_mult1 at the first and last width and
    # horizon)
    grids: dict = None  # param -> the first grid (default GRIDS)
    head_dim: int = 32
    block: int = 64
    batch: int = 16
    eval_iters: int = 20
    vocab_size: int = 4096
    data: str = "data/tinystories_study_top4096"
    lr_range: tuple = LR_RANGE  # how far a grid may grow
    group_shift: float = GROUP_SHIFT  # the per-group sweep runs when nuGPT's width shift exceeds this

    def axes_of(self, param):
        return (self.axes or {"gpt": ("width",), "ngpt": ("width", "depth", "horizon"),
                              "nugpt": ("width", "depth", "horizon"), "nugpt_mult1": ("width", "horizon")}).get(param, ())

    def grid(self, param):
        return (self.grids or GRIDS)[param]

    def values(self, axis, param=None):
        values = {"width": self.widths, "depth": self.depths, "horizon": self.horizons}[axis]
        only = self.only if self.only is not None else {"nugpt_mult1": {a: (v[0], v[-1]) for a, v in (
            ("width", self.widths), ("depth", self.depths), ("horizon", self.horizons))}}
        return only.get(param, {}).get(axis, values)


DESIGN = Design()


def settings(d, param, axis, value, lr, seed, group=None):
    """train.py keys of one run: the swept axis at `value`, everything else at the base model."""
    base = dict(zip(("width", "depth", "horizon"), d.base))
    point = {**base, "width": max(d.widths)} if axis == "groups" else {**base, axis: value}
    width, depth, steps = point["width"], point["depth"], point["horizon"]
    keys = dict(n_embd=width, n_head=width // d.head_dim, n_layer=depth, block_size=d.block, batch_size=d.batch,
                vocab_size=d.vocab_size, bias=False, dropout=0.0, max_iters=steps, lr_decay_iters=steps,
                learning_rate=lr, optimizer="adamw", eval_interval=steps, eval_iters=d.eval_iters, log_interval=steps,
                device="cpu", dtype="float32", seed=seed, always_save_checkpoint=False)
    if param == "gpt":  # nanoGPT's recipe: weight decay 0.1 (default), linear warmup over 10% of the steps
        keys.update(variant="baseline", warmup_iters=steps // 10, min_lr=lr / 10)
    else:  # the published nGPT: RoPE, SwiGLU, no weight decay or warmup (train.py's defaults for the family)
        keys.update(variant="ngpt", position="rope", activation="swiglu", min_lr=0.0 if param == "ngpt" else lr / 10)
    if param in ("nugpt", "nugpt_mult1"):  # the reference: the base model, with the swept axis at its first value
        first = {"width": min(d.widths), "depth": min(d.depths), "horizon": min(d.horizons)}
        swept = "width" if axis == "groups" else axis
        ref = {**base, swept: first[swept]}
        keys.update(arch="nugpt", ref_width=ref["width"], ref_depth=ref["depth"], ref_steps=ref["horizon"])
        if param == "nugpt_mult1" and point != ref:  # m_w = m_T = 1 (at the reference they are 1: nugpt's run)
            keys["nu_lr_scaling"] = False
    if group is not None:
        keys["group_lr_mult"] = {group: value}
    return keys


def run_id(keys):
    """The identity of a run: its train.py settings (what makes two runs the same run)."""
    return json.dumps({k: keys.get(k) for k in sorted(keys) if k not in ("device", "log_interval")}, sort_keys=True)


def data_fingerprint(data_dir):
    """sha256 (first 16 hex digits) of the prepared data's meta.json and sizes."""
    d = Path(data_dir)
    text = (d / "meta.json").read_text() + "".join(f"{p.name}:{p.stat().st_size}" for p in sorted(d.glob("*.bin")))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_once(keys, data_dir):
    """(final val loss, wall seconds) of one train.py run in this process; inf if it diverged."""
    import tempfile
    with tempfile.TemporaryDirectory() as out:
        argv = [f"--{k}={v}" for k, v in {**keys, "data_dir": data_dir, "out_dir": out}.items()]
        cfg, mcfg, raw = trainer.load_config(argv)
        t0 = time.time()
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                s = trainer.train(cfg, mcfg, raw)
        except FloatingPointError:
            return math.inf, time.time() - t0
        return s["final_val_loss"], s["wall_time"]


def load_runs(path):
    return read_lines(path)


def same_lr(lr):
    """One name per rate: half steps computed two ways (0.00282843 / sqrt 2 = 0.00199999) are the grid's 0.002."""
    return float(f"{lr:.5g}")


def curve(runs, param, axis, value, seed=None):
    """{lr: final val loss} of one parametrization at one axis value (one seed, or the mean over seeds)."""
    pts = {}
    for r in runs:
        if (r["param"], r["axis"], r["value"]) == (param, axis, value) and seed in (None, r["seed"]):
            pts.setdefault(same_lr(r["lr"]), []).append(r["loss"])
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


# ----------------------------------------------------------------------------- the queue

def key_of(param, axis, value, lr, seed, group=None):
    if axis == "groups":
        return f"{param}/groups/{group}x{value:g}/seed{seed}"
    return f"{param}/{axis}/{value}/lr{lr:g}/seed{seed}"


def curve_grid(study, d, param, axis, value):
    """(grid to run, seed-mean optimum or None): the first grid grown past an edge, plus landed extra points."""
    prefix = f"{param}/{axis}/{value}/lr"
    landed = {float(r["key"][len(prefix):].split("/")[0]) for r in study.lines() if r["key"].startswith(prefix)}
    losses = {}
    for lr in set(d.grid(param)) | landed:
        recs = [study.line(key_of(param, axis, value, lr, s)) for s in d.seeds]
        losses[lr] = None if any(r is None for r in recs) else float(np.mean([r["loss"] for r in recs]))
    grid, best, _ = bracket(losses, d.grid(param), *d.lr_range)
    pts = {lr: v for lr, v in losses.items() if v is not None}
    return sorted(set(grid) | landed), (optimum(pts)[0] if best is not None else None)


def jobs(study, d=DESIGN):
    """The study's jobs given its records (studies/runner.py); called with None: the Study (folders, guesses)."""
    if study is None:
        guess = {f"{p}-w{w}-L{L}": (66 if p == "gpt" else 115) * (w / 64) ** 1.15 * (0.5 + 0.25 * L)  # measured
                 for p in PARAMS for w in (64, 128, 256, 512) for L in (2, 4, 8)}
        return Study("lr_transfer", guess=guess)
    out, by_id = [], {}
    for r in study.lines():
        if not r.get("reused_from"):
            by_id.setdefault(r["run_id"], r["key"])

    def add(param, axis, value, lr, seed, group=None, waits=""):
        keys = settings(d, param, axis, value, lr, seed, group)
        key = key_of(param, axis, value, lr, seed, group)
        rid = run_id(keys)
        meta = dict(param=param, axis=axis, value=value, group=group, lr=lr, seed=seed)
        argv = ["-m", "studies.lr_transfer", "--job", key, "--settings", json.dumps(keys), "--meta", json.dumps(meta),
                "--data", d.data, "--out", str(study.results)]
        if rid in by_id and by_id[rid] != key:
            argv += ["--reuse", by_id[rid]]
        shape = f"{'nugpt' if param == 'nugpt_mult1' else param}-w{keys['n_embd']}-L{keys['n_layer']}"  # same cost
        out.append(Job(key, argv, 1 if rid in by_id and by_id[rid] != key else keys["max_iters"], shape, kind="line",
                       waits=waits))
    shifts = {}
    for param in PARAMS:
        for axis in d.axes_of(param):
            best = {}
            for value in d.values(axis, param):
                grid, best[value] = curve_grid(study, d, param, axis, value)
                for lr in grid:
                    for s in d.seeds:
                        add(param, axis, value, lr, s)
            ref = best[d.values(axis, param)[0]]
            for value, b in best.items():  # half steps where the shift lands near 0.5
                if b is None or ref is None:
                    continue
                shift = math.log2(b / ref)
                shifts[(param, axis, value)] = shift
                if HALF_STEP[0] <= abs(shift) <= HALF_STEP[1]:
                    for v, center in ((value, b), (d.values(axis, param)[0], ref)):
                        grid, _ = curve_grid(study, d, param, axis, v)
                        near = min(grid, key=lambda x: abs(math.log2(x / center)))
                        for lr in (near * 2**-0.5, near * 2**0.5):
                            lr = next((x for x in grid if same_lr(x) == same_lr(lr)), round(lr, 8))  # a grid point
                            for s in d.seeds:
                                add(param, axis, v, lr, s)
    if "nugpt" in PARAMS and "width" in d.axes_of("nugpt"):  # the per-group multipliers where nuGPT's optimum moves
        w_shift = shifts.get(("nugpt", "width", max(d.widths)))
        ref_best = curve_grid(study, d, "nugpt", "width", min(d.widths))[1]
        if w_shift is None or ref_best is None:
            out.append(Job("nugpt/groups/?", [], max(d.horizons), "nugpt-w256-L2", kind="line",
                           waits="nuGPT's width sweep (groups run only if its optimum moves by > 0.5)"))
        elif abs(w_shift) > d.group_shift:
            grid = curve_grid(study, d, "nugpt", "width", min(d.widths))[0]
            lr = min(grid, key=lambda x: abs(math.log2(x / ref_best)))
            for g in GROUPS:
                for m in MULTS:
                    add("nugpt", "groups", m, lr, d.seeds[0], g)
    return out


def run_job(a):
    """One job: train (or copy a recorded identical run) and append its record to runs.jsonl."""
    keys, meta, path = json.loads(a.settings), json.loads(a.meta), Path(a.out) / "runs.jsonl"
    rid = run_id(keys)
    if a.reuse:
        src = next((r for r in read_lines(path) if r["key"] == a.reuse), None)
        if src is None or src["run_id"] != rid:
            raise SystemExit(f"error: {a.reuse} is not a recorded run with the same settings: rerun without --reuse")
        append_line(path, {**src, **meta, "key": a.job, "reused_from": a.reuse, "wall": 0.0})
        return
    data = Path(a.data)
    if not (data / "meta.json").exists():
        raise SystemExit(f"error: no prepared data in {data}: run python -m studies lr_transfer run (it prepares it)")
    loss, wall = train_once(keys, str(data))
    append_line(path, dict(key=a.job, **meta, loss=loss, wall=wall, run_id=rid, settings=keys,
                           data=data_fingerprint(data), git=utils.git_commit(), device=utils.device_name("cpu")))
    tag = f"{meta['group']} x{meta['value']}" if meta["group"] else f"{meta['axis']}={meta['value']}"
    print(f"{meta['param']} {tag} lr={meta['lr']:.3g} seed {meta['seed']}: final val loss {loss:.4f} ({wall:.0f}s)",
          flush=True)


# ----------------------------------------------------------------------------- the report

def summarize(runs, param, axis):
    """Per axis value: optimum per seed (log2) and its shift against the same seed's reference, their mean and std,
    the seed-mean curve's optimum and loss, whether it is interior, the regret of the reference optimum."""
    out = {}
    values = sorted({r["value"] for r in runs if r["param"] == param and r["axis"] == axis})
    per_seed = {}
    for v in values:
        seeds = sorted({r["seed"] for r in runs if (r["param"], r["axis"], r["value"]) == (param, axis, v)})
        per_seed[v] = {s: math.log2(optimum(curve(runs, param, axis, v, s))[0]) for s in seeds}
        pts = curve(runs, param, axis, v)
        best, loss = optimum(pts)
        opts = list(per_seed[v].values())
        finite = [x for x in pts if math.isfinite(pts[x])]
        out[v] = dict(log2_opt=float(np.mean(opts)), log2_std=float(np.std(opts, ddof=1)) if len(opts) > 1 else 0.0,
                      seeds=len(seeds), opt=best, loss=loss, curve=pts,
                      interior=bool(finite) and min(pts) < best < max(pts) and pts[min(pts)] > loss < pts[max(pts)])
    if not values:
        return out
    ref, ref_v = per_seed[values[0]], values[0]
    dev = [x - np.mean(list(per_seed[v].values())) for v in values for x in per_seed[v].values()]
    dof = sum(len(per_seed[v]) - 1 for v in values)
    pooled = float(math.sqrt(sum(x * x for x in dev) / dof)) if dof > 0 else 0.0  # seed noise of one optimum (log2)
    ref_lr = 2 ** out[ref_v]["log2_opt"]
    for v in out:
        shifts = [per_seed[v][s] - ref[s] for s in per_seed[v] if s in ref]
        out[v]["shift"] = out[v]["log2_opt"] - out[ref_v]["log2_opt"]
        out[v]["shift_seeds"] = shifts
        out[v]["shift_err"] = pooled * math.sqrt(2 / max(1, len(shifts)))  # the difference of two seed means
        near = min(out[v]["curve"], key=lambda x: abs(math.log2(x / ref_lr)))
        out[v]["regret"] = out[v]["curve"][near] - out[v]["loss"]  # loss lost by the reference's optimum
    out[values[0]]["pooled_noise"] = pooled
    return out


def report(out, command):
    """The tables and plots of the records in out/runs.jsonl (command: unused, the report names none)."""
    runs = load_runs(Path(out) / "runs.jsonl")
    if not runs:
        raise SystemExit(f"error: no records in {Path(out) / 'runs.jsonl'}: run python -m studies lr_transfer run first")
    return tables(runs, Path(out))


def tables(runs, out):
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
                      "| shift (log2; per seed) | regret of the reference lr |", "|---" * (len(lrs) + 5) + "|"]
            ax, lo = fig.add_subplot(1, len(params), k + 1), math.inf
            for v, r in s.items():
                cells = [f"{r['curve'][x]:.4f}" if x in r["curve"] and math.isfinite(r["curve"][x]) else
                         ("diverged" if x in r["curve"] else "") for x in lrs]
                edge = "" if r["interior"] else " **edge**"
                lines.append(f"| {v} | " + " | ".join(cells) + f" | {2 ** r['log2_opt']:.3g} ({r['log2_opt']:+.2f} ± "
                             f"{r['log2_std']:.2f}){edge} | {r['loss']:.4f} | {r['shift']:+.2f} ± {r['shift_err']:.2f} ("
                             + ", ".join(f"{x:+.2f}" for x in r["shift_seeds"]) + f") | {r['regret']:.4f} |")
                xs = sorted(x for x in r["curve"] if math.isfinite(r["curve"][x]))
                line, = ax.plot(xs, [r["curve"][x] for x in xs], "o-", ms=3, label=f"{axis} {v}")
                ax.plot([2 ** r["log2_opt"]], [r["loss"]], "*", ms=11, color=line.get_color())
                lo = min(lo, r["loss"])
            ref = s[min(s)]
            lines += ["", f"Pooled seed noise of one optimum: {ref['pooled_noise']:.2f} (log2). Transfer holds on this axis "
                      f"when every |shift| <= 0.5: max |shift| {max(abs(r['shift']) for r in s.values()):.2f}"
                      + ("; an optimum sits at a grid edge" if not all(r["interior"] for r in s.values()) else "") + ".",
                      ""]
            summary[f"{axis}/{param}"]["max_abs_shift"] = max(abs(r["shift"]) for r in s.values())
            summary[f"{axis}/{param}"]["all_interior"] = all(r["interior"] for r in s.values())
            ax.set(xscale="log", xlabel="learning rate" + (" (base, at the reference)" if param.startswith("nugpt") else ""),
                   ylabel="final val loss", title=LABELS[param], ylim=(lo - 0.05, lo + 1.0))
            ax.xaxis.set_minor_formatter(plt.NullFormatter())  # decade labels only (minor ones overlap)
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
    utils.atomic_write_text(report_json(summary), out / "summary.json")
    print("\n".join(lines))
    return summary


def parse(argv=None):
    p = argparse.ArgumentParser(description="(the runner's) run one job of the study and append its record")
    p.add_argument("--out", default=str(ROOT / "studies" / "results" / "lr_transfer"), help="the folder of runs.jsonl")
    p.add_argument("--job", required=True, help="the job key")
    p.add_argument("--settings", required=True, help="the train.py keys as JSON")
    p.add_argument("--meta", required=True, help="param, axis, value, group, lr, seed as JSON")
    p.add_argument("--reuse", help="the key of a recorded run with the same settings")
    p.add_argument("--data", default=DESIGN.data, help="prepared data with the reduced vocabulary")
    return p.parse_args(argv)


def main(argv=None):
    a = parse(argv)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    run_job(a)


if __name__ == "__main__":
    main()
