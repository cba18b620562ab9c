"""Helpers shared by the tests (fixtures are in conftest.py): a toy token stream, train.py in-process, torchrun, a tiny
random GPT-2 directory."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import runlog
import trainer
from configurator import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=64, batch_size=8, eval_iters=2,
            warmup_iters=5, learning_rate=1e-2, min_lr=1e-3, device="cpu", log_interval=1)


def toy_tokens(n, seed):
    """A learnable stream: runs of arithmetic sequences mod 63 (63 is the end-of-text token)."""
    rng, out = np.random.default_rng(seed), []
    while len(out) < n:
        a, s = rng.integers(0, 63), rng.integers(1, 4)
        out += [(a + s * i) % 63 for i in range(int(rng.integers(8, 40)))] + [63]
    return np.array(out[:n])


def args(toy, out, **kw):
    """train.py arguments of a tiny run on the toy data (conftest's `toy` fixture) into out."""
    return [f"--{k}={v}" for k, v in {**TINY, "data_dir": toy, "out_dir": out, **kw}.items()]


def run(argv, **kw):
    """Train in this process; returns the summary."""
    cfg, mcfg, raw = trainer.load_config(argv)
    return trainer.train(cfg, mcfg, raw, **kw)


def metrics(out):
    return runlog.read(out)


def train_losses(out):
    return [(r["iter"], r["loss"]) for r in metrics(out) if r["kind"] == "train"]


def assert_config_error(argv, message):
    """load_config(argv) raises a one-line ConfigError containing message."""
    with pytest.raises(ConfigError) as e:
        trainer.load_config(argv)
    assert message in str(e.value) and "\n" not in str(e.value)


def torchrun(argv, nproc=2, attempts=2):
    """`torchrun --standalone --nproc_per_node=nproc train.py argv` with one thread per rank. A launch can fail
    for reasons outside the code (a busy machine: rendezvous or gloo socket timeouts), so it is tried `attempts`
    times; the error names every attempt's stderr tail."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(ROOT / "train.py"), *argv]
    tails = []
    for _ in range(attempts):
        p = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                           timeout=300)
        if p.returncode == 0:
            return p
        tails.append(f"exit {p.returncode}:\n{p.stdout[-1500:]}\n{p.stderr[-3000:]}")
    raise AssertionError("torchrun failed:\n" + "\n---\n".join(tails))


def tiny_gpt2(path, activation="gelu_new", seed=0, vocab=100, positions=64):
    """A tiny transformers GPT-2 (2 layers, width 32) with weights far from their init (biases and norm gains too,
    std 0.1), saved to path with save_pretrained; returned in eval mode."""
    import transformers  # the callers skip without it
    torch.manual_seed(seed)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=vocab, n_positions=positions,
                                     bos_token_id=vocab - 1, eos_token_id=vocab - 1, activation_function=activation)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(str(path))
    return hf
