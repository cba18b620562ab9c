"""
The residual linear-attention transformer on prompt matrices, stepped by the templates of the repo's model.py.

Layer l has one oracle, linear self-attention O_l(Z) = (1/n) P_l Z M Z^T Q_l Z with M = diag(1, .., 1, 0)
(the query column is no key); no MLP, no LayerNorm. The residual stream Z is updated by model.template_step:
  gd:       Z <- Z + O_l(Z)
  polyak:   V <- beta_l V + gamma_l O_l(Z);            Z <- Z + V
  nesterov: V <- beta_l V + gamma_l O_l(Z + mu_l V);   Z <- Z + V
with V_0 = 0 and learned per-layer mu = sigmoid(a), beta = sigmoid(b), gamma = softplus(c), initialised as in
model.py (mu = beta = 0.5, gamma = ln 2). There is no velocity LayerNorm (lnv): a LayerNorm over a column
[x; y] of the prompt matrix would mix covariates with the label and has no meaning here.
The prediction is y_hat = -Z_L[d, n], minus the query's label slot (the sign of Ahn et al.).
Parametrizations: "paper" (Ahn et al.'s code: P_l = [[P, 0], [0, 1]], Q_l = [[Q, 0], [0, 0]] with P, Q in R^{d x d}
learned; their row-major code writes Q for our Q^T, the same family), "full" (P_l, Q_l any (d+1) x (d+1) matrices,
the corner included) and "sparse" (P_l = e e^T with e the label coordinate, Q_l = [[-A_l, 0], [0, 0]], A_l in
R^{d x d}: only the covariate block of Q_l is learned; the paper's zero_p ablation).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from model import logit, softplus_inv, template_step  # the repository root's model.py (run from the repo root)

PARAMS = ("paper", "full", "sparse")
UPDATES = ("gd", "polyak", "nesterov")


def attention(z, p, q):
    """O(Z) = (1/n) P Z M Z^T Q Z, M masking the last (query) column as a key. z: (B, d+1, n+1)."""
    n = z.size(-1) - 1
    keys = z[..., :n]  # (B, d+1, n)
    return p @ (keys @ keys.transpose(-1, -2)) @ q @ z / n  # (B, d+1, n+1)


class LinearTransformer(nn.Module):
    """n_layer residual linear-attention layers on (B, d+1, n+1) prompts -> predictions (B,).

    Exact optimizer reading (sparse weights): the covariate rows never change (P_l zeroes them) and the label
    row stays y - w_t^T X for a w_t in R^d (the query column has y = 0, so its slot is -w_t^T x_q). A layer maps
    w_t -> w_t + delta with delta = -A_l^T grad L(w_t), L(w) = (1/2n) sum_{i<=n} (w^T x_i - y_i)^2, since
    O_l(Z) has label row -(1/n) sum_i r_i x_i^T A_l X = -delta^T X for residuals r_i = y_i - w_t^T x_i. As this
    map is affine in w, the templates act on w: gd is preconditioned gradient descent, polyak heavy ball and
    nesterov Nesterov's method (v <- beta v - gamma A^T grad L(w + mu v), w <- w + v), from w_0 = 0, v_0 = 0.
    So Z_L = [[X], [y - w_L^T X]] and y_hat = w_L^T x_q, with w_L = icl_optimizer(z, L, ...) for hand_set weights.
    """

    def __init__(self, d=5, n_layer=3, param="paper", update="gd", init_std=0.05, mu_init=0.5, beta_init=0.5,
                 gamma_init=math.log(2), generator=None):
        super().__init__()
        if param not in PARAMS:
            raise ValueError(f"param={param!r} is not valid: choose one of {', '.join(PARAMS)}")
        if update not in UPDATES:
            raise ValueError(f"update={update!r} is not valid: choose one of {', '.join(UPDATES)}")
        if d < 1 or n_layer < 1:
            raise ValueError(f"d={d} and n_layer={n_layer} must be positive integers")
        self.d, self.n_layer, self.param, self.update = d, n_layer, param, update
        shape = (n_layer, d + 1, d + 1) if param == "full" else (n_layer, d, d)
        draw = lambda: nn.Parameter(init_std * torch.randn(*shape, generator=generator))  # noqa: E731
        if param == "sparse":
            self.A = draw()  # (L, d, d)
        else:
            self.P, self.Q = draw(), draw()  # (L, d+1, d+1) or (L, d, d) each
        if update != "gd":  # raw per-layer coefficients, as model.Block stores them
            self.b = nn.Parameter(torch.full((n_layer,), logit(beta_init)))
            self.c = nn.Parameter(torch.full((n_layer,), softplus_inv(gamma_init)))
        if update == "nesterov":
            self.a = nn.Parameter(torch.full((n_layer,), logit(mu_init)))

    def weights(self, i):
        """(P_l, Q_l), each (d+1, d+1)."""
        if self.param == "full":
            return self.P[i], self.Q[i]
        block = self.A if self.param == "sparse" else self.P
        corner = torch.zeros(self.d + 1, self.d + 1, dtype=block.dtype, device=block.device)
        corner[self.d, self.d] = 1.0  # e e^T: the label row passes the label through
        if self.param == "sparse":
            return corner, F.pad(-self.A[i], (0, 1, 0, 1))  # P = e e^T, Q = [[-A, 0], [0, 0]]
        return F.pad(self.P[i], (0, 1, 0, 1)) + corner, F.pad(self.Q[i], (0, 1, 0, 1))  # [[P, 0], [0, 1]], [[Q, 0], [0, 0]]

    def coef(self, i):
        """(mu, beta, gamma) of layer i = sigmoid(a), sigmoid(b), softplus(c); None where the template has none."""
        mu = torch.sigmoid(self.a[i]) if self.update == "nesterov" else None
        if self.update == "gd":
            return mu, None, None
        return mu, torch.sigmoid(self.b[i]), F.softplus(self.c[i])

    def coefficients(self):
        """Effective coefficients as floats, e.g. {'0.mu': 0.5, '0.beta': 0.5, '0.gamma': 0.69, ...}."""
        out = {}
        for i in range(self.n_layer):
            for name, c in zip(("mu", "beta", "gamma"), self.coef(i)):
                if c is not None:
                    out[f"{i}.{name}"] = c.item()
        return out

    def stream(self, z):
        """The residual stream after the last layer: z (B, d+1, n+1) -> Z_L (B, d+1, n+1)."""
        x = z
        v = None if self.update == "gd" else torch.zeros_like(z)  # V_0 = 0
        for i in range(self.n_layer):
            p, q = self.weights(i)
            x, v = template_step(x, v, lambda s, p=p, q=q: attention(s, p, q), *self.coef(i))
        return x

    def forward(self, z):
        """z: (B, d+1, n+1) -> y_hat: (B,), minus the query's label slot of Z_L."""
        return -self.stream(z)[:, self.d, -1]


@torch.no_grad()
def hand_set(model, eta=1.0, mu=0.5, beta=0.5, gamma=1.0):
    """The known construction: A_l = eta I (sparse) or P_l = e e^T, Q_l = [[-eta I, 0], [0, 0]] (full; paper: P = 0,
    Q = -eta I), and the same (mu, beta, gamma) in every layer. Then model(z) = predict(icl_optimizer(z, L, eta,
    update, mu, beta, gamma), z)."""
    d, L = model.d, model.n_layer
    if model.param == "sparse":
        model.A.copy_(eta * torch.eye(d).expand(L, d, d))
    elif model.param == "paper":
        model.P.zero_()
        model.Q.copy_(-eta * torch.eye(d).expand(L, d, d))
    else:
        model.P.zero_()
        model.P[:, d, d] = 1.0
        model.Q.zero_()
        model.Q[:, :d, :d] = -eta * torch.eye(d)
    if model.update != "gd":
        model.b.fill_(logit(beta))
        model.c.fill_(softplus_inv(gamma))
    if model.update == "nesterov":
        model.a.fill_(logit(mu))
    return model


def icl_grad(w, z):
    """grad L(w) of the in-context loss L(w) = (1/2n) sum_{i<=n} (w^T x_i - y_i)^2, per prompt. w: (B, d)."""
    d, n = z.size(1) - 1, z.size(2) - 1
    x, y = z[:, :d, :n], z[:, d, :n]  # (B, d, n), (B, n)
    r = (w.unsqueeze(1) @ x).squeeze(1) - y  # (B, n): w^T x_i - y_i
    return (x @ r.unsqueeze(-1)).squeeze(-1) / n  # (B, d)


def icl_optimizer(z, steps, eta=1.0, update="gd", mu=0.5, beta=0.5, gamma=1.0):
    """w_T (B, d) after `steps` steps from w_0 = v_0 = 0 of gd (w <- w - eta grad L(w)), heavy ball
    (v <- beta v - gamma eta grad L(w), w <- w + v) or Nesterov (the same with grad L(w + mu v))."""
    w = z.new_zeros(z.size(0), z.size(1) - 1)  # (B, d)
    v = torch.zeros_like(w)
    for _ in range(steps):
        if update == "gd":
            w = w - eta * icl_grad(w, z)
        else:
            look = w + mu * v if update == "nesterov" else w
            v = beta * v - gamma * eta * icl_grad(look, z)
            w = w + v
    return w


def predict(w, z):
    """w^T x_q per prompt: w (B, d), z (B, d+1, n+1) -> (B,)."""
    return (w * z[:, :-1, -1]).sum(-1)
