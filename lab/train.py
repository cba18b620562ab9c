"""
Training and landscape measurements for the linear-transformer lab (Ahn et al. 2310.01082 protocol).

Fresh prompts every step, SGD (momentum 0.9) or Adam (betas 0.9, 0.9) with gradient-norm clipping, constant
or cosine-decayed learning rate, loss E (y_hat - y_q)^2. Measurements use torch.func on the flat parameter vector
theta, on the paper's fixed batch (1000 prompts of seed 99):
- Hessian diagonal: h_i = (H e_i)_i from vmapped Hessian-vector products; robust condition = max|h| / median|h|.
- directional smoothness of a step u = theta_{t+1} - theta_t: u^T H(theta_t) u / ||u||^2.
- gradient noise: minibatch gradients (vmapped over minibatches) minus a large-batch gradient.
"""

import math
import time
from dataclasses import asdict, dataclass

import torch
from torch.func import functional_call, grad, jvp, vmap

from lab.data import prompts
from lab.model import LinearTransformer

OPTIMIZERS = ("sgd", "adam")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class LabConfig:
    """One run; the defaults are the paper's protocol (Ahn et al.'s code: 3 layers, d = 5, n = 20, batch 1000,
    10k steps, lr 0.02, Adam(W) betas 0.9/0.9 without weight decay or SGD momentum 0.9, clipping at 1.0)."""
    d: int = 5
    n: int = 20
    batch: int = 1000
    steps: int = 10_000
    dist: str = "normal"  # normal | sphere | heavy
    k: float = 0.1  # Gamma shape of the heavy-tailed radius
    heavy_scale: str = "paper"  # paper: Gamma scale sqrt(10/k) | chi2: scale 2 (the lab's first form)
    noise: float = 0.0  # label noise std
    param: str = "paper"  # paper | full | sparse (lab/model.py)
    update: str = "gd"  # gd | polyak | nesterov
    n_layer: int = 3
    init_std: float = 0.05
    optimizer: str = "adam"  # sgd (momentum 0.9) | adam (betas 0.9, 0.9, no weight decay)
    lr: float = 0.02
    clip: float = 1.0  # max global gradient norm
    schedule: str = "constant"  # constant | cosine (lr * (1 + cos(pi t / steps)) / 2)
    seed: int = 0  # data stream and initialisation
    curve_every: int = 50  # the loss on the fixed batch every this many steps (the paper's curves)
    smooth_every: int = 0  # > 0: directional smoothness and gradient norm every this many steps ...
    smooth_until: int = 2000  # ... up to this step (the paper: Adam's first 2000 iterations)
    hess_at: tuple = ()  # steps at which the robust condition number of the Hessian diagonal is measured
    hess_drop_zeros: bool = False  # False: the paper's max / median over every |diag H| entry, zeros included
    eval_at: tuple = ()  # steps (besides the last) with an evaluation on eval_batch prompts
    eval_batch: int = 20000
    eval_seed: int = 1234  # the same evaluation prompts for every run with the same data settings
    fixed_seed: int = 99  # the paper's fixed batch (1000 prompts) for curves, Hessians and smoothness
    dtype: str = "float32"  # float32 | float64: the model, the prompts (drawn in float32, the same stream) and losses
    skip_nonfinite: bool = False  # True: a minibatch with a non-finite loss or gradient norm is skipped and counted
    # (no update) instead of ending the run: tells an overflow on an outlier prompt from a divergence

    def __post_init__(self):
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule={self.schedule!r} is not valid: choose constant or cosine")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is not valid: choose one of {', '.join(DTYPES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r} is not valid: choose one of {', '.join(OPTIMIZERS)}")
        for name in ("d", "n", "batch", "steps", "n_layer", "eval_batch", "curve_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")

    def data(self, batch):
        return prompts(batch, self.d, self.n, self.dist, self.k, self.noise, dtype=DTYPES[self.dtype],
                       heavy_scale=self.heavy_scale)

    def fixed(self, batch=1000):
        """The fixed batch of the paper's measurements (RNG state restored)."""
        with torch.random.fork_rng():
            torch.manual_seed(self.fixed_seed)
            return self.data(batch)

    def model(self, generator=None):
        model = LinearTransformer(self.d, self.n_layer, self.param, self.update, self.init_std, generator=generator)
        return model.to(DTYPES[self.dtype])  # initialised in float32: the same weights in either dtype


def mse(pred, yq):
    return (pred - yq).square().mean()


def flat_params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def make_loss(model):
    """f(theta, z, yq): the loss of `model` with its parameters replaced by the flat vector theta."""
    names, shapes = zip(*[(n, p.shape) for n, p in model.named_parameters()])
    sizes = [s.numel() for s in shapes]

    def f(theta, z, yq):
        params = {n: t.view(s) for n, t, s in zip(names, theta.split(sizes), shapes)}
        return mse(functional_call(model, params, (z,)), yq)
    return f


def hvp(f, theta, u, *args):
    """H(theta) u for the Hessian of theta -> f(theta, *args) (forward-over-reverse)."""
    return jvp(lambda t: grad(f)(t, *args), (theta,), (u,))[1]


def hessian_diag(f, theta, *args, chunk_size=64):
    """diag H(theta): h_i = (H e_i)_i over all unit vectors e_i, vmapped in chunks."""
    eye = torch.eye(theta.numel(), dtype=theta.dtype)
    return vmap(lambda e: hvp(f, theta, e, *args), chunk_size=chunk_size)(eye).diagonal()


def robust_condition(diag, drop_zeros=True):
    """max |h_i| / median |h_i| of a Hessian diagonal (torch's median: the lower middle value), over its nonzero
    entries or (drop_zeros=False, the paper's) over all. Exact zeros are parameters the loss cannot see: rows 1..d
    of the last layer's full P, the last layer's paper P (it only moves covariate rows) and the first layer's mu and
    beta (they multiply V_0 = 0)."""
    a = diag.abs()
    a = a[a > 0] if drop_zeros else a
    return (a.max() / a.median()).item()


def directional_smoothness(f, theta, u, *args):
    """u^T H(theta) u / ||u||^2: the curvature along the step u."""
    return (u @ hvp(f, theta, u, *args) / (u @ u)).item()


def minibatch_grads(f, theta, zs, yqs, chunk_size=16):
    """Gradients of f at theta on K minibatches zs: (K, B, d+1, n+1), yqs: (K, B) -> (K, |theta|)."""
    return vmap(grad(f), in_dims=(None, 0, 0), chunk_size=chunk_size)(theta, zs, yqs)


def large_batch_grad(f, theta, cfg, total, chunk=None):
    """Gradient on `total` fresh prompts, as the mean of equal-sized chunk gradients (the loss is a mean)."""
    chunk = chunk or cfg.batch
    g = torch.zeros_like(theta)
    for _ in range(total // chunk):
        g += grad(f)(theta, *cfg.data(chunk))
    return g / (total // chunk)


def gradient_noise(cfg, n_batches=1000, big=200_000, seed=0):
    """Noise ||g_k - G|| of n_batches minibatch gradients (size cfg.batch) against a large-batch gradient G on
    `big` other prompts, at the initialisation of cfg.seed. Returns (norms (K,), noise vectors (K, |theta|))."""
    model = cfg.model(torch.Generator().manual_seed(10_000 + cfg.seed))
    f, theta = make_loss(model), flat_params(model)
    torch.manual_seed(seed)
    G = large_batch_grad(f, theta, cfg, big)
    noise = []
    for _ in range(0, n_batches, 50):
        zs, yqs = cfg.data(50 * cfg.batch)
        K = zs.size(0) // cfg.batch
        g = minibatch_grads(f, theta, zs.view(K, cfg.batch, *zs.shape[1:]), yqs.view(K, cfg.batch))
        noise.append(g - G)
    noise = torch.cat(noise)[:n_batches]
    return noise.norm(dim=1), noise


TRIM = 0.01  # the trimmed error leaves out the worst 1% of prompts


@torch.no_grad()
def evaluate(model, cfg):
    """Squared in-context error on cfg.eval_batch prompts drawn from cfg.eval_seed (RNG state restored): its mean
    (set by a few exploding prompts on heavy-tailed data), median and the mean without the worst 1% of prompts."""
    with torch.random.fork_rng():
        torch.manual_seed(cfg.eval_seed)
        z, yq = cfg.data(cfg.eval_batch)
    err = (model(z) - yq).square().double()
    err = torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))
    keep = torch.sort(err).values[:max(1, int(round(len(err) * (1 - TRIM))))]
    return dict(mean=err.mean().item(), median=err.median().item(), trimmed=keep.mean().item())


def optimizer(cfg, params):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.9), weight_decay=0.0)


def train(cfg, model=None):
    """One run: a dict with config, curve (fixed-batch loss every curve_every steps), fixed (its last value), evals /
    evals_median / evals_trimmed {step: fresh-prompt error}, eval (the last mean), rcond and hess_diag (at hess_at),
    smooth measurements, coef, time, diverged and diverged_at (the step of the first non-finite loss; with
    skip_nonfinite such minibatches are skipped instead: skipped counts them, skipped_at lists their steps (the first
    100) and skipped_prompt_norm is the largest Frobenius norm ||Z|| of a prompt in them); prompt_norm_max is the
    largest ||Z|| over all training minibatches."""
    torch.manual_seed(cfg.seed)  # the data stream; the initialisation has its own generator
    model = model or cfg.model(torch.Generator().manual_seed(10_000 + cfg.seed))
    params = list(model.parameters())
    opt = optimizer(cfg, params)
    cosine = lambda t: 0.5 * (1 + math.cos(math.pi * t / cfg.steps)) if cfg.schedule == "cosine" else 1.0  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
    f = make_loss(model)
    zf, yf = cfg.fixed()
    out = dict(config=asdict(cfg), curve_iter=[], curve=[], evals={}, evals_median={}, evals_trimmed={},
               rcond_iter=[], rcond=[], hess_diag=[], smooth_iter=[], smooth=[], grad_norm=[], diverged=False,
               diverged_at=None, skipped=0, skipped_at=[], skipped_prompt_norm=None, prompt_norm_max=0.0,
               layout=[[n, list(p.shape)] for n, p in model.named_parameters()])

    def record_eval(step):
        e = evaluate(model, cfg)
        out["evals"][step], out["evals_median"][step], out["evals_trimmed"][step] = e["mean"], e["median"], e["trimmed"]
        return e
    t0 = time.time()
    for it in range(cfg.steps + 1):
        if it % cfg.curve_every == 0 or it == cfg.steps:
            with torch.no_grad():
                out["curve"].append(mse(model(zf), yf).item())
            out["curve_iter"].append(it)
        if it in cfg.hess_at:
            h = hessian_diag(f, flat_params(model), zf, yf)
            out["rcond"].append(robust_condition(h, cfg.hess_drop_zeros))
            out["rcond_iter"].append(it)
            out["hess_diag"].append(h.tolist())  # layer-wise statistics: split by `layout`
        if it in cfg.eval_at:
            record_eval(it)
        if it == cfg.steps:
            break
        z, yq = cfg.data(cfg.batch)
        znorm = z.flatten(1).norm(dim=1).max().item()  # the batch's largest prompt ||Z||
        out["prompt_norm_max"] = max(out["prompt_norm_max"], znorm)
        loss = mse(model(z), yq)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.clip).item()  # norm before clipping
        if not (torch.isfinite(loss) and math.isfinite(gnorm)):
            if not cfg.skip_nonfinite:
                out["diverged"], out["diverged_at"] = True, it
                break
            out["skipped"] += 1
            out["skipped_at"] += [it] if len(out["skipped_at"]) < 100 else []
            out["skipped_prompt_norm"] = max(out["skipped_prompt_norm"] or 0.0, znorm)
            sched.step()  # the schedule keeps time with the step count
            continue
        smooth = cfg.smooth_every > 0 and it % cfg.smooth_every == 0 and it < cfg.smooth_until
        theta = flat_params(model) if smooth else None
        opt.step()
        sched.step()
        if smooth:
            out["smooth"].append(directional_smoothness(f, theta, flat_params(model) - theta, zf, yf))
            out["grad_norm"].append(gnorm)
            out["smooth_iter"].append(it)
    if out["diverged"]:
        out["evals"][cfg.steps] = out["evals_median"][cfg.steps] = out["evals_trimmed"][cfg.steps] = math.inf
    else:
        record_eval(cfg.steps)
    out["eval"] = out["evals"][cfg.steps]
    if not math.isfinite(out["eval"]) or not math.isfinite(out["curve"][-1]):
        out["diverged"], out["diverged_at"] = True, out["diverged_at"] if out["diverged_at"] is not None else cfg.steps
    out["fixed"] = out["curve"][-1] if not out["diverged"] else math.inf  # the paper's loss: the fixed batch
    out["coef"] = model.coefficients()
    out["time"] = time.time() - t0
    return out
