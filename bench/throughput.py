"""
Training-step throughput of model variants at one model size: forward + backward + AdamW step.

    flock /tmp/cpu.lock python bench/throughput.py --variants=nanogpt_ref,baseline,yuriiformer --batch_size=16
    python bench/throughput.py --variants=baseline,yuriiformer,yuriiformer:lnv=False:v0=zero --batch_size=8,16
    (defaults: n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=50304, bf16 autocast, 2 threads)

Each variant runs in a fresh subprocess (so peak memories don't mask each other): warm-up steps,
then --steps timed steps; --repeats interleaves the variants that many times against drift.
A variant is a preset name, optionally with GPTConfig fields after colons (yuriiformer:lnv=False); several batch
sizes (--batch_size=8,16) give rows per (variant, batch size), each compared with the reference at its batch size.
Per variant: median step time with min/max over all timed steps, "cpu ms": on a CPU the process CPU time per step
(robust to time-slicing by other load on a shared machine), on a GPU the host's time to dispatch the step (before
the synchronize: close to the step time when the step is launch-bound), tokens/s, MFU where the device peak is known
(or --peak_tflops), peak memory (CUDA: allocator peak; CPU: the child's peak RSS, and "live", the
peak of live tensor bytes over one profiled step, free of malloc caching), and every ratio to the
--reference row (default: baseline) measured in the same run. Prints a table, then one JSON line.
Rows: model.py's PRESETS names and "nanogpt_ref" (bench/nanogpt_ref.py, a plain nanoGPT-style GPT).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


import torch

from bench.nanogpt_ref import RefConfig, RefGPT
from configurator import ConfigError, build, parse_value
from model import GPT, PRESETS, GPTConfig
from utils import autocast, device_name, git_commit, peak_flops, resolve_device, setup_runtime, versions

ROOT = Path(__file__).resolve().parents[1]

REF = "nanogpt_ref"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="nanogpt_ref,baseline,yuriiformer",
                   help=f"comma-separated; 'all' for every preset. Known: {REF}, {', '.join(PRESETS)}")
    p.add_argument("--reference", default="baseline", help="the row every ratio is relative to (added if absent)")
    for name, default in (("n_layer", 6), ("n_head", 6), ("n_embd", 384), ("block_size", 256), ("vocab_size", 50304)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--batch_size", default="16", help="sequences per step; several: comma-separated (8,16,32)")
    p.add_argument("--bias", action=argparse.BooleanOptionalAction, default=False, help="biases in Linear/LayerNorm")
    p.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    p.add_argument("--repeats", type=int, default=1, help="fresh process per variant, variants interleaved")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"),
                   help="autocast dtype (float32: no autocast)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile the model")
    p.add_argument("--optimizer_impl", default="fused", choices=("fused", "foreach", "forloop"), help="AdamW kernel")
    p.add_argument("--grad_clip", type=float, default=1.0, help="clip_grad_norm_ as in training (0: off)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--live_mem", action=argparse.BooleanOptionalAction, default=True,
                   help="CPU: also the peak of live tensor bytes (one extra, profiled step)")
    p.add_argument("--peak_tflops", type=float, default=None, help="device peak for MFU (default: known GPUs only)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: measure one variant, print JSON
    args = p.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    names = list(PRESETS) + [REF] if names == ["all"] else names
    unknown = [n for n in names + [args.reference] if n.split(":")[0] != REF and n.split(":")[0] not in PRESETS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}: choose from {REF}, {', '.join(PRESETS)}")
    if args.reference not in names:
        names.insert(0, args.reference)
    args.variant_list = list(dict.fromkeys(names))
    try:
        args.batch_list = [int(b) for b in args.batch_size.split(",")]
    except ValueError:
        args.batch_list = []
    if not args.batch_list or min(args.batch_list) < 1 or len(set(args.batch_list)) < len(args.batch_list):
        p.error(f"--batch_size={args.batch_size}: give distinct positive integers, comma-separated")
    for name in args.variant_list:
        try:
            model_config(name, args)
        except ValueError as e:  # ConfigError is one
            p.error(f"variant {name}: {e}")
    if args.steps < 1 or args.warmup < 1 or args.repeats < 1:
        p.error("--steps, --warmup and --repeats must be >= 1")
    return args


def model_config(name, args):
    """The config of one row: "preset" or "preset:field=value:..." (GPTConfig fields); nanogpt_ref: a RefConfig of
    the same size (no variant fields)."""
    preset, *fields = name.split(":")
    size = dict(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, block_size=args.block_size,
                vocab_size=args.vocab_size, bias=args.bias, dropout=0.0)
    if preset == REF:
        if fields:
            raise ConfigError(f"{name}: {REF} takes no fields")
        return RefConfig(**size)
    overrides = {}
    for f in fields:
        key, eq, text = f.partition("=")
        if not eq:
            raise ConfigError(f"{name}: write each field as field=value")
        overrides[key] = parse_value(text)
    return build(GPTConfig, {**size, **PRESETS[preset], **overrides})


def build_model(name, args):
    """The model of one row (model_config)."""
    config = model_config(name, args)
    return RefGPT(config) if isinstance(config, RefConfig) else GPT(config)


def named_groups(model):
    """(decay, no_decay, coef) named lists: the same partition for every row (nanoGPT's, plus coefficients)."""
    if isinstance(model, GPT):
        g = model.param_groups()
        return g["matrix"] + g["embed"] + g["head"], g["scalar"], g["coef"]
    named = list(model.named_parameters())
    return [x for x in named if x[1].dim() >= 2], [x for x in named if x[1].dim() < 2], []


def make_optimizer(model, impl, lr=6e-4, wd=0.1, coef_lr_mult=5.0):
    decay, no_decay, coef = named_groups(model)
    groups = [{"params": [p for _, p in decay], "weight_decay": wd},
              {"params": [p for _, p in no_decay], "weight_decay": 0.0},
              {"params": [p for _, p in coef], "weight_decay": 0.0, "lr": lr * coef_lr_mult}]
    kw = {"fused": True} if impl == "fused" else {"foreach": impl == "foreach"}
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.95), **kw)


def rss_mib():
    """Current resident set size of this process (MiB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def live_peak_mib(step, model, opt):
    """Peak bytes of live tensors during one CPU step, independent of malloc's caching (the CPU analogue of
    CUDA's max_memory_allocated): parameters and optimizer state, plus the profiler's allocation timeline."""
    from torch.profiler import ProfilerActivity, profile
    state = [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]
    static = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in [*model.parameters(), *state]}
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.events() if e.name == "[memory]" or e.self_cpu_memory_usage]  # frees outside ops too
    live = peak = 0
    for e in sorted(events, key=lambda e: e.time_range.start):
        live += e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
        peak = max(peak, live)
    return (sum(static.values()) + peak) / 2**20


def measure(name, args):
    """One variant in this process: step times (s), peak memory (MiB), counts. Returns a dict."""
    device = resolve_device(args.device)
    cuda = device.startswith("cuda")
    setup_runtime(device, args.seed)
    torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    start_rss = rss_mib()
    model = build_model(name, args).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    fpt = model.flops_per_token(args.block_size)
    opt = make_optimizer(model, args.optimizer_impl)
    fwd = torch.compile(model) if args.compile else model
    ctx = autocast(device, args.dtype)
    gen = torch.Generator().manual_seed(args.seed)
    batch, = args.batch_list  # a child measures one batch size
    data = torch.randint(0, args.vocab_size, (batch, args.block_size + 1), generator=gen).to(device)
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()

    def step():
        with ctx:
            _, loss = fwd(x, targets=y)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    warmup_s = time.perf_counter() - t0
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times, cpu_times = [], []
    for _ in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = step()
        host = time.perf_counter() - t0  # on a GPU: the dispatch (sync's spin would count as process CPU time)
        sync()
        times.append(time.perf_counter() - t0)
        cpu_times.append(host if cuda else time.process_time() - c0)
    out = dict(name=name, batch_size=batch, times=times, cpu_times=cpu_times, warmup_s=warmup_s, n_params=n_params,
               flops_per_token=fpt, loss=loss.item(), start_rss_mib=start_rss,
               peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # Linux: KiB
    if cuda:
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    elif args.live_mem:  # after the timed steps, so that the profiler does not disturb them
        out["live_peak_mib"] = live_peak_mib(step, model, opt)
    if isinstance(model, GPT):
        out["n_params_no_v0"] = model.num_params(v0_tables=False)
    return out


def run_child(name, batch, argv):
    """Measure one variant at one batch size in a fresh Python process; its last stdout line is the JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, f"--batch_size={batch}", f"--child={name}"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"variant {name} (batch {batch}) failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def summarize(results, args, device):
    """Rows per (variant, batch size) over all repeats, with ratios to the reference row of the same batch size."""
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(device)
    rows = []
    for batch, name in ((b, n) for b in args.batch_list for n in args.variant_list):
        runs = [r for r in results if r["name"] == name and r["batch_size"] == batch]
        tokens = batch * args.block_size
        times = [t for r in runs for t in r["times"]]
        med = statistics.median(times)
        cpu_med = statistics.median(t for r in runs for t in r["cpu_times"])
        live = [r["live_peak_mib"] for r in runs if "live_peak_mib" in r]
        mem_key = "peak_cuda_mib" if device.startswith("cuda") else "peak_rss_mib"
        peak_mem = statistics.median(r[mem_key] for r in runs)
        net_mem = peak_mem - (0 if device.startswith("cuda") else statistics.median(r["start_rss_mib"] for r in runs))
        fpt = runs[0]["flops_per_token"]
        rows.append(dict(variant=name, batch_size=batch, params=runs[0]["n_params"],
                         params_no_v0=runs[0].get("n_params_no_v0"),
                         step_ms=1e3 * med, step_ms_min=1e3 * min(times), step_ms_max=1e3 * max(times),
                         step_ms_per_repeat=[1e3 * statistics.median(r["times"]) for r in runs],
                         cpu_ms=1e3 * cpu_med, tok_per_s=tokens / med, peak_mem_mib=peak_mem, net_mem_mib=net_mem,
                         live_mem_mib=statistics.median(live) if live else None,
                         flops_per_token=fpt, mfu=None if peak is None else fpt * tokens / med / peak,
                         warmup_s=statistics.median(r["warmup_s"] for r in runs), loss=runs[-1]["loss"]))
    for r in rows:
        ref = next(x for x in rows if x["variant"] == args.reference and x["batch_size"] == r["batch_size"])
        r["time_ratio"] = r["step_ms"] / ref["step_ms"]
        r["time_ratio_min"] = r["step_ms_min"] / ref["step_ms_min"]  # least disturbed by other load
        r["time_ratio_per_repeat"] = [a / b for a, b in zip(r["step_ms_per_repeat"], ref["step_ms_per_repeat"])]
        r["cpu_ratio"] = r["cpu_ms"] / ref["cpu_ms"]  # CPU: process CPU time, robust to time-slicing by other load
        r["mem_ratio"] = r["peak_mem_mib"] / ref["peak_mem_mib"]
        r["live_mem_ratio"] = r["live_mem_mib"] / ref["live_mem_mib"] if r["live_mem_mib"] else None
        r["net_mem_ratio"] = r["net_mem_mib"] / ref["net_mem_mib"]
    return rows


def print_table(rows, device):
    """One line per variant (and batch size, where there are several); x columns are ratios to the reference row.
    "cpu ms" is the host's dispatch time on a GPU ("host ms")."""
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    cuda, batches = device.startswith("cuda"), len({r["batch_size"] for r in rows}) > 1
    cols = [("variant", max(14, *(len(r["variant"]) for r in rows)), lambda r: r["variant"]),
            *([("batch", 5, lambda r: str(r["batch_size"]))] if batches else []),
            ("params", 8, lambda r: f"{r['params'] / 1e6:.2f}M"),
            ("step ms (min-max)", 21, lambda r: f"{r['step_ms']:.1f} ({r['step_ms_min']:.0f}-{r['step_ms_max']:.0f})"),
            ("host ms" if cuda else "cpu ms", 7, lambda r: f"{r['cpu_ms']:.0f}"),
            ("tok/s", 7, lambda r: f"{r['tok_per_s']:.0f}"),
            ("MFU", 6, lambda r: "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"),
            ("CUDA MiB" if cuda else "RSS MiB", 8, lambda r: f"{r['peak_mem_mib']:.0f}"),
            ("live MiB", 8, lambda r: fmt(r["live_mem_mib"], ".0f")),
            ("x time", 6, lambda r: f"{r['time_ratio']:.3f}"),
            ("(min)", 6, lambda r: f"{r['time_ratio_min']:.3f}"),
            ("x host" if cuda else "x cpu", 6, lambda r: f"{r['cpu_ratio']:.3f}"),
            ("x mem", 6, lambda r: f"{r['mem_ratio']:.3f}"),
            ("x live", 6, lambda r: fmt(r["live_mem_ratio"], ".3f"))]
    widths = [w for _, w, _ in cols]
    line = lambda cells: " ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa
    head = line([name for name, _, _ in cols])
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(line([get(r) for _, _, get in cols]))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return
    device = resolve_device(args.device)
    results = []
    for rep in range(args.repeats):
        for batch, name in ((b, n) for b in args.batch_list for n in args.variant_list):
            r = run_child(name, batch, argv)
            results.append(r)
            print(f"[repeat {rep + 1}/{args.repeats}] {name} (batch {batch}): median step "
                  f"{1e3 * statistics.median(r['times']):.1f} ms", file=sys.stderr, flush=True)
    rows = summarize(results, args, device)
    torch.set_num_threads(args.threads)
    print(f"# device: {device_name(device)}; batch {args.batch_size} x {args.block_size} tokens; dtype {args.dtype}; "
          f"compile {args.compile}; AdamW {args.optimizer_impl}; {args.steps} steps x {args.repeats} repeats")
    print_table(rows, device)
    setup = {k: v for k, v in vars(args).items() if k not in ("child", "variant_list", "batch_list")}
    setup["batch_size"] = args.batch_list if len(args.batch_list) > 1 else args.batch_list[0]
    print(json.dumps(dict(bench="throughput", device=device_name(device), git_commit=git_commit(),
                          versions=versions(), args=setup, rows=rows)))


if __name__ == "__main__":
    main()
