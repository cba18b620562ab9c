"""
The GPU check: one command that proves the CUDA paths and measures MFU; prints a table and writes one JSON file.

    python bench/gpu_check.py                           # on a GPU machine (under 9 minutes on one H100/H200)
    python bench/gpu_check.py --peak_tflops=989         # MFU against a peak the table does not know
    python bench/gpu_check.py --device=cpu --dry_run    # the same code at toy size on a CPU (CI)
    python bench/gpu_check.py --parts=tests,profile     # choose parts (default tests,throughput,correctness)

1. tests: `pytest -m gpu` (test_gpu.py and the GPU tests of test_loader.py, test_sample.py);
2. throughput: train-step time, tokens/s, MFU and peak memory of baseline, yuriiformer, nesterov_euler and imex at
   GPT-2 small (12L/12H/768, T 1024), bf16, compile on, via bench/throughput.py (a fresh process per variant), each
   variant's step-time ratio to the baseline from the same run; the device's peak FLOP/s from utils.PEAK_FLOPS by
   name (or --peak_tflops);
3. correctness: the same tiny run on the CPU and on the GPU, 50 steps in fp32 (TF32 off) with matching losses, and
   200 steps in bf16 autocast against the fp32 CPU run;
4. profile (only when named in --parts): bench/gpu_profile.py, where yuriiformer's extra step time goes (phases,
   kernel categories, ablations, three micro-batches), within --profile_budget_s (about 4.5 min by default); its
   JSON is written next to --out (gpu_profile.json) and included in this one.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import runlog
import trainer
import utils

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("baseline", "yuriiformer", "nesterov_euler", "imex")
PARTS = ("tests", "throughput", "correctness", "profile")
FP32_TOL, BF16_TOL = 1e-3, 0.05  # max |loss difference| (nats): fp32 CPU vs GPU at 50 steps; bf16 GPU vs fp32 CPU


def gpu_tests(dry_run):
    """(passed, failed, skipped, seconds, tail) of pytest -m gpu."""
    t0 = time.time()
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests", "-p", "no:cacheprovider"]
    if dry_run:  # the CPU mode: collect only
        cmd.append("--collect-only")
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    last = (p.stdout.strip().splitlines() or [""])[-1]
    counts = {w: int(n) for n, w in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last)}
    collected = re.search(r"(\d+)(?:/\d+)? tests? collected", last)
    return dict(returncode=p.returncode, passed=counts.get("passed", 0), failed=counts.get("failed", 0)
                + counts.get("error", 0) + counts.get("errors", 0), skipped=counts.get("skipped", 0),
                collected=int(collected.group(1)) if collected else None, seconds=time.time() - t0, summary=last,
                tail=p.stdout[-3000:])


def throughput(a, device):
    """bench/throughput.py's rows for the four variants (its JSON line)."""
    size = (["--n_layer=2", "--n_head=2", "--n_embd=64", "--block_size=64", "--batch_size=4", "--steps=2",
             "--warmup=1", "--no-compile", "--dtype=float32"] if a.dry_run else
            ["--n_layer=12", "--n_head=12", "--n_embd=768", "--block_size=1024", f"--batch_size={a.batch_size}",
             "--steps=10", "--warmup=3", "--compile", "--dtype=bfloat16"])
    cmd = [sys.executable, str(ROOT / "bench" / "throughput.py"), f"--variants={','.join(VARIANTS)}",
           f"--device={device}", *size, "--no-live_mem"]
    if a.peak_tflops:
        cmd.append(f"--peak_tflops={a.peak_tflops}")
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if p.returncode:
        return dict(error=(p.stderr.strip().splitlines() or ["?"])[-1], command=" ".join(cmd))
    out = json.loads(p.stdout.strip().splitlines()[-1])
    return {**out, "command": " ".join(cmd)}


def gpu_profile(a, out):
    """bench/gpu_profile.py's JSON (written to out), or {error} with its last stderr line."""
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_profile.py"), f"--device={a.device}", f"--out={out}",
           f"--budget_s={a.profile_budget_s}", *(["--dry_run"] if a.dry_run else []),
           *([f"--peak_tflops={a.peak_tflops}"] if a.peak_tflops else [])]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=a.profile_budget_s + 600)
    if p.returncode:
        return dict(error=(p.stderr.strip().splitlines() or ["?"])[-1], command=" ".join(cmd))
    return {**json.loads(Path(out).read_text()), "table": p.stdout.strip()}


def tiny_run(data, out, device, dtype, steps, schedule):
    """Train losses of the first `steps` steps of a tiny yuriiformer run with a `schedule`-step lr schedule (the same
    seed, data order and learning rates on every device)."""
    argv = [f"--data_dir={data}", f"--out_dir={out}", "--n_layer=2", "--n_head=2", "--n_embd=64", "--block_size=64",
            "--batch_size=8", "--vocab_size=128", f"--max_iters={steps}", f"--lr_decay_iters={schedule}", "--warmup_iters=5",
            f"--eval_interval={steps}", "--eval_iters=2", "--log_interval=1", "--variant=yuriiformer",
            "--optimizer=adamw", "--learning_rate=3e-3", "--min_lr=3e-4", f"--device={device}", f"--dtype={dtype}",
            "--tf32=False", "--always_save_checkpoint=False"]
    cfg, mcfg, raw = trainer.load_config(argv)
    trainer.train(cfg, mcfg, raw)
    return [r["loss"] for r in runlog.Run(out).of("train")]


def correctness(device, dry_run):
    """Max loss difference between CPU and `device`: fp32 50 steps, bf16 200 steps (vs the fp32 CPU run)."""
    from data.prepare_common import write_dataset
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_dataset(tmp / "data", {"train": rng.integers(0, 127, 100_000), "val": rng.integers(0, 127, 10_000)},
                      vocab_size=128, eot_token=127, tokenizer="random")
        n_fp32, n_bf16 = (8, 10) if dry_run else (50, 200)  # every run on the n_bf16-step schedule (past warmup)
        cpu = tiny_run(tmp / "data", tmp / "cpu32", "cpu", "float32", n_bf16, n_bf16)
        gpu32 = tiny_run(tmp / "data", tmp / "gpu32", device, "float32", n_fp32, n_bf16)
        gpu16 = tiny_run(tmp / "data", tmp / "gpu16", device, "bfloat16", n_bf16, n_bf16)
    fp32 = float(np.max(np.abs(np.array(gpu32) - np.array(cpu[:n_fp32]))))
    bf16 = float(np.max(np.abs(np.array(gpu16) - np.array(cpu))))
    return dict(fp32_steps=n_fp32, fp32_max_diff=fp32, fp32_ok=fp32 <= FP32_TOL, bf16_steps=n_bf16,
                bf16_max_diff=bf16, bf16_ok=bf16 <= BF16_TOL, cpu_final=cpu[-1], gpu_bf16_final=gpu16[-1])


def table(res):
    """The parts that ran, numbered as in the docstring."""
    lines = [f"device: {res['device']} | torch {res['versions'].get('torch')} | cuda {res['versions'].get('cuda')} | "
             f"peak {res['peak_tflops'] or 'unknown'} TFLOP/s"]
    if "tests" in res:
        t = res["tests"]
        lines += ["", f"1. pytest -m gpu: {t['summary']} ({t['seconds']:.0f} s)"]
    if "throughput" in res:
        th = res["throughput"]
        lines += ["", "2. train step, GPT-2 small, bf16, compile" if not res["dry_run"] else "2. train step (dry run, toy size)"]
        if "error" in th:
            lines.append(f"   error: {th['error']}")
        else:
            lines += ["", "| variant | step ms | tokens/s | MFU | peak memory | step vs baseline |",
                      "|---|---:|---:|---:|---:|---:|"]
            for r in th["rows"]:
                mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "-"
                lines.append(f"| {r['variant']} | {r['step_ms']:.1f} | {r['tok_per_s']:,.0f} | {mfu} | "
                             f"{r['peak_mem_mib']:,.0f} MiB | {r['time_ratio']:.3f}x |")
    if "correctness" in res:
        c = res["correctness"]
        lines += ["", f"3. CPU vs {res['device_arg']}: fp32 {c['fp32_steps']} steps max |dloss| {c['fp32_max_diff']:.2e} "
                  f"({'ok' if c['fp32_ok'] else 'FAIL'}, tol {FP32_TOL}); bf16 {c['bf16_steps']} steps vs fp32 CPU "
                  f"{c['bf16_max_diff']:.3f} ({'ok' if c['bf16_ok'] else 'FAIL'}, tol {BF16_TOL})"]
    if "profile" in res:
        pr = res["profile"]
        lines += ["", "4. profile (bench/gpu_profile.py)", "", pr.get("table") or f"   error: {pr['error']}"]
    return "\n".join(lines)


def passed(res):
    """Every part that ran passed (tests, no errors, matching losses)."""
    c = res.get("correctness", {})
    return (res.get("tests", {}).get("failed", 0) == 0 and all("error" not in res.get(k, {}) for k in ("throughput", "profile"))
            and c.get("fp32_ok", True) and c.get("bf16_ok", True))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (with --dry_run)")
    p.add_argument("--dry_run", action="store_true", help="toy sizes, tests only collected: checks the code path")
    p.add_argument("--parts", default="tests,throughput,correctness", help=f"comma-separated, of {', '.join(PARTS)}")
    p.add_argument("--batch_size", type=int, default=16, help="sequences of 1024 tokens per step (GPT-2 small)")
    p.add_argument("--peak_tflops", type=float, default=None, help="the device's dense bf16 peak, for MFU")
    p.add_argument("--profile_budget_s", type=float, default=270.0, help="the profile starts no item past this")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_check.json"))
    a = p.parse_args(argv)
    parts = [x.strip() for x in a.parts.split(",") if x.strip()]
    if not parts or set(parts) - set(PARTS):
        sys.exit(f"error: --parts={a.parts!r}: choose among {', '.join(PARTS)}, comma-separated")
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: no CUDA device: run on a GPU machine, or use --device=cpu --dry_run to check the code")
    if a.device == "cpu" and not a.dry_run:
        sys.exit("error: --device=cpu only checks the code path: add --dry_run")
    name = utils.device_name(a.device)
    peak = a.peak_tflops or (utils.peak_flops(a.device) or 0) / 1e12 or None
    if a.device.startswith("cuda") and not peak:
        print(f"note: the peak FLOP/s of {name} is not in utils.PEAK_FLOPS: MFU is left out; pass --peak_tflops",
              file=sys.stderr)
    t0 = time.time()
    res = dict(device=name, device_arg=a.device, dry_run=a.dry_run, peak_tflops=peak, versions=utils.versions(),
               git_commit=utils.git_commit(), command=" ".join(["python", "bench/gpu_check.py", *(argv or sys.argv[1:])]),
               parts=parts)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    run = dict(tests=lambda: gpu_tests(a.dry_run), throughput=lambda: throughput(a, a.device),
               correctness=lambda: correctness(a.device, a.dry_run),
               profile=lambda: gpu_profile(a, Path(a.out).with_name("gpu_profile.json")))
    for part in PARTS:
        if part in parts:
            res[part] = run[part]()
    res["seconds"] = time.time() - t0
    print(table(res))
    utils.atomic_write_text(json.dumps(res, indent=1) + "\n", Path(a.out))
    print(f"\nwrote {a.out} ({res['seconds']:.0f} s)")
    sys.exit(0 if passed(res) else 1)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
