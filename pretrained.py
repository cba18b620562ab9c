"""
Pretrained GPT-2 as this repo's GPT: OpenAI's published weights by name, or a local transformers GPT-2 directory.

    model = load_gpt2("gpt2")                        # gpt2 | gpt2-medium | gpt2-large | gpt2-xl (the hub, or its cache)
    model = load_gpt2("out-hf", dropout=0.1)         # a directory: export.py's gpt2 format, a downloaded snapshot

The weights come through transformers (GPT2LMHeadModel.from_pretrained), so the hub's cache and offline mode
(HF_HUB_OFFLINE=1, HF_HOME) behave as transformers makes them; a directory needs no network. GPT-2's parameter names
are nanoGPT's; its Conv1D weights are stored (in, out) and become our Linear's (out, in); the biases are kept
(bias=True); the activation is GPT-2's own, the tanh approximation of GELU (transformers' gelu_new, our "gelu_tanh"),
so the fp32 logits equal transformers'. The vocabulary stays GPT-2's 50257 unless a larger vocab_size is asked: the
extra rows are zero, so every real token's logit is unchanged, and each padded id gets logit 0 (see load_gpt2).

Only what computes GPT-2's function with its weights is built (an exact start): the baseline, update="gd" with
split="lie_trotter" (X + A(X), then + M(.)), or split="imex" with imex_iters=1 (W = A(X) + M(X + A(X)), the same
sum), optionally with embed_extra (zero tables). Momentum (polyak, nesterov) adds beta * V, earlier layers' oracle
outputs, to every step and Euler computes X + A(X) + M(X): different functions at step 0, refused.
"""

import json
from dataclasses import fields
from pathlib import Path

import torch

from model import GPT, GPTConfig
from utils import first_line

GPT2_SIZES = {  # the published checkpoints (all: vocab 50257, 1024 positions)
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),  # 124M parameters
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),  # 350M
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M
}
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")  # (in, out) in GPT-2
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}  # transformers' -> ours
FREE = ("dropout", "block_size", "vocab_size", "update", "split", "imex_iters", "lnv", "v0", "embed_extra", "mu_init",
        "beta_init", "gamma_init")  # settable on top of GPT-2 (the last ones as far as the start stays exact)


class PretrainedError(ValueError):
    """A GPT-2 start that cannot be made (name, directory, network, settings), told in one line naming the fix."""


def load_transformers():
    try:
        import transformers
    except ImportError:
        raise PretrainedError('starting from GPT-2 needs transformers: pip install -e ".[export]"') from None
    return transformers


def source(name_or_dir):
    """'dir' for a local directory (it wins over a name, as in transformers), 'hub' for a published name, else None
    (train.py: a checkpoint file)."""
    return "dir" if Path(name_or_dir).is_dir() else "hub" if name_or_dir in GPT2_SIZES else None


def gpt2_args(hf, where):
    """GPTConfig fields of a transformers GPT2Config; settings our GPT has not are a PretrainedError."""
    want = dict(layer_norm_epsilon=1e-5, scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
                tie_word_embeddings=True, add_cross_attention=False)
    bad = [f"{k}={getattr(hf, k)!r}" for k, v in want.items() if getattr(hf, k, v) != v]
    if hf.n_inner not in (None, 4 * hf.n_embd):  # None: 4 * n_embd
        bad.append(f"n_inner={hf.n_inner}")
    if hf.activation_function not in ACTIVATIONS:
        bad.append(f"activation_function={hf.activation_function!r}")
    if bad:
        raise PretrainedError(f"{where}: GPT-2 settings this repo's GPT does not have ({', '.join(bad)}): use a "
                              "standard GPT-2 directory")
    return dict(n_layer=hf.n_layer, n_head=hf.n_head, n_embd=hf.n_embd, block_size=hf.n_positions,
                vocab_size=hf.vocab_size, bias=True, dropout=0.0, activation=ACTIVATIONS[hf.activation_function])


def check_dir(path):
    """A directory must hold a transformers GPT-2: config.json with model_type 'gpt2'."""
    try:
        kind = json.loads((Path(path) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        raise PretrainedError(f"{path} has no readable config.json: not a transformers model directory (give a GPT-2 "
                              "one: a downloaded snapshot or export.py --format=gpt2)") from None
    if kind is None and (Path(path) / "metrics.jsonl").exists():
        raise PretrainedError(f"{path} is a run directory of this repo, not GPT-2: resume it with --init_from=resume "
                              f"--out_dir={path} (sample.py, eval.py: --out_dir={path})")
    if kind != "gpt2":
        raise PretrainedError(f"{path} holds a {kind!r} model, not GPT-2: give a GPT-2 directory (a downloaded "
                              "snapshot or export.py --format=gpt2), or a checkpoint of this repo")


def fetch(load, name_or_dir):
    """load(name_or_dir), a transformers from_pretrained: from the directory, or through the hub's cache as
    transformers does it; its OSError (not cached and offline or unreachable; a file missing) as one line."""
    try:
        return load(str(name_or_dir))
    except OSError as e:
        if source(name_or_dir) == "dir":
            raise PretrainedError(f"{name_or_dir}: cannot load GPT-2 ({first_line(e, 120)}): check the directory holds "
                                  "config.json and model.safetensors (or pytorch_model.bin)") from None
        from huggingface_hub.constants import HF_HUB_CACHE
        raise PretrainedError(f"{name_or_dir} is neither in the Hugging Face cache ({HF_HUB_CACHE}) nor downloadable: "
                              "download it once with network (HF_HUB_OFFLINE unset), or give a local GPT-2 directory: "
                              "--init_from=DIR") from None


def exact_problem(c):
    """Why GPT-2's weights in a model of config c do not compute GPT-2's function ('' when they do)."""
    if c.update != "gd":
        return (f"update={c.update!r} adds momentum (earlier layers' oracle outputs) to every step: a different "
                "function from GPT-2 at step 0")
    if c.split == "euler":
        return "split='euler' computes X + A(X) + M(X), not GPT-2's X + A(X) + M(X + A(X))"
    if c.split == "imex" and c.imex_iters > 1:
        return (f"split='imex' with imex_iters={c.imex_iters} repeats the MLP sweep W = A(X) + M(X + W), not GPT-2's "
                "X + A(X) + M(X + A(X)) (imex_iters=1)")
    return ""


def model_config(name_or_dir, **overrides):
    """The GPTConfig of GPT-2 (reads config.json only) with overrides: dropout, block_size <= GPT-2's (wpe is
    cropped, nanoGPT's crop_block_size), vocab_size >= GPT-2's (padding, see load_gpt2), and the variant fields while
    the start stays exact (exact_problem). Anything else must equal GPT-2's value."""
    if source(name_or_dir) is None:
        raise PretrainedError(f"init_from={name_or_dir!r} is neither a GPT-2 name ({', '.join(GPT2_SIZES)}) nor a "
                              "directory: check the spelling or the path")
    transformers = load_transformers()
    if source(name_or_dir) == "dir":
        check_dir(name_or_dir)
    base = gpt2_args(fetch(transformers.GPT2Config.from_pretrained, name_or_dir), name_or_dir)
    fixed = {f.name: f.default for f in fields(GPTConfig)} | base  # GPT-2's value of every field
    clash = [f"{k}={v!r} (it has {fixed[k]!r})" for k, v in overrides.items() if k in fixed and k not in FREE
             and v != fixed[k]]
    args = {**base, **overrides}
    if args["block_size"] > base["block_size"]:
        clash.append(f"block_size={args['block_size']} (it has {base['block_size']} positions)")
    if args["vocab_size"] < base["vocab_size"]:
        clash.append(f"vocab_size={args['vocab_size']} (it has {base['vocab_size']} tokens)")
    if clash:
        raise PretrainedError(f"{name_or_dir} does not fit {', '.join(clash)}: remove these settings (GPT-2 fixes them)")
    try:
        config = GPTConfig(**args)
    except (TypeError, ValueError) as e:
        raise PretrainedError(f"starting from {name_or_dir}: {first_line(e)}") from None
    if exact_problem(config):
        raise PretrainedError(f"starting from {name_or_dir}: {exact_problem(config)}; start the baseline (update='gd', "
                              "split='lie_trotter') from GPT-2, or train this variant from scratch")
    return config


def load_gpt2(name_or_dir, **overrides):
    """GPT-2's weights as a GPT (fp32, on the CPU) of model_config(name_or_dir, **overrides). A larger vocab_size
    appends zero rows: the real tokens' logits are unchanged and each padded id's logit is 0, so a consumer must
    restrict to the real vocabulary (GPT-2's logits are typically negative: unmasked, 0 may well win); without it,
    GPT-2's 50257 (as nanoGPT)."""
    config = model_config(name_or_dir, **overrides)
    transformers = load_transformers()
    hf = fetch(lambda s: transformers.GPT2LMHeadModel.from_pretrained(s, dtype=torch.float32), name_or_dir)
    return build(config, convert(hf.state_dict(), config))


def convert(hf_state, config):
    """Our state dict entries from transformers' GPT-2 ones: Conv1D weights transposed, wte padded with zero rows
    to config.vocab_size, wpe cropped to config.block_size; the head is tied to wte."""
    out = {}
    for name, w in hf_state.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight":  # mask buffers; tied head
            continue
        if name.endswith(CONV1D):
            w = w.t()  # (in, out) -> (out, in)
        elif name == "transformer.wte.weight":  # (V, C) -> (vocab_size, C)
            w = torch.cat([w, w.new_zeros(config.vocab_size - w.size(0), w.size(1))])
        elif name == "transformer.wpe.weight":  # (n_positions, C) -> (block_size, C)
            w = w[:config.block_size]
        out[name] = w.contiguous()
    out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def build(config, state):
    """GPT(config) with state loaded; only embed_extra's zero tables may be missing from it."""
    model = GPT(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    extra = [k for k in missing if k.startswith(("transformer.wte_x", "transformer.wpe_x"))]  # embed_extra: zero
    if unexpected or set(missing) - set(extra):
        raise PretrainedError(f"GPT-2's weights do not fit the model (missing {sorted(set(missing) - set(extra))[:3]}, "
                              f"unexpected {sorted(unexpected)[:3]}): please report this")
    return model
