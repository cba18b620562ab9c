"""
Where YuriiFormer's extra step time goes: a GPU profile of baseline vs yuriiformer, one command, one JSON file.

    python bench/gpu_profile.py                          # one H100/H200, GPT-2 small, bf16, compile: about 4.5 min
    python bench/gpu_profile.py --budget_s=120           # start no new item after 120 s (keeps what finished)
    python bench/gpu_profile.py --device=cpu --dry_run   # the same code at toy size on a CPU, CPU timers (CI)

Items, in this order (each a fresh model, compiled; the JSON is rewritten after each, so a timeout keeps what finished):
1. baseline and yuriiformer at micro-batch 16: step time split into forward / backward / clip / optimizer (CUDA
   events recorded at the phase boundaries, read after one synchronize at the end: no sync inside the timed loop),
   host (dispatch) time per step, MFU, peak memory, and a kernel-time breakdown by category from torch.profiler;
2. ablations of yuriiformer that isolate the suspects of its extra cost: `frozen_coef` (the learned mu, beta, gamma
   with requires_grad False: no whole-tensor reductions for their gradients), `no_lnv` (lnv=False: no velocity
   LayerNorm), `v0_zero` (v0="zero": no V_0 tables nor their AdamW state), `bare` (all three);
3. baseline and yuriiformer at micro-batch 8 and 32: MFU and peak memory.
--budget_s: an item is not started when the time so far plus the longest finished item would pass the budget.
"""

import argparse
import gc
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

import utils
from model import GPT, PRESETS, GPTConfig

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("forward", "backward", "clip", "optimizer")
ABLATIONS = {  # name -> (GPTConfig overrides, learned coefficients frozen)
    "frozen_coef": ({}, True),
    "no_lnv": ({"lnv": False}, False),
    "v0_zero": ({"v0": "zero"}, False),
    "bare": ({"lnv": False, "v0": "zero"}, True),
}
# Kernel (CUDA) or op (CPU) name -> category: the first pattern that matches (case-insensitive search) wins, so a
# fused kernel counts where its first-listed part does (triton_red_fused__log_softmax_..._to_copy: loss, not copy).
CATEGORIES = (
    ("clip", r"LpNorm|lpnorm|foreach_norm|BinaryOpScalarTensor|foreach_mul"),  # clip_grad_norm_: norms, then scale
    ("optimizer", r"adam"),  # the fused AdamW kernel (FusedAdamMathFunctor), aten::_fused_adamw_
    ("attention", r"flash|fmha|attention|sdpa|scaled_dot_product"),  # before matmul: flash kernels name cutlass
    ("matmul", r"gemm|xmma|nvjet|cutlass|cublas|triton_tem_|aten::(mm|addmm|bmm|baddbmm)$"),
    ("embedding", r"embedding|indexing_backward|index_select|indexSelect"),
    ("loss", r"log_softmax|logsoftmax|nll_loss|cross_entropy|SoftMax"),
    ("layernorm", r"layer_norm|layernorm"),
    ("copy", r"memcpy|memset|copy|CatArray|FillFunctor|aten::(cat|clone|fill_|zero_|stack)$"),
    ("reduction", r"reduce|triton_(red|per)_|aten::(sum|mean|amax|norm|linalg_vector_norm)$"),
    ("elementwise", r"elementwise|triton_poi_|aten::(add|sub|mul|div|neg|gelu|sigmoid|softplus|tanh|exp|where|pow"
                    r"|sqrt|rsqrt|lerp|addcmul|addcdiv|rsub)"),
)
PATTERNS = [(name, re.compile(p, re.IGNORECASE)) for name, p in CATEGORIES]


def classify(name):
    """The category of a CUDA kernel or CPU op name (CATEGORIES; 'other' when none matches)."""
    return next((cat for cat, pat in PATTERNS if pat.search(name)), "other")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (with --dry_run)")
    p.add_argument("--dry_run", action="store_true", help="toy model, few steps: checks the code path")
    p.add_argument("--batch_sizes", default=None, help="three micro-batches; the middle one is items 1-2's "
                   "(default 8,16,32; dry run 1,2,4)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per item (default 20; dry run 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first, compilation among them (default 3; "
                   "dry run 1)")
    p.add_argument("--profile_steps", type=int, default=None, help="steps under torch.profiler (default 3; dry run 1)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="default: on, off in a dry run")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"), help="autocast dtype")
    p.add_argument("--budget_s", type=float, default=270.0, help="start no item that would end past this")
    p.add_argument("--peak_tflops", type=float, default=None, help="the device's dense bf16 peak, for MFU")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_profile.json"))
    a = p.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: no CUDA device: run on a GPU machine, or use --device=cpu --dry_run to check the code")
    if a.device == "cpu" and not a.dry_run:
        sys.exit("error: --device=cpu only checks the code path: add --dry_run")
    for name, full, dry in (("batch_sizes", "8,16,32", "1,2,4"), ("steps", 20, 2), ("warmup", 3, 1),
                            ("profile_steps", 3, 1)):
        setattr(a, name, getattr(a, name) or (dry if a.dry_run else full))
    if min(a.steps, a.warmup, a.profile_steps) < 1:
        sys.exit("error: --steps, --warmup and --profile_steps must be >= 1")
    try:
        a.batch_list = [int(b) for b in a.batch_sizes.split(",")]
    except ValueError:
        sys.exit(f"error: --batch_sizes={a.batch_sizes!r}: give comma-separated integers, e.g. 8,16,32")
    if len(a.batch_list) != 3 or min(a.batch_list) < 1:
        sys.exit(f"error: --batch_sizes={a.batch_sizes!r}: give three positive integers, e.g. 8,16,32")
    a.compile = (not a.dry_run) if a.compile is None else a.compile
    a.size = (dict(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=64) if a.dry_run else
              dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304))
    return a


def items(a):
    """(name, preset, ablation or None, batch size, profiled) in priority order."""
    small, mid, large = a.batch_list
    out = [(f"{v}/b{mid}", v, None, mid, True) for v in ("baseline", "yuriiformer")]
    out += [(f"yuriiformer+{ab}/b{mid}", "yuriiformer", ab, mid, True) for ab in ABLATIONS]
    return out + [(f"{v}/b{b}", v, None, b, False) for b in (small, large) for v in ("baseline", "yuriiformer")]


def build(preset, ablation, a, device):
    """Model and fused AdamW (nanoGPT's decay split; coefficients at 5x lr, as in training) of one item."""
    overrides, freeze = ABLATIONS[ablation] if ablation else ({}, False)
    model = GPT(GPTConfig(**a.size, bias=False, dropout=0.0, **{**PRESETS[preset], **overrides})).to(device)
    groups = model.param_groups()
    for _, p in groups["coef"] if freeze else ():
        p.requires_grad_(False)
    params = lambda *kinds: [p for k in kinds for _, p in groups[k] if p.requires_grad]  # noqa: E731
    opt = torch.optim.AdamW([g for g in ({"params": params("matrix", "embed", "head"), "weight_decay": 0.1},
                                         {"params": params("scalar"), "weight_decay": 0.0},
                                         {"params": params("coef"), "weight_decay": 0.0, "lr": 3e-3}) if g["params"]],
                            lr=6e-4, betas=(0.9, 0.95), fused=True)
    return model, opt


class Marks:
    """Timestamps at phase boundaries without a sync: CUDA events (read after one synchronize at the end) or, on a
    CPU (synchronous), perf_counter."""

    def __init__(self, cuda):
        self.cuda = cuda

    def __call__(self):
        if not self.cuda:
            return time.perf_counter()
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    def ms(self, a, b):
        return a.elapsed_time(b) if self.cuda else 1e3 * (b - a)


def kernel_breakdown(prof, cuda, steps):
    """Per-step kernel time by category: CUDA kernels (and memcpy/memset) by duration, or on a CPU every op's self
    time. Returns {total_ms, by_category_ms, by_category_frac, top: the 15 longest names}."""
    per_name = {}
    for e in prof.events():
        if cuda and e.device_type != DeviceType.CUDA or not cuda and (e.device_type != DeviceType.CPU
                                                                       or e.name.startswith("ProfilerStep")):
            continue
        us = e.time_range.elapsed_us() if cuda else e.self_cpu_time_total  # a kernel's duration
        t, n = per_name.get(e.name, (0.0, 0))
        per_name[e.name] = (t + us / 1e3 / steps, n + 1)
    cats = dict.fromkeys([c for c, _ in CATEGORIES] + ["other"], 0.0)
    for name, (ms, _) in per_name.items():
        cats[classify(name)] += ms
    total = sum(cats.values())
    top = sorted(per_name.items(), key=lambda kv: -kv[1][0])[:15]
    return dict(total_ms=total, by_category_ms=cats, by_category_frac={k: v / total if total else 0.0 for k, v in cats.items()},
                top=[dict(name=n[:160], category=classify(n), ms=ms, calls=c // steps) for n, (ms, c) in top])


def measure(preset, ablation, batch, profiled, a, device):
    """One item: phase times (medians over steps), host time, MFU, peak memory, optionally the kernel breakdown."""
    cuda = device.startswith("cuda")
    utils.setup_runtime(device, seed=1337)
    model, opt = build(preset, ablation, a, device)
    fwd = torch.compile(model) if a.compile else model
    ctx, T = utils.autocast(device, a.dtype), a.size["block_size"]
    data = torch.randint(0, a.size["vocab_size"], (batch, T + 1), generator=torch.Generator().manual_seed(0)).to(device)
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    mark = Marks(cuda)

    def step(marks):
        marks.append(mark())
        with ctx:
            _, loss = fwd(x, targets=y)
        marks.append(mark())
        loss.backward()
        marks.append(mark())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        marks.append(mark())
        opt.step()
        opt.zero_grad(set_to_none=True)
        marks.append(mark())
        return loss

    t0 = time.perf_counter()
    for _ in range(a.warmup):
        step([])
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    warmup_s = time.perf_counter() - t0
    marks, losses = [], []
    h0 = time.perf_counter()
    for _ in range(a.steps):
        losses.append(step(marks))
    host_ms = 1e3 * (time.perf_counter() - h0) / a.steps  # dispatch only: no sync in the loop
    if cuda:
        torch.cuda.synchronize()
    per_step = [marks[i:i + 5] for i in range(0, len(marks), 5)]
    phases = {p: statistics.median(mark.ms(m[j], m[j + 1]) for m in per_step) for j, p in enumerate(PHASES)}
    step_ms = mark.ms(marks[0], marks[-1]) / a.steps  # first to last mark: device time per step, gaps included
    peak = a.peak_tflops * 1e12 if a.peak_tflops else utils.peak_flops(device)
    fpt = model.flops_per_token(T)
    out = dict(step_ms=step_ms, phases_ms=phases, host_ms=host_ms, tok_per_s=batch * T / step_ms * 1e3,
               mfu=None if peak is None else fpt * batch * T / (step_ms / 1e3) / peak, flops_per_token=fpt,
               peak_mem_mib=torch.cuda.max_memory_allocated() / 2**20 if cuda else None, warmup_s=warmup_s,
               params=sum(p.numel() for p in model.parameters()),
               trainable=sum(p.numel() for p in model.parameters() if p.requires_grad), loss=losses[-1].item())
    if profiled:
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=acts) as prof:
            for _ in range(a.profile_steps):
                step([])
            if cuda:
                torch.cuda.synchronize()
        out["kernels"] = kernel_breakdown(prof, cuda, a.profile_steps)
    return out


def free_memory(cuda):
    """Drop compiled graphs and cached blocks between items (each item's peak memory is its own)."""
    torch._dynamo.reset()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()


def ratios(res):
    """Step time, MFU and peak memory of each yuriiformer item relative to the baseline at the same batch."""
    done = {r["name"]: r for r in res["items"] if "step_ms" in r}
    out = {}
    for name, r in done.items():
        base = done.get(f"baseline/b{r['batch_size']}")
        if base and name != base["name"]:
            out[name] = dict(time=r["step_ms"] / base["step_ms"],
                             mem=r["peak_mem_mib"] / base["peak_mem_mib"] if r["peak_mem_mib"] else None)
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    cuda = a.device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(a.device)  # events, memory stats and the profiler on this device
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    setup = {k: v for k, v in vars(a).items() if k not in ("out", "batch_list")}
    res = dict(bench="gpu_profile", device=utils.device_name(a.device), versions=utils.versions(),
               git_commit=utils.git_commit(), command=" ".join(["python", "bench/gpu_profile.py", *argv]), args=setup,
               peak_tflops=a.peak_tflops or (utils.peak_flops(a.device) or 0) / 1e12 or None, categories=dict(CATEGORIES),
               items=[], skipped=[], ratios={}, complete=False, seconds=0.0)
    t0, longest = time.time(), 0.0
    for name, preset, ablation, batch, profiled in items(a):
        if time.time() - t0 + longest > a.budget_s:
            res["skipped"].append(name)
            continue
        s0 = time.time()
        row = dict(name=name, variant=preset, ablation=ablation, batch_size=batch)
        try:
            row.update(measure(preset, ablation, batch, profiled, a, a.device))
        except torch.OutOfMemoryError as e:
            row["error"] = utils.first_line(e)
        free_memory(cuda)
        row["seconds"] = time.time() - s0
        longest = max(longest, row["seconds"])
        res["items"].append(row)
        res["ratios"], res["seconds"] = ratios(res), time.time() - t0
        utils.atomic_write_text(json.dumps(res, indent=1) + "\n", out)
        ms = f"{row['step_ms']:.1f} ms/step" if "step_ms" in row else row["error"]
        print(f"{name}: {ms} ({row['seconds']:.0f} s)", file=sys.stderr, flush=True)
    res["complete"], res["seconds"] = not res["skipped"], time.time() - t0
    utils.atomic_write_text(json.dumps(res, indent=1) + "\n", out)
    print(table(res))
    print(f"\nwrote {out} ({res['seconds']:.0f} s{'' if res['complete'] else '; skipped: ' + ', '.join(res['skipped'])})")


def table(res):
    """Markdown: one row per item (phases, MFU, memory, ratio), then the kernel categories of the profiled items."""
    cats = list(res["categories"]) + ["other"]
    lines = [f"device: {res['device']} | torch {res['versions'].get('torch')} | peak {res['peak_tflops'] or '-'} TFLOP/s",
             "", "| item | step ms | fwd | bwd | clip | opt | host ms | MFU | peak MiB | x baseline |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["items"]:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['error']} |")
            continue
        p, mfu, mem = r["phases_ms"], r["mfu"], r["peak_mem_mib"]
        x = res["ratios"].get(r["name"], {}).get("time")
        lines.append(f"| {r['name']} | {r['step_ms']:.2f} | " + " | ".join(f"{p[k]:.2f}" for k in PHASES) +
                     f" | {r['host_ms']:.2f} | {'-' if mfu is None else f'{100 * mfu:.1f}%'} | "
                     f"{'-' if mem is None else f'{mem:,.0f}'} | {'-' if x is None else f'{x:.3f}x'} |")
    prof = [r for r in res["items"] if "kernels" in r]
    if prof:
        lines += ["", "| kernel ms/step | " + " | ".join(cats) + " | total |", "|---|" + "---:|" * (len(cats) + 1)]
        lines += [f"| {r['name']} | " + " | ".join(f"{r['kernels']['by_category_ms'][c]:.2f}" for c in cats) +
                  f" | {r['kernels']['total_ms']:.2f} |" for r in prof]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
