"""The normalized family (nGPT, nuGPT): unit norms, no LayerNorm, nuGPT's learning rates, trainer defaults, sweeps."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import model as model_module
import trainer
from data.prepare_common import write_dataset
from data.reduce_vocab import reduced_data
import runlog
from model import GPT, PRESETS, GPTConfig, sphere_step
from optim import build_optimizers, lr_multipliers
from tests.helpers import args, assert_config_error, run, train_losses

TINY = dict(n_layer=2, n_head=2, n_embd=32, vocab_size=64, block_size=16, dropout=0.0)
NGPT = {**PRESETS["ngpt"], **TINY}
NUGPT = {**NGPT, "arch": "nugpt", "ref_width": 16, "ref_depth": 1}


def make(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**kw))


def tokens(B=2, T=12, seed=1):
    return torch.randint(0, TINY["vocab_size"], (B, T), generator=torch.Generator().manual_seed(seed))


def embedding_norms(model):
    """Norm of every weight vector along the embedding dimension (rows; columns of the c_proj outputs)."""
    return {n: p.norm(dim=0 if n.endswith("c_proj.weight") else 1) for n, p in model.named_parameters() if p.dim() == 2}


def assert_unit(t, atol=1e-5):
    torch.testing.assert_close(t, torch.ones_like(t), rtol=0, atol=atol)


@pytest.fixture
def record_steps(monkeypatch):
    """Record (input, output) of every sphere step of a forward pass."""
    seen = []

    def step(x, o, alpha):
        y = sphere_step(x, o, alpha)
        seen.append((x.detach(), y.detach()))
        return y

    monkeypatch.setattr(model_module, "sphere_step", step)
    return seen


# ----------------------------------------------------------------------------- architecture

@pytest.mark.parametrize("kw", [NGPT, NUGPT], ids=["ngpt", "nugpt"])
def test_no_layernorm_and_untied_head(kw):
    m = make(**kw)
    assert not any(isinstance(mod, nn.LayerNorm) for mod in m.modules())
    assert any(isinstance(mod, nn.LayerNorm) for mod in make(**TINY, bias=False).modules())  # GPT has them
    assert m.lm_head.weight is not m.transformer.wte.weight
    assert m.transformer.h[0].attn.s_qk.s.shape == (TINY["n_embd"],)  # per head and head dimension (nGPT)


@pytest.mark.parametrize("kw", [NGPT, NUGPT], ids=["ngpt", "nugpt"])
def test_hidden_states_are_unit_norm(kw, record_steps):
    m = make(**kw)
    logits, _ = m(tokens(), targets=tokens())
    assert len(record_steps) == 2 * TINY["n_layer"]  # attention and MLP step per layer
    for x, y in record_steps:  # h_0 = Norm(wte + wpe) and every state after a step
        assert_unit(x.norm(dim=-1))
        assert_unit(y.norm(dim=-1))


def test_qk_normalisation_and_softmax_scale(monkeypatch):
    m, seen = make(**NGPT), []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((q, k, kw["scale"]))
        return sdpa(q, k, v, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        for b in m.transformer.h:
            b.attn.s_qk.s.uniform_(0.1, 0.3)  # a learned, per head and dim, scale
    m(tokens())
    hs = TINY["n_embd"] // TINY["n_head"]
    for (q, k, scale), b in zip(seen, m.transformer.h):
        s = b.attn.s_qk().view(TINY["n_head"], 1, hs)
        assert_unit((q / s).norm(dim=-1))
        assert_unit((k / s).norm(dim=-1))
        assert scale == pytest.approx(math.sqrt(hs))


def test_scales_use_ngpts_init_trick():
    m, d = make(**NGPT), TINY["n_embd"]
    b = m.transformer.h[0]
    for scale, init, stored in ((b.alpha_a, 0.05, d**-0.5), (b.alpha_m, 0.05, d**-0.5), (m.s_z, 1.0, d**-0.5),
                                (b.attn.s_qk, 1.0, d**-0.5), (b.mlp.s_u, 1.0, 1.0)):
        torch.testing.assert_close(scale.s, torch.full_like(scale.s, stored))  # what the optimizer sees
        torch.testing.assert_close(scale(), torch.full_like(scale.s, init))  # what the forward pass uses


@pytest.mark.parametrize("ref_width, ref_depth", [(16, 1), (8, 2), (32, 4)])
def test_nugpt_inits(ref_width, ref_depth):
    m = make(**{**NUGPT, "ref_width": ref_width, "ref_depth": ref_depth})
    m_w, m_l = TINY["n_embd"] / ref_width, TINY["n_layer"] / ref_depth
    torch.testing.assert_close(m.transformer.h[1].alpha_m(), torch.full((TINY["n_embd"],), 0.05 / m_l))
    torch.testing.assert_close(m.s_z(), torch.full((TINY["vocab_size"],), math.sqrt(m_w)))


def test_sphere_step_limits():
    x = torch.nn.functional.normalize(torch.randn(3, 5, 8), dim=-1)
    o = lambda z: 3.0 * z.flip(-1)  # noqa: E731
    torch.testing.assert_close(sphere_step(x, o, torch.zeros(8)), x)  # alpha = 0: stay
    torch.testing.assert_close(sphere_step(x, o, torch.ones(8)), torch.nn.functional.normalize(o(x), dim=-1))
    torch.testing.assert_close(sphere_step(x, o, -torch.ones(8)), sphere_step(x, o, torch.ones(8)))  # |alpha|


@pytest.mark.parametrize("kw", [NGPT, NUGPT], ids=["ngpt", "nugpt"])
def test_causality(kw):
    m = make(**kw).double()
    idx = tokens()
    other = idx.clone()
    other[:, 6:] = (other[:, 6:] + 5) % TINY["vocab_size"]
    a, b = m(idx, targets=idx)[0], m(other, targets=other)[0]
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=1e-12)
    assert not torch.allclose(a[:, 6:], b[:, 6:])


# ----------------------------------------------------------------------------- weights and optimizer

@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
@pytest.mark.parametrize("kw", [NGPT, NUGPT], ids=["ngpt", "nugpt"])
def test_weights_unit_norm_at_init_and_after_a_step(kw, optimizer, record_steps):
    m = make(**kw)
    for name, norms in embedding_norms(m).items():
        assert_unit(norms)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    cfg = trainer.TrainConfig(optimizer=optimizer, learning_rate=0.05, weight_decay=0.0,
                            ref_steps=10 if kw["arch"] == "nugpt" else 0)
    opts = build_optimizers(m, cfg)
    m(tokens(), targets=tokens())[1].backward()
    for o in opts:
        o.step()
    m.normalize_weights()  # the hook train.py calls after every optimizer step
    for name, norms in embedding_norms(m).items():
        assert_unit(norms)
    assert all(not torch.equal(before[n], p) for n, p in m.named_parameters())  # every parameter moved
    record_steps.clear()
    m(tokens())
    assert all(torch.allclose(y.norm(dim=-1), torch.ones(())) for _, y in record_steps)


def test_gpt_weights_are_left_alone():
    m = make(**TINY, bias=False)
    w = m.transformer.h[0].attn.c_attn.weight.detach().clone()
    m.normalize_weights()
    assert torch.equal(w, m.transformer.h[0].attn.c_attn.weight)


def group_lrs(opts):
    """id(param) -> (optimizer class name, base lr) of its group."""
    return {id(p): (type(o).__name__, g["base_lr"]) for o in opts for g in o.param_groups for p in g["params"]}


@pytest.mark.parametrize("n_embd, n_layer, ref_width, ref_depth, max_iters, ref_steps, c_out", [
    (32, 2, 32, 2, 100, 100, 1.0),  # the reference itself: every multiplier 1
    (32, 2, 8, 1, 100, 100, 1.0),  # m_w = 4, m_L = 2
    (64, 4, 16, 2, 800, 100, 1.0),  # m_w = 4, m_L = 2, m_T = 8
    (16, 2, 64, 4, 50, 400, 2.5),  # m_w = 1/4, m_T = 1/8, c_out = 2.5
])
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
@pytest.mark.parametrize("scaling", [True, False], ids=["scaled", "unscaled"])
def test_nugpt_learning_rates_follow_the_formulas(n_embd, n_layer, ref_width, ref_depth, max_iters, ref_steps, c_out,
                                                  optimizer, scaling):
    kw = {**NUGPT, "n_embd": n_embd, "n_layer": n_layer, "n_head": 2, "ref_width": ref_width, "ref_depth": ref_depth}
    m = make(**kw)
    lr, muon_lr = 3e-3, 0.02
    cfg = trainer.TrainConfig(optimizer=optimizer, learning_rate=lr, muon_lr=muon_lr, max_iters=max_iters,
                              min_lr=0.0, ref_steps=ref_steps, nu_c_out=c_out, muon_dtype="bfloat16",
                              nu_lr_scaling=scaling)
    m_w, m_t = (n_embd / ref_width, max_iters / ref_steps) if scaling else (1.0, 1.0)  # unscaled: c_out only
    base = lr * m_t ** (-1 / 3)
    want = {"matrix": base * m_w**-0.75, "embed": base * m_w**-0.5, "head": base * c_out * m_w**-0.75,
            "scalar": base}
    if optimizer == "muon":
        want["matrix"] = muon_lr * m_t ** (-1 / 3)
    got = group_lrs(build_optimizers(m, cfg))
    groups = m.param_groups()
    assert not groups["coef"]  # the sphere step sizes are 'scalar' parameters
    for kind, named in groups.items():
        for name, p in named:
            opt, value = got[id(p)]
            assert value == pytest.approx(want[kind], rel=1e-12), (kind, name)
            assert opt == ("Muon" if optimizer == "muon" and kind == "matrix" else "AdamW")
    mult = lr_multipliers(m.config, cfg)
    assert mult["scalar"] == pytest.approx(m_t ** (-1 / 3)) and mult["coef"] == mult["scalar"]


@pytest.mark.parametrize("kw", [NGPT, {**TINY, "bias": False}], ids=["ngpt", "gpt"])
def test_other_archs_have_unit_multipliers(kw):
    m = make(**kw)
    cfg = trainer.TrainConfig(learning_rate=1e-3)
    assert set(lr_multipliers(m.config, cfg).values()) == {1.0}
    opt, = build_optimizers(m, cfg)
    assert [g["group"] for g in opt.param_groups][0] == "decay"  # GPT's grouping unchanged


# ----------------------------------------------------------------------------- trainer

def test_normalized_defaults_no_weight_decay_no_warmup():
    cfg, _, _ = trainer.load_config(["--variant=ngpt"])
    assert (cfg.weight_decay, cfg.warmup_iters) == (0.0, 0)
    cfg, _, _ = trainer.load_config(["--variant=ngpt", "--weight_decay=0.05", "--warmup_iters=7"])
    assert (cfg.weight_decay, cfg.warmup_iters) == (0.05, 7)  # explicit values win
    cfg, _, _ = trainer.load_config(["--variant=baseline"])
    assert (cfg.weight_decay, cfg.warmup_iters) == (0.1, 100)  # GPT keeps nanoGPT's defaults


@pytest.mark.parametrize("argv, message", [
    (["--variant=ngpt", "--arch=nugpt", "--ref_width=8", "--ref_depth=1"], "arch='nugpt' needs ref_steps > 0"),
    (["--variant=ngpt", "--ref_steps=100"], "ref_steps, nu_c_out and nu_lr_scaling only apply to arch='nugpt'"),
    (["--nu_c_out=2.0"], "ref_steps, nu_c_out and nu_lr_scaling only apply to arch='nugpt'"),
    (["--variant=ngpt", "--nu_lr_scaling=False"], "ref_steps, nu_c_out and nu_lr_scaling only apply to arch='nugpt'"),
    (["--variant=ngpt", "--update=nesterov"], "supports update='gd', split='lie_trotter', bias=False only"),
    (["--variant=ngpt", "--split=euler"], "supports update='gd', split='lie_trotter', bias=False only"),
    (["--variant=ngpt", "--bias=True"], "bias=False only"),
    (["--variant=ngpt", "--arch=nugpt", "--ref_steps=10"], "ref_width and ref_depth (both > 0)"),
    (["--variant=ngpt", "--ref_width=8", "--ref_depth=1"], "ref_width and ref_depth (both > 0)"),
    (["--variant=ngpt", "--arch=nugpt", "--ref_width=8", "--ref_depth=1", "--ref_steps=-1"], "ref_steps=-1"),
])
def test_invalid_combinations_are_one_line_errors(argv, message):
    assert_config_error(argv, message)


@pytest.mark.parametrize("extra", [dict(variant="ngpt"),
                                   dict(variant="ngpt", arch="nugpt", ref_width=16, ref_depth=1, ref_steps=30)],
                         ids=["ngpt", "nugpt"])
def test_trainer_keeps_the_sphere_and_loss_falls(toy, tmp_path, extra):  # noqa: F811
    run(args(toy, tmp_path, max_iters=30, eval_interval=30, learning_rate=2e-2, min_lr=2e-3, **extra))
    losses = [loss for _, loss in train_losses(tmp_path)]
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:3])  # as test_train allows nGPT
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ckpt["config"]["weight_decay"] == 0.0 and ckpt["config"]["warmup_iters"] == 5  # given by args()
    m = GPT.from_checkpoint(ckpt)
    for name, norms in embedding_norms(m).items():
        assert_unit(norms)


# ----------------------------------------------------------------------------- studies/lr_transfer.py

def test_lr_transfer_optimum_and_reduced_vocab(tmp_path):
    from studies import lr_transfer

    pts = {2.0**k: (k - 1.3) ** 2 for k in range(-2, 4)}  # a parabola in log2(lr) with its minimum at 2^1.3
    best, loss = lr_transfer.optimum(pts)
    assert math.log2(best) == pytest.approx(1.3) and loss == pytest.approx(0.0, abs=1e-12)
    assert lr_transfer.optimum({1.0: 3.0, 2.0: 2.0, 4.0: 1.0}) == (4.0, 1.0)  # at the edge: the grid point
    half = round(0.004 * 2**-0.5 * 2**-0.5, 8)  # a half step down from a half step: 0.00199999, the grid's 0.002
    runs = [dict(param="gpt", axis="width", value=64, seed=0, lr=lr, loss=x) for lr, x in ((0.002, 1.0), (half, 3.0))]
    assert lr_transfer.curve(runs, "gpt", "width", 64) == {0.002: 2.0}  # one rate, one column, the runs averaged
    ids = np.array([5, 5, 5, 9, 9, 50256, 7] * 10)
    write_dataset(tmp_path / "src", {"train": ids, "val": np.array([7, 5, 8, 50256])})
    dst = reduced_data(tmp_path / "src", 3, tmp_path / "dst")
    meta = json.loads((dst / "meta.json").read_text())
    assert meta["vocab_size"] == 3 and meta["eot_token"] == 2  # 5 -> 0, 9 -> 1, the rest -> <unk> = 2
    val = np.memmap(dst / "val.bin", dtype=np.uint16, mode="r")
    assert val.tolist() == [2, 0, 2, 2]


def run_lr_queue(study, design):
    """The lr_transfer queue in this process (what studies/runner.py runs as subprocesses); returns jobs run."""
    from studies import lr_transfer
    n = 0
    while True:
        study.refresh()
        todo = [j for j in lr_transfer.jobs(study, design) if not j.waits and not study.done(j)]
        if not todo:
            return n
        lr_transfer.run_job(lr_transfer.parse(todo[0].argv[2:]))
        n += 1


def test_lr_transfer_sweeps_and_reports(toy, tmp_path):
    from studies import lr_transfer
    from studies.runner import Study

    design = lr_transfer.Design(widths=(16, 32), depths=(1, 2), horizons=(3, 4), seeds=(0, 1), base=(16, 1, 3),
                                axes={"gpt": ("width",), "nugpt": ("width", "depth")}, head_dim=8, block=16, batch=4,
                                eval_iters=1, vocab_size=64, data=str(toy), grids={"gpt": (1e-3, 1e-2),
                                "nugpt": (1e-3, 1e-2)}, lr_range=(1e-3, 2e-2), group_shift=-1.0)
    study = Study("lr_transfer", results=tmp_path, scratch=tmp_path / "scratch")
    assert run_lr_queue(study, design) > 0
    runs = runlog.read(tmp_path / "runs.jsonl")
    curves = {(r["param"], r["axis"], r["value"], r["seed"]) for r in runs if r["axis"] != "groups"}
    assert curves == {("gpt", "width", v, s) for v in (16, 32) for s in (0, 1)} | \
        {("nugpt", a, v, s) for a, vs in (("width", (16, 32)), ("depth", (1, 2))) for v in vs for s in (0, 1)}
    for c in curves:  # each curve: the 2-point grid, grown once (to 2e-2 or 5e-4 is out of range: at most 2e-2)
        assert {r["lr"] for r in runs if (r["param"], r["axis"], r["value"], r["seed"]) == c} >= {1e-3, 1e-2}
    # the base point (width 16 = depth 1) of nuGPT differs per axis (its reference moves); gpt's is one run
    nu = {r["key"]: r for r in runs if r["param"] == "nugpt" and r["axis"] != "groups"}
    assert {(r["settings"]["ref_width"], r["settings"]["ref_depth"]) for r in nu.values()} == {(16, 1)}
    reused = [r for r in runs if r.get("reused_from")]
    assert all(r["run_id"] == next(x for x in runs if x["key"] == r["reused_from"])["run_id"] for r in reused)
    g = [r for r in runs if r["axis"] == "groups"]  # group_shift -1: the per-group sweep always runs
    assert {(r["group"], r["value"]) for r in g} == {(x, m) for x in lr_transfer.GROUPS for m in lr_transfer.MULTS}
    assert len({r["lr"] for r in g}) == 1 and g[0]["settings"]["n_embd"] == 32
    assert run_lr_queue(study, design) == 0  # everything done: nothing reruns
    lr_transfer.report(tmp_path, "python -m studies lr_transfer report")
    table = (tmp_path / "lr_transfer.md").read_text()
    assert "nuGPT" in table and "shift (log2; per seed)" in table and "regret" in table
    assert (tmp_path / "lr_transfer_width.png").stat().st_size > 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["width/nugpt"]["32"]) >= {"log2_opt", "log2_std", "shift", "shift_err", "shift_seeds", "regret"}


# ----------------------------------------------------------------------------- nuGPT's width-free gains, RoPE, SwiGLU

def test_nugpt_stores_its_gains_at_a_constant_scale():
    for width in (16, 64):
        m = make(**{**NUGPT, "n_embd": width, "n_head": 2, "ref_width": 16})
        b = m.transformer.h[0]
        for scale in (b.alpha_a, b.alpha_m, b.attn.s_qk, m.s_z):
            torch.testing.assert_close(scale.s, torch.full_like(scale.s, 0.03))
        torch.testing.assert_close(b.alpha_a(), torch.full((width,), 0.05 / 2))  # 0.05 / m_L, m_L = 2


@pytest.mark.parametrize("arch, ratio", [("nugpt", 1.0), ("ngpt", 2.0)])
def test_relative_update_of_the_gains_per_adam_step(arch, ratio):
    """One Adam step moves every stored gain by about lr (Adam's first step: lr * sign), so the relative change of
    the effective gain is lr / stored: width-free under nuGPT (0.03), sqrt(d) under nGPT (1/sqrt(d)), measured at
    widths 16 and 64."""
    rel = {}
    for width in (16, 64):
        kw = {**NGPT, "n_embd": width, "n_head": 2}
        kw = {**kw, "arch": "nugpt", "ref_width": 16, "ref_depth": 1} if arch == "nugpt" else kw
        m = make(**kw)
        cfg = trainer.TrainConfig(learning_rate=1e-3, max_iters=100, min_lr=0.0, ref_steps=100 if arch == "nugpt" else 0,
                                weight_decay=0.0)
        opts = build_optimizers(m, cfg)
        gains = [(n, p) for n, p in m.param_groups()["scalar"] if n.endswith((".s", "s_z.s")) and "s_u" not in n]
        before = {n: p.detach().clone() for n, p in gains}
        m(tokens(), tokens())[1].backward()
        for opt in opts:
            opt.step()
        rel[width] = np.mean([((p.detach() - before[n]).abs() / before[n].abs()).mean().item() for n, p in gains])
    assert rel[64] / rel[16] == pytest.approx(ratio, rel=0.1)


def test_rope_depends_on_relative_position_only():
    cos, sin = model_module.rope_tables(8, 32)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    at = lambda x, t: model_module.rotate(x, cos[t:t + 1], sin[t:t + 1])  # noqa: E731
    dots = {(m, n): (at(q, m) * at(k, n)).sum().item() for m, n in ((5, 2), (9, 6), (30, 27), (3, 3), (20, 20))}
    assert dots[(5, 2)] == pytest.approx(dots[(9, 6)], rel=1e-5) == pytest.approx(dots[(30, 27)], rel=1e-5)
    assert dots[(3, 3)] == pytest.approx((q * k).sum().item(), rel=1e-5) == pytest.approx(dots[(20, 20)], rel=1e-5)
    assert dots[(5, 2)] != pytest.approx(dots[(3, 3)], rel=1e-3)
    torch.testing.assert_close(at(q, 7).norm(), q.norm())  # a rotation


PUBLISHED = {**NGPT, "position": "rope", "activation": "swiglu"}


@pytest.mark.parametrize("kw", [PUBLISHED, {**PUBLISHED, "arch": "nugpt", "ref_width": 16, "ref_depth": 1},
                                {**PUBLISHED, "activation": "gelu"}, {**PUBLISHED, "position": "learned"}],
                         ids=["ngpt", "nugpt", "rope-gelu", "learned-swiglu"])
def test_published_ngpt_architecture(kw, record_steps):
    """RoPE (no wpe table) and SwiGLU (c_fc gives u, v; s_u, s_v): causal, unit states, unit weights after a step."""
    m = make(**kw)
    assert ("transformer.wpe.weight" in dict(m.named_parameters())) == (kw["position"] == "learned")
    if kw["activation"] == "swiglu":
        assert m.transformer.h[0].mlp.c_fc.weight.shape == (8 * TINY["n_embd"], TINY["n_embd"])
        assert m.transformer.h[0].mlp.s_v is not None
    x = tokens()
    logits, _ = m(x, x)
    for inp, out in record_steps:
        assert_unit(out.norm(dim=-1))
    y = x.clone()
    y[:, 8:] = (y[:, 8:] + 1) % TINY["vocab_size"]
    torch.testing.assert_close(m(y, y)[0][:, :8], logits[:, :8])  # positions < 8 do not see the change
    ref_steps = 100 if kw["arch"] == "nugpt" else 0
    opts = build_optimizers(m, trainer.TrainConfig(learning_rate=1e-2, weight_decay=0.0, max_iters=100, ref_steps=ref_steps))
    m(x, x)[1].backward()
    for opt in opts:
        opt.step()
    m.normalize_weights()
    for n, v in embedding_norms(m).items():
        assert_unit(v)


def test_new_options_errors():
    for kw, field in ((dict(position="alibi"), "position"), (dict(activation="relu"), "activation")):
        with pytest.raises(ValueError, match=field):
            GPTConfig(**TINY, **kw)


def test_lr_transfer_nugpt_with_unit_multipliers(toy, tmp_path):
    """nugpt_mult1: nuGPT with m_w = m_T = 1, at the first and last width only; at the reference it is nugpt's run."""
    from studies import lr_transfer
    from studies.runner import Study

    grid = (1e-3, 1e-2)
    design = lr_transfer.Design(widths=(16, 24, 32), depths=(1,), horizons=(3,), seeds=(0,), base=(16, 1, 3),
                                axes={"nugpt": ("width",), "nugpt_mult1": ("width",)}, head_dim=8, block=16, batch=4,
                                eval_iters=1, vocab_size=64, data=str(toy), grids={"nugpt": grid, "nugpt_mult1": grid},
                                lr_range=(1e-3, 2e-2), group_shift=100.0)
    study = Study("lr_transfer", results=tmp_path, scratch=tmp_path / "scratch")
    run_lr_queue(study, design)
    runs = {r["key"]: r for r in runlog.read(tmp_path / "runs.jsonl")}
    mult1 = {k: r for k, r in runs.items() if r["param"] == "nugpt_mult1"}
    assert {r["value"] for r in mult1.values()} == {16, 32}  # not the middle width
    for k, r in mult1.items():
        twin = runs[k.replace("nugpt_mult1", "nugpt", 1)]
        if r["value"] == 16:  # the reference: every multiplier is 1 already, nugpt's run is reused
            assert r["reused_from"] == twin["key"] and r["loss"] == twin["loss"]
        else:
            assert r["settings"]["nu_lr_scaling"] is False and not r.get("reused_from")
            assert {**r["settings"], "nu_lr_scaling": True} == {**twin["settings"], "nu_lr_scaling": True}
            assert r["loss"] != twin["loss"]  # the multipliers change the run
    lr_transfer.report(tmp_path, "python -m studies lr_transfer report")
    assert "nuGPT, m_w = m_T = 1" in (tmp_path / "lr_transfer.md").read_text()
