"""
The lab's study: Adam vs SGD, gradient noise, conditioning and smoothness, gd/polyak/nesterov templates.

    python -m lab.run_study                     # the full study (about 30 minutes on one CPU thread)
    python -m lab.run_study --quick             # a smoke run in about a minute (not for conclusions)

Writes figures (PNG), results.md and results.json to --out (default studies/results/lab).
"""

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy import stats

from lab.model import LinearTransformer, hand_set, icl_optimizer, predict
from lab.train import LabConfig, gradient_noise, train
from utils import atomic_write_text, device_name, git_commit, versions

plt.switch_backend("Agg")

DISTS = ("normal", "heavy")
COLORS = dict(adam="tab:blue", sgd="tab:red", gd="tab:gray", polyak="tab:orange", nesterov="tab:green")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sweep(base, lrs, seed):
    """Best learning rate of `base` by final evaluation loss on a tuning seed (not one of the reported seeds)."""
    evals = {lr: train(replace(base, lr=lr, seed=seed))["eval"] for lr in lrs}
    best = min(evals, key=evals.get)
    log(f"sweep {base.param}/{base.dist}/{base.optimizer}/{base.update}: " +
        ", ".join(f"{lr:g}: {e:.4g}" for lr, e in evals.items()) + f" -> {best:g}")
    return best, evals


def runs(cfg, seeds, measure_seed=None, smooth_every=0, hess_every=0):
    """Train cfg over seeds (measurements on measure_seed only)."""
    out = []
    for s in seeds:
        m = s == measure_seed
        r = train(replace(cfg, seed=s, smooth_every=smooth_every if m else 0, hess_every=hess_every if m else 0))
        log(f"  {cfg.param}/{cfg.dist}/{cfg.optimizer}/{cfg.update} lr={cfg.lr:g} seed={s}: eval {r['eval']:.4g} "
            f"({r['time']:.0f}s{', diverged' if r['diverged'] else ''})")
        out.append(r)
    return out


def summary(rs):
    """Mean, std, min, max of the final evaluation losses over seeds (diverged runs count as inf)."""
    e = np.array([r["eval"] for r in rs])
    return dict(mean=float(e.mean()), std=float(e.std(ddof=1)) if len(e) > 1 else 0.0, min=float(e.min()),
                max=float(e.max()), diverged=int(sum(r["diverged"] for r in rs)), evals=e.tolist())


def smoothed(loss, alpha=0.05):
    """Exponential moving average of log10 of a loss curve, returned as 10^EMA (robust to single spikes)."""
    out, m = [], None
    for x in np.log10(np.maximum(loss, 1e-30)):
        m = x if m is None else (1 - alpha) * m + alpha * x
        out.append(m)
    return 10 ** np.array(out)


def curve_plot(ax, rs, color, label, steps):
    ys = np.full((len(rs), steps), np.nan)
    for i, r in enumerate(rs):
        ys[i, :len(r["loss"])] = smoothed(r["loss"])
    it = np.arange(steps)
    ax.plot(it, np.nanmedian(ys, 0), color=color, label=label)
    ax.fill_between(it, np.nanmin(ys, 0), np.nanmax(ys, 0), color=color, alpha=0.2)
    ax.set_yscale("log")
    ax.set_xlabel("step")


def noise_stats(norms, noise):
    """Tail statistics of the gradient noise: quantile ratios of ||g - G||, excess kurtosis of its coordinates."""
    a = norms.numpy()
    q50, q99 = np.quantile(a, [0.5, 0.99])
    live = noise.std(0) > 0  # the full parametrization has parameters with zero gradient (see robust_condition)
    kurt = stats.kurtosis(noise[:, live].numpy(), axis=0)  # per coordinate, 0 for a Gaussian
    return dict(q99_over_median=float(q99 / q50), max_over_median=float(a.max() / q50),
                norm_kurtosis=float(stats.kurtosis(a)), coord_kurtosis_median=float(np.median(kurt)),
                coord_kurtosis_max=float(kurt.max()))


def construction(base, n_eval=5000):
    """Hand-set weights with one shared (eta, mu, beta) and gamma = 1 in all layers (the known construction):
    the best in-context error of L steps of gd, heavy ball and Nesterov, by grid search on the evaluation set."""
    with torch.random.fork_rng():
        torch.manual_seed(base.eval_seed)
        z, yq = base.data(n_eval)
    z, yq = z.double(), yq.double()
    etas, mus, betas = np.linspace(0.05, 1.5, 30), np.linspace(0, 1, 11), np.linspace(0, 0.9, 10)
    grid = dict(gd=[(e, 0.0, 0.0) for e in etas], polyak=[(e, 0.0, b) for e in etas for b in betas],
                nesterov=[(e, m, b) for e in etas for m in mus for b in betas])  # nested: gd in polyak in nesterov
    out = {}
    for update, pts in grid.items():
        errs = [(predict(icl_optimizer(z, base.n_layer, e, update, m, b, 1.0), z) - yq).square().mean().item()
                for e, m, b in pts]
        i = int(np.argmin(errs))
        out[update] = dict(eval=errs[i], eta=float(pts[i][0]), mu=float(pts[i][1]), beta=float(pts[i][2]))
    c = out["nesterov"]  # the identity on the lab's model class: the hand-set model has the same error
    clip = lambda p: min(max(p, 1e-12), 1 - 1e-12)  # noqa: E731  (sigmoid coefficients lie in (0, 1))
    model = hand_set(LinearTransformer(base.d, base.n_layer, "sparse", "nesterov").double(), c["eta"], clip(c["mu"]),
                     clip(c["beta"]), 1.0)
    with torch.no_grad():
        c["model_eval"] = (model(z) - yq).square().mean().item()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="studies/results/lab")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--tune_seed", type=int, default=100, help="seed of the learning-rate sweeps")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (few steps, 2 seeds)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # tiny ops: one thread is as fast, and immune to contention on a shared machine
    torch.set_flush_denormal(True)
    steps, seeds = (60, 2) if args.quick else (args.steps, args.seeds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = LabConfig(steps=steps)
    lrs = dict(adam=[3e-3, 1e-2, 3e-2, 1e-1], sgd=[1e-2, 3e-2, 1e-1, 3e-1])
    meta = dict(command="python -m lab.run_study" + (" --quick" if args.quick else ""), args=vars(args),
                git_commit=git_commit(), device=device_name("cpu"), versions=versions(), base=vars(base))
    res = dict(meta=meta, optim={}, noise={}, templates={}, construction={})
    t0 = time.time()
    every = dict(smooth_every=max(1, steps // 300), hess_every=max(10, steps // 20))

    # 1. Adam vs SGD on normal and heavy-tailed covariates, both parametrizations (gd template)
    curves = {}
    for param in ("full", "sparse"):
        for dist in DISTS:
            for opt in ("adam", "sgd"):
                cfg = replace(base, param=param, dist=dist, optimizer=opt)
                lr, ev = sweep(cfg, lrs[opt], args.tune_seed)
                rs = runs(replace(cfg, lr=lr), range(seeds), measure_seed=0 if param == "full" else None, **every)
                key = f"{param}/{dist}/{opt}"
                curves[key] = rs
                res["optim"][key] = dict(lr=lr, sweep=ev, **summary(rs))
                r0 = rs[0]
                if r0["rcond"]:
                    res["optim"][key]["rcond"] = dict(iter=r0["rcond_iter"], value=r0["rcond"])
                    res["optim"][key]["smooth"] = dict(iter=r0["smooth_iter"], value=r0["smooth"],
                                                       grad_norm=r0["grad_norm"])
    log(f"optimizers done ({time.time() - t0:.0f}s)")

    # 2. gradient noise at initialisation
    for param in ("full", "sparse"):
        for dist in ("normal", "sphere", "heavy"):
            norms, noise = gradient_noise(replace(base, param=param, dist=dist), n_batches=200 if args.quick else 1000,
                                          big=20_000 if args.quick else 200_000)
            res["noise"][f"{param}/{dist}"] = dict(**noise_stats(norms, noise), norms=norms.tolist())
            log(f"noise {param}/{dist}: {res['noise'][f'{param}/{dist}']['q99_over_median']:.3g} q99/median")

    # 3. templates: gd, polyak, nesterov on normal data with Adam (3 layers, same budget), each with its own lr;
    # cosine decay, so that each reaches its own floor rather than the noise floor of a constant lr
    tcurves = {}
    for param in ("sparse", "full"):
        for update in ("gd", "polyak", "nesterov"):
            key = f"{param}/{update}"
            cfg = replace(base, param=param, update=update, optimizer="adam", schedule="cosine")
            lr, ev = sweep(cfg, lrs["adam"], args.tune_seed)
            rs = runs(replace(cfg, lr=lr), range(seeds))
            tcurves[key] = rs
            coef = {k: float(np.mean([r["coef"][k] for r in rs])) for k in rs[0]["coef"]}
            res["templates"][key] = dict(lr=lr, sweep=ev, coef=coef, **summary(rs))
    res["construction"] = construction(base)
    log(f"templates done ({time.time() - t0:.0f}s)")
    meta["wall_s"] = time.time() - t0

    plots(res, curves, tcurves, steps, out)
    atomic_write_text(json.dumps(res, indent=1), out / "results.json")
    atomic_write_text(table(res), out / "results.md")
    log(f"wrote {out} ({meta['wall_s']:.0f}s)")


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plots(res, curves, tcurves, steps, out):
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    for i, param in enumerate(("full", "sparse")):
        for j, dist in enumerate(DISTS):
            ax = axes[i, j]
            for opt in ("adam", "sgd"):
                r = res["optim"][f"{param}/{dist}/{opt}"]
                curve_plot(ax, curves[f"{param}/{dist}/{opt}"], COLORS[opt], f"{opt} (lr {r['lr']:g})", steps)
            ax.set_title(f"{param} P, Q; {dist} covariates")
            ax.set_ylabel("train loss (log-EMA; median, min-max)")
            ax.legend()
    save(fig, out / "adam_vs_sgd.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, param in zip(axes, ("full", "sparse")):
        for dist, color in zip(("normal", "sphere", "heavy"), ("tab:blue", "tab:gray", "tab:red")):
            a = np.array(res["noise"][f"{param}/{dist}"]["norms"])
            ax.hist(a / np.median(a), bins=np.logspace(-0.6, 1.4, 60), histtype="step", color=color, label=dist)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("||g_batch - g_large|| / median")
        ax.set_title(f"gradient noise at init ({param})")
        ax.legend()
    save(fig, out / "noise_hist.png")

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for dist, ls in zip(DISTS, ("-", "--")):
        for opt in ("adam", "sgd"):
            r = res["optim"][f"full/{dist}/{opt}"]
            axes[0].plot(r["rcond"]["iter"], r["rcond"]["value"], ls, color=COLORS[opt], label=f"{opt}, {dist}")
            s = r["smooth"]
            v, g = np.array(s["value"]), np.array(s["grad_norm"])
            ax = axes[1 if dist == "normal" else 2]
            ax.scatter(g[v > 0], v[v > 0], s=4, color=COLORS[opt], label=opt, alpha=0.5)
            ax.set_title(f"directional smoothness, {dist} (full)")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_title("robust condition number max/median |diag H| (full, seed 0)")
    axes[0].legend(fontsize=7)
    for ax in axes[1:]:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("gradient norm")
        ax.set_ylabel("u^T H u / ||u||^2 along the step u")
        ax.legend()
    save(fig, out / "landscape.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, param in zip(axes, ("sparse", "full")):
        for update in ("gd", "polyak", "nesterov"):
            r = res["templates"][f"{param}/{update}"]
            curve_plot(ax, tcurves[f"{param}/{update}"], COLORS[update], f"{update} (eval {r['mean']:.3g})", steps)
        ax.set_title(f"templates, Adam + cosine, 3 layers ({param}, normal)")
        ax.legend()
    save(fig, out / "templates.png")


def table(res):
    m = res["meta"]
    fmt = lambda r: f"{r['mean']:.4g} ± {r['std']:.2g} ({r['min']:.3g} – {r['max']:.3g})"  # noqa: E731
    lines = ["# Linear-transformer lab: results", "",
             f"`{m['command']}` at commit `{m['git_commit']}` on {m['device']}, torch {m['versions']['torch']}, "
             f"{m['args']['steps'] if not m['args']['quick'] else 60} steps, seeds 0..{m['args']['seeds'] - 1}, "
             f"wall {m['wall_s']:.0f}s. Eval: mean squared in-context error on 20k fresh prompts; mean ± std "
             "(min – max) over seeds; lr tuned on seed " f"{m['args']['tune_seed']}.", "",
             "## Adam vs SGD (gd template, 3 layers)", "",
             "| parametrization | covariates | optimizer | lr | eval | diverged |", "|---|---|---|---|---|---|"]
    for key, r in res["optim"].items():
        lines.append(f"| {' | '.join(key.split('/'))} | {r['lr']:g} | {fmt(r)} | {r['diverged']} |")
    lines += ["", "## Gradient noise at initialisation (1000 minibatches of 1000 vs a 200k-prompt gradient)", "",
              "| parametrization | covariates | q99/median | max/median | kurtosis of norm "
              "| coord. kurtosis median / max |",
              "|---|---|---|---|---|---|"]
    for key, r in res["noise"].items():
        lines.append(f"| {' | '.join(key.split('/'))} | {r['q99_over_median']:.3g} | {r['max_over_median']:.3g} | "
                     f"{r['norm_kurtosis']:.3g} | {r['coord_kurtosis_median']:.3g} / {r['coord_kurtosis_max']:.3g} |")
    lines += ["", "## Landscape along training (full, seed 0)", "",
              "| covariates | optimizer | robust cond. start / median / end | smoothness vs grad-norm: Spearman |",
              "|---|---|---|---|"]
    for key, r in res["optim"].items():
        if "rcond" in r:
            rc = r["rcond"]["value"]
            v, g = np.array(r["smooth"]["value"]), np.array(r["smooth"]["grad_norm"])
            rho = stats.spearmanr(g, v).statistic
            r["smooth_spearman"] = float(rho)
            lines.append(f"| {key.split('/')[1]} | {key.split('/')[2]} | {rc[0]:.3g} / {np.median(rc):.3g} / "
                         f"{rc[-1]:.3g} | {rho:.2f} |")
    lines += ["", "## Templates (Adam with cosine decay, normal covariates, 3 layers)", "",
              "| parametrization | template | lr | eval | learned coefficients (mean over seeds) |",
              "|---|---|---|---|---|"]
    for key, r in res["templates"].items():
        coef = ", ".join(f"{k} {v:.2f}" for k, v in r.get("coef", {}).items())
        lines.append(f"| {' | '.join(key.split('/'))} | {r['lr']:g} | {fmt(r)} | {coef} |")
    lines += ["", "Hand-set construction (sparse, one shared eta, mu, beta, gamma = 1 in all 3 layers; grid search):",
              "", "| template | eval | eta | mu | beta |", "|---|---|---|---|---|"]
    for key, r in res["construction"].items():
        lines.append(f"| {key} | {r['eval']:.4g} | {r['eta']:.3g} | {r['mu']:.2f} | {r['beta']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
