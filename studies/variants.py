"""
The controlled variant comparison. Results: studies/RESULTS.md#variant-comparison-under-controls-1500-steps

    python -m studies variants plan|run|report      # the queue (resumable), then the tables and plots

The design, fixed before the runs. Every run: 4 layers, 4 heads, width 128, T 128, batch 8, the *_cpu.py Muon + AdamW
recipe, fp32, eager, TinyStories (the embedded sample) with its 4,095 most frequent tokens + <unk>, each seed the same
data order for every arm.
1. Untuned (keys runs/<arm>/seed<k>; Muon 0.02, AdamW 2e-3): 1,500 steps (warmup 150, cosine to 0.1x), seeds 0 1 2,
   seed-major. Arms: baseline gd_euler polyak yuriiformer nesterov_euler imex, yuriiformer_v0zero (V_0 = 0: no V_0
   tables), baseline_embed (the baseline plus a zero-initialised second token + position table on X_0: exactly the
   V_0 tables' parameter count at the baseline's FLOPs). Vocabulary check (keys vocab/<vocab>/<arm>/seed<k>):
   baseline and yuriiformer at 300 steps (warmup 30) with the 4,096 and the full 50,304 vocabulary, seeds 0 1.
2. Tuned rates (issue 40; keys tuned/<arm>/adamw<a>-muon<m>/seed<k>): the same protocol with each arm's own learning
   rates. min_lr is lr/10 (the floor 0.1x of both optimizers). The untuned pair (AdamW 2e-3, Muon 0.02) runs again:
   the code has changed since runs/ was recorded (at 303ffa0; yuriiformer seed 0 at step 100: val 4.97835 now vs
   4.97827 then), so every point of the sweep is made by one commit.
  1. tuned/<arm>/adamw<a>-muon0.02/seed0: AdamW lr 1e-3 .. 8e-3 (factors of 2) at Muon 0.02, seed 0, grown by a
     factor 2 past an edge optimum (1.25e-4 .. 6.4e-2)
  2. tuned/<arm>/adamw<best>-muon<m>/seed0: Muon lr 0.01 .. 0.04 at the arm's best AdamW rate, grown the same way
     (0.0025 .. 0.32)
  3. seeds 1 and 2 at the arm's best pair
  Arms: baseline, baseline_embed, yuriiformer, yuriiformer_v0zero first, then polyak and nesterov_euler.
  Two checks, added on 2026-12-07 after the core arms' seed-0 sweeps had landed (they change no verdict):
  4. a second coordinate pass, tuned/<arm>/adamw<best/2 and best*2>-muon<best>/seed0 for the core arms: the AdamW
     sweep ran at Muon 0.02 while three of the four Muon optima came out at 0.005-0.01; the report says whether the
     best pair is also the AdamW optimum at its own Muon rate (points already in the sweeps are not run again).
  5. one machine per pair, rerun/<arm>/adamw<a>-muon<m>/seed<k>: the Muon bf16 kernels make a run differ between
     the 2-core Intel Xeon and the 2-core AMD EPYC these records come from (the same command and commit: val at step
     100 4.27313 vs 4.27315), and the queue moved machine between seeds. RERUN lists the best-pair runs recorded on the
     Xeon whose claim partner ran on the EPYC; the report gives each claim again with both runs of every seed from
     one machine, and each rerun minus its record (the size of the machine effect).
  One extension, added on 2026-12-07 after the 3-seed claims read "unresolved" (p 0.116 and 0.071, every seed of a
  claim agreeing in sign), before any of its runs:
  6. seeds 3 and 4 at each core arm's best pair (on one machine). The verdict stays the 3-seed one above; the report
     gives each claim over seeds 0-4 by the same rule beside it, marked as this post-hoc extension.
Reading rule, fixed before the runs: an arm's best pair is the lowest seed-0 final val loss of its Muon sweep (which
holds the AdamW sweep's best point). Claims, each arm at its own best pair, 3 seeds paired by seed (same data order):
(a) yuriiformer beats the parameter-matched baseline_embed, (b) yuriiformer_v0zero beats the baseline; a claim holds
when the mean difference is negative, every seed agrees and the paired t-test gives p < 0.05; it is reversed when
the same holds with the sign flipped, and unresolved otherwise. Seed 0 chose the rates (its loss is biased low for
every arm alike); the report also gives the difference on seeds 1-2 alone.

The report (studies/results/variants/): results.md, results.json and the plots of studies/compare.py for the untuned
arms (Welch and paired p against the baseline) with the vocabulary check; tuned.md for the tuned rates: per arm the
AdamW and Muon sweeps (seed 0), the best pair, the 3-seed mean ± std at it, and the two claims by the rule above;
then each arm's tuned loss beside its untuned one and the pairs of DESCRIBED (no verdict: no rule was fixed for them).
"""

import math
from collections import Counter
from pathlib import Path

import numpy as np

import runlog
import utils
from studies import compare
from studies.runner import Job, Study, bracket, final_loss, fmt, machine

DATA = "data/tinystories_study"
MODEL = ("config/tinystories_baseline_cpu.py --vocab_size=4096 --n_embd=128 --batch_size=8 --dtype=float32 "
         "--compile=False --always_save_checkpoint=False --shortlist=0")  # the command-line base of every run
MAIN = (f"{MODEL} --data_dir={DATA}_top4096 --max_iters=1500 --lr_decay_iters=1500 --warmup_iters=150 "
        "--eval_interval=100 --eval_iters=16 --log_interval=25")
SHORT = f"{MODEL} --max_iters=300 --lr_decay_iters=300 --warmup_iters=30 --eval_interval=50 --eval_iters=16 --log_interval=25"
ARMS = {"baseline": "--variant=baseline", "gd_euler": "--variant=gd_euler", "polyak": "--variant=polyak",
        "yuriiformer": "--variant=yuriiformer", "nesterov_euler": "--variant=nesterov_euler", "imex": "--variant=imex",
        "yuriiformer_v0zero": "--variant=yuriiformer --v0=zero", "baseline_embed": "--variant=baseline --embed_extra=True"}
ORDER = ("baseline", "yuriiformer", "yuriiformer_v0zero", "baseline_embed", "polyak", "gd_euler", "nesterov_euler", "imex")
SEEDS, VOCAB_SEEDS, VOCAB_ARMS = (0, 1, 2), (0, 1), ("baseline", "yuriiformer")
EXTRA_SEEDS = (3, 4)  # stage 6: the core arms' best pairs only
TUNED_ARMS = ("baseline", "baseline_embed", "yuriiformer", "yuriiformer_v0zero", "polyak", "nesterov_euler")
VT_CORE = ("baseline", "baseline_embed", "yuriiformer", "yuriiformer_v0zero")
CLAIMS = (("yuriiformer", "baseline_embed"), ("yuriiformer_v0zero", "baseline"))  # (a), (b): the first beats the second
# described beside the claims, without a verdict (no reading rule was fixed for them)
DESCRIBED = (("yuriiformer", "baseline"), ("yuriiformer", "yuriiformer_v0zero"), ("polyak", "baseline_embed"),
             ("yuriiformer", "polyak"), ("nesterov_euler", "yuriiformer"))

VT_ADAMW, VT_ADAMW_RANGE = (1e-3, 2e-3, 4e-3, 8e-3), (1.25e-4, 6.4e-2)
VT_MUON, VT_MUON_RANGE = (0.01, 0.02, 0.04), (0.0025, 0.32)
VT_DEFAULT = (2e-3, 0.02)  # the untuned study's pair
RERUN = (("baseline", 1), ("baseline", 2), ("baseline_embed", 2))  # (arm, seed) at its best pair: on the Xeon, the
# partner of its claim (yuriiformer_v0zero seeds 1-2, yuriiformer seed 2) on the EPYC


def vt_key(arm, adamw, muon, seed):
    return f"tuned/{arm}/adamw{fmt(adamw)}-muon{fmt(muon)}/seed{seed}"


def rerun_key(arm, adamw, muon, seed):
    return "rerun/" + vt_key(arm, adamw, muon, seed).removeprefix("tuned/")


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


def tuned_jobs(study, arms=TUNED_ARMS):
    """The tuned-rate jobs given the records so far: the core arms before the others, stage by stage in each group
    (the extension's seeds before the checks)."""
    stage = {n: [] for n in (1, 2, 3, 6, 5, 4)}  # the docstring's stages, in queue order

    def add(n, arm, adamw, muon, seed, key=vt_key):
        args = f"{MAIN} {ARMS[arm]} --learning_rate={adamw:g} --min_lr={adamw / 10:g} --muon_lr={muon:g} " \
               f"--seed={seed}"
        stage[n].append(Job(key(arm, adamw, muon, seed), ["train.py", *args.split()], 1500, "4L128-1500"))
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
        if m_best is None:
            stage[3] += [Job(f"tuned/{arm}/best/seed{seed}", [], 1500, "4L128-1500", waits=f"the {arm} Muon sweep")
                         for seed in SEEDS[1:]]
            continue
        for seed in SEEDS[1:]:
            add(3, arm, a_best, m_best, seed)
        if arm in VT_CORE:
            for a in check_rates(a_best):
                add(4, arm, a, m_best, 0)
            for seed in [s for a, s in RERUN if a == arm]:
                add(5, arm, a_best, m_best, seed, key=rerun_key)
            for seed in EXTRA_SEEDS:
                add(6, arm, a_best, m_best, seed)
    # the core arms before the others, stage by stage within each group
    core = [j for n in stage for j in stage[n] if j.key.split("/")[1] in VT_CORE]
    return core + [j for n in stage for j in stage[n] if j not in core]


def check_rates(a_best):
    """The AdamW rates of the second coordinate pass around an arm's best pair (stage 4)."""
    return a_best / 2, a_best * 2

def train_job(key, args, steps):
    return Job(key, ["train.py", *args.split()], steps, f"4L128-{steps}" if "--vocab_size=50304" not in args else "4L50k-300")


def jobs(study):
    """The queue (studies/runner.py) given the records so far; called with None: the Study."""
    if study is None:
        return Study("variants", guess={"4L128-1500": 260, "4L128-300": 260, "4L50k-300": 600})
    out = [train_job(f"runs/{arm}/seed{seed}", f"{MAIN} {ARMS[arm]} --seed={seed}", 1500) for seed in SEEDS for arm in ORDER]
    for seed in VOCAB_SEEDS:
        for arm in VOCAB_ARMS:
            out.append(train_job(f"vocab/top4096/{arm}/seed{seed}", f"{SHORT} --data_dir={DATA}_top4096 {ARMS[arm]} "
                                 f"--seed={seed}", 300))
            out.append(train_job(f"vocab/full/{arm}/seed{seed}", f"{SHORT} --data_dir={DATA} --vocab_size=50304 "
                                 f"{ARMS[arm]} --seed={seed}", 300))
    return out + tuned_jobs(study)


# ----------------------------------------------------------------------------- the report

def groups_of(root, names=None):
    """{arm: [loaded runs]} of root/<arm>/seed<k>."""
    found = compare.discover(root, names)
    return {name: [compare.load_run(d) for d in dirs] for name, dirs in found.items()}


VARIANT_ORDER = ["baseline", "baseline_embed", "gd_euler", "polyak", "yuriiformer", "yuriiformer_v0zero",
                 "nesterov_euler", "imex"]


def untuned_report(out, command):
    """The untuned comparison (compare.py's table, JSON and plots) and the vocabulary check, in out/results.md."""
    meta = {"command": command, "git_commit": utils.git_commit(), "skipped_runs": []}
    groups = groups_of(out / "runs")
    groups = {k: groups[k] for k in VARIANT_ORDER if k in groups} | {k: v for k, v in groups.items() if k not in VARIANT_ORDER}
    _, table = compare.write_outputs(groups, "baseline", out, meta)
    lines = ["", f"Every arm above and below ran at one shared learning-rate pair (AdamW {VT_DEFAULT[0]:g}, Muon "
             f"{VT_DEFAULT[1]:g}), tuned for no arm; each arm at its own rates: tuned.md.", "",
             "Vocabulary check (300 steps, the same model and recipe; yuriiformer - baseline, final val loss):", "",
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


def loss_text(x):
    return "missing" if x is None else "diverged" if not math.isfinite(x) else f"{x:.4f}"


def sweep_line(study, name, points):
    """'name: rate loss, ...' for {rate: key} of seed-0 runs, with 'waiting for N runs' for those not recorded."""
    runs = {r: study.run(k) for r, k in points.items()}
    done = [f"{fmt(r)} {loss_text(final_loss(run))}" for r, run in sorted(runs.items()) if run is not None]
    waiting = sum(run is None for run in runs.values())
    wait = f"waiting for {waiting} run{'s' * (waiting > 1)}" if waiting else ""
    return f"{name}: " + "; ".join(x for x in (", ".join(done), wait) if x)


def tuned_arm(study, arm):
    """The report lines of one arm and its {seed: final val loss} at its best pair (None until all seeds landed)."""
    a_grid, a_best, m_grid, m_best = vt_best(study, arm)
    lines = [f"**{arm}**", "", "- " + sweep_line(study, f"AdamW sweep (Muon {fmt(VT_DEFAULT[1])}, seed 0)",
                                                  {a: vt_key(arm, a, VT_DEFAULT[1], 0) for a in a_grid})]
    if a_best is None:
        return lines + ["- Muon sweep: waiting for the AdamW sweep", ""], None
    lines.append("- " + sweep_line(study, f"Muon sweep (AdamW {fmt(a_best)}, seed 0)",
                                   {m: vt_key(arm, a_best, m, 0) for m in m_grid}))
    if m_best is None:
        return lines + ["- best pair: waiting for the Muon sweep", ""], None
    runs = {s: study.run(vt_key(arm, a_best, m_best, s)) for s in SEEDS}
    loss = {s: final_loss(r) for s, r in runs.items() if r is not None}
    if len(loss) < len(SEEDS):
        return lines + [f"- best pair AdamW {fmt(a_best)}, Muon {fmt(m_best)}: waiting for {len(SEEDS) - len(loss)} seeds",
                        ""], None
    v = list(loss.values())
    lines.append(f"- best pair AdamW {fmt(a_best)}, Muon {fmt(m_best)}: final val loss {np.mean(v):.4f} ± "
                 f"{np.std(v, ddof=1):.4f} over seeds {', '.join(map(str, SEEDS))} ({', '.join(map(loss_text, v))})")
    return lines + [""], loss


def claim(first, second, a, b, seeds=SEEDS):
    """The row of one claim ("first beats second") by the rule of the docstring, from {seed: loss} of each arm."""
    missing = [x for x, y in ((first, a), (second, b)) if y is None or not set(seeds) <= set(y)]
    if missing:
        return f"| {first} - {second} | waiting for the runs of {' and '.join(missing)} | | | |"
    a, b = {s: a[s] for s in seeds}, {s: b[s] for s in seeds}
    mean, p, _ = compare.paired(a, b)
    d = [a[s] - b[s] for s in seeds]
    late, _, _ = compare.paired({s: a[s] for s in seeds[1:]}, {s: b[s] for s in seeds[1:]})
    sign = 1 if mean < 0 else -1
    ok = all(sign * x < 0 for x in d) and p is not None and p < 0.05
    verdict = ("holds" if sign == 1 else "reversed") if ok else "unresolved"
    return (f"| {first} - {second} | {mean:+.4f} ({', '.join(f'{x:+.4f}' for x in d)}) | {compare.fmt_p(p)} | "
            f"{late:+.4f} | {verdict} |")


def described(study, at_best):
    """Lines beside the claims: each arm tuned against untuned (3 seeds) and the DESCRIBED pairs at both settings."""
    untuned = {arm: {s: final_loss(r) for s in SEEDS if (r := study.run(f"runs/{arm}/seed{s}")) is not None}
               for arm in TUNED_ARMS}
    done = [arm for arm in TUNED_ARMS if at_best[arm] is not None]
    if not done:
        return []
    lines = ["", "Each arm at its own best pair against the shared untuned pair (AdamW 2e-3, Muon 0.02; records "
             "runs/<arm>/seed<k>, recorded at 303ffa0), final val loss over seeds 0-2:", "",
             "| arm | untuned | tuned | tuned - untuned |", "|---|---|---|---|"]
    for arm in [a for a in done if len(untuned[a]) == len(SEEDS)]:
        u, t = list(untuned[arm].values()), list(at_best[arm].values())
        lines.append(f"| {arm} | {np.mean(u):.4f} ± {np.std(u, ddof=1):.4f} | {np.mean(t):.4f} ± "
                     f"{np.std(t, ddof=1):.4f} | {np.mean(t) - np.mean(u):+.4f} |")
    rows = []
    for x, y in DESCRIBED:
        if at_best[x] is None or at_best[y] is None or len(untuned[x]) < len(SEEDS) or len(untuned[y]) < len(SEEDS):
            continue
        um, up, _ = compare.paired(untuned[x], untuned[y])
        tm, tp, _ = compare.paired(at_best[x], at_best[y])
        per = ", ".join(f"{at_best[x][s] - at_best[y][s]:+.4f}" for s in SEEDS)
        rows.append(f"| {x} - {y} | {um:+.4f} ({compare.fmt_p(up)}) | {tm:+.4f} ({per}) | {compare.fmt_p(tp)} |")
    if rows:
        lines += ["", "Other pairs, described without a verdict (no reading rule was fixed for them before the runs):",
                  "", "| first - second | untuned: mean (paired p) | tuned: mean (per seed) | tuned: paired p |",
                  "|---|---|---|---|", *rows]
    return lines


def extension(study):
    """Stage 6's lines: each core arm over seeds 0-4 at its best pair and the claims by the same rule."""
    seeds, loss = SEEDS + EXTRA_SEEDS, {}
    lines = ["", f"Post-hoc extension (stage 6, added after the 3-seed verdicts): seeds 0-{seeds[-1]} at each core "
             "arm's best pair:", ""]
    for arm in VT_CORE:
        _, a, _, m = vt_best(study, arm)
        runs = {s: study.run(vt_key(arm, a, m, s)) for s in seeds} if m is not None else {}
        loss[arm] = {s: final_loss(r) for s, r in runs.items() if r is not None}
        v = list(loss[arm].values())
        lines.append(f"- {arm}: " + (f"{np.mean(v):.4f} ± {np.std(v, ddof=1):.4f} ({', '.join(map(loss_text, v))})"
                                     if len(v) == len(seeds) else f"waiting for {len(seeds) - len(v)} seeds"))
    return lines + ["", f"| claim: first - second | mean difference (seeds 0-{seeds[-1]}) | paired p | seeds "
                    f"1-{seeds[-1]} only | reading by the rule |", "|---|---|---|---|---|",
                    *(claim(x, y, loss[x], loss[y], seeds) for x, y in CLAIMS)]


def coordinate_check(study):
    """Stage 4's lines: per core arm, AdamW at half and twice its best rate, at its best Muon rate (seed 0)."""
    lines = []
    for arm in VT_CORE:
        _, a_best, _, m_best = vt_best(study, arm)
        if m_best is None:
            lines.append(f"- {arm}: waiting for its sweeps")
            continue
        points = {a: vt_key(arm, a, m_best, 0) for a in (*check_rates(a_best), a_best)}
        line = "- " + sweep_line(study, f"{arm}, AdamW at Muon {fmt(m_best)}", points)
        loss = {a: final_loss(run) for a, k in points.items() if (run := study.run(k)) is not None}
        if len(loss) == len(points):
            low = min(loss, key=loss.get)
            line += (": the best pair is the AdamW optimum at its own Muon rate" if low == a_best else
                     f": **AdamW {fmt(low)} is lower than the best pair by {loss[a_best] - loss[low]:.4f}**")
        lines.append(line)
    return lines


def one_machine(study):
    """Stage 5's lines: each claim again with both runs of every seed from one machine, and rerun - record."""
    pair = {arm: vt_best(study, arm) for arm in VT_CORE}
    effect, rows = [], []
    for arm, seed in RERUN:
        _, a, _, m = pair[arm]
        rec = study.run(vt_key(arm, a, m, seed)) if m is not None else None
        again = study.run(rerun_key(arm, a, m, seed)) if m is not None else None
        if rec is not None and again is not None:
            effect.append(f"{arm} seed {seed} {final_loss(again):.4f} on the {machine(again)} vs "
                          f"{final_loss(rec):.4f} on the {machine(rec)} ({final_loss(again) - final_loss(rec):+.4f})")
    for x, y in CLAIMS:
        losses, where, waiting = ({}, {}), [], False
        for s in SEEDS:
            runs = []
            for arm in (x, y):
                _, a, _, m = pair[arm]
                runs.append([r for r in (study.run(vt_key(arm, a, m, s)), study.run(rerun_key(arm, a, m, s)))
                             if r is not None] if m is not None else [])
            same = [(rx, ry) for rx in runs[0] for ry in runs[1] if machine(rx) == machine(ry)]
            if not same:
                waiting = True
                break
            rx, ry = same[0]
            losses[0][s], losses[1][s] = final_loss(rx), final_loss(ry)
            where.append(machine(rx))
        if waiting:
            rows.append(f"| {x} - {y} | waiting for the runs or reruns of one machine per seed | | | |")
        else:
            rows.append(claim(x, y, *losses)[:-2] + f"; machines: {', '.join(where)} |")
    return (["", "Each claim with both runs of every seed from one machine (stage 5; a rerun where the records' "
             "machines differ; the same rule, no verdict of its own):", "",
             "| claim: first - second | mean difference (per seed) | paired p | seeds 1-2 only | reading, machines |",
             "|---|---|---|---|---|", *rows, "", "The machine effect, rerun - record: " +
             ("; ".join(effect) if effect else "waiting for the reruns") + "."])


def provenance(out):
    """One line: how many tuned and rerun records, their commits, machines, dates and one-thread wall time."""
    runs = [runlog.Run(f.parent) for prefix in ("tuned", "rerun") for f in sorted((out / prefix).glob(f"**/{runlog.FILE}"))]
    runs = [r for r in runs if r.done]
    if not runs:
        return ""
    machines = Counter(machine(r) for r in runs)
    ids = {r.header.get("git_commit", "?") for r in runs}
    commits = sorted(c[:7] + "-dirty" * c.endswith("-dirty") for c in ids)
    hours = sum(r.final.get("wall_time", 0) for r in runs) / 3600
    return (f"Records: {len(runs)} runs (`python -m studies variants run`; this page: `python -m studies variants "
            f"report`), commits {', '.join(commits)} (the same training code), "
            f"{'; '.join(f'{n} on the {m}' for m, n in machines.items())} (2 cores, one thread per run, two at a "
            f"time), {hours:.1f} h of one-thread training.")


def tuned_report(out):
    """tuned.md: per arm its sweeps, best pair and 3 seeds there; the two claims by the predeclared rule."""
    study = Study("variants", results=out)
    lines, at_best = ["# Variants at each arm's own learning rates (issue 40)", "",
                      "Final val loss at step 1,500; the design and the reading rule: studies/variants.py.",
                      provenance(out), ""], {}
    for arm in TUNED_ARMS:
        arm_lines, at_best[arm] = tuned_arm(study, arm)
        lines += arm_lines
    lines += ["Claims (each arm at its own best pair, paired by seed; holds: mean < 0, every seed < 0 and paired "
              "t-test p < 0.05; reversed: the same with the sign flipped; else unresolved):", "",
              "| claim: first - second | mean difference (per seed) | paired p | seeds 1-2 only | verdict |",
              "|---|---|---|---|---|"]
    lines += [claim(x, y, at_best[x], at_best[y]) for x, y in CLAIMS]
    lines += extension(study)
    lines += ["", "Second coordinate pass (stage 4, seed 0; no verdict):", "", *coordinate_check(study)]
    lines += one_machine(study)
    lines += described(study, at_best)
    utils.atomic_write_text("\n".join(lines) + "\n", out / "tuned.md")
    print("\n".join(lines))


def report(out, command):
    """results.md, results.json, the plots (untuned) and tuned.md from the records in out."""
    out = Path(out)
    untuned_report(out, command)
    tuned_report(out)
