"""
The multilevel study in the paper's regime. Results:
studies/RESULTS.md#multilevel-training-in-the-papers-regime-sgd-12-layers-3000-steps

    python -m studies multilevel plan|run|report      # the queue (resumable), then the tables and the plot

The design, fixed before the runs: the paper's regime scaled to this CPU: 12 layers, width 256, 8 heads,
T 64, batch 8, SGD with momentum 0.9 on every parameter (no weight decay, clipping 1.0), TinyStories top-4096
vocabulary, fp32, eager. Every arm uses the same learning-rate schedule, warmup 100 then constant, so a run's loss at
a FLOPs budget is what that budget buys and the FLOPs to reach a loss compare in both directions (a cosine schedule
per arm would tie each curve to its own horizon).
  1. sweep/lr<lr>: single level, 1,000 steps, seed 0, lr 0.025 .. 0.8 (factors of 2), grown past an edge. Reading
     rule, fixed before the runs: the lowest final val loss; when the next-lower rate is within 0.01 of it, that
     lower rate (the main runs are 3x longer at a constant rate).
  2. runs/<arm>/seed<k>, 3,000 steps at that rate, seeds 0 1 (then 2): single; plain (2 levels, cycles of 10 coarse
     + 10 fine steps until step 2,400); corrected (the same with the MG/OPT coherence term, tau 1, from gradients
     averaged over 4 batches); coarse_heavy (cycles of 8 coarse + 2 fine until 2,400, coherence-corrected).
     Evaluations every 200 steps on 32 batches of each split; the multilevel arms also evaluate their coarse networks.
  3. bracket/<arm>/lr<lr>/seed0 (issue 40): single and plain at half, once and twice the chosen rate (0.05, 0.1,
     0.2), 3,000 steps, seed 0, every point at one commit on one machine (runs/ at 0.1 ran on another machine and
     commit), grown by a factor 2 past an edge optimum. As run: single's points on the Intel Xeon at two commits
     with the same training code (0.1 at 62977d4, bit-identical to runs/single/seed0 from the EPYC), plain's on the
     AMD EPYC; the report names each arm's machine and commits. Reading rule, fixed before the bracket's numbers: the rate is
     interior for an arm when its final val loss there is below both neighbours; the plain - single difference is
     then restated with each arm at its own best rate (seed 0 only: one seed, no p-value).

The report (studies/results/multilevel/): results.md (per arm the final val loss, the FLOPs (with and without the LM
head) and wall time to reach the single-level run's final loss, the coarse networks' gap; the sweep), summary.json and
loss_vs_flops.png.
"""

from pathlib import Path

import numpy as np

import runlog
import utils
from studies.compare import paired
from studies.runner import Job, Study, bracket, final_loss, fmt, landed_values, machine, report_json

ML_COMMON = ("config/tinystories_baseline_cpu.py --data_dir=data/tinystories_study_top4096 --vocab_size=4096 "
             "--n_layer=12 --n_head=8 --n_embd=256 --block_size=64 --batch_size=8 --dtype=float32 --compile=False "
             "--always_save_checkpoint=False --optimizer=sgd --sgd_momentum=0.9 --weight_decay=0.0 --grad_clip=1.0 "
             "--warmup_iters=100 --shortlist=0 --lr_decay_iters=300")
ML_LRS, ML_LR_RANGE, ML_TIE = (0.025, 0.05, 0.1, 0.2, 0.4, 0.8), (0.003125, 3.2), 0.01
ML_BRACKET_ARMS, ML_BRACKET = ("single", "plain"), (0.5, 1.0, 2.0)
ML_LEVELS = "--multilevel_levels=2 --multilevel_until=2400 --eval_coarse=True"
ML_CORRECTION = "--multilevel_correction=1.0 --multilevel_correction_batches=4"
ML_ARMS = {  # arm: (train.py arguments, seeds), run in this order
    "single": ("", (0, 1, 2)),
    "plain": (f"{ML_LEVELS} --multilevel_cycle=[10,10]", (0, 1, 2)),
    "coarse_heavy": (f"{ML_LEVELS} --multilevel_cycle=[2,8]", (0, 1)),
    # coarse steps cost the fine model loss with the shared SGD momentum: one seed with a momentum buffer per level
    "plain_per_level": (f"{ML_LEVELS} --multilevel_cycle=[10,10] --multilevel_momentum=per_level", (0,)),
    # the coherence-corrected arms (tau = 1, no line search) collapsed to the unigram loss on seed 0 (5.80 and 5.76
    # vs 3.16 for single): the second seed for [10,10], the first only for [2,8]
    "corrected": (f"{ML_LEVELS} --multilevel_cycle=[10,10] {ML_CORRECTION}", (0, 1)),
    "coarse_heavy_corrected": (f"{ML_LEVELS} --multilevel_cycle=[2,8] {ML_CORRECTION}", (0,)),
}


def constant_lr(lr):
    return f"--learning_rate={lr} --min_lr={lr}"  # warmup, then the cosine from lr to lr: constant


def multilevel_best(losses):
    """The reading rule of the sweep: the grid argmin, or the next-lower rate when it is within ML_TIE."""
    grid, best, note = bracket(losses, ML_LRS, *ML_LR_RANGE)
    if best is None:
        return grid, None
    lower = [lr for lr in grid if lr < best]
    if lower and losses[lower[-1]] - losses[best] <= ML_TIE:
        best = lower[-1]
    return grid, best


def jobs(study):
    """The queue (studies/runner.py) given the records so far; called with None: the Study."""
    if study is None:
        return Study("multilevel", guess={"12L256-single": 560, "12L256-plain": 460, "12L256-corrected": 490,
                                          "12L256-coarse_heavy": 400, "12L256-coarse_heavy_corrected": 400,
                                          "12L256-plain_per_level": 580})
    out, losses = [], {}
    for lr in set(ML_LRS) | landed_values(study, "sweep/lr"):
        run = study.run(f"sweep/lr{fmt(lr)}")
        losses[lr] = None if run is None else final_loss(run)
    grid, best = multilevel_best(losses)
    for lr in grid:
        out.append(Job(f"sweep/lr{fmt(lr)}", ["train.py", *ML_COMMON.split(), *constant_lr(lr).split(),
                       "--max_iters=1000", "--eval_interval=250", "--eval_iters=16", "--log_interval=50", "--seed=0"],
                       1000, "12L256-single"))
    for arm, (extra, seeds) in ML_ARMS.items():
        for seed in seeds:
            key, shape = f"runs/{arm}/seed{seed}", f"12L256-{arm}"
            if best is None:
                out.append(Job(key, [], 3000, shape, waits="the learning-rate sweep"))
                continue
            out.append(Job(key, ["train.py", *ML_COMMON.split(), *constant_lr(best).split(), *extra.split(),
                                 "--max_iters=3000", "--eval_interval=200", "--eval_iters=32", "--log_interval=25",
                                 f"--seed={seed}"], 3000, shape))
    for arm in ML_BRACKET_ARMS:  # 3. is the rate interior for the multilevel arm too?
        extra, shape = ML_ARMS[arm][0], f"12L256-{arm}"
        if best is None:
            out.append(Job(f"bracket/{arm}/seed0", [], 3000, shape, waits="the learning-rate sweep"))
            continue
        grid, _ = bracket_losses(study, arm, best)
        for lr in grid:
            out.append(Job(f"bracket/{arm}/lr{fmt(lr)}/seed0", ["train.py", *ML_COMMON.split(), *constant_lr(lr).split(),
                           *extra.split(), "--max_iters=3000", "--eval_interval=200", "--eval_iters=32",
                           "--log_interval=25", "--seed=0"], 3000, shape))
    return out


def bracket_losses(study, arm, best):
    """(grid to run, {lr: final val loss or None}) of an arm's bracket around the chosen rate best."""
    losses = {}
    for lr in {best * f for f in ML_BRACKET} | landed_values(study, f"bracket/{arm}/lr"):
        run = study.run(f"bracket/{arm}/lr{fmt(lr)}/seed0")
        losses[lr] = None if run is None else final_loss(run)
    grid, _, _ = bracket(losses, [best * f for f in ML_BRACKET], *ML_LR_RANGE)
    return grid, losses



# ----------------------------------------------------------------------------- the report

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


def arm_records(runs, single):
    """Per run of an arm: seed, final val loss, FLOPs, wall time, the coarse networks' gap and, against the single run
    of the same seed, the ratios of FLOPs (with and without the head) and wall time to reach its final loss."""
    per = []
    for r in runs:
        ev, ref = r.evals(), single.get(r.config["seed"])
        rec = dict(seed=r.config["seed"], val=ev[-1]["val_loss"], flops=ev[-1]["flops"], wall=r.final["wall_time"],
                   coarse_gap=np.mean(list(ev[-1]["coarse_val_loss"].values())) - ev[-1]["val_loss"]
                   if "coarse_val_loss" in ev[-1] else None)
        if ref is not None and r is not ref:
            rev, target = ref.evals(), ref.evals()[-1]["val_loss"]
            f, nh, t = (reach(ev, "val_loss", target, x) for x in ("flops", head_free(r), "time"))
            rec["flops_ratio"] = None if f is None else f / rev[-1]["flops"]
            rec["flops_ratio_no_head"] = None if nh is None else nh / head_free(ref)(rev[-1])
            rec["wall_ratio"] = None if t is None else t / rev[-1]["time"]
            back = reach(rev, "val_loss", ev[-1]["val_loss"])  # the single run at this arm's final loss
            rec["single_flops_at_arm_loss"] = None if back is None else ev[-1]["flops"] / back
        per.append(rec)
    return per


def table_row(arm, per, summary):
    """The arm's row of the table (and its paired difference to single in summary)."""
    ms = lambda k: (np.mean([p[k] for p in per]), np.std([p[k] for p in per], ddof=1) if len(per) > 1 else 0.0)  # noqa: E731
    ratios = lambda k: ", ".join("not reached" if p.get(k) is None else f"{p[k]:.2f}x" for p in per)  # noqa: E731
    mean_ratio = lambda k: ("" if any(p.get(k) is None for p in per) else  # noqa: E731
                            f" (mean {np.mean([p[k] for p in per]):.2f}x)")
    gap = [p["coarse_gap"] for p in per if p["coarse_gap"] is not None]
    if arm == "single":
        return (f"| single | {len(per)} | {ms('val')[0]:.4f} ± {ms('val')[1]:.4f} | - | {ms('flops')[0] / 1e15:.3f} "
                f"| 1 | 1 | 1 | - | - | {ms('wall')[0] / 60:.0f} min |")
    diff, pval, n = paired({p["seed"]: p["val"] for p in per}, {p["seed"]: p["val"] for p in summary.get("single", [])})
    summary[f"{arm}_vs_single"] = dict(diff=diff, p=pval, seeds=n)
    vs = "-" if diff is None else f"{diff:+.4f}" + ("" if pval is None else f" ({pval:.2g})")
    return (f"| {arm} | {len(per)} | {ms('val')[0]:.4f} ± {ms('val')[1]:.4f} | {vs} | {ms('flops')[0] / 1e15:.3f} | "
            f"{ratios('flops_ratio')}{mean_ratio('flops_ratio')} | {ratios('flops_ratio_no_head')}"
            f"{mean_ratio('flops_ratio_no_head')} | {ratios('wall_ratio')} | "
            f"{ratios('single_flops_at_arm_loss')} | {np.mean(gap) if gap else float('nan'):+.3f} | "
            f"{ms('wall')[0] / 60:.0f} min |")


def plot(arms, path):
    """Val loss against FLOPs (mean, seed range) and the coarse networks' gap against the step, per arm."""
    import matplotlib.pyplot as plt
    plt.switch_backend("Agg")
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
    fig.savefig(path, dpi=100)
    plt.close(fig)


def bracket_report(out, summary):
    """The bracket's lines (the reading rule of step 3) and summary["bracket"]: per arm {lr: loss}, best, interior."""
    found, made = {}, {}
    for arm in ML_BRACKET_ARMS:
        runs = {float(d.parent.name[2:]): runlog.Run(d) for d in (out / "bracket" / arm).glob("lr*/seed0")}
        found[arm] = {lr: final_loss(r) for lr, r in sorted(runs.items()) if r.done}
        done = [r for r in runs.values() if r.done]
        commits = sorted({r.header.get("git_commit", "?")[:7] for r in done})
        made[arm] = "; ".join([*sorted({machine(r) for r in done}), "commits " + ", ".join(commits)])
    if not any(found.values()):
        return []
    lines, best = ["", "Bracket of the rate (issue 40; 3,000 steps, seed 0; final val loss; interior: below both "
                   "neighbours; each arm's machine and commits, the same training code):", ""], {}
    for arm, losses in found.items():
        grid = sorted(losses)
        i = min(range(len(grid)), key=lambda j: losses[grid[j]]) if grid else None
        interior = i is not None and 0 < i < len(grid) - 1
        best[arm] = grid[i] if i is not None else None
        summary.setdefault("bracket", {})[arm] = dict(losses={fmt(lr): v for lr, v in losses.items()}, best=best[arm],
                                                       interior=interior)
        points = ", ".join(("**{}: {:.4f}**" if lr == best[arm] else "{}: {:.4f}").format(fmt(lr), losses[lr])
                           for lr in grid)
        where = ("interior" if interior else "waiting for the grid" if len(grid) < len(ML_BRACKET)
                 else f"edge optimum at {fmt(best[arm])}")
        lines.append(f"- {arm}: {points} ({where}; {made[arm]})" if grid else f"- {arm}: waiting for the runs")
    if all(summary.get("bracket", {}).get(a, {}).get("interior") for a in ML_BRACKET_ARMS):
        d = found["plain"][best["plain"]] - found["single"][best["single"]]
        summary["bracket"]["plain_minus_single_at_own_best"] = d
        lines.append(f"- plain - single, each at its own best rate (seed 0, one seed: no p-value): {d:+.4f}")
    return lines


def report(out, command):
    """results.md, summary.json and loss_vs_flops.png from the records in out (runs/<arm>/seed<k>, sweep/lr<lr>)."""
    out = Path(out)
    arms = {a: [r for r in (runlog.Run(d) for d in sorted((out / "runs" / a).glob("seed*"))) if r.finished]
            for a in ML_ARMS if (out / "runs" / a).is_dir()}
    single = {r.config["seed"]: r for r in arms.get("single", [])}
    rows, summary = [], {}
    for arm, runs in arms.items():
        summary[arm] = arm_records(runs, single)
        rows.append(table_row(arm, summary[arm], summary))
    lines = ["# Multilevel training with SGD (12 layers, width 256, 8 heads)", "",
             "Final val loss (mean ± std over seeds); FLOPs ratio: the FLOPs (with the head; without it) and the wall "
             "time at which the arm first reaches the single-level run's final val loss (same seed), over the single "
             "run's total (< 1: multilevel saves; the paper: 0.56x); single at arm's loss: the arm's total FLOPs over "
             "the single run's FLOPs to reach the arm's final loss (> 1: the single run got there cheaper). Coarse gap: "
             "the 6-layer coarse networks' val loss minus the fine one's at the shared weights, at the end. Every arm "
             "ran at one shared rate (the sweep's best, below), tuned for no multilevel arm; the bracket below tests it "
             "for single and plain.", "",
             "| arm | seeds | final val loss | vs single (same seeds; paired p) | PFLOPs | FLOPs ratio to single's final "
             "loss | without the head | wall ratio | single at arm's loss | coarse gap | wall |",
             "|---|---|---|---|---|---|---|---|---|---|---|", *rows]
    sweep = sorted((out / "sweep").glob("lr*"), key=lambda d: float(d.name[2:])) if (out / "sweep").is_dir() else []
    if sweep:
        lines += ["", "Single-level learning-rate sweep (constant lr after warmup, 1,000 steps, seed 0; final val "
                  "loss): " + ", ".join(f"{d.name[2:]}: " + ("diverged" if runlog.Run(d).diverged else
                                                             f"{runlog.Run(d).final['final_val_loss']:.4f}")
                                         for d in sweep if runlog.Run(d).done)]
    lines += bracket_report(out, summary)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    utils.atomic_write_text(report_json(summary), out / "summary.json")
    plot(arms, out / "loss_vs_flops.png")
    print("\n".join(lines))
