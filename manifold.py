"""
Geometry-aware optimizers: manifold Muon with a geometry per module ("Different Layers, Different Manifolds").

A hidden weight W, taken tall (m x n, m >= n; a wide weight is transposed), lives on a manifold given by its Gram:

    none     no constraint                        plain Muon (torch.optim.Muon's update, exactly)
    stiefel  W^T W = I                            P = identity       retraction: polar factor of W
    dgram    W^T W diagonal (column norms free)   P = off-diagonal   retraction: Q diag(Q^T W), Q the polar factor
    oblique  diag(W^T W) = 1 (unit columns)       P = diagonal       retraction: normalise the columns

P keeps the entries of a symmetric n x n matrix that the constraint fixes. One step with momentum G finds the
steepest unit-spectral-norm direction A that is tangent, P(W^T A + A^T W) = 0, by dual ascent on a symmetric
multiplier Lambda (the dual function is ||G + 2 W P(Lambda)||_nuclear, its gradient H):

    Lambda = warm ? Lambda of the previous step : -P(W^T G + G^T W)_ij / (2 (d_i^2 + d_j^2))   (d: column norms)
    K times:  A = msign(G + 2 W Lambda),  H = P(W^T A + A^T W),
              Lambda -= alpha (1 - k/K) 2 H_ij / (d_i^2 + d_j^2)                              (stop: rms(H) < tol)
(d = 1 for stiefel and oblique: the start is -1/4 P(W^T G + G^T W), the step alpha H; for dgram the exact start
and the per-entry step keep the solve as good at column norms near 2 as at 1.)
    W <- retract(W - lr A)

Matrices of one shape and geometry go through the ascent together (batched), with no host sync inside it but a
convergence check every `check_every` iterations; its products with W run in the msign's dtype, and the Stiefel
retraction is one step of the series of (W^T W)^(-1/2) (W^T W is within about lr^2 of I). Two scalings: "rms" (ours:
G scaled to unit RMS entries, so alpha means the same for every matrix, and Muon's lr sqrt(max(1, m/n))) and
"reference" (the paper's code: raw Nesterov momentum G + mu buf with buf = mu buf + grad, lr without a shape factor,
weight decay on unconstrained matrices only).
"""

import math

import torch

GEOMETRIES = ("none", "stiefel", "dgram", "oblique")
SCALINGS = ("rms", "reference")
INITS = ("reference", "polar")
RETRACTIONS = ("clean", "reference")
EPS = 1e-7
MUON_NS = (3.4445, -4.7750, 2.0315)  # torch.optim.Muon's quintic: fast, singular values end anywhere in [0.68, 1.21]
EXACT_NS = (1.875, -1.25, 0.375)  # p(s) = (15 s - 10 s^3 + 3 s^5) / 8: p(1) = 1, p'(1) = p''(1) = 0, cubic convergence
MSIGN_STEPS = (MUON_NS,) * 8 + (EXACT_NS,) * 3  # 8 fast steps lift singular values >= 1e-4 |X|_F, 3 exact ones finish
STIEFEL_NS = 1  # steps of the Stiefel retraction's polar series: from |W^T W - I| ~ lr^2 to fp32 precision


def _addmm(inp, a, b, beta, alpha=1.0):
    """beta inp + alpha a @ b, for matrices (addmm, torch.optim.Muon's op) or batches of them (baddbmm)."""
    return (torch.addmm if inp.dim() == 2 else torch.baddbmm)(inp, a, b, beta=beta, alpha=alpha)


def msign(x, steps=MSIGN_STEPS, dtype=None):
    """Polar factor U V^T of x = U S V^T (..., m, n) by odd polynomial steps X <- a X + (b XX^T + c (XX^T)^2) X
    (bf16 on CUDA, fp32 elsewhere unless dtype is given). The Frobenius scaling puts the singular values in [0, 1]."""
    dtype = dtype or (torch.bfloat16 if x.is_cuda else torch.float32)
    transpose = x.size(-2) > x.size(-1)
    y = x.to(dtype)
    y = y.mT if transpose else y  # wide: the Gram y y^T is the small one
    y = y / y.norm(dim=(-2, -1), keepdim=True).clamp(min=EPS)
    for a, b, c in steps:  # the op order of torch.optim.Muon's Newton-Schulz, so steps=(MUON_NS,)*5 in bf16 matches it
        gram = y @ y.mT  # (..., n, n)
        y = _addmm(y, _addmm(gram, gram, gram, beta=b, alpha=c), y, beta=a)
    return (y.mT if transpose else y).to(x.dtype)


def project(s, geometry):
    """P: the entries of symmetric (..., n, n) matrices that the geometry's constraint fixes."""
    if geometry == "stiefel":
        return s
    diag = torch.diag_embed(torch.diagonal(s, dim1=-2, dim2=-1))
    return s - diag if geometry == "dgram" else diag


def rms(h):
    """Root mean square of the entries of each (..., n, n) matrix."""
    return h.norm(dim=(-2, -1)) / math.sqrt(h.size(-1) * h.size(-2))


def tangent_direction(w, g, geometry, lam=None, iters=20, alpha=0.1, tol=1e-3, check_every=5,
                      steps=(MUON_NS,) * 5, dtype=None):
    """(A, Lambda, iterations run, rms(H) per matrix) by dual ascent: A = msign(G + 2 W Lambda) with Lambda after
    the ascent, so that P(W^T A + A^T W) ~ 0. w, g (..., m, n) tall fp32, w on its manifold. The start: lam (warm)
    or the multiplier that makes G + 2 W Lambda tangent when W^T W is diagonal, -P(W^T G + G^T W) / (2 (d_i^2 +
    d_j^2)) (-1/4 P(...) on unit columns: stiefel, oblique). msign is Muon's quintic (`steps`) in `dtype` (msign's
    default if None), and so are the products with W (their results in fp32) and the returned A: with Lambda = 0, A is
    Muon's update. The returned Lambda has taken the last iteration's step too, ready to warm-start the next step."""
    lo = dtype or (torch.bfloat16 if w.is_cuda else torch.float32)
    wl, gl = w.to(lo), g.to(lo)
    scale = 2 / gram_sum(w)  # (..., n, n): 1 on unit columns; the dual's curvature grows with d_i^2 + d_j^2
    if lam is None:
        lam = -sym_part(wl.mT @ gl, geometry) * (scale / 4)
    for k in range(iters):
        a = msign(_addmm(gl, wl, lam.to(lo), beta=1, alpha=2), steps, lo)  # msign(G + 2 W Lambda) (..., m, n)
        h = sym_part(wl.mT @ a, geometry)  # P(W^T A + A^T W)
        lam = lam - alpha * (1 - k / iters) * scale * h
        if (k + 1) % check_every == 0 and k + 1 < iters and bool(rms(h).max() < tol):  # one host sync per check
            break
    return a, lam, k + 1, rms(h)


def sym_part(s, geometry):
    """P(S + S^T) in fp32 for S = W^T X (..., n, n): W^T X + X^T W from one product."""
    s = s.float()
    return project(s + s.mT, geometry)


def gram_sum(w):
    """d_i^2 + d_j^2 (..., n, n), d the column norms of w (..., m, n)."""
    d2 = w.square().sum(-2)
    return d2.unsqueeze(-1) + d2.unsqueeze(-2)


def polar(x, steps=None):
    """Polar factor x (x^T x)^(-1/2) of tall matrices (..., m, n) one step away from orthonormal columns, hence well
    conditioned. steps=None: exact, from the eigendecomposition of the Gram; steps=k: k steps
    X <- X (I - E/2 + 3 E^2/8 - 5 E^3/16), E = X^T X - I (the series of (I + E)^(-1/2) to E^3), each taking |E| = e
    to about e^4."""
    if steps is None:
        lam, v = torch.linalg.eigh(x.mT @ x)  # (..., n), (..., n, n)
        return x @ ((v * lam.clamp(min=1e-12).rsqrt().unsqueeze(-2)) @ v.mT)
    for _ in range(steps):
        e = x.mT @ x  # (..., n, n)
        e.diagonal(dim1=-2, dim2=-1).sub_(1)  # E = X^T X - I
        t = e * (-5 / 16)
        t.diagonal(dim1=-2, dim2=-1).add_(3 / 8)  # 3/8 - 5E/16
        t = e @ t
        t.diagonal(dim1=-2, dim2=-1).sub_(1 / 2)  # -1/2 + 3E/8 - 5E^2/16
        x = _addmm(x, x, e @ t, beta=1)  # X (I + E t)
    return x


def retract(w, geometry, retraction="clean", near=True):
    """Back onto the manifold, w (..., m, n) tall fp32. stiefel: the polar factor; dgram: Q diag(Q^T W) with Q the
    polar factor of W with unit columns (clean: idempotent) or, retraction="reference", U V^T diag(sigma) from the SVD
    (the paper's: column norms re-sorted by size, not idempotent); oblique: unit columns. near: w is one step away
    from the manifold (else msign finds the polar factors). Stiefel's step moves W^T W by about lr^2 from I, which one
    step of polar's series removes to fp32 precision; DGram's unit-norm columns move by lr / d (up to 0.5 for the small
    column norms of a fresh init), so its polar factor is the exact one."""
    def polar_factor(x, steps=None):
        return polar(x, steps) if near else msign(x, dtype=torch.float32)
    if geometry == "stiefel":
        return polar_factor(w, STIEFEL_NS)
    if geometry == "dgram":
        if retraction == "reference":
            u, s, vt = torch.linalg.svd(w, full_matrices=False)
            return (u @ vt) * s.unsqueeze(-2)
        q = polar_factor(w / w.norm(dim=-2, keepdim=True).clamp(min=EPS))
        return q * (q * w).sum(-2, keepdim=True)  # column j scaled by q_j . w_j
    if geometry == "oblique":
        return w / w.norm(dim=-2, keepdim=True).clamp(min=EPS)
    return w


def tall(w):
    """w as a tall matrix (a view): transposed when it has more columns than rows."""
    return w.T if w.size(0) < w.size(1) else w


def adjusted_lr(lr, shape):
    """torch.optim.Muon's default ('original') scaling: lr sqrt(max(1, rows / cols))."""
    return lr * math.sqrt(max(1.0, shape[0] / shape[1]))


class ManifoldMuon(torch.optim.Optimizer):
    """Muon with a manifold per param group (group["geometry"] in GEOMETRIES). With scaling="rms", the Nesterov
    momentum, learning rate and weight decay of torch.optim.Muon; geometry "none" is then torch.optim.Muon's step
    exactly (with ns_dtype="bfloat16"; "float32" runs its Newton-Schulz in fp32, for CPUs without native bf16).
    Call project_() once on fresh weights (not when resuming) to put them on their manifolds."""

    def __init__(self, params, lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0, geometry="none",
                 iters=2, alpha=0.3, tol=1e-3, check_every=5, warm_start=False, scaling="rms", init="reference",
                 retraction="clean", ns_steps=5, ns_dtype="bfloat16"):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, geometry=geometry,
                        iters=iters, alpha=alpha, tol=tol, check_every=check_every, warm_start=warm_start,
                        scaling=scaling, init=init, retraction=retraction, ns_steps=ns_steps, ns_dtype=ns_dtype)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for key, allowed in (("geometry", GEOMETRIES), ("scaling", SCALINGS), ("init", INITS),
                                 ("retraction", RETRACTIONS)):
                if group[key] not in allowed:
                    raise ValueError(f"{key}={group[key]!r}: choose one of {', '.join(allowed)}")
            if group["iters"] < 1 or group["check_every"] < 1:
                raise ValueError(f"iters={group['iters']} (dual ascent steps K) and check_every="
                                 f"{group['check_every']} must be >= 1")
            names = group.get("names") or [f"param {i}" for i in range(len(group["params"]))]
            for name, p in zip(names, group["params"]):
                if p.dim() != 2:
                    raise ValueError(f"{name} has shape {tuple(p.shape)}: manifold Muon (geometry="
                                     f"{group['geometry']!r}) needs matrices; put it in an AdamW group")

    @torch.no_grad()
    def project_(self):
        """Put every constrained weight on its manifold. init="reference" (the paper's): the retraction of the
        current value, so DGram keeps its singular values (U V^T diag(sigma)); init="polar": the polar factor
        (all singular values 1, where stiefel, dgram and oblique meet)."""
        for group in self.param_groups:
            geometry = group["geometry"]
            if geometry == "none":
                continue
            for p in group["params"]:
                w = tall(p)
                if group["init"] == "polar":
                    w.copy_(msign(w.float(), dtype=torch.float32))
                else:
                    w.copy_(retract(w.float(), geometry, "reference", near=False))

    def _momentum(self, p, group):
        """The direction fed to the update: torch.optim.Muon's Nesterov lerp (rms) or the paper's raw sum."""
        state, mu = self.state[p], group["momentum"]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p.grad)
        buf = state["momentum_buffer"]
        if group["scaling"] == "reference":  # buf = mu buf + g; g + mu buf
            buf.mul_(mu).add_(p.grad)
            return p.grad + mu * buf if group["nesterov"] else buf
        buf.lerp_(p.grad, 1 - mu)
        return p.grad.lerp(buf, mu) if group["nesterov"] else buf

    @torch.no_grad()
    def step(self, closure=None):
        """Momentum, then per matrix Muon's update (none) or, per bucket of equal shapes, the batched dual ascent
        and a retraction."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, reference = group["lr"], group["scaling"] == "reference"
            buckets = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = self._momentum(p, group)
                if group["geometry"] == "none":
                    p.mul_(1 - lr * group["weight_decay"])
                    ns_dtype = getattr(torch, group["ns_dtype"])  # bfloat16: torch.optim.Muon's step exactly
                    step = msign(g, (MUON_NS,) * group["ns_steps"], ns_dtype)
                    p.add_(step, alpha=-(lr if reference else adjusted_lr(lr, p.shape)))
                    continue
                if not reference:
                    p.mul_(1 - lr * group["weight_decay"])
                buckets.setdefault(tuple(tall(p).shape), []).append((p, tall(g)))
            for bucket in buckets.values():
                self._constrained_step(bucket, group)
        return loss

    def _constrained_step(self, bucket, group):
        """One batched manifold step for same-shape matrices [(param, its tall momentum), ...]."""
        geometry, lr = group["geometry"], group["lr"]
        w = torch.stack([tall(p).float() for p, _ in bucket])  # (k, m, n)
        g = torch.stack([t.float() for _, t in bucket])
        if group["scaling"] == "rms":  # unit RMS entries: alpha is in units of G's entries
            g = g * (math.sqrt(g[0].numel()) / g.norm(dim=(-2, -1), keepdim=True).clamp(min=EPS))
        states = [self.state[p] for p, _ in bucket]
        warm = group["warm_start"] and all("dual" in st for st in states)
        a, lam, iters, h_rms = tangent_direction(
            w, g, geometry, torch.stack([st["dual"] for st in states]) if warm else None, iters=group["iters"],
            alpha=group["alpha"], tol=group["tol"], check_every=group["check_every"],
            steps=(MUON_NS,) * group["ns_steps"], dtype=getattr(torch, group["ns_dtype"]))
        step_lr = lr if group["scaling"] == "reference" else adjusted_lr(lr, bucket[0][0].shape)
        new = retract(torch.add(w, a, alpha=-step_lr), geometry, group["retraction"])  # a in the msign dtype
        for i, ((p, _), st) in enumerate(zip(bucket, states)):
            tall(p).copy_(new[i])
            st["dual"], st["dual_iters"], st["tangent_rms"] = lam[i], iters, h_rms[i]  # tensors: no host sync


def module_of(name):
    """'attn', 'mlp' or 'other': the module of a hidden matrix, by its parameter name."""
    return "attn" if ".attn." in name else "mlp" if ".mlp." in name else "other"


def module_geometry(name, attn="none", mlp="none"):
    """Geometry of a hidden matrix by its parameter name: attn for '.attn.', mlp for '.mlp.', else none."""
    return {"attn": attn, "mlp": mlp}.get(module_of(name), "none")


def geometry_groups(named, attn="none", mlp="none", **group):
    """Param groups of ManifoldMuon, one per module (attn, mlp, other) with its geometry, from (name, param) pairs;
    group holds the other keys."""
    out = {}
    for name, p in named:
        g = out.setdefault(module_of(name), {"params": [], "names": []})
        g["params"].append(p)
        g["names"].append(name)
    return [{**g, **group, "module": mod, "geometry": {"attn": attn, "mlp": mlp}.get(mod, "none")}
            for mod, g in out.items()]
