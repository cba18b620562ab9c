"""
Sample from a trained model, streaming tokens to stdout as they are produced:

    python sample.py --out_dir=out-tinystories --start="Once upon a time" --num_samples=3
    python sample.py --ckpt_path=nanogpt/out/ckpt.pt --start=FILE:prompt.txt --top_k=1   # greedy
    python sample.py --init_from=gpt2-xl --start="What is the answer to life?"          # OpenAI's GPT-2 (pretrained.py)

Decoding (generate.py) is incremental: the prompt fills a per-layer key/value cache, then each step runs the model
on the new position only; past block_size tokens it falls back to nanoGPT's cropped context, recomputed each step.
"""

import codecs
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

import checkpoint
import utils
from configurator import ConfigError, build, parse_args
from data.tokenizer import TokenizerError, get_encoding
from generate import SampleError, check_sampling, compiled_decoder, generate, notice_crop


@dataclass
class SampleConfig:
    out_dir: str = "out"  # run directory written by train.py (or nanoGPT)
    ckpt: str = "auto"  # which file of out_dir: auto (best.pt, else ckpt.pt) | best (best.pt) | latest (ckpt.pt)
    ckpt_path: str = ""  # a checkpoint file to load instead (this repo's or nanoGPT's); overrides out_dir/ckpt
    init_from: str = ""  # gpt2 | gpt2-medium | gpt2-large | gpt2-xl | a transformers GPT-2 directory: instead of a checkpoint
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
    """SampleConfig from --key=value overrides; a config file (e.g. train's) may supply out_dir and the like (not
    init_from: a training config's GPT-2 start is not what its run directory holds)."""
    files = parse_args([a for a in argv if not a.startswith("--")])
    raw = {**{k: v for k, v in files.items() if k in SampleConfig.__dataclass_fields__ and k != "init_from"},
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
    model = checkpoint.load_for_inference(cfg.out_dir, cfg.ckpt, cfg.ckpt_path, device, init_from=cfg.init_from)[0]
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
