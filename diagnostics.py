"""
Diagnostics of a model in training, for train.py's "spectral" records (runlog.py's docstring lists their fields):
each hidden matrix's extreme singular values and distance from its manifold, each layer's attention logits, entropy
and saturation, and the dual ascent's statistics of manifold Muon.
"""

import math

import torch

from manifold import ManifoldMuon, module_geometry, project, tall


def short(name):
    """'transformer.h.3.attn.c_attn.weight' -> 'h.3.attn.c_attn'."""
    return name.removeprefix("transformer.").removesuffix(".weight")


def violation(w, geometry):
    """How far w is off its manifold (none: the Stiefel violation, for reference):
    stiefel |W^T W - I|_F / sqrt(n); dgram |offdiag(C)|_F / sqrt(n), C the column cosines; oblique max_j | |w_j| - 1 |."""
    w = tall(w.detach().float())
    n = w.size(1)
    if geometry == "oblique":
        return (w.norm(dim=0) - 1).abs().max().item()
    if geometry == "dgram":
        u = w / w.norm(dim=0).clamp(min=1e-7)
        return project(u.T @ u, "dgram").norm().item() / math.sqrt(n)
    return (w.T @ w - torch.eye(n, device=w.device)).norm().item() / math.sqrt(n)


SATURATED, MIN_KEYS = 0.99, 8  # a softmax row is saturated when one key takes >= 99% (rows with >= 8 keys)


@torch.no_grad()
def attention_stats(model, x, ctx):
    """Per layer, on the first 4 sequences of x: the largest attention logit (q.k times the softmax scale) over heads
    and causal pairs, the mean entropy of the attention rows (nats) and the share of saturated rows (one key >= 99%),
    both over the rows that see at least 8 keys. Each layer's input to attention is captured by a forward pre-hook
    and its q, k come from the layer's own CausalSelfAttention.qkv."""
    inputs, blocks = {}, list(model.transformer.h)
    hooks = [b.attn.register_forward_pre_hook(lambda m, args, i=i: inputs.__setitem__(i, args))
             for i, b in enumerate(blocks)]
    training = model.training
    try:
        model.eval()
        with ctx:
            model(x[:4])
            out = {}
            for i, args in sorted(inputs.items()):
                q, k, _, scale = blocks[i].attn.qkv(*args[:1], *args[2:])  # (B, nh, T, hs); args[1] is the cache
                logits = (q.float() @ k.float().transpose(-2, -1)) * (scale or q.size(-1) ** -0.5)  # (B, nh, T, T)
                T = logits.size(-1)
                causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
                logits = logits.masked_fill(~causal, -math.inf)
                probs = logits.softmax(-1)[:, :, MIN_KEYS - 1:]  # rows t >= 7 see >= 8 keys
                entropy = -(probs * probs.clamp(min=1e-30).log()).sum(-1)
                out[str(i)] = dict(logit_max=logits.max().item(), entropy=entropy.mean().item(),
                                   saturated=(probs.amax(-1) >= SATURATED).float().mean().item())
    finally:
        model.train(training)
        for h in hooks:
            h.remove()
    return out


def attention_logit_max(model, x, ctx):
    """Per layer the largest attention logit (attention_stats)."""
    return {k: v["logit_max"] for k, v in attention_stats(model, x, ctx).items()}


@torch.no_grad()
def spectral_record(model, x, ctx, attn="none", mlp="none", optimizers=()):
    """Per hidden matrix sigma_max, sigma_min, the violation of its geometry; per layer the largest attention
    logit, the attention entropy and the share of saturated softmax rows on batch x; the dual ascent's iterations
    (mean) and tangent rms(H) (max) of manifold Muon's last step."""
    rec = {"sigma_max": {}, "sigma_min": {}, "violation": {}}
    for name, p in model.param_groups()["matrix"]:
        s = torch.linalg.svdvals(p.detach().float())
        rec["sigma_max"][short(name)], rec["sigma_min"][short(name)] = s[0].item(), s[-1].item()
        rec["violation"][short(name)] = violation(p, module_geometry(name, attn, mlp))
    attn = attention_stats(model, x, ctx)
    for key in ("logit_max", "entropy", "saturated"):
        rec[f"attn_{key}"] = {layer: v[key] for layer, v in attn.items()}
    dual = [st for o in optimizers if isinstance(o, ManifoldMuon) for st in o.state.values() if "dual_iters" in st]
    if dual:
        rec["dual_iters"] = sum(float(st["dual_iters"]) for st in dual) / len(dual)
        rec["tangent_rms"] = max(float(st["tangent_rms"]) for st in dual)
    return rec
