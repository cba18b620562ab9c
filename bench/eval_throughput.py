"""
Evaluation throughput: scored choices per second of evaluation.py's harness adapter on the local multiple-choice task
(evals/tinystories_endings, 160 (context, ending) pairs) for a *_cpu.py-sized model (4 layers, width 256,
T 128, GPT-2 vocabulary; random weights: the speed does not depend on them), per variant and batch size.

    python bench/eval_throughput.py [--variants baseline,yuriiformer] [--batch_sizes 1,16,64] [--repeats 3]
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import evaluation
import utils
from model import GPT, PRESETS, GPTConfig

ROOT = Path(__file__).resolve().parents[1]


def pairs():
    """Token-id (context, continuation) pairs of the local task, as the harness forms them."""
    lm = evaluation.make_lm(GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8)), "cpu", "float32", 1)
    items = [json.loads(line) for line in open(ROOT / "evals" / "tinystories_endings.jsonl")]
    return [lm._encode_pair(it["ctx"], " " + e) for it in items for e in it["endings"]]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="baseline,yuriiformer")
    p.add_argument("--batch_sizes", default="1,16,64")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    data = pairs()
    rows = []
    for variant in a.variants.split(","):
        torch.manual_seed(0)
        model = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=256, block_size=128, bias=False, **PRESETS[variant])).eval()
        for bs in map(int, a.batch_sizes.split(",")):
            evaluation.score_pairs(model, data[:bs], "cpu", a.dtype, bs, disable_tqdm=True)  # warm-up
            times = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                evaluation.score_pairs(model, data, "cpu", a.dtype, bs, disable_tqdm=True)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            rows.append(dict(variant=variant, batch_size=bs, seconds=med, choices_per_s=len(data) / med,
                             min_s=min(times), max_s=max(times)))
            print(f"{variant} batch {bs}: {len(data) / med:.1f} choices/s ({med:.2f} s for {len(data)}, "
                  f"{min(times):.2f}-{max(times):.2f})", flush=True)
    print(json.dumps(dict(bench="eval_throughput", device=utils.device_name("cpu"), git_commit=utils.git_commit(),
                          dtype=a.dtype, threads=a.threads, rows=rows)))


if __name__ == "__main__":
    main()
