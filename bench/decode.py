"""
Decoding speed with and without the KV cache (generate.generate), greedy (top_k=1), batch 1 by default:

    flock /tmp/cpu.lock python bench/decode.py                      # baseline + yuriiformer, fp32 + bf16
    python bench/decode.py --variants=imex2 --dtypes=float32 --repeats=1 --compile=False
    flock /tmp/cpu.lock python bench/decode.py --batch=8 --repeats=1  # 8 sequences at once

Random-init weights (speed does not depend on them) at the size of the config/tinystories_*_cpu.py files
(4 layers, 4 heads, width 256, vocab 50304), with block_size raised to prompt + new tokens (128 -> 288) so
that no step crops the context.
Prints one markdown row per variant x dtype: new tokens/s over the batch (median of repeats, min-max) without
the cache, with it (eager), and with it and the one-token step compiled (generate.compiled_decoder), each speedup
over the uncached path; the compile time (first run minus a compiled run) and the compiled speedup when the
compile is counted in a single run; whether the cached outputs equal the uncached ones (eager, compiled); the
time of the LM head alone on one position (paid once per step by every path) and the speedup bound it sets for
an eager head: uncached step time / head time.
"""

import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import utils
from configurator import build, parse_args, read_config_file
from model import PRESETS, GPT, GPTConfig
from generate import compiled_decoder, generate_all

MODEL_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "bias")


@dataclass
class BenchConfig:
    config: str = "config/tinystories_nesterov_cpu.py"  # model size from its model keys (all *_cpu.py share it)
    variants: str = "baseline,yuriiformer"
    dtypes: str = "float32,bfloat16"
    prompt_len: int = 32
    new_tokens: int = 256
    batch: int = 1
    repeats: int = 3
    threads: int = 2
    compile: bool = True  # also time the compiled one-token step
    seed: int = 1337


def model_args(cfg):
    """Model size: the defaults below, overridden by the config file's model keys; block_size >= prompt + new."""
    args = dict(n_layer=4, n_head=4, n_embd=256, block_size=128, vocab_size=50304, bias=False)
    path = Path(__file__).resolve().parents[1] / cfg.config
    if path.is_file():
        args.update({k: v for k, v in read_config_file(path).items() if k in MODEL_KEYS})
    args["block_size"] = max(args["block_size"], cfg.prompt_len + cfg.new_tokens)
    return args


def timed(model, prompt, cfg, **kwargs):
    """(seconds, output) of one generate_all run of cfg.new_tokens greedy tokens."""
    t0 = time.perf_counter()
    out = generate_all(model, prompt, cfg.new_tokens, top_k=1, **kwargs)
    return time.perf_counter() - t0, out


def tokens_per_s(model, prompt, cfg, **kwargs):
    """(median, min, max) new tokens per second over cfg.repeats runs, and the tokens of the last run."""
    runs = [timed(model, prompt, cfg, **kwargs) for _ in range(cfg.repeats)]
    rates = [cfg.new_tokens * prompt.size(0) / t for t, _ in runs]
    return statistics.median(rates), min(rates), max(rates), runs[-1][1]


def head_ms(model, batch, n=50):
    """Median time of lm_head on one position per sequence, in ms (run under the caller's autocast)."""
    x = torch.randn(batch, 1, model.config.n_embd)
    times = []
    with torch.no_grad():
        for _ in range(n + 1):
            t0 = time.perf_counter()
            model.lm_head(x)
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times[1:])


def rate(r):
    return f"{r[0]:.1f} ({r[1]:.1f}-{r[2]:.1f})"


def main(argv):
    cfg = build(BenchConfig, parse_args(argv))
    torch.set_num_threads(cfg.threads)
    utils.setup_runtime("cpu", cfg.seed)
    args = model_args(cfg)
    print(f"model {args}, prompt {cfg.prompt_len}, new {cfg.new_tokens}, batch {cfg.batch}, greedy, "
          f"repeats {cfg.repeats}, threads {cfg.threads}")
    print(f"{utils.device_name('cpu')}, torch {torch.__version__}, commit {utils.git_commit()}\n")
    print("| variant | dtype | uncached tok/s | cached tok/s | speedup | compiled cached tok/s | speedup | compile s | "
          "speedup with compile | same tokens | head ms | bound |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for variant in cfg.variants.split(","):
        torch.manual_seed(cfg.seed)
        model = GPT(GPTConfig(**{**args, **PRESETS[variant]})).eval()
        gen = torch.Generator().manual_seed(cfg.seed)
        prompt = torch.randint(0, 50257, (cfg.batch, cfg.prompt_len), generator=gen)  # (B, T)
        for dtype in cfg.dtypes.split(","):
            with utils.autocast("cpu", dtype):
                generate_all(model, prompt, 8, top_k=1)  # warm-up
                generate_all(model, prompt, 8, top_k=1, use_cache=False)
                slow = tokens_per_s(model, prompt, cfg, use_cache=False)
                fast = tokens_per_s(model, prompt, cfg)
                compiled = ("-",) * 4
                same = [torch.equal(fast[3], slow[3])]
                if cfg.compile:
                    torch._dynamo.reset()  # a new model: compile afresh (and stay under dynamo's recompile limit)
                    decode = compiled_decoder(model)
                    first, _ = timed(model, prompt, cfg, decode=decode)  # compiles on its second token
                    fc = tokens_per_s(model, prompt, cfg, decode=decode)
                    compile_s = first - cfg.new_tokens * cfg.batch / fc[0]
                    compiled = (rate(fc), f"{fc[0] / slow[0]:.1f}x", f"{compile_s:.1f}",
                                f"{cfg.new_tokens * cfg.batch / first / slow[0]:.2f}x")
                    same.append(torch.equal(fc[3], slow[3]))
                head = head_ms(model, cfg.batch)
            bound = 1000 * cfg.batch / slow[0] / head
            print(f"| {variant} | {dtype} | {rate(slow)} | {rate(fast)} | {fast[0] / slow[0]:.1f}x | "
                  f"{' | '.join(compiled)} | {', '.join('yes' if s else 'no' for s in same)} | "
                  f"{head:.2f} | {bound:.1f}x |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
