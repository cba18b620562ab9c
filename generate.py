"""
Generation: sampling a continuation token by token, with a key/value cache, for sample.py, evaluation.py's harness
adapter (greedy generate_until) and bench/decode.py.

Decoding is incremental: the prompt fills a per-layer key/value cache, then each step runs the model on
the new position only. That is exact for every update rule, because the velocity stream is per position
and causal (a position's X and V depend on earlier positions only through attention's keys and values).
Past block_size tokens it falls back to nanoGPT's cropped context, recomputed without the cache.
"""

import sys

import torch
from torch.nn import functional as F


class SampleError(ValueError):
    """A user error (bad checkpoint, prompt or setting); sample.py prints it as one line and exits with 2."""


def check_sampling(temperature, top_k=None, top_p=None):
    """Raise SampleError unless temperature > 0, top_k >= 1 (or None), 0 < top_p <= 1 (or None)."""
    if not temperature > 0:
        raise SampleError(f"temperature={temperature} must be > 0 (for greedy decoding use --top_k=1)")
    if top_k is not None and top_k < 1:
        raise SampleError(f"top_k={top_k} must be >= 1 (or None for no top-k filtering)")
    if top_p is not None and not 0 < top_p <= 1:
        raise SampleError(f"top_p={top_p} must be in (0, 1] (1.0 turns nucleus sampling off)")


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
