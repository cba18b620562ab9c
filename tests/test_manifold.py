"""manifold.py: msign, the manifold Muon step per geometry, its trainer integration and spectral monitoring."""

import math

import numpy as np
import pytest
import torch

import trainer
from manifold import MUON_NS, ManifoldMuon, msign, project, retract, rms, tall, tangent_direction
from model import GPT, GPTConfig
from diagnostics import attention_logit_max, violation
from tests.helpers import args as train_args
from tests.helpers import assert_config_error, metrics, run, torchrun


def polar(x):
    """U V^T from the SVD, in float64."""
    u, _, vh = torch.linalg.svd(x.double(), full_matrices=False)
    return (u @ vh).float()


def on_manifold(shape, geometry, seed=0):
    """A random tall-or-wide matrix on its manifold (dgram: column norms 0.5..2)."""
    w = tall(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)))
    w = retract(w, "stiefel" if geometry == "dgram" else geometry, near=False)
    return w * torch.linspace(0.5, 2.0, w.size(1)) if geometry == "dgram" else w


def gram_error(w, geometry):
    """Largest entry of the constraint's residual on W^T W (w tall)."""
    gram = w.T @ w
    if geometry == "stiefel":
        return (gram - torch.eye(w.size(1))).abs().max().item()
    if geometry == "dgram":
        return project(gram, "dgram").abs().max().item()
    return (w.norm(dim=0) - 1).abs().max().item()


# ----------------------------------------------------------------------------- msign

@pytest.mark.parametrize("shape", [(128, 64), (64, 128), (96, 96)])
def test_msign_matches_the_svd_polar_factor(shape):
    """Relative Frobenius error vs U V^T: fp32 < 1e-4 for condition numbers up to 1e3 (and Gaussian matrices);
    bf16 < 2e-2 for condition number 10 (bf16 cannot resolve singular values below ~1e-2 of the largest)."""
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(max(shape), min(shape), generator=g))
    v, _ = torch.linalg.qr(torch.randn(min(shape), min(shape), generator=g))
    for cond, dtype, bound in ((1e3, torch.float32, 1e-4), (10, torch.bfloat16, 2e-2)):
        x = u @ torch.diag(torch.logspace(0, -math.log10(cond), min(shape))) @ v.T
        x = x if shape[0] >= shape[1] else x.T
        exact = polar(x)
        err = ((msign(x, dtype=dtype) - exact).norm() / exact.norm()).item()
        assert err < bound, (dtype, err)
    gaussian = torch.randn(*shape, generator=g)
    assert ((msign(gaussian) - polar(gaussian)).norm() / math.sqrt(min(shape))).item() < 1e-4


# ----------------------------------------------------------------------------- one step per geometry

@pytest.mark.parametrize("geometry", ["stiefel", "dgram", "oblique"])
def test_constraint_holds_after_steps(geometry):
    """fp32: stiefel |W^T W - I|_max, dgram |offdiag(W^T W)|_max, oblique max | |w_j| - 1 | all below 1e-3."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(*s) * 0.02) for s in ((48, 16), (16, 48), (24, 24))]
    opt = ManifoldMuon(params, lr=0.05, geometry=geometry, iters=5)
    opt.project_()
    for p in params:
        assert gram_error(tall(p.detach()), geometry) < 1e-3
    for _ in range(3):
        for p in params:
            p.grad = torch.randn_like(p)
        before = [p.detach().clone() for p in params]
        opt.step()
        for p, b in zip(params, before):
            assert gram_error(tall(p.detach()), geometry) < 1e-3
            assert violation(p, geometry) < 1e-3
            assert not torch.equal(p, b)


@pytest.mark.parametrize("geometry", ["stiefel", "dgram"])
@pytest.mark.parametrize("shape", [(192, 64), (64, 64)])
def test_retraction_one_step_away_is_the_exact_one(geometry, shape):
    """retract(W - lr A) after a two-step ascent direction, lr up to 0.1 (dgram: column norms down to 0.08): within
    2e-6 of the retraction with the exact polar factor in fp64, with the constraint held to fp32 precision
    (stiefel: one step of the polar series; dgram: fp32 eigh)."""
    w = on_manifold(shape, geometry)
    if geometry == "dgram":
        w = w / w.norm(dim=0) * torch.linspace(0.08, 2.0, w.size(1))
    g = torch.randn(*w.shape, generator=torch.Generator().manual_seed(1))
    a = tangent_direction(w, g, geometry, iters=2, alpha=0.3)[0]
    for lr in (0.01, 0.04, 0.1):
        x = w - lr * a
        got = retract(x, geometry)
        xd = x.double()
        q = polar(xd / xd.norm(dim=0) if geometry == "dgram" else xd)
        want = q * (q * xd).sum(0) if geometry == "dgram" else q
        assert (got.double() - want).abs().max().item() < 2e-6, lr
        assert gram_error(got, geometry) < (2e-6 if geometry == "stiefel" else 5e-6), lr  # dgram: Gram entries to 4


@pytest.mark.parametrize("geometry", ["stiefel", "dgram", "oblique"])
def test_dual_ascent_direction_is_tangent(geometry):
    """With enough iterations rms(P(W^T A + A^T W)) < tol; A keeps Muon's unit scale (spectral norm ~ 1)."""
    w = on_manifold((64, 32), geometry)
    g = torch.randn(64, 32, generator=torch.Generator().manual_seed(1))
    g = g * (math.sqrt(g.numel()) / g.norm())  # unit RMS entries, as the optimizer feeds it
    a, _, iters, rms = tangent_direction(w, g, geometry, iters=300, alpha=0.3, tol=1e-3, check_every=1)
    h = project(w.T @ a + a.T @ w, geometry)
    assert iters < 300 and rms < 1e-3
    assert (h.norm() / math.sqrt(h.numel())).item() == pytest.approx(rms.item(), rel=1e-5)
    assert 0.5 < torch.linalg.matrix_norm(a, 2).item() < 1.3
    assert (g * a).sum() > 0  # an ascent direction of <G, A>: the update W - lr A descends
    a1, _, _, rms1 = tangent_direction(w, g, geometry, iters=1)  # Lambda_0 alone is less tangent
    assert rms1 > rms


def test_geometry_none_equals_torch_muon():
    torch.manual_seed(0)
    shapes = ((64, 32), (32, 96), (40, 40))
    ours = [torch.nn.Parameter(torch.randn(*s)) for s in shapes]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opts = (ManifoldMuon(ours, lr=0.02, weight_decay=0.1), torch.optim.Muon(ref, lr=0.02, weight_decay=0.1))
    for _ in range(5):
        for p, q in zip(ours, ref):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        for opt in opts:
            opt.step()
    assert all(torch.equal(p, q) for p, q in zip(ours, ref))


def test_fp32_muon_step_matches_torch_muon_and_auto_picks_it_without_native_bf16(monkeypatch):
    """ns_dtype=float32 is Muon's step with an fp32 Newton-Schulz: within bf16 rounding of torch.optim.Muon's;
    muon_dtype=auto uses it where bf16 is emulated (utils.fast_bf16 false) and torch.optim.Muon where it is native."""
    import optim
    import utils
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(*s)) for s in ((32, 16), (16, 48))]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opts = (ManifoldMuon(ours, lr=0.02, weight_decay=0.1, ns_dtype="float32"), torch.optim.Muon(ref, lr=0.02, weight_decay=0.1))
    for p, q in zip(ours, ref):
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()
    before = [p.detach().clone() for p in ours]
    for opt in opts:
        opt.step()
    for p, q, b in zip(ours, ref, before):
        assert ((p - b) - (q - b)).norm() < 0.02 * (q - b).norm()
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=32))
    cfg = trainer.TrainConfig(optimizer="muon")
    for native, kind in ((False, ManifoldMuon), (True, torch.optim.Muon)):
        monkeypatch.setattr(utils, "fast_bf16", lambda device, native=native: native)
        assert type(optim.build_optimizers(model, cfg)[0]) is kind


def test_clear_errors():
    w = torch.nn.Parameter(torch.randn(8, 4))
    with pytest.raises(ValueError, match=r"geometry='sphere': choose one of none, stiefel, dgram, oblique"):
        ManifoldMuon([w], geometry="sphere")
    with pytest.raises(ValueError, match=r"ln.weight has shape \(8,\): manifold Muon \(geometry='stiefel'\) needs"):
        ManifoldMuon([{"params": [w, torch.nn.Parameter(torch.ones(8))], "names": ["w", "ln.weight"]}],
                     geometry="stiefel")
    for argv, message in ((["--optimizer=manifold_muon", "--geometry_attn=sphere"],
                           "geometry_attn='sphere': choose one of none, stiefel, dgram, oblique"),
                          (["--geometry_mlp=dgram"], "geometry_mlp='dgram' need optimizer='manifold_muon'"),
                          (["--optimizer=manifold_muon", "--mm_iters=0"], "mm_iters=0 must be >= 1")):
        assert_config_error(argv, message)


# ----------------------------------------------------------------------------- trainer

def args(toy, out, **kw):
    """test_train's tiny run with optimizer=manifold_muon."""
    return train_args(toy, out, **{"optimizer": "manifold_muon", **kw})


def records(out, kind):
    return [r for r in metrics(out) if r["kind"] == kind]


def test_trainer_none_equals_muon(toy, tmp_path):
    """optimizer=manifold_muon with geometry none/none trains exactly like optimizer=muon."""
    run(args(toy, tmp_path / "mm", max_iters=6, eval_interval=6))
    run(args(toy, tmp_path / "muon", max_iters=6, eval_interval=6, optimizer="muon"))
    a, b = (torch.load(tmp_path / d / "ckpt.pt", weights_only=True)["model"] for d in ("mm", "muon"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_spectral_records_and_exact_resume(toy, tmp_path):
    common = dict(geometry_attn="stiefel", geometry_mlp="dgram", mm_iters=3, eval_interval=4, spectral_interval=2,
                  variant="yuriiformer")
    run(args(toy, tmp_path / "a", max_iters=8, **common))
    run(args(toy, tmp_path / "b", max_iters=4, **common))
    run(["--init_from=resume", f"--out_dir={tmp_path / 'b'}", "--max_iters=8"])
    a, b = (torch.load(tmp_path / d / "ckpt.pt", weights_only=True) for d in "ab")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    spec = records(tmp_path / "b", "spectral")
    assert [r["iter"] for r in spec] == [0, 2, 4, 6, 8]
    last = spec[-1]
    assert set(last["attn_logit_max"]) == {"0", "1"} and last["dual_iters"] <= 3 and last["tokens"] == 8 * 8 * 32
    for name, v in last["violation"].items():  # attention on Stiefel: unit singular values
        if ".attn." in name:
            assert v < 1e-3 and last["sigma_max"][name] == pytest.approx(1, abs=1e-3)
    w = tall(a["model"]["transformer.h.0.mlp.c_fc.weight"])
    assert gram_error(w, "dgram") < 1e-3 and violation(w, "stiefel") > 1e-3  # dgram: column norms moved


def test_attention_logit_max_matches_the_attention():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=32))
    x = torch.randint(0, 32, (2, 8))
    got = attention_logit_max(model, x, torch.autocast("cpu", enabled=False))
    b, h = model.transformer.h[0], model.transformer.wte(x) + model.transformer.wpe(torch.arange(8))
    q, k, _ = b.attn.c_attn(b.ln_1(h)).split(16, dim=2)
    q, k = (t.view(2, 8, 2, 8).transpose(1, 2) for t in (q, k))
    logits = (q @ k.transpose(-2, -1) / math.sqrt(8)).masked_fill(~torch.ones(8, 8).tril().bool(), -math.inf)
    assert got == {"0": pytest.approx(logits.max().item(), rel=1e-5)}


def test_ngpt_refuses_a_geometry(toy, tmp_path):
    with pytest.raises(ValueError, match="arch='ngpt' keeps its matrices on spheres itself"):
        run(args(toy, tmp_path, variant="ngpt", geometry_attn="stiefel", max_iters=1))


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(toy, tmp_path):
    """torchrun --nproc_per_node=2 (gloo): every rank takes the same manifold step from the all-reduced gradient."""
    common = args(toy, tmp_path, max_iters=4, eval_interval=2, gradient_accumulation_steps=2, dtype="float32",
                  muon_dtype="float32", geometry_attn="stiefel", geometry_mlp="dgram", mm_iters=3)  # fp32 ascent too:
    # on a CPU with native bf16, muon_dtype=auto is bf16, whose rounding of two all-reduce orders differs by ~1e-4
    torchrun([*common, f"--out_dir={tmp_path / 'ddp'}"])
    run([*common, f"--out_dir={tmp_path / 'one'}"])
    ddp, one = ([(r["iter"], r["loss"]) for r in records(tmp_path / d, "train")] for d in ("ddp", "one"))
    assert [i for i, _ in ddp] == [i for i, _ in one]
    np.testing.assert_allclose([v for _, v in ddp], [v for _, v in one], rtol=1e-4)
    a, b = (torch.load(tmp_path / d / "ckpt.pt", weights_only=True)["model"] for d in ("ddp", "one"))
    w = tall(a["transformer.h.0.attn.c_attn.weight"])
    assert violation(w, "stiefel") < 1e-3 and torch.allclose(w, tall(b["transformer.h.0.attn.c_attn.weight"]),
                                                              atol=1e-4)


# ----------------------------------------------------------------------------- fast ascent and the reference's options

def real_gradients(seed=0):
    """Tall hidden-matrix gradients of a small GPT on random tokens: {name: (weight, gradient)}."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64, bias=False))
    idx = torch.randint(0, 64, (4, 16))
    model(idx, idx)[1].backward()
    return {n: (tall(p.detach()), tall(p.grad)) for n, p in model.param_groups()["matrix"]}


def unit_rms(g):
    return g * (math.sqrt(g[0].numel()) / g.norm(dim=(-2, -1), keepdim=True))


@pytest.mark.parametrize("geometry", ["stiefel", "dgram", "oblique"])
def test_batched_ascent_equals_one_matrix_at_a_time(geometry):
    ws = torch.stack([on_manifold((48, 24), geometry, seed=s) for s in range(3)])
    gs = unit_rms(torch.randn(3, 48, 24, generator=torch.Generator().manual_seed(7)))
    a, lam, _, h = tangent_direction(ws, gs, geometry, iters=8, alpha=1.0)
    for i in range(3):
        a1, lam1, _, h1 = tangent_direction(ws[i], gs[i], geometry, iters=8, alpha=1.0)
        torch.testing.assert_close(a[i], a1, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(h[i], h1, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("source", ["random", "real"])
@pytest.mark.parametrize("geometry", ["stiefel", "dgram"])
def test_warm_started_ascent_finds_the_plain_direction(geometry, source):
    """Started from the multiplier of a nearby previous gradient (momentum changes G slowly), the ascent finds the
    direction the plain one (from Lambda_0) converges to. (It is not faster: a few warm-started iterations are no
    closer than a few plain ones, measured in bench/RESULTS.md; hence mm_warm_start=False by default.)"""
    if source == "random":
        w = on_manifold((64, 32), geometry)
        g0 = torch.randn(64, 32, generator=torch.Generator().manual_seed(1))
    else:
        w0, g0 = real_gradients()["transformer.h.0.mlp.c_fc.weight"]
        w = retract(w0.float(), geometry, "reference", near=False)
    g0 = unit_rms(g0)
    g1 = unit_rms(g0 + 0.1 * torch.randn(g0.shape, generator=torch.Generator().manual_seed(2)))
    plain, _, _, _ = tangent_direction(w, g1, geometry, iters=400, alpha=0.1)
    _, lam0, _, _ = tangent_direction(w, g0, geometry, iters=400, alpha=0.1)
    warm, _, _, h = tangent_direction(w, g1, geometry, lam0, iters=400, alpha=0.1)
    assert ((warm - plain).norm() / plain.norm()).item() < 0.05 and h.max() < 1e-2


def test_reference_dgram_retraction_and_init():
    """The paper's DGram retraction U V^T diag(sigma) re-sorts the column norms (not idempotent: a DGram point with
    norms 0.5, 2, 1, 3 comes back with 3, 2, 1, 0.5); the clean one keeps a DGram point; the reference init keeps the
    singular values, the polar init sets them to 1."""
    q = polar(torch.randn(16, 4, generator=torch.Generator().manual_seed(0)))
    w = q * torch.tensor([0.5, 2.0, 1.0, 3.0])
    ref = retract(w, "dgram", "reference")
    torch.testing.assert_close(ref.norm(dim=0), torch.tensor([3.0, 2.0, 1.0, 0.5]), rtol=1e-5, atol=1e-5)
    assert (ref - w).abs().max() > 1.0
    torch.testing.assert_close(retract(w, "dgram", "clean"), w, rtol=1e-5, atol=1e-5)
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(32, 16) * 0.02)
    sigma = torch.linalg.svdvals(p.detach())
    ManifoldMuon([p], geometry="dgram", init="reference").project_()
    torch.testing.assert_close(torch.linalg.svdvals(p.detach()), sigma, rtol=1e-4, atol=1e-6)
    assert gram_error(p.detach(), "dgram") < 1e-5
    ManifoldMuon([p], geometry="dgram", init="polar").project_()
    torch.testing.assert_close(torch.linalg.svdvals(p.detach()), torch.ones(16), rtol=1e-3, atol=1e-3)


def test_reference_scaling_is_raw_nesterov_momentum_without_shape_factor():
    """scaling="reference" on geometry none: buf = mu buf + g, direction Muon's 5-step msign(g + mu buf), step lr (no
    sqrt(max(1, m/n))), weight decay on unconstrained matrices; the manifold branch takes no weight decay."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(48, 16))
    w0 = p.detach().clone()
    opt = ManifoldMuon([p], lr=0.1, momentum=0.9, weight_decay=0.5, scaling="reference", ns_dtype="float32")
    grads = [torch.randn(48, 16) for _ in range(2)]
    buf, want = torch.zeros(48, 16), w0.clone()
    for g in grads:
        p.grad = g.clone()
        opt.step()
        buf = 0.9 * buf + g
        want = want * (1 - 0.1 * 0.5) - 0.1 * msign(g + 0.9 * buf, (MUON_NS,) * 5, torch.float32)
    torch.testing.assert_close(p.detach(), want, rtol=1e-5, atol=1e-6)
    q = torch.nn.Parameter(on_manifold((48, 16), "stiefel").clone())
    opt = ManifoldMuon([q], lr=0.0, weight_decay=0.5, geometry="stiefel", scaling="reference", ns_dtype="float32")
    q.grad = torch.randn(48, 16)
    before = q.detach().clone()
    opt.step()
    torch.testing.assert_close(q.detach(), before, rtol=1e-5, atol=1e-5)  # lr 0: no step, and no decay


def _descent(w, g, a, geometry, eps=1e-5):
    """First-order decrease of <G, W> along -A through the retraction (fp64)."""
    return ((w - retract(w - eps * a, geometry, "clean")) * g).sum().item() / eps


@pytest.mark.parametrize("geometry", ["dgram", "stiefel"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_two_step_ascent_is_near_the_converged_solve_at_column_norms_near_2(geometry, dtype):
    """K=2, alpha 0.3 (the defaults; msign in fp32 or bf16) on weights with column norms in [1.8, 2.2] (dgram;
    stiefel at 1) reach at least 85% of the descent of the subproblem solved to convergence (fp64, exact polar
    factor, 3,000 ascent steps)."""
    gen = torch.Generator().manual_seed(0)
    m, n = 128, 32
    q, _ = torch.linalg.qr(torch.randn(m, n, generator=gen, dtype=torch.float64))
    d = 1.8 + 0.4 * torch.rand(n, generator=gen, dtype=torch.float64) if geometry == "dgram" else torch.ones(n)
    w = q * d
    g = torch.randn(m, n, generator=gen, dtype=torch.float64) + 3 * torch.randn(m, 4, generator=gen, dtype=torch.float64) \
        @ torch.randn(4, n, generator=gen, dtype=torch.float64)
    g = g * (math.sqrt(g.numel()) / g.norm())
    scale = 2 / (d.square().unsqueeze(-1) + d.square().unsqueeze(-2))
    lam = -project(w.T @ g + g.T @ w, geometry) * scale / 4
    for _ in range(3000):  # the converged solve
        u, _, vt = torch.linalg.svd(g + 2 * w @ lam, full_matrices=False)
        a_star = u @ vt
        h = project(w.T @ a_star + a_star.T @ w, geometry)
        lam = lam - 0.05 * scale * h
    assert rms(h) < 1e-4
    a, *_ = tangent_direction(w.float(), g.float(), geometry, iters=2, alpha=0.3, dtype=dtype)  # bf16: Muon's
    assert _descent(w, g, a.double(), geometry) >= 0.85 * _descent(w, g, a_star, geometry)
