"""Linear-transformer lab: exact optimizer identities, data moments, landscape measurements (float64)."""

import json
import math

import pytest
import torch

from lab.data import covariates, expected_sq_norm, ls_weights, prompts
from lab.model import LinearTransformer, attention, hand_set, icl_grad, icl_optimizer, predict
from lab.train import (LabConfig, directional_smoothness, flat_params, gradient_noise, hessian_diag,
                       large_batch_grad, make_loss, minibatch_grads, robust_condition, train)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops (tests/conftest.py)


@pytest.fixture
def f64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def batch(b=32, d=5, n=20, dist="normal", seed=0):
    torch.manual_seed(seed)
    return prompts(b, d, n, dist, dtype=torch.float64)


def test_attention_masks_the_query_as_a_key(f64):
    z, _ = batch(4)
    p, q = torch.randn(6, 6), torch.randn(6, 6)
    m = torch.diag(torch.tensor([1.0] * 20 + [0.0]))  # M = diag(1, .., 1, 0)
    naive = p @ z @ m @ z.transpose(1, 2) @ q @ z / 20
    torch.testing.assert_close(attention(z, p, q), naive)


def test_paper_parametrization_forward_equals_the_reference_form(f64):
    """P~ = [[P, 0], [0, 1]], Q~ = [[Q, 0], [0, 0]]: our column form P~ Z M Z^T Q~ Z / n against the paper's
    row-major code written out by hand (tokens as rows: out = (Z Q^T Z^T) A (Z P^T) / n, A masking the query; its
    Q is our Q^T), on a worked example of 2 layers, d = 3, n = 4."""
    torch.manual_seed(4)
    model = LinearTransformer(3, 2, "paper", "gd")
    z, _ = prompts(5, d=3, n=4, dtype=torch.float64)
    rows = z.transpose(1, 2)  # (B, n+1, d+1): one token per row
    mask = torch.diag(torch.tensor([1.0] * 4 + [0.0]))
    for i in range(2):
        p_full, q_full = torch.zeros(4, 4), torch.zeros(4, 4)
        p_full[:3, :3], p_full[3, 3] = model.P[i].detach(), 1.0
        q_full[:3, :3] = model.Q[i].detach().T  # the code's Q
        attn = torch.einsum("bni,ij,bmj->bnm", rows, q_full, rows)
        key = torch.einsum("ij,bnj->bni", p_full, rows)
        rows = rows + torch.einsum("bnm,ml,bli->bni", attn, mask, key) / 4
    torch.testing.assert_close(model(z), -rows[:, 4, 3])
    assert sum(p.numel() for p in model.parameters()) == 2 * 2 * 9  # only the d x d blocks are learned
    assert model.P.std().item() == pytest.approx(0.05, rel=0.5)  # init N(0, 0.05^2)


@pytest.mark.parametrize("param", ["paper", "sparse", "full"])
def test_one_layer_is_one_gd_step(f64, param):
    z, _ = batch()
    eta = 0.7
    x, y, xq = z[:, :5, :20], z[:, 5, :20], z[:, :5, 20]
    w1 = eta * (x @ y.unsqueeze(-1)).squeeze(-1) / 20  # w_1 = w_0 - eta grad L(w_0), w_0 = 0
    model = hand_set(LinearTransformer(5, 1, param, "gd"), eta=eta)
    assert (model(z) - (w1 * xq).sum(-1)).abs().max() < 1e-5


def test_icl_grad_is_the_gradient_of_the_in_context_loss(f64):
    z, _ = batch()
    w = torch.randn(32, 5)
    x, y = z[:, :5, :20], z[:, 5, :20]
    loss = lambda w: 0.5 * ((w.unsqueeze(1) @ x).squeeze(1) - y).square().mean(1).sum()  # noqa: E731
    torch.testing.assert_close(icl_grad(w, z), torch.func.grad(loss)(w))


@pytest.mark.parametrize("param", ["paper", "sparse", "full"])
@pytest.mark.parametrize("update", ["gd", "polyak", "nesterov"])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_k_layers_are_k_optimizer_steps(f64, param, update, k):
    """Z_L = [[X], [y - w_k^T X]] (query column: -w_k^T x_q), w_k = k steps of gd / heavy ball / Nesterov."""
    z, _ = batch()
    coef = dict(mu=0.3, beta=0.6, gamma=0.8)
    model = hand_set(LinearTransformer(5, k, param, update), eta=0.4, **coef)
    w = icl_optimizer(z, k, 0.4, update, **coef)
    assert (model(z) - predict(w, z)).abs().max() < 1e-5
    target = z.clone()
    target[:, 5, :] = target[:, 5, :] - (w.unsqueeze(1) @ z[:, :5, :]).squeeze(1)
    assert (model.stream(z) - target).abs().max() < 1e-5


def test_gd_layers_converge_to_least_squares(f64):
    """Many gd layers with a stable step: the prediction tends to the least-squares one (noise-free: y_q)."""
    z, yq = batch(d=3, n=40)
    model = hand_set(LinearTransformer(3, 200, "sparse", "gd"), eta=0.5)
    torch.testing.assert_close(model(z), predict(ls_weights(z), z))
    torch.testing.assert_close(model(z), yq)


def test_coefficients_are_sigmoid_softplus_of_raw_scalars():
    model = LinearTransformer(5, 2, "full", "nesterov")
    c = model.coefficients()
    assert set(c) == {f"{i}.{n}" for i in range(2) for n in ("mu", "beta", "gamma")}
    assert c["0.mu"] == pytest.approx(0.5) and c["1.beta"] == pytest.approx(0.5)
    assert c["1.gamma"] == pytest.approx(math.log(2))
    assert not hasattr(LinearTransformer(5, 2, "full", "polyak"), "a")
    assert not any(hasattr(LinearTransformer(5, 2, "full", "gd"), n) for n in ("a", "b", "c"))


@pytest.mark.parametrize("dist, scale", [("normal", "paper"), ("sphere", "paper"), ("heavy", "paper"),
                                         ("heavy", "chi2")])
def test_covariate_moments(f64, dist, scale):
    """The paper's heavy-tailed covariates (Ahn et al.'s code: r ~ Gamma(k, sqrt(10/k))) have E||x||^2 = sqrt(10 k),
    1.0 at k = 0.1, and Var r = 10 as for the N(0, I_5) radius; the lab's first form (scale 2) 2k = 0.2."""
    N, d, k = 200_000, 5, 0.1
    torch.manual_seed(0)
    x = covariates((N,), d, dist, k, heavy_scale=scale)
    sq = x.square().sum(-1)
    m2 = expected_sq_norm(d, dist, k, scale)
    if dist == "heavy":
        assert m2 == pytest.approx(1.0 if scale == "paper" else 0.2)
    theta = math.sqrt(10 / k) if scale == "paper" else 2.0
    var_sq = {"normal": 2.0 * d, "sphere": 0.0, "heavy": k * theta**2}[dist]  # chi^2_d; 1; Gamma(k, theta)
    assert abs(sq.mean().item() - m2) < 5 * math.sqrt(var_sq / N) + 1e-12
    assert abs(x.mean(0)).max().item() < 5 * math.sqrt(m2 / d / N)  # mean 0
    second = x.T @ x / N  # isotropic: E[x x^T] = (E||x||^2 / d) I
    se = (x.unsqueeze(2) * x.unsqueeze(1)).std(0) / math.sqrt(N)
    assert ((second - m2 / d * torch.eye(d)).abs() < 5 * se + 1e-12).all()


def test_paper_heavy_tails_at_k_2_5_are_standard_normal_in_5d(f64):
    """The paper's scale sqrt(10/k) gives theta = 2 at k = 2.5: r ~ chi^2_5, x ~ N(0, I_5)."""
    from scipy import stats
    torch.manual_seed(1)
    x = covariates((50_000,), 5, "heavy", k=2.5)
    assert stats.kstest(x[:, 0].numpy(), "norm").pvalue > 1e-3


def test_heavy_tails_with_k_half_d_are_standard_normal(f64):
    from scipy import stats
    torch.manual_seed(1)
    x = covariates((50_000,), 4, "heavy", k=2.0, heavy_scale="chi2")
    assert stats.kstest(x[:, 0].numpy(), "norm").pvalue > 1e-3
    assert stats.kstest(x.square().sum(-1).numpy(), "chi2", args=(4,)).pvalue > 1e-3


def test_covariance_and_labels(f64):
    cov = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    torch.manual_seed(2)
    x = covariates((200_000,), 2, "normal", cov=cov)
    torch.testing.assert_close(x.T @ x / x.size(0), cov, atol=0.03, rtol=0)
    z, yq = prompts(64, d=3, n=10, dtype=torch.float64)
    assert (z[:, 3, 10] == 0).all()  # the query's label slot is empty
    torch.testing.assert_close(predict(ls_weights(z), z), yq)  # noise-free labels: y = w^T x
    N, s = 40_000, 0.5
    z, yq = prompts(N, d=3, n=1, noise=s, dtype=torch.float64)  # E y^2 = E||x||^2 + s^2
    assert abs(yq.square().mean().item() - (3 + s * s)) < 5 * yq.square().std().item() / math.sqrt(N)
    with pytest.raises(ValueError, match="dist"):
        prompts(2, dist="cauchy")


def tiny(update="nesterov", param="full"):
    torch.manual_seed(3)
    model = LinearTransformer(2, 2, param, update, init_std=0.5)
    with torch.no_grad():  # coefficients away from their init, so that they matter
        for name in ("a", "b", "c"):
            getattr(model, name).add_(torch.randn(2))
    z, yq = prompts(8, d=2, n=4, dtype=torch.float64)
    return model, make_loss(model), flat_params(model), z, yq


@pytest.mark.parametrize("param", ["sparse", "full"])
def test_hessian_diagonal_matches_finite_differences(f64, param):
    model, f, theta, z, yq = tiny(param=param)
    h = hessian_diag(f, theta, z, yq, chunk_size=7)
    eps, fd = 1e-4, []
    for i in range(theta.numel()):
        e = torch.zeros_like(theta)
        e[i] = eps
        fd.append((f(theta + e, z, yq) - 2 * f(theta, z, yq) + f(theta - e, z, yq)) / eps**2)
    torch.testing.assert_close(h, torch.stack(fd), rtol=1e-5, atol=1e-5)
    a = h.abs().sort().values
    a = a[a > 0]
    assert robust_condition(h) == pytest.approx((a[-1] / a[(len(a) - 1) // 2]).item())
    # exact zeros: the first layer's beta and mu (they multiply V_0 = 0) and, for full P, rows 1..d of the last P
    names = [n for n, p in model.named_parameters() for _ in range(p.numel())]
    zero = {i for i, n in enumerate(names) if n in ("a", "b") and names[i - 1] != n}
    if param == "full":
        zero |= {9 + i for i in range(6)}  # P: (2, 3, 3), layer 1, rows 0 and 1
    assert set((h == 0).nonzero().flatten().tolist()) == zero


def test_directional_smoothness_matches_finite_differences(f64):
    _, f, theta, z, yq = tiny()
    u = torch.randn_like(theta)
    eps = 1e-5
    g = lambda t: torch.func.grad(f)(t, z, yq)  # noqa: E731
    fd = (g(theta + eps * u) - g(theta - eps * u)) / (2 * eps) @ u / (u @ u)
    assert directional_smoothness(f, theta, u, z, yq) == pytest.approx(fd.item(), rel=1e-6)


def test_minibatch_gradients_match_autograd(f64):
    model, f, theta, _, _ = tiny()
    zs, yqs = prompts(5 * 8, d=2, n=4, dtype=torch.float64)
    zs, yqs = zs.view(5, 8, 3, 5), yqs.view(5, 8)
    got = minibatch_grads(f, theta, zs, yqs, chunk_size=2)
    for k in range(5):
        model.zero_grad()
        ((model(zs[k]) - yqs[k]).square().mean()).backward()
        torch.testing.assert_close(got[k], torch.cat([p.grad.reshape(-1) for p in model.parameters()]))


def test_gradient_noise_matches_brute_force(f64):
    cfg = LabConfig(d=2, n=4, batch=8, n_layer=2, update="nesterov")
    norms, noise = gradient_noise(cfg, n_batches=60, big=80, seed=5)
    model = cfg.model(torch.Generator().manual_seed(10_000 + cfg.seed))
    f, theta = make_loss(model), flat_params(model)
    g = lambda z, yq: torch.func.grad(f)(theta, z, yq)  # noqa: E731
    torch.manual_seed(5)  # the same draws: 10 chunks for G, then groups of 50 minibatches
    chunks = [cfg.data(8) for _ in range(10)]
    G = sum(g(z, yq) for z, yq in chunks) / 10
    torch.testing.assert_close(G, g(*(torch.cat(t) for t in zip(*chunks))))  # = the full-batch gradient
    brute = []
    for _ in range(2):
        zs, yqs = cfg.data(50 * 8)
        brute += [g(zs[8 * i:8 * i + 8], yqs[8 * i:8 * i + 8]) - G for i in range(50)]
    torch.testing.assert_close(noise, torch.stack(brute)[:60])
    torch.testing.assert_close(norms, torch.stack(brute)[:60].norm(dim=1))
    torch.manual_seed(5)
    torch.testing.assert_close(large_batch_grad(f, theta, cfg, 80), G)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_runs_and_learns(optimizer):
    cfg = LabConfig(batch=64, steps=60, optimizer=optimizer, lr=0.02, smooth_every=20, hess_at=(0, 30), eval_at=(30,),
                    eval_batch=2000, update="polyak", curve_every=10)
    out = train(cfg)
    assert not out["diverged"] and out["curve_iter"] == list(range(0, 61, 10)) and out["rcond_iter"] == [0, 30]
    assert len(out["smooth"]) == 3 and set(out["evals"]) == {30, 60} and out["evals"][60] == out["eval"]
    assert out["eval"] < 0.5 * out["curve"][0] and all(r > 1 for r in out["rcond"])
    assert set(out["coef"]) == {f"{i}.{n}" for i in range(3) for n in ("beta", "gamma")}


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="param"):
        LinearTransformer(param="dense")
    with pytest.raises(ValueError, match="update"):
        LinearTransformer(update="adam")
    with pytest.raises(ValueError, match="optimizer"):
        LabConfig(optimizer="lion")


def outlier_data(monkeypatch, at, scale=1e8):
    """Training minibatches (batch 64) at the steps `at` get one prompt scaled by `scale` (float32 overflows, float64 not)."""
    data, step = LabConfig.data, iter(range(10**6))

    def patched(cfg, batch):
        z, yq = data(cfg, batch)
        if batch == 64 and next(step) in at:
            z[0] *= scale
        return z, yq
    monkeypatch.setattr(LabConfig, "data", patched)


@pytest.mark.parametrize("dtype, skip, skipped", [("float32", False, 0), ("float32", True, 2), ("float64", True, 0)])
def test_nonfinite_minibatches_stop_or_are_skipped(monkeypatch, dtype, skip, skipped):
    outlier_data(monkeypatch, at=(3, 5))
    cfg = LabConfig(batch=64, steps=20, n_layer=2, dtype=dtype, skip_nonfinite=skip, eval_batch=500, curve_every=5)
    out = train(cfg)
    assert out["diverged"] == (not skip) and out["diverged_at"] == (None if skip else 3)
    assert out["skipped"] == skipped and out["skipped_at"] == [3, 5][:skipped]
    assert out["prompt_norm_max"] > 1e8  # the outlier prompt's norm is recorded either way
    if skipped:
        assert out["skipped_prompt_norm"] == out["prompt_norm_max"]
    else:
        assert out["skipped_prompt_norm"] is None
    if skip:
        assert out["curve"][-1] < out["curve"][0] and math.isfinite(out["eval"])


def test_float64_runs_the_same_prompts_and_initialisation():
    a, b = (LabConfig(dtype=dt, batch=64) for dt in ("float32", "float64"))
    torch.manual_seed(0)
    za, _ = a.data(8)
    torch.manual_seed(0)
    zb, _ = b.data(8)
    assert zb.dtype == torch.float64 and torch.equal(za.double(), zb)
    ma, mb = a.model(torch.Generator().manual_seed(1)), b.model(torch.Generator().manual_seed(1))
    assert torch.equal(flat_params(ma).double(), flat_params(mb)) and flat_params(mb).dtype == torch.float64
    with pytest.raises(ValueError, match="dtype"):
        LabConfig(dtype="bfloat16")


def test_report_counts_a_run_ending_above_its_start_as_diverged():
    from studies.lab import diverged, fixed
    rec = dict(diverged=False, fixed=3931.0, curve=[5.56, 2.3, 3931.0])
    assert diverged(rec) and fixed(rec) == math.inf
    assert not diverged({**rec, "fixed": 0.5, "curve": [5.56, 0.5]}) and fixed({**rec, "fixed": 0.5}) == 0.5


def test_depth64_jobs_and_the_depth_claims_wait_for_them(tmp_path):
    from studies.lab import depth_for_claims, depth_results, quick_jobs
    from studies.runner import Study
    jobs = quick_jobs(Study("lab_quick", results=tmp_path))
    d64 = [j for j in jobs if j.key.startswith("depth64/")]
    cfgs = [json.loads(j.argv[j.argv.index("--config") + 1]) for j in d64 if not j.waits]
    assert {j.key.split("/")[1] for j in d64} == {"L6", "L8"} and {j.shape for j in d64} == {"L6-f64", "L8-f64"}
    assert cfgs and all(c["dtype"] == "float64" and c["skip_nonfinite"] and c["steps"] == 100 for c in cfgs)
    rec = lambda key, f, **kw: dict(key=key, diverged=False, fixed=f, curve=[5.0, f], **kw)  # noqa: E731
    by = {r["key"]: r for r in [rec("depth64/L6/adam/lr0.01/seed0", 0.2, skipped=1, skipped_prompt_norm=40.0,
                                    prompt_norm_max=50.0),
                                rec("depth64/L6/adam/lr0.02/seed0", 0.1), rec("depth64/L6/adam/lr0.04/seed0", 0.3),
                                rec("depth64/L6/adam/lr0.02/seed1", 0.15)]}
    e = depth_results(by, "depth64", (6, 8), 2)["L6/adam"]
    assert (e["lr"], e["bracketed"], e["fixed"], e["skipped"], e["skipped_prompt_norm"]) == (0.02, True, [0.1, 0.15], 1, 40)
    res = dict(depth={"L6/adam": dict(e, fixed=[math.inf])}, depth64={"L6/adam": e}, n_depth=2)
    d, pending = depth_for_claims(res)
    assert d["L6/adam"] is e and pending  # L6 sgd, L8 are not in yet
