"""
Optimizers for train.py, built from GPT.param_groups():

- adamw: nanoGPT's AdamW grouping (weight decay on matrices and embeddings, none on norms/biases),
  with the update coefficients at lr x scalar_lr_mult and no weight decay.
- muon: the paper's recipe. torch.optim.Muon on the 2-D hidden matrices; AdamW on embeddings
  (and an untied head) with weight decay, on norms/biases/scales without, and on the update
  coefficients without weight decay at lr x scalar_lr_mult.

Every param group carries its base learning rate in group["base_lr"]; the schedule multiplies it.
"""

import inspect

import torch

OPTIMIZERS = ("adamw", "muon")


def _adamw(groups, cfg, device_type):
    fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                             **({"fused": True} if fused else {}))


def _group(named, lr, wd, name):
    return {"params": [p for _, p in named], "names": [n for n, _ in named], "lr": lr, "base_lr": lr,
            "weight_decay": wd, "group": name}


def build_optimizers(model, cfg, device_type="cpu"):
    """The list of optimizers for cfg.optimizer (stepped together by train.py)."""
    g = model.param_groups()
    lr, wd = cfg.learning_rate, cfg.weight_decay
    coef = _group(g["coef"], lr * cfg.scalar_lr_mult, 0.0, "coef")
    scalar = _group(g["scalar"], lr, 0.0, "scalar")
    if cfg.optimizer == "adamw":
        decay = _group(g["matrix"] + g["embed"] + g["head"], lr, wd, "decay")
        return [_adamw([decay, scalar, coef], cfg, device_type)]
    if cfg.optimizer == "muon":
        muon = torch.optim.Muon([_group(g["matrix"], cfg.muon_lr, cfg.muon_weight_decay, "matrix")],
                                lr=cfg.muon_lr, momentum=cfg.muon_momentum, weight_decay=cfg.muon_weight_decay)
        embed = _group(g["embed"] + g["head"], lr, wd, "embed")
        return [muon, _adamw([embed, scalar, coef], cfg, device_type)]
    raise ValueError(f"optimizer={cfg.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")


def set_lr(optimizers, factor):
    """Scale every group's base learning rate by the schedule factor."""
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * factor
