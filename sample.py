"""
Sample from a trained model, streaming tokens to stdout as they are produced:

    python sample.py --out_dir=out-tinystories --start="Once upon a time" --num_samples=3
    python sample.py --ckpt_path=nanogpt/out/ckpt.pt --start=FILE:prompt.txt --top_k=1   # greedy

Decoding is incremental: the prompt fills a per-layer key/value cache, then each step runs the model on
the new position only. That is exact for every update rule, because the velocity stream is per position
and causal (a position's X and V depend on earlier positions only through attention's keys and values).
Past block_size tokens it falls back to nanoGPT's cropped context, recomputed without the cache.
"""

import codecs
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

import checkpoint
import utils
from configurator import ConfigError, build, parse_args
from data.tokenizer import TokenizerError, get_encoding


class SampleError(ValueError):
    """A user error (bad checkpoint, prompt or setting); main() prints it as one line and exits with 2."""


def check_sampling(temperature, top_k=None, top_p=None):
    """Raise SampleError unless temperature > 0, top_k >= 1 (or None), 0 < top_p <= 1 (or None)."""
    if not temperature > 0:
        raise SampleError(f"temperature={temperature} must be > 0 (for greedy decoding use --top_k=1)")
    if top_k is not None and top_k < 1:
        raise SampleError(f"top_k={top_k} must be >= 1 (or None for no top-k filtering)")
    if top_p is not None and not 0 < top_p <= 1:
        raise SampleError(f"top_p={top_p} must be in (0, 1] (1.0 turns nucleus sampling off)")


@dataclass
class SampleConfig:
    out_dir: str = "out"  # run directory written by train.py (or nanoGPT)
    ckpt: str = "auto"  # which file of out_dir: auto (best.pt, else ckpt.pt) | best (best.pt) | latest (ckpt.pt)
    ckpt_path: str = ""  # a checkpoint file to load instead (this repo's or nanoGPT's); overrides out_dir/ckpt
    start: str = "\n"  # prompt text, or FILE:path to read it from a file; "<|endoftext|>" is allowed
    num_samples: int = 10
    max_new_tokens: int = 500
    temperature: float = 0.8  # > 0; divides the logits
    top_k: int | None = 200  # keep the k most likely tokens (1 = greedy; None = all)
    top_p: float = 1.0  # nucleus: keep the smallest set of tokens whose probability reaches top_p (1.0 = off)
    seed: int = 1337
    device: str = "auto"  # auto (cuda if available, else cpu) | cpu | cuda | cuda:1 ...
    dtype: str = "auto"  # auto (bfloat16 autocast where supported, CPU included) | bfloat16 | float16 | float32
    compile: bool = False  # torch.compile the one-token cached decoding step (fixed shapes: compiles once)

    def __post_init__(self):
        check_sampling(self.temperature, self.top_k, self.top_p)
        if checkpoint.choice_problem(self.ckpt):
            raise SampleError(checkpoint.choice_problem(self.ckpt))
        if self.num_samples < 1 or self.max_new_tokens < 0:
            raise SampleError("num_samples must be >= 1 and max_new_tokens >= 0")


def load_config(argv):
    """SampleConfig from --key=value overrides; a config file (e.g. train's) may supply out_dir and the like."""
    files = parse_args([a for a in argv if not a.startswith("--")])
    raw = {**{k: v for k, v in files.items() if k in SampleConfig.__dataclass_fields__},
           **parse_args([a for a in argv if a.startswith("--")])}
    return build(SampleConfig, raw)


def read_prompt(start, enc):
    """Token ids of the prompt text (or of the file after FILE:)."""
    if start.startswith("FILE:"):
        try:
            start = Path(start[5:]).read_text(encoding="utf-8")
        except OSError as e:
            raise SampleError(f"cannot read prompt file {start[5:]}: {e.strerror}") from None
    ids = enc.encode(start, allowed_special={"<|endoftext|>"})
    if not ids:
        raise SampleError("the prompt is empty after encoding: give some text with --start=TEXT or --start=FILE:path")
    return ids


def filter_logits(logits, temperature=1.0, top_k=None, top_p=None):
    """Logits / temperature with all but the top_k tokens and all but the top_p nucleus set to -inf. (B, V)"""
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k).values[:, [-1]]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)  # (B, V)
        probs = F.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(-1) - probs >= top_p  # mass before a token already reaches top_p (the top one stays)
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """One sampled token id per row: (B, V) logits -> (B, 1). top_k=1 is greedy (argmax, no randomness)."""
    if top_k == 1:
        return logits.argmax(-1, keepdim=True)
    probs = F.softmax(filter_logits(logits.float(), temperature, top_k, top_p), dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


def cache_dtype(model, device_type):
    """The dtype of the keys and values forward produces: the autocast dtype if on, else the weights'."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return next(model.parameters()).dtype


def notice_crop(block_size):
    print(f"note: the context reached block_size={block_size}: from here on it is cropped to the last "
          f"{block_size} tokens and recomputed each step (no KV cache)", file=sys.stderr)


def compiled_decoder(model):
    """model(tok, cache=cache) for one-token cached steps, compiled on the first call. The step has fixed shapes (a
    static KV cache), so it compiles once; inductor's freezing makes the weights constants, cast and packed once
    (inference only: later changes to the weights are not seen)."""
    compiled = torch.compile(model, fullgraph=True)

    def decode(tok, cache):
        with torch._inductor.config.patch(freezing=True):  # global: dynamo reads it too, not only inductor
            return compiled(tok, cache=cache)
    return decode


@torch.no_grad()  # not inference_mode: under it autocast re-casts the weights every step
def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True, generator=None,
             on_crop=notice_crop, decode=None):
    """Yield max_new_tokens new token ids, each (B, 1), continuing idx (B, T). Run it inside the autocast
    context you want; the KV cache takes that dtype. decode runs the one-token cached steps (model, or
    compiled_decoder(model)). on_crop(block_size) is called once if the context outgrows block_size (then the
    cache is dropped and the cropped context recomputed, as nanoGPT does)."""
    check_sampling(temperature, top_k, top_p)
    bs = model.config.block_size
    cache = None
    if use_cache and idx.size(1) <= bs:
        cache = model.new_cache(idx.size(0), idx.device, cache_dtype(model, idx.device.type))
    decode = decode or model
    tok, cropped = None, False
    for _ in range(max_new_tokens):
        if idx.size(1) > bs and not cropped:  # the cache would outgrow block_size: drop it, crop the context
            cache, cropped = None, True
            if on_crop is not None:
                on_crop(bs)
        if cache is None:
            logits, _ = model(idx[:, -bs:])  # (B, 1, V)
        elif tok is None:
            logits, _ = model(idx, cache=cache)  # the prompt
        else:
            logits, _ = decode(tok, cache=cache)  # one new position
        tok = next_token(logits[:, -1, :], temperature, top_k, top_p, generator)  # (B, 1)
        idx = torch.cat((idx, tok), dim=1)
        yield tok


def generate_all(model, idx, max_new_tokens, **kwargs):
    """idx (B, T) followed by max_new_tokens generated ids: (B, T + max_new_tokens)."""
    return torch.cat([idx, *generate(model, idx, max_new_tokens, **kwargs)], dim=1)


class TextStream:
    """Token ids -> text as soon as it is complete UTF-8 (a character may span several BPE tokens)."""

    def __init__(self, enc):
        self.enc, self.utf8 = enc, codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token):
        try:
            data = self.enc.decode_bytes([token])
        except KeyError:  # a padding id past the tokenizer's vocabulary (50257..50303): never in training data
            data = "\ufffd".encode()
        return self.utf8.decode(data)

    def flush(self):
        return self.utf8.decode(b"", final=True)


def sample(cfg, out=None):
    """Load the model, then write cfg.num_samples continuations of the prompt to out, token by token."""
    out = out or sys.stdout
    try:
        device = utils.resolve_device(cfg.device)
        dtype = utils.resolve_dtype(cfg.dtype, device)
    except ValueError as e:
        raise SampleError(str(e)) from None
    utils.setup_runtime(device, cfg.seed)
    model = checkpoint.load_model(checkpoint.find(cfg.out_dir, cfg.ckpt, cfg.ckpt_path))[0].to(device).eval()
    enc = get_encoding()
    if model.config.vocab_size < enc.n_vocab:
        raise SampleError(f"the model's vocab_size={model.config.vocab_size} is smaller than GPT-2 BPE's "
                          f"{enc.n_vocab}: sample.py needs a model trained on GPT-2 BPE tokens")
    ids = read_prompt(cfg.start, enc)
    decode = compiled_decoder(model) if cfg.compile else None  # the one-token step, compiled once (static cache)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    prompt = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
    prompt_text = enc.decode(ids)
    on_crop = functools.cache(notice_crop)  # say it once, not once per sample
    with utils.autocast(device, dtype):
        for _ in range(cfg.num_samples):
            out.write(prompt_text)
            out.flush()
            text = TextStream(enc)
            for tok in generate(model, prompt, cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p,
                                generator=gen, on_crop=on_crop, decode=decode):
                out.write(text.push(tok.item()))
                out.flush()
            out.write(text.flush() + "\n---------------\n")
            out.flush()


def main(argv=None):
    try:
        sample(load_config(sys.argv[1:] if argv is None else argv))
    except (ConfigError, SampleError, checkpoint.CheckpointError, TokenizerError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
