"""
In-context linear regression prompts (Garg et al.; von Oswald et al.; Ahn et al. 2310.01082).

A prompt holds n pairs (x_i, y_i) and a query x_q, with x in R^d, w ~ N(0, I_d), y = w^T x (+ noise).
It is stored as the (d+1) x (n+1) matrix Z = [[x_1 .. x_n x_q], [y_1 .. y_n 0]]; the query's label
slot is zero and its true label y_q is the regression target.
"""

import torch

DISTS = ("normal", "sphere", "heavy")
HEAVY_SCALES = ("paper", "chi2")


def gamma_scale(k, heavy_scale="paper"):
    """Scale theta of the radius r ~ Gamma(k, theta): the paper's sqrt(10 / k) (Ahn et al.'s code: Var r = k theta^2
    = 10 for every k; k = 2.5 gives theta = 2, i.e. N(0, I_5)), or "chi2": 2 (r ~ chi^2_{2k}, the lab's first form)."""
    return (10.0 / k) ** 0.5 if heavy_scale == "paper" else 2.0


def covariates(shape, d, dist="normal", k=0.1, cov=None, heavy_scale="paper"):
    """x of shape (*shape, d). normal: N(0, I); sphere: uniform on the unit sphere; heavy: u * sqrt(r) with
    u uniform on the sphere and r ~ Gamma(shape=k, scale=gamma_scale(k)), so E||x||^2 = k theta (paper: sqrt(10 k),
    1 at k = 0.1). cov (d x d, positive definite) then maps x -> cov^{1/2} x (Cholesky factor)."""
    if dist not in DISTS:
        raise ValueError(f"dist={dist!r} is not valid: choose one of {', '.join(DISTS)}")
    if heavy_scale not in HEAVY_SCALES:
        raise ValueError(f"heavy_scale={heavy_scale!r} is not valid: choose one of {', '.join(HEAVY_SCALES)}")
    if not k > 0:
        raise ValueError(f"k={k} must be > 0 (the Gamma shape of the heavy-tailed radius)")
    g = torch.randn(*shape, d)
    if dist != "normal":
        g = g / g.norm(dim=-1, keepdim=True)  # u: uniform on the sphere
        if dist == "heavy":
            rate = torch.tensor(1.0 / gamma_scale(k, heavy_scale))
            r = torch.distributions.Gamma(torch.tensor(float(k)), rate).sample((*shape, 1))
            g = g * r.sqrt()
    if cov is not None:
        cov = torch.as_tensor(cov, dtype=g.dtype)
        if cov.shape != (d, d):
            raise ValueError(f"cov has shape {tuple(cov.shape)}: it must be ({d}, {d})")
        g = g @ torch.linalg.cholesky(cov).T  # x -> L x with L L^T = cov
    return g


def prompts(batch, d=5, n=20, dist="normal", k=0.1, noise=0.0, cov=None, dtype=None, heavy_scale="paper"):
    """Z: (batch, d+1, n+1) prompt matrices and y_q: (batch,) query labels (dtype: default dtype). Global RNG."""
    x = covariates((batch, n + 1), d, dist, k, cov, heavy_scale)  # (B, n+1, d)
    w = torch.randn(batch, d, 1)  # (B, d, 1)
    y = (x @ w).squeeze(-1) + noise * torch.randn(batch, n + 1)  # (B, n+1)
    z = torch.cat([x.transpose(1, 2), y.unsqueeze(1)], dim=1)  # (B, d+1, n+1)
    yq = z[:, d, n].clone()  # (B,)
    z[:, d, n] = 0.0  # the query's label slot is empty
    dtype = dtype or torch.get_default_dtype()
    return z.to(dtype), yq.to(dtype)


def expected_sq_norm(d, dist="normal", k=0.1, heavy_scale="paper"):
    """E||x||^2 of covariates(dist) without cov: d (normal), 1 (sphere), k theta (heavy)."""
    return {"normal": float(d), "sphere": 1.0, "heavy": k * gamma_scale(k, heavy_scale)}[dist]


def ls_weights(z, ridge=0.0):
    """Least-squares (ridge) solution w* per prompt from the n context pairs: (B, d)."""
    d, n = z.shape[1] - 1, z.shape[2] - 1
    x, y = z[:, :d, :n], z[:, d, :n]  # (B, d, n), (B, n)
    gram = x @ x.transpose(1, 2) / n + ridge * torch.eye(d, dtype=z.dtype)  # (B, d, d)
    return torch.linalg.solve(gram, (x @ y.unsqueeze(-1)).squeeze(-1) / n)

