"""
The queues of the train.py studies (run by studies/runner.py; `bash studies/<study>.sh [--plan]`). Each function
returns the study's jobs given its records so far (called with None: the Study itself, folders and guesses).

geometry (studies/RESULTS.md#geometry): manifold Muon with a geometry per module at the variant comparison's model
(4 layers, 4 heads, width 128, T 128, batch 8, TinyStories top-4096 vocabulary, fp32, eager), 1,500 steps (warmup
150, cosine to 0.1x). The paper's settings where they decide the comparison: DGram weights start at their own
singular values (mm_init=reference), its SVD retraction (mm_retraction=reference), weight decay 0.1 on the
unconstrained baseline only; the dual ascent is ours (mm_scaling=rms, K=2, alpha 0.3: see docs/manifold-muon.md).
  1. sweep/<arm>/lr<lr>: muon_lr 0.01 .. 0.08 (factors of 2), 500 steps, seed 0, grown by a factor 2 past an edge
     optimum (0.0025 .. 0.32); the mixed arms then x0.5 and x2 on the DGram module's lr (grown the same way)
  2. runs/<arm>/seed<k>: the four assignments at their best rates, 3 seeds, spectral records every 100 steps
  3. clean/<arm>/seed0: the mixed arms with mm_retraction=clean (the reference's SVD re-sorting of column norms off)
  4. long/<arm>/seed0: 4x the horizon (6,000 steps, 2.4 epochs of the sample, cosine over 6,000, the same warmup and
     rates), the mixed arms first, to look for the paper's late instability and its precursor
Instability rule, fixed before the runs: a run is unstable when it diverges (non-finite loss) or when its val loss at
an evaluation after step 300 lies more than 0.10 above its lowest val loss so far.

multilevel (studies/RESULTS.md#multilevel): the paper's regime scaled to this CPU: 12 layers, width 256, 8 heads,
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
  3. bracket/<arm>/lr<lr>/seed0 (issue 40): single and plain at half and twice the chosen rate (0.05, 0.2), 3,000
     steps, seed 0: is the rate interior for the multilevel arm too (it was tuned on single-level runs)?

variants_tuned (studies/RESULTS.md#variants; issue 40): the variant comparison's protocol (studies/variants.sh: 4
layers, 4 heads, width 128, T 128, batch 8, 1,500 steps, warmup 150, cosine to 0.1x, Muon + AdamW, fp32, eager, the
same data order per seed, TinyStories top-4096) with each arm's own learning rates. min_lr is lr/10 (the floor 0.1x
of both optimizers). The untuned pair (AdamW 2e-3, Muon 0.02) runs again: the code has changed since runs/ was
recorded (at 303ffa0; yuriiformer seed 0 at step 100: val 4.97835 now vs 4.97827 then), so every point of the
sweep is made by one commit.
  1. tuned/<arm>/adamw<a>-muon0.02/seed0: AdamW lr 1e-3 .. 8e-3 (factors of 2) at Muon 0.02, seed 0, grown by a
     factor 2 past an edge optimum (1.25e-4 .. 6.4e-2)
  2. tuned/<arm>/adamw<best>-muon<m>/seed0: Muon lr 0.01 .. 0.04 at the arm's best AdamW rate, grown the same way
     (0.0025 .. 0.32)
  3. seeds 1 and 2 at the arm's best pair
  Arms: baseline, baseline_embed, yuriiformer, yuriiformer_v0zero first, then polyak and nesterov_euler.
Reading rule, fixed before the runs: an arm's best pair is the lowest seed-0 final val loss of its Muon sweep (which
holds the AdamW sweep's best point). Claims, each arm at its own best pair, 3 seeds paired by seed (same data order):
(a) yuriiformer beats the parameter-matched baseline_embed, (b) yuriiformer_v0zero beats the baseline; a claim holds
when the mean difference is negative, every seed agrees and the paired t-test gives p < 0.05; it is reversed when
the same holds with the sign flipped, and unresolved otherwise. Seed 0 chose the rates (its loss is biased low for
every arm alike); the report also gives the difference on seeds 1-2 alone.
"""

import math

import json
from dataclasses import asdict, replace

import numpy as np

from lab.run_study import DEPTH_GRIDS, DEPTHS, DEPTHS_64, DISTS, GRIDS, LR_RANGE, OPTS, LabConfig, fixed, sizes
from studies.runner import SCRATCH, Job, Study, bracket

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


def final_loss(run):
    """A landed run's final val loss (inf when it diverged or is missing)."""
    if run is None or run.diverged:
        return math.inf
    loss = run.final.get("final_val_loss")
    return loss if loss is not None and math.isfinite(loss) else math.inf


def fmt(x):
    return f"{x:g}"


def geometry(study, seeds=SEEDS):
    if study is None:
        return Study("geometry", guess={"4L128-sweep": 280, "4L128-main": 300})
    jobs, best, mult = [], {}, {}

    def train_job(key, args, steps, shape, waits=""):
        return Job(key, ["train.py", *args.split()], steps, shape, waits=waits)
    for arm, arm_args in GEOMETRY_ARMS.items():  # 1. the lr sweep, grown past an edge optimum
        losses = {}
        for lr in set(GEOMETRY_LRS) | _landed_values(study, f"sweep/{arm}/lr"):
            run = study.run(f"sweep/{arm}/lr{fmt(lr)}")
            losses[lr] = None if run is None else final_loss(run)
        grid, best[arm], _ = bracket(losses, GEOMETRY_LRS, *GEOMETRY_LR_RANGE)
        for lr in grid:
            jobs.append(train_job(f"sweep/{arm}/lr{fmt(lr)}",
                                  f"{GEOMETRY_COMMON} {arm_args} {GEOMETRY_SWEEP} --muon_lr={lr}", 500, "4L128-sweep"))
    for arm, mod in DGRAM_MODULE.items():  # ... and the DGram module's multiplier at the arm's best rate
        lr = best[arm]
        if lr is None:
            jobs += [train_job(f"sweep/{arm}/lr?-{mod}{fmt(m)}", "", 500, "4L128-sweep", waits=f"the {arm} lr sweep")
                     for m in MULTS if m != 1.0]
            mult[arm] = None
            continue
        losses = {1.0: final_loss(study.run(f"sweep/{arm}/lr{fmt(lr)}"))}
        for m in set(MULTS) | _landed_values(study, f"sweep/{arm}/lr{fmt(lr)}-{mod}"):
            if m != 1.0:
                run = study.run(f"sweep/{arm}/lr{fmt(lr)}-{mod}{fmt(m)}")
                losses[m] = None if run is None else final_loss(run)
        grid, mult[arm], _ = bracket(losses, MULTS, *MULT_RANGE)
        for m in grid:
            if m != 1.0:
                jobs.append(train_job(f"sweep/{arm}/lr{fmt(lr)}-{mod}{fmt(m)}",
                                      f"{GEOMETRY_COMMON} {GEOMETRY_ARMS[arm]} {GEOMETRY_SWEEP} --muon_lr={lr} "
                                      f"--group_lr_mult={{'{mod}':{m}}}", 500, "4L128-sweep"))
    for seed in seeds:  # 2. the main runs
        for arm in GEOMETRY_ARMS:
            jobs.append(main_job(arm, best, mult, seed, f"runs/{arm}/seed{seed}", train_job))
    for arm in DGRAM_MODULE:  # 3. the reference's retraction off
        jobs.append(main_job(arm, best, mult, 0, f"clean/{arm}/seed0", train_job, "--mm_retraction=clean"))
    for arm in LONG_ARMS:  # 4. the longer runs
        jobs.append(main_job(arm, best, mult, 0, f"long/{arm}/seed0", train_job, steps=GEOMETRY_LONG))
    return jobs


def main_job(arm, best, mult, seed, key, train_job, extra="", steps=GEOMETRY_STEPS):
    if best[arm] is None or (arm in DGRAM_MODULE and mult.get(arm) is None):
        return train_job(key, "", steps, "4L128-main", waits=f"the {arm} sweep")
    m = mult.get(arm)
    group = f" --group_lr_mult={{'{DGRAM_MODULE[arm]}':{m}}}" if m not in (None, 1.0) else ""
    return train_job(key, f"{GEOMETRY_COMMON} {GEOMETRY_ARMS[arm]} --max_iters={steps} --lr_decay_iters={steps} "
                     f"{GEOMETRY_MAIN} --muon_lr={best[arm]}{group} --seed={seed} {extra}".strip(), steps, "4L128-main")


def _landed_values(study, prefix):
    """The numbers v of the landed (or scratch) runs named prefix + v, e.g. grid points added by an earlier growth."""
    out = set()
    parent, stem = (study.results / prefix).parent, (study.results / prefix).name
    if parent.is_dir():
        for d in parent.iterdir():
            rest = d.name[len(stem):] if d.name.startswith(stem) else ""
            try:
                out.add(float(rest))
            except ValueError:
                pass
    return out


# ----------------------------------------------------------------------------- multilevel
ML_COMMON = ("config/tinystories_baseline_cpu.py --data_dir=data/tinystories_study_top4096 --vocab_size=4096 "
             "--n_layer=12 --n_head=8 --n_embd=256 --block_size=64 --batch_size=8 --dtype=float32 --compile=False "
             "--always_save_checkpoint=False --optimizer=sgd --sgd_momentum=0.9 --weight_decay=0.0 --grad_clip=1.0 "
             "--warmup_iters=100 --shortlist=0 --lr_decay_iters=300")
ML_LRS, ML_LR_RANGE, ML_TIE = (0.025, 0.05, 0.1, 0.2, 0.4, 0.8), (0.003125, 3.2), 0.01
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


def multilevel(study):
    if study is None:
        return Study("multilevel", guess={"12L256-single": 560, "12L256-plain": 460, "12L256-corrected": 490,
                                          "12L256-coarse_heavy": 400, "12L256-coarse_heavy_corrected": 400,
                                          "12L256-plain_per_level": 580})
    jobs, losses = [], {}
    for lr in set(ML_LRS) | _landed_values(study, "sweep/lr"):
        run = study.run(f"sweep/lr{fmt(lr)}")
        losses[lr] = None if run is None else final_loss(run)
    grid, best = multilevel_best(losses)
    for lr in grid:
        jobs.append(Job(f"sweep/lr{fmt(lr)}", ["train.py", *ML_COMMON.split(), *constant_lr(lr).split(),
                        "--max_iters=1000", "--eval_interval=250", "--eval_iters=16", "--log_interval=50", "--seed=0"],
                        1000, "12L256-single"))
    for arm, (extra, seeds) in ML_ARMS.items():
        for seed in seeds:
            key, shape = f"runs/{arm}/seed{seed}", f"12L256-{arm}"
            if best is None:
                jobs.append(Job(key, [], 3000, shape, waits="the learning-rate sweep"))
                continue
            jobs.append(Job(key, ["train.py", *ML_COMMON.split(), *constant_lr(best).split(), *extra.split(),
                                  "--max_iters=3000", "--eval_interval=200", "--eval_iters=32", "--log_interval=25",
                                  f"--seed={seed}"], 3000, shape))
    for arm in ML_BRACKET_ARMS:  # 3. is the rate interior for the multilevel arm too?
        for factor in ML_BRACKET:
            extra, shape = ML_ARMS[arm][0], f"12L256-{arm}"
            if best is None:
                jobs.append(Job(f"bracket/{arm}/lr?x{factor:g}/seed0", [], 3000, shape, waits="the learning-rate sweep"))
                continue
            lr = best * factor
            jobs.append(Job(f"bracket/{arm}/lr{fmt(lr)}/seed0", ["train.py", *ML_COMMON.split(), *constant_lr(lr).split(),
                            *extra.split(), "--max_iters=3000", "--eval_interval=200", "--eval_iters=32",
                            "--log_interval=25", "--seed=0"], 3000, shape))
    return jobs


ML_BRACKET_ARMS, ML_BRACKET = ("single", "plain"), (0.5, 2.0)


# ----------------------------------------------------------------------------- variants at each arm's own rates
VT_DATA = "data/tinystories_study_top4096"
VT_COMMON = ("config/tinystories_baseline_cpu.py --vocab_size=4096 --n_embd=128 --batch_size=8 --dtype=float32 "
             f"--compile=False --always_save_checkpoint=False --data_dir={VT_DATA} --max_iters=1500 "
             "--lr_decay_iters=1500 --warmup_iters=150 --eval_interval=100 --eval_iters=16 --log_interval=25 --shortlist=0")
VT_ARMS = {"baseline": "--variant=baseline", "baseline_embed": "--variant=baseline --embed_extra=True",
           "yuriiformer": "--variant=yuriiformer", "yuriiformer_v0zero": "--variant=yuriiformer --v0=zero",
           "polyak": "--variant=polyak", "nesterov_euler": "--variant=nesterov_euler"}
VT_CORE = ("baseline", "baseline_embed", "yuriiformer", "yuriiformer_v0zero")
VT_ADAMW, VT_ADAMW_RANGE = (1e-3, 2e-3, 4e-3, 8e-3), (1.25e-4, 6.4e-2)
VT_MUON, VT_MUON_RANGE = (0.01, 0.02, 0.04), (0.0025, 0.32)
VT_DEFAULT = (2e-3, 0.02)  # the untuned study's pair
VT_SEEDS = (0, 1, 2)


def vt_key(arm, adamw, muon, seed):
    return f"tuned/{arm}/adamw{fmt(adamw)}-muon{fmt(muon)}/seed{seed}"


def vt_landed(study, arm, muon=None, adamw=None):
    """The AdamW (muon given) or Muon (adamw given) rates of the landed seed-0 runs of an arm."""
    out, d = set(), study.results / "tuned" / arm
    if d.is_dir():
        for run in d.iterdir():
            a, _, m = run.name.partition("-muon")
            try:
                a, m = float(a[len("adamw"):]), float(m)
            except ValueError:
                continue
            if muon is not None and math.isclose(m, muon):
                out.add(a)
            if adamw is not None and math.isclose(a, adamw):
                out.add(m)
    return out


def vt_best(study, arm):
    """(adamw grid, best adamw, muon grid, best muon) of an arm from its seed-0 records (None while not known)."""
    loss = {}
    for a in set(VT_ADAMW) | vt_landed(study, arm, muon=VT_DEFAULT[1]):
        run = study.run(vt_key(arm, a, VT_DEFAULT[1], 0))
        loss[a] = None if run is None else final_loss(run)
    a_grid, a_best, _ = bracket(loss, VT_ADAMW, *VT_ADAMW_RANGE)
    if a_best is None:
        return a_grid, None, [], None
    loss = {}
    for m in set(VT_MUON) | vt_landed(study, arm, adamw=a_best):
        run = study.run(vt_key(arm, a_best, m, 0))
        loss[m] = None if run is None else final_loss(run)
    m_grid, m_best, _ = bracket(loss, VT_MUON, *VT_MUON_RANGE)
    return a_grid, a_best, m_grid, m_best


def variants_tuned(study, arms=tuple(VT_ARMS)):
    if study is None:
        return Study("variants", guess={"4L128-1500": 260})
    stage = {1: [], 2: [], 3: []}

    def add(n, arm, adamw, muon, seed, waits=""):
        args = f"{VT_COMMON} {VT_ARMS[arm]} --learning_rate={adamw:g} --min_lr={adamw / 10:g} --muon_lr={muon:g} " \
               f"--seed={seed}"
        stage[n].append(Job(vt_key(arm, adamw, muon, seed), [] if waits else ["train.py", *args.split()], 1500,
                            "4L128-1500", waits=waits))
    for arm in arms:
        a_grid, a_best, m_grid, m_best = vt_best(study, arm)
        for a in a_grid:
            add(1, arm, a, VT_DEFAULT[1], 0)
        if a_best is None:
            stage[2].append(Job(f"tuned/{arm}/muon-sweep", [], 1500 * len(VT_MUON), "4L128-1500",
                                waits=f"the {arm} AdamW sweep"))
            continue
        for m in m_grid:
            add(2, arm, a_best, m, 0)
        for seed in VT_SEEDS[1:]:
            if m_best is None:
                stage[3].append(Job(f"tuned/{arm}/best/seed{seed}", [], 1500, "4L128-1500",
                                    waits=f"the {arm} Muon sweep"))
            else:
                add(3, arm, a_best, m_best, seed)
    # the core arms before the others, stage by stage within each group
    core = [j for n in (1, 2, 3) for j in stage[n] if j.key.split("/")[1] in VT_CORE]
    return core + [j for n in (1, 2, 3) for j in stage[n] if j not in core]


# ----------------------------------------------------------------------------- the linear-transformer lab
def grid_best(study, prefix, start, seeds):
    """(grid to run, best lr or None) of the runs prefix/lr<lr>/seed<s>: bracketed on the seed-mean log fixed loss
    (inf for a run the report counts as diverged)."""
    losses = {}
    landed = {float(r["key"][len(prefix) + 3:].split("/")[0]) for r in study.lines()
              if r["key"].startswith(prefix + "/lr")}
    for lr in set(start) | landed:
        recs = [study.line(f"{prefix}/lr{lr:g}/seed{s}") for s in seeds]
        losses[lr] = None if any(r is None for r in recs) else float(np.mean([np.log(fixed(r)) for r in recs]))
    grid, best, note = bracket(losses, start, *LR_RANGE)
    return grid, best, note


def lab(study, quick=False):
    """The lab's jobs (lab/run_study.py has the design) given its records; called with None: the Study."""
    if study is None:
        guess = ({f"L{L}": 1.2 + 3.3 * L for L in DEPTHS} | {f"noise-L{L}": 12_000 * L for L in DEPTHS}
                 | {f"L{L}-f64": 1.7 * (1.2 + 3.3 * L) for L in DEPTHS_64})  # float64: ~1.3-1.7x (measured)
        return Study("lab_quick", results=SCRATCH / "lab_quick", guess=guess) if quick else Study("lab", guess=guess)
    steps, short, n_core, n_grid, n_depth, hess = sizes(quick)
    base = LabConfig(steps=steps, eval_at=(short,))
    out = []

    def add(key, cfg, kind="train", waits=""):
        steps_ = cfg.steps if kind == "train" else 1
        argv = ["-m", "lab.run_study", "--job", key, "--kind", kind, "--config", json.dumps(asdict(cfg)),
                "--out", str(study.results)]
        shape = f"{'noise-' if kind == 'noise' else ''}L{cfg.n_layer}{'-f64' if cfg.dtype == 'float64' else ''}"
        out.append(Job(key, argv, steps_, shape, kind="line", waits=waits))
    for dist in DISTS:  # 1. the paper's comparison at lr 0.02
        for opt in OPTS:
            for s in range(n_core):
                add(f"core/{dist}/{opt}/seed{s}", replace(base, dist=dist, optimizer=opt, seed=s, hess_at=hess,
                                                           smooth_every=10 if s == 0 else 0))
    for dist in DISTS:  # 2. each optimizer's own grid (best vs best)
        for opt in OPTS:
            prefix = f"grid/{dist}/{opt}"
            grid, _, _ = grid_best(study, prefix, GRIDS[opt], range(n_grid))
            for lr in grid:
                for s in range(n_grid):
                    add(f"{prefix}/lr{lr:g}/seed{s}", replace(base, dist=dist, optimizer=opt, lr=lr, seed=s,
                                                              steps=short, eval_at=()))
    for L in DEPTHS:  # 3. depth, each optimizer at its own rate per depth
        for opt in OPTS:
            cfg = replace(base, n_layer=L, optimizer=opt, steps=short, eval_at=(), hess_at=(750, 1250) if not quick
                          else (50,))
            depth_jobs(add, study, f"depth/L{L}/{opt}", cfg, n_depth)
    for dist, depths in (("normal", DEPTHS), ("heavy", (3,))):  # 4. gradient noise at initialisation
        for L in depths:
            add(f"noise/{dist}/L{L}", replace(base, dist=dist, n_layer=L), kind="noise")
    for L in DEPTHS_64:  # 5. (issue 40) depth beyond 4 layers in float64, non-finite minibatches skipped and counted
        for opt in OPTS:
            cfg = replace(base, n_layer=L, optimizer=opt, steps=short, eval_at=(), dtype="float64", skip_nonfinite=True)
            depth_jobs(add, study, f"depth64/L{L}/{opt}", cfg, n_depth)
    return out


def depth_jobs(add, study, prefix, cfg, n_depth):
    """A depth grid on seed 0 (DEPTH_GRIDS, grown past an edge), then seeds 1 .. n_depth - 1 at its best rate."""
    grid, best, note = grid_best(study, prefix, DEPTH_GRIDS[cfg.optimizer], [0])
    for lr in grid:
        add(f"{prefix}/lr{lr:g}/seed0", replace(cfg, lr=lr))
    for s in range(1, 1 if best is None and note else n_depth):  # grid ended without a best: no seeds
        if best is None:
            add(f"{prefix}/lr?/seed{s}", cfg, waits=f"the {prefix} grid")
        else:
            add(f"{prefix}/lr{best:g}/seed{s}", replace(cfg, lr=best, seed=s))


def lab_quick(study):
    """A tiny plan of the lab (a smoke run of the queue and the report, not for conclusions)."""
    return lab(study, quick=True)
