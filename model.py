"""
GPT as an optimizer: nanoGPT's transformer plus the YuriiFormer update-rule suite.

Each layer is one step of an optimization method on the token states X (the residual stream).
The oracles are nanoGPT's modules: A(Z) = attn(ln_1(Z)) and M(Z) = mlp(ln_2(Z)). The template
(gd, polyak, nesterov) says how a step uses an oracle; the splitting (lie_trotter, euler, imex)
says how one layer combines the two oracles. One layer's step is Block.forward; GPT.forward is embed, the
blocks, head and loss. The math is fixed by docs/update-rules.md and summarised in README.md.
The normalized family (nGPT, nuGPT: arch="ngpt"/"nugpt") is gradient descent on the unit sphere.
"""

import math
import os
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.autograd.function import once_differentiable

CHOICES = {
    "update": ("gd", "polyak", "nesterov"),
    "split": ("lie_trotter", "euler", "imex"),
    "v0": ("embed", "zero"),
    "arch": ("gpt", "ngpt", "nugpt"),
    "position": ("learned", "rope"),
    "activation": ("gelu", "gelu_tanh", "swiglu"),
}
COEF_NAMES = ("mu", "beta", "gamma_a", "gamma_m", "mu_a", "beta_a", "mu_m", "beta_m", "gamma_m")


def _variant(update, split, lnv=True, v0="embed", imex_iters=1, arch="gpt", bias=None):
    """Every variant field, so that a preset fully replaces another one."""
    d = dict(update=update, split=split, lnv=lnv, v0=v0, imex_iters=imex_iters, arch=arch)
    return d if bias is None else {**d, "bias": bias}


PRESETS = {  # the names users type (spec "Names")
    "baseline": _variant("gd", "lie_trotter", lnv=False, v0="zero"),
    "gd_euler": _variant("gd", "euler", lnv=False, v0="zero"),
    "gd_imex2": _variant("gd", "imex", lnv=False, v0="zero", imex_iters=2),
    "polyak": _variant("polyak", "lie_trotter"),
    "polyak_euler": _variant("polyak", "euler"),
    "yuriiformer": _variant("nesterov", "lie_trotter"),
    "nesterov_euler": _variant("nesterov", "euler"),
    "imex": _variant("nesterov", "imex", imex_iters=1),
    "imex2": _variant("nesterov", "imex", imex_iters=2),
    "ngpt": _variant("gd", "lie_trotter", lnv=False, v0="zero", arch="ngpt", bias=False),
}


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linears and LayerNorms (nanoGPT's default)
    update: str = "gd"  # template: gd | polyak | nesterov
    split: str = "lie_trotter"  # splitting: lie_trotter | euler | imex
    imex_iters: int = 1  # k fixed-point sweeps of the implicit MLP step (split="imex")
    lnv: bool = False  # LayerNorm on every velocity update
    v0: str = "zero"  # initial velocity: "embed" (own wte_v/wpe_v tables) or "zero"
    embed_extra: bool = False  # a second token + position table on X_0, zero at init (control for V_0's tables)
    mu_init: float = 0.5  # initial look-ahead mu = sigmoid(a), in (0, 1)
    beta_init: float = 0.5  # initial momentum beta = sigmoid(b), in (0, 1)
    gamma_init: float = math.log(2)  # initial step gamma = softplus(c) > 0
    arch: str = "gpt"  # gpt | ngpt | nugpt (normalized transformer family)
    ref_width: int = 0  # nuGPT: reference width (m_w = n_embd / ref_width)
    ref_depth: int = 0  # nuGPT: reference depth (m_L = n_layer / ref_depth)
    position: str = "learned"  # learned (a wpe table, GPT-2) | rope (rotary q, k; nGPT's choice)
    activation: str = "gelu"  # gelu (GPT-2's 4x MLP) | swiglu (u * silu(v), hidden 4x; nGPT's choice)
    shortlist: int = 0  # K > 0: tables and head over the K-1 most frequent tokens + 1 tail class (set_shortlist)

    def __post_init__(self):
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self):
        """What is wrong with this config, one message per problem (each names its field)."""
        out = [f"{name}={getattr(self, name)!r} is not valid: choose one of {', '.join(allowed)}"
               for name, allowed in CHOICES.items() if getattr(self, name) not in allowed]
        out += [f"{name}={getattr(self, name)!r} must be a positive integer"
                for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "imex_iters")
                if not isinstance(getattr(self, name), int) or getattr(self, name) < 1]
        if not isinstance(self.shortlist, int) or self.shortlist < 0:
            out.append(f"shortlist={self.shortlist!r} must be 0 (off) or a positive integer")
        out += [f"{name}={getattr(self, name)!r} must be True or False"
                for name in ("bias", "lnv", "embed_extra") if not isinstance(getattr(self, name), bool)]
        if out:  # the rules below assume valid names, numbers and flags
            return out
        if self.n_embd % self.n_head:
            out.append(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            out.append(f"dropout={self.dropout} must be in [0, 1)")
        if self.split != "imex" and self.imex_iters != 1:
            out.append(f"imex_iters={self.imex_iters} only applies to split='imex' (got split={self.split!r})")
        out += [f"{name}={getattr(self, name)} must be in (0, 1) (it is a sigmoid)"
                for name in ("mu_init", "beta_init") if not 0.0 < getattr(self, name) < 1.0]
        if not self.gamma_init > 0.0:
            out.append(f"gamma_init={self.gamma_init} must be > 0 (it is a softplus)")
        defaults = {f.name: f.default for f in fields(self)}
        if self.update == "gd":
            out += [f"{name}={bad!r} needs a velocity, which update='gd' has not: use update='polyak' or 'nesterov', "
                    f"or {name}={defaults[name]!r}" for name, bad in (("lnv", True), ("v0", "embed"))
                    if getattr(self, name) == bad]
            out += [f"{name} has no effect with update='gd' (no coefficients): remove it"
                    for name in ("mu_init", "beta_init", "gamma_init") if getattr(self, name) != defaults[name]]
        if self.update == "polyak" and self.mu_init != defaults["mu_init"]:
            out.append("mu_init has no effect with update='polyak' (no look-ahead): use update='nesterov'")
        if self.arch != "gpt" and (self.update != "gd" or self.split != "lie_trotter" or self.bias):
            out.append(f"arch={self.arch!r} supports update='gd', split='lie_trotter', bias=False only")
        if self.embed_extra and self.arch != "gpt":
            out.append(f"embed_extra=True needs arch='gpt' (got arch={self.arch!r})")
        if self.shortlist and not 2 <= self.shortlist < self.vocab_size:
            out.append(f"shortlist={self.shortlist} must be in [2, vocab_size={self.vocab_size}) (or 0: off)")
        if self.shortlist and self.arch != "gpt":
            out.append(f"shortlist needs arch='gpt' (its tied head; got arch={self.arch!r})")
        if (self.arch == "nugpt") != (self.ref_width > 0 and self.ref_depth > 0):
            out.append("ref_width and ref_depth (both > 0) are used exactly when arch='nugpt'")
        return out

    @property
    def velocity(self):
        return self.update != "gd"


def layer_ids(n_layer, level=0, offset=0):
    """Layers of multilevel level j: every 2^j-th one starting at offset (level 0: all)."""
    s = 2**level
    if level < 0 or n_layer % s or not 0 <= offset < s:
        raise ValueError(f"level {level} (offset {offset}) needs n_layer={n_layer} divisible by {s} and 0 <= offset < {s}")
    return range(offset, n_layer, s)


def logit(p):
    return math.log(p / (1.0 - p))


def softplus_inv(y):
    return math.log(math.expm1(y))


def unit(x, dim=-1):
    return F.normalize(x, dim=dim, eps=1e-6)


def gain_storage(config):
    """Stored size of the gains alpha, s_qk, s_z: nGPT 1/sqrt(d), so their relative Adam step grows as sqrt(d);
    nuGPT a constant 0.03, so it does not depend on the width."""
    return 0.03 if config.arch == "nugpt" else config.n_embd**-0.5


def rope_tables(head_dim, length, base=10000.0):
    """cos, sin (length, head_dim) of rotary embeddings: position t turns dims (i, i + hs/2) by t * base^(-2i/hs)."""
    freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (hs/2,)
    angle = torch.outer(torch.arange(length, dtype=torch.float32), freq)  # (length, hs/2)
    return torch.cat([angle.cos()] * 2, dim=-1), torch.cat([angle.sin()] * 2, dim=-1)


def rotate(x, cos, sin):
    """RoPE on x (B, nh, T, hs) with cos, sin (T, hs): x cos + rotate_half(x) sin."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat([-x2, x1], dim=-1) * sin.to(x.dtype)


class Scale(nn.Module):
    """nGPT's learned scale: stored as `init_scale`-sized values, used times init/init_scale (so Adam's step on the
    stored value, ~lr, moves the effective one by ~lr * init/init_scale)."""

    def __init__(self, size, init, init_scale):
        super().__init__()
        self.mult = init / init_scale
        self.s = nn.Parameter(torch.full((size,), init_scale))

    def forward(self):
        return self.s * self.mult


class KVCache:
    """Keys and values of one attention layer, preallocated to block_size, and pos: the number cached so far, a
    0-dim tensor, so that a decoding step has fixed shapes and no Python state (it compiles once)."""

    def __init__(self, batch, n_head, max_len, head_dim, device=None, dtype=None):
        self.k = torch.zeros(batch, n_head, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.pos = torch.zeros((), dtype=torch.long, device=device)

    @property
    def n(self):
        return int(self.pos)

    def update(self, k, v):
        """Write k, v (B, nh, T, hs) at positions pos..pos+T-1; return the keys and values (B, nh, L, hs) and the
        mask (T, L) of the positions each new one attends to (cached ones and itself): L = max_len when compiled
        (fixed shapes), else the filled length."""
        t = self.pos + torch.arange(k.size(2), device=k.device)  # (T,)
        self.k.index_copy_(2, t, k.to(self.k.dtype))
        self.v.index_copy_(2, t, v.to(self.v.dtype))
        self.pos += k.size(2)
        if torch.compiler.is_compiling():  # fixed shapes: the whole cache, masked
            return self.k, self.v, torch.arange(self.k.size(2), device=k.device) <= t[:, None]
        n = self.n  # eager: only the filled part; a one-token step needs no mask
        mask = None if k.size(2) == 1 else torch.arange(n, device=k.device) <= t[:, None]  # (T, n)
        return self.k[:, :, :n], self.v[:, :, :n], mask


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout
        # nGPT: a scale per head and dimension
        self.s_qk = Scale(config.n_embd, 1.0, gain_storage(config)) if config.arch != "gpt" else None

    def qkv(self, x, rope=None):
        """Queries, keys, values (B, nh, T, hs) of x (B, T, C) and the softmax scale of q.k (None: 1/sqrt(hs));
        rope: (cos, sin) of the positions of x, applied to q and k (before nGPT's normalisation)."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # (B, T, C) each
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if rope is not None:
            q, k = rotate(q, *rope), rotate(k, *rope)
        scale = None
        if self.s_qk is not None:  # nGPT: unit q, k with a learned scale; softmax scale sqrt(hs)
            s_qk = self.s_qk().view(self.n_head, 1, C // self.n_head)  # (nh, 1, hs)
            q, k = unit(q) * s_qk, unit(k) * s_qk
            scale = math.sqrt(C // self.n_head)
        return q, k, v, scale

    def forward(self, x, cache=None, rope=None):
        B, T, C = x.size()
        q, k, v, scale = self.qkv(x, rope)
        mask = None
        if cache is not None:  # attend to the whole cache, masked: fixed shapes
            k, v, mask = cache.update(k, v)  # (B, nh, L, hs), (T, L) or None
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=cache is None, scale=scale)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """gelu: c_proj(gelu(c_fc x)); swiglu: c_fc gives u, v (4C each) and c_proj(u * silu(v))."""

    def __init__(self, config):
        super().__init__()
        self.swiglu, hidden = config.activation == "swiglu", 4 * config.n_embd
        self.c_fc = nn.Linear(config.n_embd, 2 * hidden if self.swiglu else hidden, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")  # gelu_tanh: GPT-2's
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        # nGPT: unit inputs and rows give cosines ~ 1/sqrt(d); a learned scale times sqrt(d) restores the range of the
        # activation's input (GELU: h; SwiGLU: v, with s_u on u), stored at its init 1
        ngpt = config.arch != "gpt"
        self.s_u = Scale(hidden, 1.0, 1.0) if ngpt else None
        self.s_v = Scale(hidden, 1.0, 1.0) if ngpt and self.swiglu else None
        self.sqrt_d = math.sqrt(config.n_embd)

    def forward(self, x):
        h = self.c_fc(x)  # (B, T, 4C) or (B, T, 8C)
        if self.swiglu:
            u, v = h.chunk(2, dim=-1)  # (B, T, 4C) each
            if self.s_u is not None:
                u, v = u * self.s_u(), v * (self.s_v() * self.sqrt_d)
            return self.dropout(self.c_proj(u * F.silu(v)))
        if self.s_u is not None:
            h = h * (self.s_u() * self.sqrt_d)
        return self.dropout(self.c_proj(self.gelu(h)))


def times_step(gamma, step):
    """The coefficient gamma * step of an oracle; None where it is exactly 1."""
    if step == 1:
        return gamma
    return step if gamma is None else gamma * step


def weighted_sum(terms):
    """c_1 T_1 + c_2 T_2 + ... for (c, T) pairs, c None meaning 1."""
    u = None
    for c, t in terms:
        t = t if c is None else c * t
        u = t if u is None else u + t
    return u


class NormedSum(torch.autograd.Function):
    """N(c_1 T_1 + ...) for a bias-free LayerNorm N; backward recomputes the sum instead of storing it."""

    @staticmethod
    def forward(ctx, weight, eps, *cts):  # cts = c_1, T_1, c_2, T_2, ... (c: None, number or 0-dim tensor)
        y, mean, rstd = torch.native_layer_norm(weighted_sum(zip(cts[::2], cts[1::2])), weight.shape, weight, None, eps)
        ctx.is_tensor = [torch.is_tensor(a) for a in cts]
        ctx.consts = [None if is_t else a for a, is_t in zip(cts, ctx.is_tensor)]
        ctx.save_for_backward(weight, mean, rstd, *[a for a in cts if torch.is_tensor(a)])
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        weight, mean, rstd, *saved = ctx.saved_tensors
        saved = iter(saved)
        cts = [next(saved) if is_t else a for a, is_t in zip(ctx.consts, ctx.is_tensor)]
        u = weighted_sum(zip(cts[::2], cts[1::2]))
        gu, gw, _ = torch.ops.aten.native_layer_norm_backward(g, u, weight.shape, mean, rstd, weight, None,
                                                              [True, ctx.needs_input_grad[0], False])
        grads = []
        for i, (c, t) in enumerate(zip(cts[::2], cts[1::2])):
            grads.append((gu * t).sum() if ctx.needs_input_grad[2 + 2 * i] else None)  # d/dc
            grads.append((gu if c is None else gu * c).to(t.dtype) if ctx.needs_input_grad[3 + 2 * i] else None)
        return gw, None, *grads


def velocity(norm, *terms):
    """N(c_1 T_1 + c_2 T_2 + ...) for (c, T) terms (c None: 1; norm None: identity). With a bias-free LayerNorm N
    the sum is recomputed in backward instead of stored (NormedSum): one (B, T, C) tensor less, the same math."""
    if isinstance(norm, nn.LayerNorm) and norm.bias is None and torch.is_grad_enabled():
        return NormedSum.apply(norm.weight, norm.eps, *[a for term in terms for a in term])
    u = weighted_sum(terms)
    return u if norm is None else norm(u)


def template_step(x, v, o, mu=None, beta=None, gamma=None, norm=None, step=1):
    """gd: X+O(X); polyak: V=N(bV+gO(X)), X+V; nesterov: Y=X+mV, V=N(bV+gO(Y)), X+V. o is the oracle."""
    y = x if mu is None else x + mu * v  # look-ahead point
    momentum = [] if beta is None else [(beta, v)]
    v = velocity(norm, *momentum, (times_step(gamma, step), o(y)))
    return x + v, (None if beta is None else v)


def sphere_step(x, o, alpha):
    """nGPT: X <- Norm(X + |alpha| * (Norm(O(X)) - X)), a gradient step retracted onto the unit sphere."""
    return unit(x + alpha.abs() * (unit(o(x)) - x))


class Block(nn.Module):
    """One layer: one step of the update rule with the oracles A(Z) = attn(ln_1(Z)) and M(Z) = mlp(ln_2(Z)), its
    update coefficients and velocity norms."""

    def __init__(self, config):
        super().__init__()
        c, d = config, config.n_embd
        norm = (lambda: nn.LayerNorm(d, bias=c.bias)) if c.arch == "gpt" else nn.Identity
        self.ln_1, self.attn, self.ln_2, self.mlp = norm(), CausalSelfAttention(c), norm(), MLP(c)
        lt = c.split == "lie_trotter"
        names = ("mu_a", "beta_a", "gamma_a", "mu_m", "beta_m", "gamma_m") if lt else ("mu", "beta", "gamma_a", "gamma_m")
        init = dict(mu=logit(c.mu_init), beta=logit(c.beta_init), gamma=softplus_inv(c.gamma_init))
        for name in names if c.velocity else ():  # raw values: mu, beta = sigmoid(raw), gamma = softplus(raw)
            if not (name.startswith("mu") and c.update == "polyak"):
                self.register_parameter(name, nn.Parameter(torch.tensor(init[name.split("_")[0]])))
        for name in ("lnv_a", "lnv_m") if lt else ("lnv",):  # velocity LayerNorm N: learnable gain, no bias
            setattr(self, name, nn.LayerNorm(d, bias=False) if c.lnv else None)
        if c.arch != "gpt":  # per-dimension sphere step sizes, effective init 0.05 (0.05 / m_L for nuGPT)
            alpha = 0.05 * (c.ref_depth / c.n_layer if c.arch == "nugpt" else 1.0)
            self.alpha_a, self.alpha_m = (Scale(d, alpha, gain_storage(c)) for _ in range(2))
        self.sphere, self.split, self.imex_iters = c.arch != "gpt", c.split, c.imex_iters

    def forward(self, x, v, cache=None, rope=None, step=1):
        """One step from X, V (B, T, C) to the next X, V (V None without a velocity). The template step with an oracle O
        (gd: no mu, beta, gamma; polyak: no mu) is  Y = X + mu V;  V = N(beta V + g O(Y));  X = X + V.
            lie_trotter:  the template step with A (mu_a, beta_a, g_a, N_a), then with M (mu_m, beta_m, g_m, N_m)
            euler:        Y = X + mu V;  V = N(beta V + g_a A(Y) + g_m M(Y));  X = X + V
            imex:         Y = X + mu V;  U = beta V + g_a A(Y);  W = N(U), k times W = N(U + g_m M(X + W));
                          X = X + W;  V = W
            ngpt, nugpt:  X = Norm(X + |alpha_a| (Norm(A(X)) - X)), then the same with M and alpha_m
        N: the velocity LayerNorm (lnv; else the identity); g = step * gamma, step = 2^j on multilevel level j.
        cache: this layer's KVCache; rope: (cos, sin) of the positions."""
        def A(z):
            return self.attn(self.ln_1(z), cache, rope)

        def M(z):
            return self.mlp(self.ln_2(z))

        if self.sphere:
            x = sphere_step(x, A, step * self.alpha_a())
            return sphere_step(x, M, step * self.alpha_m()), v
        if self.split == "lie_trotter":
            x, v = template_step(x, v, A, *self.coef("mu_a", "beta_a", "gamma_a"), self.lnv_a, step)
            return template_step(x, v, M, *self.coef("mu_m", "beta_m", "gamma_m"), self.lnv_m, step)
        mu, beta, gamma_a, gamma_m = self.coef("mu", "beta", "gamma_a", "gamma_m")
        ga, gm = times_step(gamma_a, step), times_step(gamma_m, step)
        y = x if mu is None else x + mu * v  # look-ahead point Y
        momentum = [] if beta is None else [(beta, v)]
        if self.split == "euler":
            w = velocity(self.lnv, *momentum, (ga, A(y)), (gm, M(y)))
        else:  # imex: k fixed-point sweeps of the implicit MLP step
            u = velocity(None, *momentum, (ga, A(y)))
            w = velocity(self.lnv, (None, u))
            for _ in range(self.imex_iters):
                w = velocity(self.lnv, (None, u), (gm, M(x + w)))
        return x + w, (None if beta is None else w)

    def coef(self, *names):
        """Effective coefficients by name (mu, beta = sigmoid, gamma = softplus of the raw value); None if absent."""
        raw = [self._parameters.get(n) for n in names]  # not getattr: nn.Module raises (slowly) on absent names
        return [None if p is None else torch.sigmoid(p) if n.startswith(("mu", "beta")) else F.softplus(p)
                for n, p in zip(names, raw)]

    def coefficients(self):
        """Effective coefficient values as floats: mu_a..gamma_m (lie_trotter) or mu, beta, gamma_a, gamma_m."""
        names = [n for n, _ in self.named_parameters(recurse=False) if n in COEF_NAMES]
        out = {n: c.item() for n, c in zip(names, self.coef(*names))}
        for name in ("alpha_a", "alpha_m"):
            if hasattr(self, name):
                out[name] = getattr(self, name)().abs().mean().item()
        return out


def shortlist_loss(logits, targets, token_class, tail_logq):
    """Mean -log p(t), p(t) = softmax(logits)[class(t)] q(t): logits (N, K), targets (N,) token ids (-1: ignored)."""
    keep = targets >= 0
    t = targets.clamp(min=0)
    ce = F.cross_entropy(logits, torch.where(keep, token_class[t], -1), ignore_index=-1)
    return ce - (tail_logq[t] * keep).sum() / keep.sum()


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = c = config
        d, rows = c.n_embd, c.shortlist or c.vocab_size  # rows: one per token, or per shortlist class
        learned = c.position == "learned"
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(rows, d),
            **({"wpe": nn.Embedding(c.block_size, d)} if learned else {}),
            drop=nn.Dropout(c.dropout),
            h=nn.ModuleList([Block(c) for _ in range(c.n_layer)]),
            ln_f=nn.LayerNorm(d, bias=c.bias) if c.arch == "gpt" else nn.Identity(),
        ))
        if c.v0 == "embed":
            self.transformer.wte_v = nn.Embedding(rows, d)
            if learned:
                self.transformer.wpe_v = nn.Embedding(c.block_size, d)
        if not learned:  # rotary tables, not parameters (not in the state dict)
            cos, sin = rope_tables(d // c.n_head, c.block_size)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.lm_head = nn.Linear(d, rows, bias=False)
        if c.shortlist:  # token -> class (K-1 = the tail) and log q(token | tail) (0 on the shortlist); set_shortlist
            self.register_buffer("token_class", torch.arange(c.vocab_size).clamp(max=c.shortlist - 1))
            self.register_buffer("tail_logq", torch.zeros(c.vocab_size))
            self.set_shortlist(torch.ones(c.vocab_size))
        if c.arch == "gpt":
            self.transformer.wte.weight = self.lm_head.weight  # weight tying (nanoGPT)
        else:  # nGPT: untied head and learned logit scale s_z (init sqrt(m_w) for nuGPT)
            sz = math.sqrt(d / c.ref_width) if c.arch == "nugpt" else 1.0
            self.s_z = Scale(c.vocab_size, sz, gain_storage(c))
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):  # GPT-2's scaled init of residual projections
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))
        self.normalize_weights()
        if c.embed_extra:  # created last and zero: the same initial weights and function as without them
            self.transformer.wte_x = nn.Embedding(rows, d)
            nn.init.zeros_(self.transformer.wte_x.weight)
            if learned:
                self.transformer.wpe_x = nn.Embedding(c.block_size, d)
                nn.init.zeros_(self.transformer.wpe_x.weight)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def layer_ids(self, level=0, offset=0):
        return layer_ids(self.config.n_layer, level, offset)

    @torch.no_grad()
    def set_shortlist(self, counts):
        """Shortlist = the K-1 most frequent tokens of counts (n,) (n <= vocab_size real tokens); the tail class
        spreads its probability as q(t) = (count_t + 1) / sum over the tail, so p(t) is a distribution over all n."""
        K, V = self.config.shortlist, self.config.vocab_size
        counts = torch.as_tensor(counts, dtype=torch.float64)
        top = torch.sort(counts, descending=True, stable=True).indices[:K - 1]
        cls = torch.full((V,), K - 1, dtype=torch.long)
        cls[top] = torch.arange(K - 1)
        q = torch.zeros(V, dtype=torch.float64)
        q[:len(counts)] = counts + 1  # ids from n on (padding) get q = 0: never predicted
        q[top] = 0
        logq = (q / q.sum()).log()
        logq[top] = 0
        self.token_class.copy_(cls)
        self.tail_logq.copy_(logq)

    def forward(self, idx, targets=None, level=0, offset=0, cache=None):
        """Logits and loss of idx (B, T) (targets None: the last position's logits, no loss). level, offset: the
        multilevel coarse level j (the blocks layer_ids(j, offset), each a 2^j times longer step); cache: a list of
        per-layer KVCaches (new_cache), filled and read."""
        x, v, rope = self.embed(idx, cache)  # X_0, V_0: (B, T, C)
        for i in self.layer_ids(level, offset):  # level 0: every block
            x, v = self.transformer.h[i](x, v, None if cache is None else cache[i], rope, 2**level)
        x = self.transformer.ln_f(x)
        if targets is None:  # inference: only the last position
            return self.head(x[:, [-1], :]), None  # (B, 1, vocab)
        logits = self.lm_head(x) if self.config.shortlist else self.head(x)  # (B, T, K) class logits or (B, T, vocab)
        return logits, self.loss(logits, targets)

    def embed(self, idx, cache=None):
        """X_0, V_0 (B, T, C) of tokens idx (B, T) placed after the cached positions (V_0 None without a velocity;
        nGPT: X_0 on the sphere), and the rotary (cos, sin) (T, hs) of those positions (None: learned positions)."""
        c, tr = self.config, self.transformer
        T = idx.size(1)
        past = 0 if cache is None or torch.compiler.is_compiling() else cache[0].n  # compiled: the caller checks
        if past + T > c.block_size:
            raise ValueError(f"sequence of length {past + T} is longer than block_size={c.block_size}")
        pos = torch.arange(T, dtype=torch.long, device=idx.device)  # (T,)
        if cache is not None:
            pos = pos + cache[0].pos  # after the cached positions
        learned = c.position == "learned"
        rope = None if learned else (self.rope_cos[pos], self.rope_sin[pos])  # (T, hs) each
        tok = self.token_class[idx] if c.shortlist else idx  # (B, T) table rows
        x = tr.wte(tok) + tr.wpe(pos) if learned else tr.wte(tok)
        if c.embed_extra:
            x = x + tr.wte_x(tok) + (tr.wpe_x(pos) if learned else 0)
        x = tr.drop(x)
        v = None
        if c.v0 == "embed":
            v = tr.drop(tr.wte_v(tok) + tr.wpe_v(pos) if learned else tr.wte_v(tok))
        elif c.velocity:
            v = torch.zeros_like(x)
        if c.arch != "gpt":
            x = unit(x)  # nGPT: X_0 on the sphere
        return x, v, rope

    def loss(self, logits, targets):
        """Mean cross-entropy (in >= fp32) of logits (B, T, vocab) at targets (B, T) (-1: ignored); with a shortlist,
        of the class logits (B, T, K): -log p(t) = -log softmax(logits)[class(t)] - log q(t) (shortlist_loss)."""
        flat = logits.view(-1, logits.size(-1)).to(torch.promote_types(logits.dtype, torch.float32))
        if self.config.shortlist:
            return shortlist_loss(flat, targets.view(-1), self.token_class, self.tail_logq)
        return F.cross_entropy(flat, targets.view(-1), ignore_index=-1)

    def head(self, x):
        """Logits of final states x (..., C) (after ln_f): the tied head, times nGPT's learned scale s_z. With a
        shortlist, log p(t) over every token: log softmax(class logits)[class(t)] + log q(t)."""
        logits = self.lm_head(x)
        if self.config.shortlist:
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # >= fp32
            return F.log_softmax(logits, dim=-1)[..., self.token_class] + self.tail_logq
        return logits * self.s_z() if self.config.arch != "gpt" else logits

    def logits(self, idx):
        """The head at every position of idx (B, T): (B, T, vocab) (log-probabilities with a shortlist, whose forward
        with targets gives its K class logits only)."""
        states = {}
        hook = self.transformer.ln_f.register_forward_hook(lambda m, args, h: states.__setitem__("h", h))
        try:
            self(idx)  # the final states of every position are captured; forward's head sees the last one only
        finally:
            hook.remove()
        return self.head(states["h"])

    def new_cache(self, batch, device=None, dtype=None):
        c = self.config
        return [KVCache(batch, c.n_head, c.block_size, c.n_embd // c.n_head, device, dtype) for _ in range(c.n_layer)]

    @torch.no_grad()
    def normalize_weights(self):
        """nGPT: put embedding and weight vectors back on the unit sphere along n_embd (GPT: nothing)."""
        if self.config.arch == "gpt":
            return
        for name, p in self.named_parameters():
            if p.dim() == 2:
                p.copy_(unit(p, dim=0 if name.endswith("c_proj.weight") else 1))

    def coefficients(self):
        """Per layer the effective update coefficients, e.g. {'0.mu_a': 0.5, ...}."""
        return {f"{i}.{k}": v for i, b in enumerate(self.transformer.h) for k, v in b.coefficients().items()}

    def param_groups(self):
        """(name, param) lists: 'matrix' hidden 2-D weights, 'embed' tables, 'head' (untied only),
        'scalar' norms/biases/scales, 'coef' update coefficients."""
        groups = {"matrix": [], "embed": [], "head": [], "scalar": [], "coef": []}
        for name, p in self.named_parameters():
            last = name.rsplit(".", 1)[-1]
            kind = ("coef" if last in COEF_NAMES and p.dim() == 0 else
                    "embed" if name.startswith(("transformer.wte", "transformer.wpe")) else
                    "head" if name == "lm_head.weight" else
                    "matrix" if p.dim() == 2 else "scalar")
            groups[kind].append((name, p))
        return groups

    def num_params(self, positions=True, v0_tables=True):
        """Parameter count; optionally without the position tables and/or the V_0 (or embed_extra) tables."""
        skip = set()
        if not positions:
            skip |= {f"transformer.{t}.weight" for t in ("wpe", "wpe_v", "wpe_x")}
        if not v0_tables:
            skip |= {f"transformer.{t}.weight" for t in ("wte_v", "wpe_v", "wte_x", "wpe_x")}
        return sum(p.numel() for n, p in self.named_parameters() if n not in skip)

    def flops_per_token(self, seq_len=None, level=0):
        """Training FLOPs per token (forward + backward = 3x forward), counting every oracle call:
        attention 8d^2 + 4Td, MLP 16d^2 (SwiGLU 24d^2; k times for imex), head 2dV (V = K with a shortlist);
        nanoGPT's 6N + 12LdT for the baseline."""
        c = self.config
        d, T = c.n_embd, seq_len or c.block_size
        mlp_calls = c.imex_iters if c.split == "imex" else 1
        layer = 8 * d * d + 4 * T * d + mlp_calls * (24 if c.activation == "swiglu" else 16) * d * d
        return 3 * (len(self.layer_ids(level)) * layer + 2 * d * (c.shortlist or c.vocab_size))

    @classmethod
    def from_checkpoint(cls, ckpt):
        """Model from a checkpoint of this repo or of nanoGPT (a dict or a path): model_args + model."""
        if isinstance(ckpt, (str, os.PathLike)):
            ckpt = torch.load(ckpt, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or not {"model_args", "model"} <= ckpt.keys():
            raise ValueError("not a checkpoint of this repo or nanoGPT: it needs 'model_args' and 'model' entries")
        known = {f.name for f in fields(GPTConfig)}
        unknown = set(ckpt["model_args"]) - known
        if unknown:
            raise ValueError(f"checkpoint model_args has unknown keys {sorted(unknown)}: written by a newer version?")
        model = cls(GPTConfig(**ckpt["model_args"]))
        sd = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in ckpt["model"].items()}
        sd = {k: v for k, v in sd.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}  # causal-mask buffers
        model.load_state_dict(sd)
        return model

    def model_args(self):
        return asdict(self.config)
