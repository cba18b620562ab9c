"""
Optimizer-step time of manifold Muon (per geometry) against Muon and AdamW at the size of a *_cpu.py config, in one
run: the same model, the same real gradient (one TinyStories batch) each step, the median of --steps timed steps.

    python bench/optimizer_step.py [--config config/tinystories_baseline_cpu.py] [--steps 5] [-- --key=value ...]
"""

import argparse
import copy
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

import trainer
import utils
from data.loader import BinLoader
from model import GPT
from optim import build_optimizers, init_manifolds, muon_dtype

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = [  # (label, optimizer, geometry_attn, geometry_mlp)
    ("adamw", "adamw", "none", "none"),
    ("muon", "muon", "none", "none"),
    ("manifold_muon none/none", "manifold_muon", "none", "none"),
    ("manifold_muon stiefel/stiefel", "manifold_muon", "stiefel", "stiefel"),
    ("manifold_muon stiefel/dgram", "manifold_muon", "stiefel", "dgram"),
    ("manifold_muon dgram/dgram", "manifold_muon", "dgram", "dgram"),
    ("manifold_muon oblique/oblique", "manifold_muon", "oblique", "oblique"),
    ("manifold_muon dgram/stiefel", "manifold_muon", "dgram", "stiefel"),
]


def gradients(model, cfg, mcfg):
    """{param: grad} of one forward/backward (the config's dtype) on a TinyStories batch (random tokens without it)."""
    data = ROOT / "data" / cfg.dataset
    if (data / "meta.json").exists():
        x, y = BinLoader(str(data), "train", cfg.batch_size, mcfg.block_size, vocab_size=mcfg.vocab_size).next_batch()
    else:
        x = torch.randint(0, 50257, (cfg.batch_size, mcfg.block_size + 1))
        x, y = x[:, :-1].contiguous(), x[:, 1:].contiguous()
    t0 = time.perf_counter()
    with utils.autocast("cpu", utils.resolve_dtype(cfg.dtype, "cpu")):
        loss = model(x, y)[1]
    loss.backward()
    fwd_bwd = time.perf_counter() - t0
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return grads, fwd_bwd


def time_steps(base, grads, cfg, steps):
    """Median seconds of one step of all optimizers and of the hidden-matrix one alone; dual-ascent stats."""
    model = copy.deepcopy(base)
    opts = build_optimizers(model, cfg)
    init_manifolds(opts)
    total, matrix = [], []
    for i in range(steps + 1):  # the first step is a warm-up
        for n, p in model.named_parameters():
            p.grad = grads[n].clone()
        t0 = time.perf_counter()
        opts[0].step()
        t1 = time.perf_counter()
        for opt in opts[1:]:
            opt.step()
        if i:
            total.append(time.perf_counter() - t0)
            matrix.append(t1 - t0 if len(opts) > 1 else float("nan"))
    dual = [s for s in opts[0].state.values() if "dual_iters" in s]
    return {"step_s": statistics.median(total), "step_min_s": min(total), "step_max_s": max(total),
            "matrix_s": statistics.median(matrix),
            "dual_iters": statistics.mean(float(s["dual_iters"]) for s in dual) if dual else None,
            "tangent_rms_max": max(float(s["tangent_rms"]) for s in dual) if dual else None}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", default=str(ROOT / "config" / "tinystories_baseline_cpu.py"))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("overrides", nargs="*", help="--key=value config overrides")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "optimizer_step.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    cfg, mcfg, _ = trainer.load_config([a.config, *a.overrides])
    base = GPT(mcfg)
    grads, fwd_bwd = gradients(base, cfg, mcfg)
    rows = {}
    for label, optimizer, attn, mlp in SETTINGS:
        c = dataclasses.replace(cfg, optimizer=optimizer, geometry_attn=attn, geometry_mlp=mlp)
        rows[label] = time_steps(base, grads, c, a.steps)
        print(label, json.dumps(rows[label]), flush=True)
    muon, adamw = rows["muon"], rows["adamw"]
    print(f"\nn_layer={mcfg.n_layer} n_embd={mcfg.n_embd} vocab={mcfg.vocab_size}, K={cfg.mm_iters}, "
          f"alpha={cfg.mm_alpha}, Muon Newton-Schulz in {muon_dtype(cfg.muon_dtype, 'cpu')}, "
          f"fwd+bwd {fwd_bwd:.2f} s ({utils.resolve_dtype(cfg.dtype, 'cpu')}), {a.steps} timed steps, "
          f"{a.threads} threads\n")
    print("The target (at most 3x Muon) is on the hidden-matrix optimizer alone (its step, not AdamW's part for the "
          "embeddings, head and scalars), each at its defaults.\n")
    print("| optimizer | hidden-matrix step (median) | vs Muon's | whole step (median) | min - max | vs Muon | vs AdamW "
          "| dual iters |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, r in rows.items():
        iters = "" if r["dual_iters"] is None else f"{r['dual_iters']:.1f}"
        alone = r["matrix_s"] == r["matrix_s"]  # AdamW has one optimizer for everything: no separate matrix step
        print(f"| {label} | " + (f"{1e3 * r['matrix_s']:,.0f} ms | {r['matrix_s'] / muon['matrix_s']:.2f}x" if alone
                                 else "- | -") +
              f" | {1e3 * r['step_s']:,.0f} ms | {1e3 * r['step_min_s']:,.0f} - {1e3 * r['step_max_s']:,.0f} | "
              f"{r['step_s'] / muon['step_s']:.2f}x | {r['step_s'] / adamw['step_s']:.2f}x | {iters} |")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    meta = {"config": a.config, "overrides": a.overrides, "steps": a.steps, "mm_iters": cfg.mm_iters,
            "mm_alpha": cfg.mm_alpha, "threads": a.threads, "fwd_bwd_s": fwd_bwd,
            "git_commit": utils.git_commit(), "versions": utils.versions(), "device": utils.device_name("cpu")}
    utils.atomic_write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n", Path(a.out))


if __name__ == "__main__":
    main()
