"""
Training-step throughput of train.py against a straightforward nanoGPT-style loop, same model and batch.

    flock /tmp/cpu.lock python bench/train_step.py config/tinystories_baseline_cpu.py --steps=30

"train.py" runs the real trainer (its logged tokens/s per step); "nanogpt-style" is nanoGPT's inner
loop written out (memmap get_batch, AdamW with nanoGPT's grouping, grad clip) on bench/nanogpt_ref.py,
once in fp32 (what nanoGPT does on CPU: no autocast) and once under the same autocast dtype as train.py,
both compiled when the config says compile=True (as nanoGPT does).
Prints a table and a final JSON line.
"""

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

import runlog
import trainer
import utils
from bench.nanogpt_ref import RefConfig, RefGPT

ROOT = Path(__file__).resolve().parents[1]


def ours(argv, steps):
    """Median tokens/s of train.py's own log lines, after warm-up."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, str(ROOT / "train.py"), *argv, f"--out_dir={out}", f"--max_iters={steps}",
               f"--eval_interval={steps * 10}", "--eval_iters=1", "--log_interval=1", "--always_save_checkpoint=False"]
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        tok_s = [r["tok_per_s"] for r in runlog.Run(out).of("train")][steps // 3:]
    return statistics.median(tok_s), min(tok_s), max(tok_s)


def nanogpt_style(cfg, mcfg, data_dir, steps, dtype):
    """nanoGPT's train.py inner loop on its model; returns median/min/max tokens/s."""
    torch.manual_seed(cfg.seed)
    raw = RefGPT(RefConfig(**{k: getattr(mcfg, k) for k in RefConfig.__dataclass_fields__}))
    model = torch.compile(raw) if cfg.compile else raw  # nanoGPT compiles too when asked
    decay = [p for p in raw.parameters() if p.dim() >= 2]
    no_decay = [p for p in raw.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay,
                            "weight_decay": 0.0}], lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2))
    ctx = nullcontext() if dtype == "float32" else torch.autocast("cpu", dtype=utils.DTYPES[dtype])
    B, T = cfg.batch_size, mcfg.block_size

    def get_batch():
        data = np.memmap(os.path.join(data_dir, "train.bin"), dtype=np.uint16, mode="r")
        ix = torch.randint(len(data) - T, (B,))
        x = torch.stack([torch.from_numpy(data[i:i + T].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + T].astype(np.int64)) for i in ix])
        return x, y

    tok_s = []
    x, y = get_batch()
    for it in range(steps):
        t0 = time.time()
        for g in opt.param_groups:
            g["lr"] = cfg.learning_rate * trainer.lr_factor(it, cfg)
        for _ in range(cfg.gradient_accumulation_steps):
            with ctx:
                _, loss = model(x, y)
            loss = loss / cfg.gradient_accumulation_steps
            x, y = get_batch()
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # nanoGPT syncs on its log line
        tok_s.append(B * T * cfg.gradient_accumulation_steps / (time.time() - t0))
    tok_s = tok_s[steps // 3:]
    return statistics.median(tok_s), min(tok_s), max(tok_s)


def main(argv):
    steps = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("--steps=")), 30)
    argv = [a for a in argv if not a.startswith("--steps=")]
    cfg, mcfg, _ = trainer.load_config(argv)
    utils.setup_runtime("cpu")
    dtype = utils.resolve_dtype(cfg.dtype, "cpu")
    data_dir = cfg.data_dir or str(ROOT / "data" / cfg.dataset)
    rows = {"train.py (%s)" % dtype: ours(argv, steps),
            "nanogpt-style (float32, as nanoGPT on CPU)": nanogpt_style(cfg, mcfg, data_dir, steps, "float32"),
            f"nanogpt-style ({dtype})": nanogpt_style(cfg, mcfg, data_dir, steps, dtype)}
    base = rows[f"nanogpt-style ({dtype})"][0]
    print(f"compile={cfg.compile}, model {mcfg.n_layer}L/{mcfg.n_head}H/{mcfg.n_embd}, block {mcfg.block_size}, "
          f"batch {cfg.batch_size} x "
          f"{cfg.gradient_accumulation_steps}, optimizer {cfg.optimizer}, variant {cfg.variant or 'baseline'}, "
          f"{steps} steps, {utils.device_name('cpu')}")
    print(f"{'loop':45s} {'tok/s median':>12s} {'min':>8s} {'max':>8s} {'vs nanogpt-style same dtype':>28s}")
    for name, (med, lo, hi) in rows.items():
        print(f"{name:45s} {med:12,.0f} {lo:8,.0f} {hi:8,.0f} {med / base:27.2f}x")
    print(json.dumps({"rows": {k: dict(median=v[0], min=v[1], max=v[2]) for k, v in rows.items()},
                      "git_commit": utils.git_commit(), "device": utils.device_name("cpu"), "steps": steps,
                      "argv": argv, "isfinite": all(math.isfinite(v[0]) for v in rows.values())}))


if __name__ == "__main__":
    main(sys.argv[1:])
