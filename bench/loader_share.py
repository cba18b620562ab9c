"""
Is the loader a bottleneck of a CPU training step? Time BinLoader.next_batch against one step
(forward + backward + AdamW) of a small GPT under bf16 autocast, and report the loader's share.

    python bench/loader_share.py [--source FILE_OR_FOLDER (default: the TinyStories sample)] [--steps 10]
"""

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from data import prepare_common as pc
from data.loader import BinLoader
from model import GPT, GPTConfig


def timed(fn, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--source", default=str(Path(__file__).resolve().parents[1] / "data" / "tinystories" / "sample"))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch_size", type=int, default=8)
    a = p.parse_args()
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=6, n_head=6, n_embd=384, block_size=256)
    B, T = a.batch_size, cfg.block_size
    with tempfile.TemporaryDirectory() as tmp:
        pc.prepare("tinystories", {"path": "roneneldan/TinyStories"}, ["--source", a.source, "--out_dir", tmp])
        loaders = {o: BinLoader(tmp, "train", B, T, order=o, vocab_size=cfg.vocab_size) for o in ("epoch", "random")}
        model = GPT(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=False)
        x, y = loaders["epoch"].next_batch()

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                _, loss = model(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        timed(step, 2)  # warm-up
        t_step = timed(step, a.steps)
        t_load = {o: timed(ld.next_batch, 2000)[100:] for o, ld in loaders.items()}
        in_loop, t_loop = [], []  # the loader inside a real loop, between steps (caches cold again)
        for _ in range(a.steps):
            t0 = time.perf_counter()
            x, y = loaders["epoch"].next_batch()
            t1 = time.perf_counter()
            step()
            in_loop.append(t1 - t0)
            t_loop.append(time.perf_counter() - t0)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    med = statistics.median
    print(f"\ncommit {commit}, GPT 6x384 (6 heads), block 256, batch {B}, bf16 autocast, 2 threads, {a.steps} steps")
    print(f"train step (fwd+bwd+AdamW): median {med(t_step) * 1e3:.0f} ms (min {min(t_step) * 1e3:.0f}, "
          f"max {max(t_step) * 1e3:.0f})")
    for o, t in t_load.items():
        print(f"next_batch order={o}: median {med(t) * 1e6:.0f} us (p99 {sorted(t)[int(len(t) * .99)] * 1e6:.0f} us) "
              f"= {100 * med(t) / (med(t) + med(t_step)):.4f}% of a step")
    print(f"in the training loop (order=epoch): next_batch median {med(in_loop) * 1e6:.0f} us, max {max(in_loop) * 1e6:.0f}"
          f" us = {100 * sum(in_loop) / sum(t_loop):.4f}% of loop time")


if __name__ == "__main__":
    main()
