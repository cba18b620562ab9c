"""
Optimizers for train.py, built from GPT.param_groups():

- adamw: nanoGPT's AdamW grouping (weight decay on matrices and embeddings, none on norms/biases),
  with the update coefficients at lr x scalar_lr_mult and no weight decay.
- sgd: the same grouping with torch.optim.SGD (momentum sgd_momentum, optionally Nesterov) on every parameter,
  the multilevel paper's optimizer (Lauga et al.).
- muon: the paper's recipe. torch.optim.Muon on the 2-D hidden matrices (its Newton-Schulz runs in bf16; where
  bf16 is not native, muon_dtype=auto runs the same step in fp32 with manifold.ManifoldMuon); AdamW on embeddings
  (and an untied head) with weight decay, on norms/biases/scales without, and on the update
  coefficients without weight decay at lr x scalar_lr_mult.
- manifold_muon: the muon recipe with manifold.ManifoldMuon on the hidden matrices, attention ('.attn.')
  on geometry_attn and MLP ('.mlp.') on geometry_mlp (none | stiefel | dgram | oblique).

- nuGPT (arch="nugpt"): per-group learning-rate multipliers lr_multipliers() on top of every recipe;
  with muon the Muon matrices take only the horizon factor (their update norm does not grow with width).
- group_lr_mult: a further multiplier per group (matrix, embed, head, scalar, coef; with muon / manifold_muon also
  attn, mlp for the hidden matrices of one module), for per-group learning-rate sweeps.

Every param group carries its base learning rate in group["base_lr"]; the schedule multiplies it.
"""

import inspect

import torch

import utils
from manifold import ManifoldMuon, geometry_groups

OPTIMIZERS = ("adamw", "sgd", "muon", "manifold_muon")
GROUPS = ("matrix", "embed", "head", "scalar", "coef", "attn", "mlp")


def _adamw(groups, cfg, device_type):
    fused = (device_type == "cuda" or cfg.adamw_fused) and "fused" in inspect.signature(torch.optim.AdamW).parameters
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                             eps=cfg.adam_eps, **({"fused": True} if fused else {}))


def _group(named, lr, wd, name):
    return {"params": [p for _, p in named], "names": [n for n, _ in named], "lr": lr, "base_lr": lr,
            "weight_decay": wd, "group": name}


def lr_multipliers(mcfg, cfg):
    """nuGPT: with m_w = d/ref_width, m_T = max_iters/ref_steps, base m_T^-1/3 times matrix m_w^-3/4,
    embed m_w^-1/2, head c_out m_w^-3/4, scalar/coef 1 (muon: the Muon lr); cfg.nu_lr_scaling=False sets
    m_w = m_T = 1 (only c_out is left). Every other arch: all 1. Then times cfg.group_lr_mult per group."""
    if mcfg.arch != "nugpt":
        m = dict.fromkeys(("matrix", "embed", "head", "scalar", "coef", "muon"), 1.0)
    else:
        m_w, m_t = (mcfg.n_embd / mcfg.ref_width, cfg.max_iters / cfg.ref_steps) if cfg.nu_lr_scaling else (1.0, 1.0)
        base = m_t ** (-1 / 3)
        m = dict(matrix=base * m_w**-0.75, embed=base * m_w**-0.5, head=base * cfg.nu_c_out * m_w**-0.75,
                 scalar=base, coef=base, muon=base)
    extra = cfg.group_lr_mult
    m = {k: v * extra.get("matrix" if k == "muon" else k, 1.0) for k, v in m.items()}
    return {**m, "attn": extra.get("attn", 1.0), "mlp": extra.get("mlp", 1.0)}


def _decayed(g, kinds, lr, wd, name, m):
    """One weight-decayed group for `kinds`, or one per kind where their multipliers m differ (nuGPT)."""
    if len({m[k] for k in kinds}) == 1:
        return [_group([x for k in kinds for x in g[k]], lr * m[kinds[0]], wd, name)]
    return [_group(g[k], lr * m[k], wd, k) for k in kinds]


def _muon_groups(named, cfg, mlr, m):
    """ManifoldMuon / Muon groups of the hidden matrices: one per module (attn, mlp, other) with its geometry and
    learning rate (times group_lr_mult's attn / mlp)."""
    groups = geometry_groups(named, cfg.geometry_attn, cfg.geometry_mlp, weight_decay=cfg.muon_weight_decay)
    for group in groups:
        group["lr"] = group["base_lr"] = mlr * m.get(group["module"], 1.0)
        group["group"] = "matrix"
    return groups


def build_optimizers(model, cfg, device_type="cpu"):
    """The list of optimizers for cfg.optimizer (stepped together by train.py)."""
    g, m = model.param_groups(), lr_multipliers(model.config, cfg)
    lr, wd = cfg.learning_rate, cfg.weight_decay
    coef = _group(g["coef"], lr * cfg.scalar_lr_mult * m["coef"], 0.0, "coef")
    scalar = _group(g["scalar"], lr * m["scalar"], 0.0, "scalar")
    if cfg.optimizer in ("adamw", "sgd"):
        groups = [*_decayed(g, ("matrix", "embed", "head"), lr, wd, "decay", m), scalar, coef]
        if cfg.optimizer == "adamw":
            return [_adamw(groups, cfg, device_type)]
        return [torch.optim.SGD([x for x in groups if x["params"]], lr=lr, momentum=cfg.sgd_momentum,
                                nesterov=cfg.sgd_nesterov)]
    mlr = cfg.muon_lr * m["muon"]
    ns_dtype = muon_dtype(cfg.muon_dtype, device_type)
    if cfg.optimizer == "muon" and ns_dtype == "bfloat16" and m["attn"] == m["mlp"] == 1.0:
        muon = torch.optim.Muon([_group(g["matrix"], mlr, cfg.muon_weight_decay, "matrix")], lr=mlr,
                                momentum=cfg.muon_momentum, weight_decay=cfg.muon_weight_decay)
    else:  # manifold_muon, or muon's step with an fp32 Newton-Schulz (torch's is bf16, emulated on AVX2 CPUs)
        muon = ManifoldMuon(_muon_groups(g["matrix"], cfg, mlr, m), lr=mlr, momentum=cfg.muon_momentum,
                            iters=cfg.mm_iters, alpha=cfg.mm_alpha, tol=cfg.mm_tol, warm_start=cfg.mm_warm_start,
                            scaling=cfg.mm_scaling, init=cfg.mm_init, retraction=cfg.mm_retraction,
                            ns_dtype=ns_dtype)
    embed = _decayed(g, ("embed", "head"), lr, wd, "embed", m)
    return [muon, _adamw([*embed, scalar, coef], cfg, device_type)]


def muon_dtype(dtype, device):
    """Muon's Newton-Schulz dtype: 'auto' -> bfloat16 where bf16 is native (utils.fast_bf16), else float32."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if utils.fast_bf16(device) else "float32"


def init_manifolds(optimizers):
    """Fresh weights onto their manifolds (manifold_muon; not when resuming)."""
    for opt in optimizers:
        if hasattr(opt, "project_"):
            opt.project_()


def set_lr(optimizers, factor):
    """Scale every group's base learning rate by the schedule factor."""
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * factor
