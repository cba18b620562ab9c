"""
Geometry-aware optimizers: manifold Muon with a geometry per module ("Different Layers, Different Manifolds").

A hidden weight W, taken tall (m x n, m >= n; a wide weight is transposed), lives on a manifold given by its Gram:

    none     no constraint                        plain Muon (torch.optim.Muon's update, exactly)
    stiefel  W^T W = I                            P = identity       retraction: polar factor msign(W)
    dgram    W^T W diagonal (column norms free)   P = off-diagonal   retraction: Q diag(Q^T W), Q = msign(W)
    oblique  diag(W^T W) = 1 (unit columns)       P = diagonal       retraction: normalise the columns

P keeps the entries of a symmetric n x n matrix that the constraint fixes. One step with Nesterov momentum G finds the
steepest unit-spectral-norm direction A that is tangent, P(W^T A + A^T W) = 0, by dual ascent on a symmetric
multiplier Lambda (the dual function is ||G + 2 W P(Lambda)||_nuclear, its gradient H):

    Lambda = -1/4 P(W^T G + G^T W)
    K times:  A = msign(G + 2 W Lambda),  H = P(W^T A + A^T W),  stop if rms(H) < tol,  Lambda -= alpha (1 - k/K) H
    W <- retract(W - lr A)

G is scaled to unit RMS entries first (msign ignores the scale; alpha then means the same for every matrix).
"""

import math

import torch

GEOMETRIES = ("none", "stiefel", "dgram", "oblique")
EPS = 1e-7
MUON_NS = (3.4445, -4.7750, 2.0315)  # torch.optim.Muon's quintic: fast, singular values end anywhere in [0.68, 1.21]
EXACT_NS = (1.875, -1.25, 0.375)  # p(s) = (15 s - 10 s^3 + 3 s^5) / 8: p(1) = 1, p'(1) = p''(1) = 0, cubic convergence
MSIGN_STEPS = (MUON_NS,) * 8 + (EXACT_NS,) * 3  # 8 fast steps lift singular values >= 1e-4 |X|_F, 3 exact ones finish


def msign(x, steps=MSIGN_STEPS, dtype=None):
    """Polar factor U V^T of x = U S V^T by odd polynomial steps X <- a X + (b XX^T + c (XX^T)^2) X
    (bf16 on CUDA, fp32 elsewhere unless dtype is given). The Frobenius scaling puts the singular values in [0, 1]."""
    dtype = dtype or (torch.bfloat16 if x.is_cuda else torch.float32)
    transpose = x.size(0) > x.size(1)
    y = x.to(dtype)
    y = y.T if transpose else y  # wide: the Gram y y^T is the small one
    y = y / y.norm().clamp(min=EPS)
    for a, b, c in steps:  # the op order of torch.optim.Muon's Newton-Schulz, so steps=(MUON_NS,)*5 in bf16 matches it
        gram = y @ y.T  # (n, n)
        y = torch.addmm(y, torch.addmm(gram, gram, gram, beta=b, alpha=c), y, beta=a)
    return (y.T if transpose else y).to(x.dtype)


def project(s, geometry):
    """P: the entries of a symmetric (n, n) matrix that the geometry's constraint fixes."""
    if geometry == "stiefel":
        return s
    diag = torch.diag_embed(torch.diagonal(s))
    return s - diag if geometry == "dgram" else diag


def tangent_direction(w, g, geometry, iters=20, alpha=0.1, tol=1e-3, steps=(MUON_NS,) * 5):
    """(A, dual iterations run, its rms(H)): A = msign(G + 2 W Lambda) with Lambda from dual ascent, so that
    P(W^T A + A^T W) ~ 0; the iterate with the smallest rms(H) is returned. w (m, n) tall, on its manifold;
    g (m, n) the momentum. msign here is Muon's quintic (`steps`): with Lambda = 0 A is Muon's update, and its
    smooth sign makes the dual better conditioned than the exact polar factor does (README)."""
    w32, g = w.float(), g.float()
    g = g * (math.sqrt(g.numel()) / g.norm().clamp(min=EPS))  # unit RMS entries: alpha is in units of G's entries
    sym = lambda a: project(w32.T @ a + a.T @ w32, geometry)  # noqa: E731  (n, n)
    lam = -0.25 * sym(g)  # (n, n); for stiefel, G + 2 W Lambda is G's tangent projection
    best_a, best_rms = None, math.inf
    for k in range(iters):
        a = msign(g + 2 * w32 @ lam, steps).float()  # (m, n)
        h = sym(a)
        rms = (h.norm() / math.sqrt(h.numel())).item()
        if best_a is None or rms < best_rms:
            best_a, best_rms = a, rms
        if rms < tol:
            break
        lam = lam - alpha * (1 - k / iters) * h
    return best_a, k + 1, best_rms


def retract(w, geometry):
    """Back onto the manifold: stiefel msign(W); dgram Q diag(Q^T W) with Q = msign(W) (the polar decomposition
    W = Q S without the off-diagonal of S); oblique unit columns; none unchanged. w (m, n) tall, fp32."""
    if geometry == "stiefel":
        return msign(w, dtype=torch.float32)
    if geometry == "dgram":
        q = msign(w, dtype=torch.float32)
        return q * (q * w).sum(0)  # column j scaled by q_j . w_j
    if geometry == "oblique":
        return w / w.norm(dim=0).clamp(min=EPS)
    return w


def tall(w):
    """w as a tall matrix (a view): transposed when it has more columns than rows."""
    return w.T if w.size(0) < w.size(1) else w


def adjusted_lr(lr, shape):
    """torch.optim.Muon's default ('original') scaling: lr sqrt(max(1, rows / cols))."""
    return lr * math.sqrt(max(1.0, shape[0] / shape[1]))


class ManifoldMuon(torch.optim.Optimizer):
    """Muon with a manifold per param group (group["geometry"] in GEOMETRIES). Nesterov momentum and the learning
    rate and weight decay of torch.optim.Muon; geometry "none" is torch.optim.Muon's step exactly (with
    ns_dtype="bfloat16"; "float32" runs its Newton-Schulz in fp32, for CPUs without native bf16). Call
    project_() once on fresh weights (not when resuming) to put them on their manifolds."""

    def __init__(self, params, lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0, geometry="none",
                 iters=20, alpha=0.1, tol=1e-3, ns_steps=5, ns_dtype="bfloat16"):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, geometry=geometry,
                        iters=iters, alpha=alpha, tol=tol, ns_steps=ns_steps, ns_dtype=ns_dtype)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["geometry"] not in GEOMETRIES:
                raise ValueError(f"geometry={group['geometry']!r}: choose one of {', '.join(GEOMETRIES)}")
            if group["iters"] < 1:
                raise ValueError(f"iters={group['iters']} (dual ascent steps K) must be >= 1")
            names = group.get("names") or [f"param {i}" for i in range(len(group["params"]))]
            for name, p in zip(names, group["params"]):
                if p.dim() != 2:
                    raise ValueError(f"{name} has shape {tuple(p.shape)}: manifold Muon (geometry="
                                     f"{group['geometry']!r}) needs matrices; put it in an AdamW group")

    @torch.no_grad()
    def project_(self):
        """Put every constrained weight on its manifold: the polar factor of its current value (unit singular
        values; the point where stiefel, dgram and oblique meet)."""
        for group in self.param_groups:
            if group["geometry"] != "none":
                for p in group["params"]:
                    w = tall(p)
                    w.copy_(msign(w, dtype=torch.float32))

    @torch.no_grad()
    def step(self, closure=None):
        """Momentum, then per matrix Muon's update (none) or the tangent direction and a retraction."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, geometry, momentum = group["lr"], group["geometry"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                g = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                p.mul_(1 - lr * group["weight_decay"])
                if geometry == "none":
                    ns_dtype = getattr(torch, group["ns_dtype"])  # bfloat16: torch.optim.Muon's step exactly
                    p.add_(msign(g, (MUON_NS,) * group["ns_steps"], ns_dtype), alpha=-adjusted_lr(lr, p.shape))
                    continue
                w = tall(p)
                a, state["dual_iters"], state["tangent_rms"] = tangent_direction(
                    w, tall(g), geometry, group["iters"], group["alpha"], group["tol"], (MUON_NS,) * group["ns_steps"])
                w.copy_(retract(w.float() - adjusted_lr(lr, p.shape) * a, geometry))
        return loss


def module_geometry(name, attn="none", mlp="none"):
    """Geometry of a hidden matrix by its parameter name: attn for '.attn.', mlp for '.mlp.', else none."""
    return attn if ".attn." in name else mlp if ".mlp." in name else "none"


def geometry_groups(named, attn="none", mlp="none", **group):
    """Param groups of ManifoldMuon, one per geometry, from (name, param) pairs; group holds the other keys."""
    out = {}
    for name, p in named:
        g = out.setdefault(module_geometry(name, attn, mlp), {"params": [], "names": []})
        g["params"].append(p)
        g["names"].append(name)
    return [{**g, **group, "geometry": geo} for geo, g in out.items()]
