"""Multilevel training: coarse forwards, shared parameters, the schedule, FLOPs, exact resume, errors, DDP, compile."""

import itertools
from types import SimpleNamespace

import copy

import numpy as np
import pytest
import torch

import multilevel
import trainer
from model import CHOICES, GPT, PRESETS, GPTConfig
from optim import build_optimizers
from tests.helpers import args, assert_config_error, metrics, run, torchrun, train_losses

SMALL = dict(n_layer=4, n_head=2, n_embd=32, block_size=16, vocab_size=64)


def variants():
    """Every valid template x split x lnv x v0 (imex with 1 and 2 sweeps), the presets, and nuGPT."""
    out = [dict(p) for p in PRESETS.values()]
    for update, split, lnv, v0 in itertools.product(CHOICES["update"], CHOICES["split"], (False, True), CHOICES["v0"]):
        for k in (1, 2) if split == "imex" else (1,):
            out.append(dict(update=update, split=split, lnv=lnv, v0=v0, imex_iters=k))
    out.append(dict(arch="nugpt", bias=False, ref_width=16, ref_depth=2))
    valid = []
    for v in out:
        try:
            GPTConfig(**SMALL, **v)
        except ValueError:
            continue
        if v not in valid:
            valid.append(v)
    return valid


def reference(model, level, offset):
    """A (L / 2^level)-layer model whose blocks are copies of the selected ones, each oracle output times 2^level
    (the c_proj weights and biases of a GPT; the sphere step sizes alpha of an nGPT)."""
    c, s = model.config, 2**level
    ids = list(model.layer_ids(level, offset))
    small = GPT(GPTConfig(**{**vars(c), "n_layer": len(ids)}))
    sd = model.state_dict()
    for k, i in enumerate(ids):
        for key in [key for key in sd if key.startswith(f"transformer.h.{i}.")]:
            sd[key.replace(f"transformer.h.{i}.", f"transformer.h.{k}.", 1)] = sd.pop(key)
    small.load_state_dict({k: v for k, v in sd.items() if not k.startswith(tuple(
        f"transformer.h.{i}." for i in range(len(ids), c.n_layer)))})
    with torch.no_grad():
        for k, i in enumerate(ids):
            big, b = model.transformer.h[i], small.transformer.h[k]
            if c.arch == "gpt":
                for lin in (b.attn.c_proj, b.mlp.c_proj):
                    lin.weight.mul_(s)
                    if lin.bias is not None:
                        lin.bias.mul_(s)
            else:
                for name in ("alpha_a", "alpha_m"):
                    getattr(b, name).s.copy_(getattr(big, name)() * s / getattr(b, name).mult)
    return small


@pytest.mark.parametrize("variant", variants(), ids=lambda v: "-".join(f"{k}={v[k]}" for k in v))
def test_coarse_forward_is_the_small_model_with_scaled_steps(variant):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL, **variant))
    with torch.no_grad():  # coefficients away from their (shared) initial values
        for name, p in model.named_parameters():
            if p.dim() == 0 or name.endswith((".s", "lnv_a.weight", "lnv_m.weight", "lnv.weight")):
                p.add_(0.3 * torch.randn_like(p))
    idx = torch.randint(0, 64, (2, 16))
    for level, offset in [(1, 0), (1, 1), (2, 0), (2, 3)]:
        logits, loss = model(idx, idx, level=level, offset=offset)
        ref_logits, ref_loss = reference(model, level, offset)(idx, idx)
        torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(logits, model(idx, idx)[0], atol=1e-3)  # not just the fine model


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_a_coarse_step_changes_exactly_the_selected_layers_and_the_shared_weights(optimizer):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL, **PRESETS["yuriiformer"]))
    opts = build_optimizers(model, trainer.TrainConfig(optimizer=optimizer, weight_decay=0.1, learning_rate=1e-2))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    idx = torch.randint(0, 64, (4, 16))
    model(idx, idx, level=1, offset=1)[1].backward()
    for opt in opts:
        opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    shared = {n for n in before if not n.startswith("transformer.h.")}
    selected = {n for n in before if n.startswith(("transformer.h.1.", "transformer.h.3."))}
    assert changed == shared | selected
    assert {"transformer.wte.weight", "transformer.wte_v.weight", "transformer.h.1.mu_a"} <= changed


def cfg(m=2, cycle=(3, 2), mode="cycle", until=0):
    return SimpleNamespace(multilevel_levels=m, multilevel_cycle=cycle, multilevel_mode=mode, multilevel_until=until)


def test_schedule():
    at = lambda c, n: [multilevel.level_at(i, c) for i in range(n)]  # noqa: E731
    assert at(cfg(), 10) == [(1, 0)] * 2 + [(0, 0)] * 3 + [(1, 1)] * 2 + [(0, 0)] * 3
    assert at(cfg(m=3, cycle=(1, 1, 1)), 12) == [(2, 0), (1, 0), (0, 0), (2, 1), (1, 1), (0, 0),
                                                 (2, 2), (1, 0), (0, 0), (2, 3), (1, 1), (0, 0)]
    assert at(cfg(until=6), 10) == [(1, 0)] * 2 + [(0, 0)] * 3 + [(1, 1)] + [(0, 0)] * 4
    assert at(cfg(m=3, cycle=(9, 2, 3), mode="cascade"), 8) == [(2, 0), (2, 1), (2, 2), (1, 0), (1, 1)] + [(0, 0)] * 3
    assert at(cfg(m=1), 3) == [(0, 0)] * 3
    assert [i for i in range(12) if multilevel.switched(i, cfg())] == [2, 5, 7, 10]


def stepped(optimizer="muon", steps=1, seed=0):
    """A small model and its optimizers after `steps` steps on random tokens."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**SMALL))
    opts = build_optimizers(model, trainer.TrainConfig(optimizer=optimizer))
    for _ in range(steps):
        idx = torch.randint(0, 64, (2, 16))
        model(idx, idx)[1].backward()
        for opt in opts:
            opt.step()
            opt.zero_grad()
    return model, opts


@pytest.mark.parametrize("optimizer", ["adamw", "muon", "sgd"])
def test_full_reset_restores_a_fresh_optimizer_state(optimizer):
    """After reset_state the next step is the one a freshly built optimizer takes (AdamW's step counter too)."""
    model, opts = stepped(optimizer, steps=3)
    fresh = copy.deepcopy(model)
    fresh_opts = build_optimizers(fresh, trainer.TrainConfig(optimizer=optimizer))
    multilevel.reset_state(opts)
    assert all(not opt.state for opt in opts)
    idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(5))
    for m, o in ((model, opts), (fresh, fresh_opts)):
        m(idx, idx)[1].backward()
        for opt in o:
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))


def test_per_level_states_are_separate_and_survive_a_checkpoint():
    model, opts = stepped("adamw", steps=2)
    levels = multilevel.LevelStates()
    before = copy.deepcopy(opts[0].state_dict()["state"])
    levels.switch(opts, 0, 1)  # level 1 starts fresh
    assert not opts[0].state
    idx = torch.randint(0, 64, (2, 16))
    model(idx, idx, level=1)[1].backward()
    opts[0].step()
    packed = levels.state_dict(opts)  # level 0's state, put aside
    restored = multilevel.LevelStates()
    restored.load_state_dict(opts, packed)
    level1 = copy.deepcopy(opts[0].state_dict()["state"])
    restored.switch(opts, 1, 0)  # back to level 0: its own moments and step count
    now = opts[0].state_dict()["state"]
    assert now.keys() == before.keys()
    assert all(torch.equal(now[i]["exp_avg"], before[i]["exp_avg"]) and now[i]["step"] == before[i]["step"] for i in now)
    restored.switch(opts, 0, 1)
    assert all(torch.equal(opts[0].state_dict()["state"][i]["exp_avg"], level1[i]["exp_avg"]) for i in level1)


@pytest.mark.parametrize("variant", ["baseline", "yuriiformer"])
def test_coherence_term_makes_the_coarse_gradient_the_restricted_fine_one(variant):
    """At the restriction point, grad f_H - v with v = grad f_H - R grad f_h is R grad f_h (tau = 1), numerically;
    with tau = 0.5 it is halfway; parameters outside the coarse network get no term."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**SMALL, "n_layer": 4}, **PRESETS[variant]))
    idx = torch.randint(0, 64, (2, 16))
    params = list(model.parameters())

    def grads(level, offset=0):
        model.zero_grad()
        model(idx, idx, level=level, offset=offset)[1].backward()
        return {p: None if p.grad is None else p.grad.clone() for p in params}
    fine, coarse = grads(0), grads(1, 1)
    assert any(g is None for g in coarse.values())  # the even layers are not in this coarse network
    for tau in (1.0, 0.5):
        c = multilevel.Coherence(tau)
        grads(1, 1)
        c.start(params, fine)
        c.apply(params)
        for p in params:
            if coarse[p] is None:
                assert p.grad is None and p not in c.v
            else:
                want = fine[p] + (1 - tau) * (coarse[p] - fine[p])
                torch.testing.assert_close(p.grad, want, rtol=1e-5, atol=1e-7)
    assert max((coarse[p] - fine[p]).abs().max().item() for p in params if coarse[p] is not None) > 1e-3


def test_coherence_term_averaged_over_batches():
    """With k batches, v = tau (mean coarse gradient - mean fine gradient) over them: the step's batch (in p.grad)
    and the mean of the other k - 1 (coarse_extra)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**SMALL, "n_layer": 4}))
    params = list(model.parameters())
    batches = [torch.randint(0, 64, (2, 16)) for _ in range(3)]

    def grads(idx, level, offset=0):
        model.zero_grad()
        model(idx, idx, level=level, offset=offset)[1].backward()
        return {p: p.grad.clone() for p in params if p.grad is not None}
    fine = [grads(b, 0) for b in batches]
    coarse = [grads(b, 1, 1) for b in batches]
    fine_mean = {p: sum(f[p] for f in fine) / 3 for p in fine[0]}
    extra = {p: (coarse[1][p] + coarse[2][p]) / 2 for p in coarse[0]}
    c = multilevel.Coherence(0.5)
    grads(batches[0], 1, 1)
    c.start(params, fine_mean, extra, 3)
    for p, v in c.v.items():
        torch.testing.assert_close(v, 0.5 * (sum(g[p] for g in coarse) / 3 - fine_mean[p]), rtol=1e-5, atol=1e-7)


def test_multilevel_object_runs_the_schedule_and_corrects_to_the_fine_gradient():
    """The trainer's interface: before_step(it) is level_at(it); at a coarse phase's start with tau = 1,
    before_backward + the coarse backward + on_grads leave the fine gradient in p.grad (MG/OPT's coherence at the
    shared point); the term survives state_dict/load_state_dict."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL))
    params = list(model.parameters())
    cfg = trainer.TrainConfig(multilevel_levels=2, multilevel_cycle=(2, 1), multilevel_correction=1.0)
    ml = multilevel.Multilevel(cfg, build_optimizers(model, cfg), params)
    assert [ml.before_step(i) for i in range(6)] == [multilevel.level_at(i, cfg) for i in range(6)] == \
        [(1, 0), (0, 0), (0, 0), (1, 1), (0, 0), (0, 0)]
    x = torch.randint(0, 64, (2, 16))
    model(x, x)[1].backward()
    fine = {p: p.grad.clone() for p in params}
    model.zero_grad(set_to_none=True)

    def mean_grad(sets, level, offset):
        for batches in sets:
            for xb, yb in batches:
                model(xb, yb, level=level, offset=offset)[1].backward()
        out = {p: p.grad / len(sets) for p in params if p.grad is not None}
        model.zero_grad(set_to_none=True)
        return out

    assert ml.before_step(3) == (1, 1) and ml.phase_start
    ml.before_backward([(x, x)], None, mean_grad)  # k = 1: no extra batches
    model(x, x, level=1, offset=1)[1].backward()
    ml.on_grads()
    coarse = [p for p in params if p.grad is not None]
    assert 0 < len(coarse) < len(params)
    for p in coarse:
        torch.testing.assert_close(p.grad, fine[p], rtol=1e-5, atol=1e-6)
    restored = multilevel.Multilevel(cfg, ml.optimizers, params)
    restored.load_state_dict(ml.state_dict())
    assert restored.coherence.v.keys() == ml.coherence.v.keys()
    assert all(torch.equal(restored.coherence.v[p], v) for p, v in ml.coherence.v.items())


def test_coherence_batches_cost_their_flops(toy, tmp_path):
    """Each coarse phase start pays k fine and k - 1 extra coarse passes, on top of the step itself."""
    kw = dict(n_layer=4, multilevel_levels=2, multilevel_cycle=[2, 2], max_iters=8, eval_interval=8,
              multilevel_correction=1.0)
    run(args(toy, tmp_path / "k1", **kw))
    run(args(toy, tmp_path / "k3", multilevel_correction_batches=3, **kw))
    model = GPT(GPTConfig(**{**SMALL, "block_size": 32, "n_layer": 4}))
    fine, coarse = (8 * 32 * model.flops_per_token(32, j) for j in (0, 1))
    extra = metrics(tmp_path / "k3")[-1]["flops"] - metrics(tmp_path / "k1")[-1]["flops"]
    assert extra == 2 * 2 * (fine + coarse)  # 2 phase starts x (k - 1) more batches x (fine + coarse)
    assert_config_error(["--multilevel_correction_batches=0"], "multilevel_correction_batches=0 must be >= 1")


@pytest.mark.parametrize("argv, message", [
    (["--multilevel_levels=2"], "multilevel_cycle=[] must list 2 positive step counts [fine, ..., coarsest]"),
    (["--multilevel_levels=2", "--multilevel_cycle=[3]"], "multilevel_cycle=[3] must list 2 positive"),
    (["--multilevel_levels=2", "--multilevel_cycle=[3,0]"], "multilevel_cycle=[3, 0] must list 2 positive"),
    (["--multilevel_levels=2", "--multilevel_cycle=[3,1]", "--n_layer=3"],
     "multilevel_levels=2 needs n_layer divisible by 2, got n_layer=3"),
    (["--multilevel_levels=3", "--multilevel_cycle=[1,1,1]", "--n_layer=6"],
     "multilevel_levels=3 needs n_layer divisible by 4, got n_layer=6"),
    (["--multilevel_levels=0"], "multilevel_levels=0 must be >= 1"),
    (["--multilevel_mode=vcycle"], "multilevel_mode='vcycle': choose one of cycle, cascade"),
    (["--multilevel_until=-1"], "multilevel_until=-1 must be >= 0"),
    (["--multilevel_cycle=[1.5,2]"], "multilevel_cycle=1.5: expected int"),
])
def test_bad_schedules_name_the_key(argv, message):
    assert_config_error(argv, message)


ML = dict(n_layer=4, multilevel_levels=3, multilevel_cycle=[2, 1, 1], max_iters=9, eval_interval=9)


def test_flops_follow_the_active_depth(toy, tmp_path):
    run(args(toy, tmp_path, variant="yuriiformer", **ML))
    recs = [r for r in metrics(tmp_path) if r["kind"] == "train"]
    c = trainer.TrainConfig(**{k: v for k, v in ML.items() if k.startswith("multilevel")})
    model = GPT(GPTConfig(**{**SMALL, "block_size": 32}, **PRESETS["yuriiformer"]))
    levels = [multilevel.level_at(i, c)[0] for i in range(9)]
    assert [r["level"] for r in recs] == levels == [2, 1, 0, 0, 2, 1, 0, 0, 2]
    flops = np.cumsum([8 * 32 * model.flops_per_token(32, j) for j in levels])
    assert [r["flops"] for r in recs] == flops.tolist()
    assert model.flops_per_token(32, 2) < model.flops_per_token(32, 1) < model.flops_per_token(32, 0)
    assert metrics(tmp_path)[-1]["flops"] == flops[-1]


def test_resume_in_the_middle_of_a_cycle_is_exact(toy, tmp_path):
    """6 steps + resume + 8 steps equals 14 uninterrupted steps (iteration 6 is inside a coarse phase), with each
    way of handling the optimizer state at a switch and with the coherence correction (kept in the checkpoint)."""
    for name, extra in (("reset", dict(multilevel_momentum="reset")),
                        ("levels", dict(multilevel_momentum="per_level", multilevel_correction=1.0))):
        resume_is_exact(toy, tmp_path / name, **extra)


def resume_is_exact(toy, tmp_path, **extra):
    common = dict(variant="yuriiformer", optimizer="muon", dropout=0.1, eval_interval=7, lr_decay_iters=14,
                  n_layer=4, multilevel_levels=2, multilevel_cycle=[3, 2], **extra)
    run(args(toy, tmp_path / "a", max_iters=14, **common))
    run(args(toy, tmp_path / "b", max_iters=6, **common))
    run(["--init_from=resume", f"--out_dir={tmp_path / 'b'}", "--max_iters=14"])
    assert train_losses(tmp_path / "a") == train_losses(tmp_path / "b")
    a, b = (torch.load(tmp_path / d / "ckpt.pt", weights_only=True) for d in "ab")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]) and a["flops"] == b["flops"]
    assert [r["level"] for r in metrics(tmp_path / "b") if r["kind"] == "train"] == [1, 1, 0, 0, 0] * 2 + [1] * 2 + [0] * 2


@pytest.mark.slow
def test_ddp_multilevel_matches_single_process(toy, tmp_path):
    """torchrun --nproc_per_node=2 (gloo): coarse steps leave layers without gradients on every rank."""
    common = args(toy, tmp_path, max_iters=4, eval_interval=4, gradient_accumulation_steps=2, dtype="float32",
                  variant="yuriiformer", n_layer=4, multilevel_levels=2, multilevel_cycle=[1, 2])
    torchrun([*common, f"--out_dir={tmp_path / 'ddp'}"])
    run([*common, f"--out_dir={tmp_path / 'one'}"])
    ddp, one = train_losses(tmp_path / "ddp"), train_losses(tmp_path / "one")
    assert [i for i, _ in ddp] == [i for i, _ in one]
    np.testing.assert_allclose([v for _, v in ddp], [v for _, v in one], rtol=1e-4)


@pytest.mark.slow
def test_compile_makes_one_graph_per_level_and_offset():
    """torch.compile specializes on the level/offset ints (the eager backend: no C++ toolchain needed)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL, **PRESETS["yuriiformer"]))
    compiled = torch.compile(model, backend="eager")
    idx = torch.randint(0, 64, (2, 16))
    for level, offset in [(0, 0), (1, 0), (1, 1), (1, 0), (0, 0)]:
        torch.testing.assert_close(compiled(idx, idx, level=level, offset=offset)[0],
                                   model(idx, idx, level=level, offset=offset)[0])
    assert counters["stats"]["unique_graphs"] == 3
