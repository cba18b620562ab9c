"""
The lab's study in the paper's protocol (Ahn et al., ICLR 2024; their code's defaults, lab/train.py LabConfig):
Adam vs SGD on Gaussian and heavy-tailed covariates, gradient noise, conditioning and smoothness, a depth sweep,
learning-rate grids around the paper's 0.02, and the repo's gd / polyak / nesterov templates.

    python -m lab.run_study --shard 0/2 & python -m lab.run_study --shard 1/2; wait   # the runs (two processes)
    python -m lab.run_study --report                                                 # tables, plots, claims
    python -m lab.run_study --quick --out /tmp/lab                                   # a smoke run (minutes)

Every finished run appends one JSON line to <out>/runs.jsonl (runs already there are skipped, so the study can be
stopped and continued); --report builds results.md, results.json and the figures from that file alone.
"""

import argparse
import fcntl
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy import stats

import runlog
from lab.model import LinearTransformer, hand_set, icl_optimizer, predict
from lab.train import LabConfig, gradient_noise, train
from utils import atomic_write_text, device_name, git_commit, versions

plt.switch_backend("Agg")

OPTS, DISTS = ("adam", "sgd"), ("normal", "heavy")
COLORS = dict(adam="tab:blue", sgd="tab:red", gd="tab:gray", polyak="tab:orange", nesterov="tab:green")
PAPER_RCOND = {"normal": {750: (1.76, 0.40), 1250: (1.58, 0.41)}, "heavy": {750: (9.57, 13.3), 1250: (6.53, 3.55)}}
DEPTHS = (1, 2, 3, 4, 6)
GRID = (0.005, 0.01, 0.02, 0.04, 0.08)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- the plan

def plan(quick=False):
    """[(key, kind, LabConfig or dict, cost estimate)]: every run of the study."""
    steps, short, seeds, dseeds = (200, 100, 2, 2) if quick else (10_000, 5000, 6, 3)
    base = LabConfig(steps=steps, eval_at=(short,))
    hess = tuple(range(0, min(2001, steps + 1), 250 if not quick else 50))
    jobs = []

    def add(key, cfg, kind="train"):
        jobs.append((key, kind, cfg, cfg.n_layer * cfg.steps if kind == "train" else 40 * cfg.n_layer * 1000))
    for dist in DISTS:  # 1. Adam vs SGD, 3 layers, 6 seeds; Hessians on every seed, smoothness on seed 0
        for opt in OPTS:
            for s in range(seeds):
                add(f"core/{dist}/{opt}/seed{s}", replace(base, dist=dist, optimizer=opt, seed=s, hess_at=hess,
                                                           smooth_every=10 if s == 0 else 0))
    for dist in DISTS:  # 2. learning-rate grids (0.02 is the core run at step `short`)
        for opt in OPTS:
            for lr in GRID:
                if lr != 0.02:
                    add(f"grid/{dist}/{opt}/lr{lr:g}", replace(base, dist=dist, optimizer=opt, lr=lr, steps=short,
                                                                eval_at=()))
    for n_layer in DEPTHS:  # 3. depth (3 layers: the core runs at step `short`)
        for opt in OPTS:
            for s in range(dseeds):
                if n_layer != 3:
                    add(f"depth/L{n_layer}/{opt}/seed{s}", replace(base, n_layer=n_layer, optimizer=opt, seed=s,
                                                                    steps=short, eval_at=(), hess_at=(750, 1250)))
    for update in ("polyak", "nesterov"):  # 4. the repo's templates (gd: the core runs)
        for s in range(dseeds):
            add(f"templates/{update}/seed{s}", replace(base, update=update, seed=s))
    for dist in DISTS:  # 5. gradient noise at initialisation
        for n_layer in DEPTHS:
            add(f"noise/{dist}/L{n_layer}", replace(base, dist=dist, n_layer=n_layer), kind="noise")
    return jobs


def shard_of(jobs, n):
    """Job key -> shard: the longest first, each to the least loaded shard (the same split in every process)."""
    load, out = [0.0] * n, {}
    for key, _, _, cost in sorted(jobs, key=lambda j: (-j[3], j[0])):
        i = load.index(min(load))
        out[key], load[i] = i, load[i] + cost
    return out


def run_job(kind, cfg, quick):
    if kind == "noise":
        norms, noise = gradient_noise(cfg, n_batches=200 if quick else 10_000, big=20_000 if quick else 100_000,
                                      seed=1)
        return dict(config=asdict(cfg), **noise_stats(norms, noise), norms=norms.tolist())
    r = train(cfg)
    r["evals"] = {str(k): v for k, v in r["evals"].items()}
    return r


def append(path, record):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(record) + "\n")


def run_shard(out, shard, n, quick):
    jobs = plan(quick)
    mine = shard_of(jobs, n)
    path = out / "runs.jsonl"
    for key, kind, cfg, _ in jobs:
        done = {r["key"] for r in runlog.read(path)} if path.exists() else set()
        if mine[key] != shard or key in done:
            continue
        t0 = time.time()
        r = run_job(kind, cfg, quick)
        append(path, dict(key=key, kind=kind, **r, wall=time.time() - t0, git_commit=git_commit(),
                          device=device_name("cpu"), finished=time.strftime("%Y-%m-%dT%H:%M:%S")))
        log(f"{key}: {r.get('eval', r.get('q99_over_median')):.4g} ({time.time() - t0:.0f}s)")


# ----------------------------------------------------------------------------- statistics

def noise_stats(norms, noise):
    """Tail statistics of the gradient noise: quantile ratios of ||g - G||, (excess) kurtosis of the norms and of
    each live coordinate (0 for a Gaussian), and the Hill tail index of the norms' top 1% (smaller: heavier)."""
    a = norms.numpy()
    q50, q99 = np.quantile(a, [0.5, 0.99])
    live = noise.std(0) > 0  # parameters the loss cannot see have zero gradient noise
    kurt = stats.kurtosis(noise[:, live].numpy(), axis=0)
    top = np.sort(a)[-max(10, len(a) // 100):]
    hill = 1.0 / np.mean(np.log(top / top[0]))
    return dict(q99_over_median=float(q99 / q50), max_over_median=float(a.max() / q50),
                norm_kurtosis=float(stats.kurtosis(a)), coord_kurtosis_median=float(np.median(kurt)),
                coord_kurtosis_max=float(kurt.max()), hill_tail_index=float(hill))


def mean_std(xs):
    xs = np.asarray(xs, dtype=float)
    return float(xs.mean()), float(xs.std(ddof=1)) if len(xs) > 1 else 0.0


def paired_p(a, b):
    """Two-sided paired t-test on log losses (seeds paired); None with < 2 pairs."""
    if len(a) < 2:
        return None
    return float(stats.ttest_rel(np.log(a), np.log(b)).pvalue)


def construction(n_layer=3, n_eval=5000):
    """Hand-set weights with one shared (eta, mu, beta) and gamma = 1 in all layers (the known construction): the
    best in-context error of L steps of gd, heavy ball and Nesterov, by grid search on the evaluation prompts."""
    base = LabConfig(n_layer=n_layer)
    with torch.random.fork_rng():
        torch.manual_seed(base.eval_seed)
        z, yq = base.data(n_eval)
    z, yq = z.double(), yq.double()
    etas, mus, betas = np.linspace(0.05, 1.5, 30), np.linspace(0, 1, 11), np.linspace(0, 0.9, 10)
    grid = dict(gd=[(e, 0.0, 0.0) for e in etas], polyak=[(e, 0.0, b) for e in etas for b in betas],
                nesterov=[(e, m, b) for e in etas for m in mus for b in betas])
    out = {}
    for update, pts in grid.items():
        errs = [(predict(icl_optimizer(z, n_layer, e, update, m, b, 1.0), z) - yq).square().mean().item()
                for e, m, b in pts]
        i = int(np.argmin(errs))
        out[update] = dict(eval=errs[i], eta=float(pts[i][0]), mu=float(pts[i][1]), beta=float(pts[i][2]))
    c = out["nesterov"]  # the same error from the lab's model class, in the paper's parametrization
    clip = lambda p: min(max(p, 1e-12), 1 - 1e-12)  # noqa: E731  (sigmoid coefficients lie in (0, 1))
    model = hand_set(LinearTransformer(base.d, n_layer, "paper", "nesterov").double(), c["eta"], clip(c["mu"]),
                     clip(c["beta"]), 1.0)
    with torch.no_grad():
        c["model_eval"] = (model(z) - yq).square().mean().item()
    return out


# ----------------------------------------------------------------------------- the report

def at(r, step):
    return r["evals"].get(str(step), float("inf"))


def analyze(recs):
    """Every number of the report, from the run records."""
    by = {r["key"]: r for r in recs}
    core = lambda dist, opt: [r for k, r in sorted(by.items()) if k.startswith(f"core/{dist}/{opt}/")]  # noqa: E731
    steps = max(r["config"]["steps"] for r in recs if r["kind"] == "train")
    short = min(int(k) for r in recs if r["key"].startswith("core/") for k in r["evals"])
    res = dict(steps=steps, short=short, adam_vs_sgd={}, rcond={}, smooth={}, grid={}, depth={}, noise={},
               templates={}, wall={})
    for dist in DISTS:
        a, s = ([at(r, steps) for r in core(dist, o)] for o in OPTS)
        res["adam_vs_sgd"][dist] = dict(adam=mean_std(a), sgd=mean_std(s), ratio=float(np.exp(np.mean(np.log(s))
                                        - np.mean(np.log(a)))), p=paired_p(a, s), adam_wins=int(sum(x < y for x, y in
                                        zip(a, s))), seeds=len(a), adam_evals=a, sgd_evals=s)
        rc = {o: [dict(zip(r["rcond_iter"], r["rcond"])) for r in core(dist, o)] for o in OPTS}
        res["rcond"][dist] = {it: dict(zip(("mean", "std"), mean_std([x[it] / y[it] for x, y in
                                  zip(rc["sgd"], rc["adam"])])), adam=mean_std([y[it] for y in rc["adam"]]),
                                  sgd=mean_std([x[it] for x in rc["sgd"]]))
                              for it in sorted(rc["adam"][0])}
        res["smooth"][dist] = {o: dict(iter=r["smooth_iter"], value=r["smooth"], grad_norm=r["grad_norm"],
                                       median=float(np.median(r["smooth"])))
                               for o in OPTS for r in core(dist, o)[:1]}
        for opt in OPTS:
            pts = {lr: by[f"grid/{dist}/{opt}/lr{lr:g}"]["eval"] for lr in GRID if f"grid/{dist}/{opt}/lr{lr:g}" in by}
            pts[0.02] = at(core(dist, opt)[0], short)
            best = min(pts, key=pts.get)
            res["grid"][f"{dist}/{opt}"] = dict(points={f"{k:g}": v for k, v in sorted(pts.items())}, best=best,
                                                bracketed=min(pts) < best < max(pts))
    for n_layer in DEPTHS:
        for opt in OPTS:
            if n_layer == 3:  # the core runs at step `short`, as many seeds as the other depths have
                n_seeds = len([k for k in by if k.startswith(f"depth/L1/{opt}/")]) or None
                rs = [dict(eval=at(r, short), rcond=r["rcond"], rcond_iter=r["rcond_iter"])
                      for r in core("normal", opt)[:n_seeds]]
            else:
                rs = [r for k, r in sorted(by.items()) if k.startswith(f"depth/L{n_layer}/{opt}/")]
            if rs:
                rc = [dict(zip(r["rcond_iter"], r["rcond"])) for r in rs]
                res["depth"][f"L{n_layer}/{opt}"] = dict(eval=mean_std([r["eval"] for r in rs]),
                                                         evals=[r["eval"] for r in rs],
                                                         rcond750=mean_std([x.get(750, np.nan) for x in rc]))
    for k, r in by.items():
        if r["kind"] == "noise":
            res["noise"][k.removeprefix("noise/")] = {x: r[x] for x in ("q99_over_median", "max_over_median",
                                                      "norm_kurtosis", "coord_kurtosis_median", "hill_tail_index")}
    for update in ("gd", "polyak", "nesterov"):
        rs = core("normal", "adam")[:3] if update == "gd" else \
            [r for k, r in sorted(by.items()) if k.startswith(f"templates/{update}/")]
        if rs:
            coef = {k: float(np.mean([r["coef"][k] for r in rs])) for k in rs[0]["coef"]}
            res["templates"][update] = dict(eval=mean_std([at(r, steps) for r in rs]), evals=[at(r, steps) for r in rs],
                                            coef=coef)
    g = res["templates"].get("gd", {}).get("evals", [])
    for update in ("polyak", "nesterov"):
        if update in res["templates"]:
            res["templates"][update]["p_vs_gd"] = paired_p(res["templates"][update]["evals"], g)
    ends = sorted(r["finished"] for r in recs)
    res["wall"] = dict(run_seconds=float(sum(r["wall"] for r in recs)), first=ends[0], last=ends[-1], runs=len(recs),
                       git_commits=sorted({r["git_commit"] for r in recs}), devices=sorted({r["device"] for r in recs}))
    res["construction"] = construction()
    return res


def claims(res):
    """(claim, paper, ours, verdict) rows."""
    out, st = [], res["steps"]
    for dist, label in (("normal", "Gaussian"), ("heavy", "heavy-tailed")):
        r = res["adam_vs_sgd"][dist]
        ok = r["adam_wins"] == r["seeds"] and (r["p"] or 1) < 0.05
        out.append((f"Adam reaches a lower loss than SGD ({label} covariates, 3 layers, {st} steps)",
                    "yes (Fig. 3; no numbers given)",
                    f"SGD / Adam final loss {r['ratio']:.2f}x; Adam lower on {r['adam_wins']}/{r['seeds']} seeds, "
                    f"paired p {fmt_p(r['p'])}", "reproduced" if ok else "not reproduced"))
    n, h = res["noise"]["normal/L3"], res["noise"]["heavy/L3"]
    out.append(("Heavy-tailed covariates give heavier-tailed gradient noise (at init, 3 layers)", "yes (Fig. 1, "
                "histograms)", f"kurtosis of ||g - G|| {h['norm_kurtosis']:.3g} vs {n['norm_kurtosis']:.3g}; Hill tail "
                f"index {h['hill_tail_index']:.2f} vs {n['hill_tail_index']:.2f} (smaller: heavier)",
                "reproduced" if h["norm_kurtosis"] > n["norm_kurtosis"] and h["hill_tail_index"] <
                n["hill_tail_index"] else "not reproduced"))
    for dist, label in (("normal", "Setting 1"), ("heavy", "Setting 3")):
        for it in (750, 1250):
            r, (pm, ps) = res["rcond"][dist].get(it), PAPER_RCOND[dist][it]
            if r:
                out.append((f"Robust condition number R_SGD / R_Adam > 1 at iteration {it} ({label})",
                            f"{pm} ({ps})", f"{r['mean']:.2f} ({r['std']:.2f})",
                            "reproduced" if r["mean"] > 1 else "not reproduced"))
    for dist in DISTS:
        s = res["smooth"][dist]
        out.append((f"Adam's directional smoothness is smaller than SGD's ({dist}, first 2000 steps)", "yes (Fig. 2)",
                    f"median {s['adam']['median']:.3g} vs {s['sgd']['median']:.3g}",
                    "reproduced" if s["adam"]["median"] < s["sgd"]["median"] else "not reproduced"))
    d = res["depth"]
    gaps = {L: d[f"L{L}/sgd"]["eval"][0] / d[f"L{L}/adam"]["eval"][0] for L in DEPTHS
            if f"L{L}/sgd" in d and f"L{L}/adam" in d}
    if gaps:
        mono = np.corrcoef(list(gaps), np.log(list(gaps.values())))[0, 1]
        out.append(("The Adam-SGD gap grows with depth (Gaussian)", "yes (Sec. 4.2, no numbers)",
                    "SGD / Adam: " + ", ".join(f"L{L} {g:.2f}x" for L, g in gaps.items()) + f" (corr. with depth "
                    f"{mono:.2f})", "reproduced" if mono > 0.5 else "not reproduced"))
        adam = {L: d[f"L{L}/adam"]["eval"][0] for L in gaps}
        dec = all(adam[a] >= adam[b] for a, b in zip(sorted(adam), sorted(adam)[1:]))
        out.append(("The loss decreases with depth (both optimizers)", "yes (Sec. 4.2)",
                    "Adam: " + ", ".join(f"L{L} {v:.3g}" for L, v in adam.items()),
                    "reproduced" if dec else "not reproduced"))
    nz = {L: res["noise"][f"normal/L{L}"]["norm_kurtosis"] for L in DEPTHS if f"normal/L{L}" in res["noise"]}
    if nz:
        deep, shallow = np.mean([nz[L] for L in nz if L >= 4]), np.mean([nz[L] for L in nz if L <= 2])
        out.append(("Gradient noise is heavier-tailed in deeper models", "yes (L = 6, 8 vs 2, 4)",
                    "kurtosis " + ", ".join(f"L{L} {v:.3g}" for L, v in nz.items()),
                    "reproduced" if deep > shallow else "not reproduced"))
    return out


def fmt_p(p):
    return "-" if p is None else f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def fmt(ms):
    return f"{ms[0]:.4g} ± {ms[1]:.2g}"


def table(res, meta):
    st, sh = res["steps"], res["short"]
    w = res["wall"]
    lines = ["# Linear-transformer lab: the paper's protocol", "",
             f"Runs: {w['runs']} records in `runs.jsonl`, commits {', '.join(c[:12] for c in w['git_commits'])}, "
             f"{'; '.join(w['devices'])}; finished {w['first']} .. {w['last']}; {w['run_seconds'] / 3600:.2f} h of "
             f"run time. Rebuilt by `{meta['command']}`. Losses: mean squared in-context error on 20k fresh prompts, "
             "mean ± std over seeds.", "",
             "## The paper's claims", "", "| claim | paper | ours | verdict |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in claims(res)]
    lines += ["", f"## Adam vs SGD (3 layers, lr 0.02, {st} steps)", "",
              "| covariates | Adam | SGD | SGD / Adam | Adam lower | paired p |", "|---|---|---|---|---|---|"]
    for dist, r in res["adam_vs_sgd"].items():
        lines.append(f"| {dist} | {fmt(r['adam'])} | {fmt(r['sgd'])} | {r['ratio']:.2f}x | {r['adam_wins']}/"
                     f"{r['seeds']} | {fmt_p(r['p'])} |")
    lines += ["", f"## Learning-rate grids ({sh} steps, seed 0)", "",
              "| covariates / optimizer | " + " | ".join(f"{x:g}" for x in GRID) + " | best | bracketed |",
              "|---" * (len(GRID) + 3) + "|"]
    for k, r in res["grid"].items():
        lines.append(f"| {k} | " + " | ".join(f"{r['points'].get(f'{x:g}', float('nan')):.3g}" for x in GRID)
                     + f" | {r['best']:g} | {'yes' if r['bracketed'] else 'no'} |")
    lines += ["", "## Robust condition number max / median |diag H| (fixed batch, mean ± std over seeds)", "",
              "| covariates | iteration | Adam | SGD | SGD / Adam | paper SGD / Adam |", "|---|---|---|---|---|---|"]
    for dist, rows in res["rcond"].items():
        for it, r in rows.items():
            paper = PAPER_RCOND[dist].get(it)
            lines.append(f"| {dist} | {it} | {fmt(r['adam'])} | {fmt(r['sgd'])} | {r['mean']:.2f} ± {r['std']:.2f} | "
                         + (f"{paper[0]} ({paper[1]})" if paper else "") + " |")
    lines += ["", f"## Depth (Gaussian covariates, lr 0.02, {sh} steps)", "",
              "| layers | Adam | SGD | SGD / Adam | robust cond. at 750: Adam / SGD |", "|---|---|---|---|---|"]
    for L in DEPTHS:
        a, s = res["depth"].get(f"L{L}/adam"), res["depth"].get(f"L{L}/sgd")
        if a and s:
            lines.append(f"| {L} | {fmt(a['eval'])} | {fmt(s['eval'])} | {s['eval'][0] / a['eval'][0]:.2f}x | "
                         f"{a['rcond750'][0]:.3g} / {s['rcond750'][0]:.3g} |")
    lines += ["", "## Gradient noise at initialisation (10k minibatches of 1000 vs a 100k-prompt gradient)", "",
              "| covariates / layers | q99 / median | max / median | kurtosis of norm | coord. kurtosis (median) "
              "| Hill tail index |", "|---|---|---|---|---|---|"]
    for k, r in res["noise"].items():
        lines.append(f"| {k} | {r['q99_over_median']:.3g} | {r['max_over_median']:.3g} | {r['norm_kurtosis']:.3g} | "
                     f"{r['coord_kurtosis_median']:.3g} | {r['hill_tail_index']:.2f} |")
    lines += ["", f"## The repo's templates (Adam, Gaussian, 3 layers, lr 0.02, {st} steps)", "",
              "| template | loss | paired p vs gd | learned coefficients (mean) |", "|---|---|---|---|"]
    for u, r in res["templates"].items():
        coef = ", ".join(f"{k} {v:.2f}" for k, v in r["coef"].items())
        lines.append(f"| {u} | {fmt(r['eval'])} | {fmt_p(r.get('p_vs_gd'))} | {coef} |")
    lines += ["", "Hand-set construction (one shared eta, mu, beta, gamma = 1 in all 3 layers; grid search):", "",
              "| template | loss | eta | mu | beta |", "|---|---|---|---|---|"]
    for k, r in res["construction"].items():
        lines.append(f"| {k} | {r['eval']:.4g} | {r['eta']:.3g} | {r['mu']:.2f} | {r['beta']:.2f} |")
    return "\n".join(lines) + "\n"


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plots(recs, res, out):
    by = {r["key"]: r for r in recs}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, dist in zip(axes, DISTS):
        for opt in OPTS:
            rs = [r for k, r in sorted(by.items()) if k.startswith(f"core/{dist}/{opt}/")]
            ys = np.array([r["curve"] for r in rs if len(r["curve"]) == len(rs[0]["curve"])])
            it = rs[0]["curve_iter"]
            m, s = ys.mean(0), ys.std(0)
            ax.plot(it, m, color=COLORS[opt], label=opt)
            ax.fill_between(it, np.maximum(m - s, 1e-12), m + s, color=COLORS[opt], alpha=0.2)
        ax.set(yscale="log", xlabel="iteration", ylabel="loss (fixed batch; mean ± std)",
               title=f"{dist} covariates, 3 layers")
        ax.legend()
    save(fig, out / "adam_vs_sgd.png")

    fig, ax = plt.subplots(figsize=(5, 3.8))
    for dist, color in zip(DISTS, ("tab:blue", "tab:red")):
        a = np.array(by[f"noise/{dist}/L3"]["norms"])
        ax.hist(a / np.median(a), bins=np.logspace(-0.6, 1.6, 80), histtype="step", color=color, label=dist)
    ax.set(xscale="log", yscale="log", xlabel="||g_batch - g_large|| / median", title="gradient noise at init (3 layers)")
    ax.legend()
    save(fig, out / "noise_hist.png")

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for dist, ls in zip(DISTS, ("-", "--")):
        for opt in OPTS:
            r = res["rcond"][dist]
            its = sorted(r)
            axes[0].plot(its, [r[i][opt][0] for i in its], ls, color=COLORS[opt], label=f"{opt}, {dist}")
            s = res["smooth"][dist][opt]
            ax = axes[1 if dist == "normal" else 2]
            v, g = np.array(s["value"]), np.array(s["grad_norm"])
            ax.scatter(g[v > 0], v[v > 0], s=4, color=COLORS[opt], label=opt, alpha=0.5)
            ax.set(xscale="log", yscale="log", xlabel="gradient norm", ylabel="u^T H u / ||u||^2",
                   title=f"directional smoothness, {dist}")
            ax.legend()
    axes[0].set(yscale="log", xlabel="iteration", title="robust condition max/median |diag H| (mean)")
    axes[0].legend(fontsize=7)
    save(fig, out / "landscape.png")

    fig, ax = plt.subplots(figsize=(5, 3.8))
    for opt in OPTS:
        pts = [(L, res["depth"][f"L{L}/{opt}"]["eval"]) for L in DEPTHS if f"L{L}/{opt}" in res["depth"]]
        ax.errorbar([L for L, _ in pts], [m for _, (m, _) in pts], [s for _, (_, s) in pts], color=COLORS[opt],
                    marker="o", label=opt, capsize=3)
    ax.set(yscale="log", xlabel="layers", ylabel=f"loss at step {res['short']}", title="depth (Gaussian)")
    ax.legend()
    save(fig, out / "depth.png")


def report(out, command):
    recs = runlog.read(out / "runs.jsonl")
    res = analyze(recs)
    meta = dict(command=command, git_commit=git_commit(), versions=versions())
    plots(recs, res, out)
    atomic_write_text(json.dumps({"meta": meta, **res}, indent=1, default=float) + "\n", out / "results.json")
    atomic_write_text(table(res, meta), out / "results.md")
    log(f"wrote {out}/results.md, results.json and plots")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="studies/results/lab")
    ap.add_argument("--shard", default="0/1", help="i/n: run the i-th of n balanced parts of the plan")
    ap.add_argument("--report", action="store_true", help="only build the tables and plots from runs.jsonl")
    ap.add_argument("--quick", action="store_true", help="a tiny smoke run (not for conclusions)")
    a = ap.parse_args()
    torch.set_num_threads(1)  # tiny ops: one thread is as fast, and two shards share the machine
    torch.set_flush_denormal(True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if not a.report:
        i, n = map(int, a.shard.split("/"))
        run_shard(out, i, n, a.quick)
        if n > 1:
            return
    report(out, f"python -m lab.run_study --report --out {a.out}" + (" --quick" if a.quick else ""))


if __name__ == "__main__":
    main()
