"""model.py against the update-rule contract (docs/update-rules.md), on tiny CPU models."""

import itertools
import math
from dataclasses import asdict

import pytest
import torch

from bench.nanogpt_ref import RefConfig, RefGPT
from model import CHOICES, GPT, PRESETS, GPTConfig, velocity

TINY = dict(n_layer=2, n_head=2, n_embd=32, vocab_size=64, block_size=16, dropout=0.0)
RAW_ZERO = -math.inf  # sigmoid(-inf) = 0 exactly: mu = 0 or beta = 0
RAW_ONE = math.log(math.e - 1)  # softplus(log(e - 1)) = 1: gamma = 1


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops (tests/conftest.py)


def _all_variants():
    """Every valid variant: template x splitting (imex k = 1, 2, 3) x lnv x v0, plus the nGPT archs; the extra
    embedding tables (embed_extra) with gd."""
    out = []
    for update, split, lnv, v0, k, arch, extra in itertools.product(
            CHOICES["update"], CHOICES["split"], (False, True), CHOICES["v0"], (1, 2, 3), CHOICES["arch"],
            (False, True)):
        kw = dict(update=update, split=split, lnv=lnv, v0=v0, imex_iters=k, arch=arch, bias=arch == "gpt")
        if arch == "nugpt":
            kw.update(ref_width=16, ref_depth=1)
        if extra and update != "gd":
            continue
        if extra:
            kw.update(embed_extra=True)
        try:
            GPTConfig(**TINY, **kw)
        except ValueError:
            continue
        name = f"{update}-{split}{k if split == 'imex' else ''}{'-lnv' if lnv else ''}-{v0}-{arch}{'-x' if extra else ''}"
        out.append(pytest.param(kw, id=name))
    return out


VARIANTS = _all_variants()


def make(seed=0, dtype=torch.float32, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **kw})).to(dtype)


def tokens(B=2, T=12, seed=1):
    return torch.randint(0, TINY["vocab_size"], (B, T), generator=torch.Generator().manual_seed(seed))


def set_raw(model, **raw):
    """Set raw coefficient parameters by name prefix in every block, e.g. set_raw(m, mu=-inf) sets mu, mu_a, mu_m."""
    with torch.no_grad():
        for block in model.transformer.h:
            for name, p in block.named_parameters(recurse=False):
                key = name.split("_")[0]
                if key in raw:
                    p.fill_(raw[key])


def copy_weights(src, dst):
    """Copy src's weights into dst; only the coefficient scalars of dst may be missing."""
    missing, unexpected = dst.load_state_dict(src.state_dict(), strict=False)
    assert not unexpected
    assert all(n.rsplit(".", 1)[-1].startswith(("mu", "beta", "gamma")) for n in missing), missing


# ---------------------------------------------------------------- the variant suite
def test_variant_count():
    # gd: 5 splittings (with and without embed_extra); polyak, nesterov: 5 splittings x lnv x v0; ngpt, nugpt
    assert len(VARIANTS) == 2 * 5 + 2 * 5 * 2 * 2 + 2


def test_presets_are_valid():
    for name, kw in PRESETS.items():
        GPTConfig(**{**TINY, **kw})
    assert PRESETS["yuriiformer"] == dict(PRESETS["yuriiformer"], update="nesterov", split="lie_trotter", lnv=True,
                                          v0="embed")
    assert PRESETS["baseline"]["update"] == "gd" and PRESETS["baseline"]["split"] == "lie_trotter"


@pytest.mark.parametrize("kw", VARIANTS)
def test_forward_shapes_and_loss(kw):
    model = make(**kw)
    idx = tokens()
    logits, loss = model(idx, targets=idx)
    assert logits.shape == (2, 12, TINY["vocab_size"]) and loss.ndim == 0 and torch.isfinite(loss)
    last, none = model(idx)
    assert last.shape == (2, 1, TINY["vocab_size"]) and none is None
    torch.testing.assert_close(last[:, 0], logits[:, -1])


@pytest.mark.parametrize("kw", VARIANTS)
def test_causality(kw):
    model = make(dtype=torch.float64, **kw)
    idx = tokens(T=12)
    for t in (0, 5, 10):
        other = idx.clone()
        other[:, t + 1:] = (other[:, t + 1:] + 7) % TINY["vocab_size"]
        a, _ = model(idx, targets=idx)
        b, _ = model(other, targets=other)
        torch.testing.assert_close(a[:, :t + 1], b[:, :t + 1], rtol=0, atol=1e-12)
        assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])  # the later positions do see the change


@pytest.mark.parametrize("kw", VARIANTS)
def test_backward_reaches_every_parameter(kw):
    model = make(**kw)
    idx = tokens()
    _, loss = model(idx, targets=idx)
    loss.backward()
    first = ("transformer.h.0.mu", "transformer.h.0.beta")  # multiply V_0 = 0 when v0="zero": grad exactly 0
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        if not (kw["v0"] == "zero" and name.startswith(first)):
            assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kw", VARIANTS)
def test_same_seed_same_model(kw):
    a, b = make(seed=3, **kw), make(seed=3, **kw)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb), na
    idx = tokens()
    assert torch.equal(a(idx, targets=idx)[0], b(idx, targets=idx)[0])
    assert not torch.equal(make(seed=4, **kw)(idx)[0], a(idx)[0])


# ---------------------------------------------------------------- identities of the spec
SPLITS = [dict(split="lie_trotter"), dict(split="euler")] + [dict(split="imex", imex_iters=k) for k in (1, 2, 3)]


@pytest.mark.parametrize("split", SPLITS, ids=lambda s: s["split"] + str(s.get("imex_iters", "")))
@pytest.mark.parametrize("lnv", (False, True))
@pytest.mark.parametrize("v0", ("zero", "embed"))
def test_polyak_is_nesterov_with_mu_zero(split, lnv, v0):
    polyak = make(dtype=torch.float64, update="polyak", lnv=lnv, v0=v0, **split)
    nesterov = make(seed=5, dtype=torch.float64, update="nesterov", lnv=lnv, v0=v0, **split)
    copy_weights(polyak, nesterov)
    set_raw(nesterov, mu=RAW_ZERO)
    assert all(v == 0.0 for k, v in nesterov.coefficients().items() if ".mu" in k)
    idx = tokens()
    assert torch.equal(polyak(idx, targets=idx)[0], nesterov(idx, targets=idx)[0])


@pytest.mark.parametrize("split", SPLITS, ids=lambda s: s["split"] + str(s.get("imex_iters", "")))
@pytest.mark.parametrize("update", ("polyak", "nesterov"))
def test_momentum_reduces_to_gd(split, update):
    """lnv=False, v0=zero, beta = 0, gamma = 1, mu = 0: the momentum template is gd for the same splitting."""
    gd = make(dtype=torch.float64, update="gd", lnv=False, v0="zero", **split)
    mom = make(seed=5, dtype=torch.float64, update=update, lnv=False, v0="zero", **split)
    copy_weights(gd, mom)
    set_raw(mom, mu=RAW_ZERO, beta=RAW_ZERO, gamma=RAW_ONE)
    coef = mom.coefficients()
    assert all(v == 0.0 for k, v in coef.items() if ".mu" in k or ".beta" in k)
    assert all(abs(v - 1.0) < 1e-15 for k, v in coef.items() if ".gamma" in k)
    idx = tokens()
    torch.testing.assert_close(mom(idx, targets=idx)[0], gd(idx, targets=idx)[0], rtol=0, atol=1e-12)
    set_raw(mom, beta=0.0)  # and the velocity does matter once beta > 0
    assert not torch.allclose(mom(idx, targets=idx)[0], gd(idx, targets=idx)[0])


def test_gd_imex1_is_gd_lie_trotter_is_nanogpt():
    lt = make(dtype=torch.float64, **PRESETS["baseline"])
    imex = make(seed=5, dtype=torch.float64, **{**PRESETS["baseline"], "split": "imex", "imex_iters": 1})
    imex.load_state_dict(lt.state_dict())
    ref = RefGPT(RefConfig(**TINY)).double()
    ref.load_state_dict(lt.state_dict())
    idx = tokens()
    a, b, c = (m(idx, targets=idx)[0] for m in (lt, imex, ref))
    torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
    assert torch.equal(a, c)
    imex2 = make(dtype=torch.float64, **PRESETS["gd_imex2"])
    imex2.load_state_dict(lt.state_dict())
    assert not torch.allclose(imex2(idx, targets=idx)[0], a)  # k = 2 is a different model


def test_checkpointed_velocity_has_plain_gradients():
    """velocity() recomputes N's input in backward: values and gradients equal the plain expression."""
    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(8, bias=False).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    leaves = [torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    coefs = [torch.rand((), dtype=torch.float64, requires_grad=True) for _ in range(2)]
    probe = torch.randn(2, 3, 8, dtype=torch.float64)
    plain = norm(coefs[0] * leaves[0] + coefs[1] * leaves[1] + leaves[2])
    ckpt = velocity(norm, (coefs[0], leaves[0]), (coefs[1], leaves[1]), (None, leaves[2]))
    assert torch.equal(plain, ckpt)
    wrt = leaves + coefs + [norm.weight]
    g_plain = torch.autograd.grad((plain * probe).sum(), wrt)
    g_ckpt = torch.autograd.grad((ckpt * probe).sum(), wrt)
    for a, b in zip(g_plain, g_ckpt):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", ("yuriiformer", "imex2", "polyak_euler"))
def test_coefficient_gradients_match_finite_differences(name):
    model = make(dtype=torch.float64, **PRESETS[name], n_layer=1)
    idx = tokens(T=6)
    params = [p for _, p in model.param_groups()["coef"]] + [p for n, p in model.named_parameters() if ".lnv" in n]

    def loss_of(*values):
        with torch.no_grad():
            for p, v in zip(params, values):
                p.copy_(v)
        return model(idx, targets=idx)[1]

    start = [p.detach().clone() for p in params]
    grads = torch.autograd.grad(loss_of(*start), params)
    eps = 1e-6
    for i, p in enumerate(params):
        for j in range(min(p.numel(), 3)):  # a few entries of each
            hi = [s.clone() for s in start]
            lo = [s.clone() for s in start]
            hi[i].view(-1)[j] += eps
            lo[i].view(-1)[j] -= eps
            with torch.no_grad():
                fd = (loss_of(*hi) - loss_of(*lo)) / (2 * eps)
            assert abs(fd.item() - grads[i].view(-1)[j].item()) < 1e-6 * (1 + abs(fd.item())), (i, j)


# ---------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("bias", (True, False))
@pytest.mark.parametrize("flash", (True, False))
def test_nanogpt_checkpoint_loads_with_identical_logits(tmp_path, bias, flash):
    cfg = RefConfig(**{**TINY, "bias": bias})
    torch.manual_seed(0)
    ref = RefGPT(cfg, flash=flash).eval()
    ckpt = {"model_args": asdict(cfg), "model": {"_orig_mod." + k: v for k, v in ref.state_dict().items()},
            "iter_num": 10, "best_val_loss": 3.0, "config": {}}
    assert any(k.endswith(".attn.bias") for k in ckpt["model"]) == (not flash)  # manual path's mask buffers
    torch.save(ckpt, tmp_path / "ckpt.pt")
    model = GPT.from_checkpoint(tmp_path / "ckpt.pt").eval()
    assert model.config.update == "gd" and model.config.split == "lie_trotter"
    idx = tokens()
    with torch.no_grad():
        (a, la), (b, lb) = ref(idx, targets=idx), model(idx, targets=idx)
        if flash:
            assert torch.equal(a, b) and torch.equal(la, lb)
            assert torch.equal(ref(idx)[0], model(idx)[0])
        else:  # manual attention vs SDPA: the same math, rounded differently
            torch.testing.assert_close(a, b)
    assert model.num_params() == ref.num_params(non_embedding=False)
    assert model.num_params(positions=False) == ref.num_params()


@pytest.mark.parametrize("kw", VARIANTS)
def test_own_checkpoint_roundtrip(kw):
    model = make(**kw)
    set_raw(model, beta=0.3)  # non-default coefficients travel too
    ckpt = {"model_args": model.model_args(), "model": model.state_dict()}
    loaded = GPT.from_checkpoint(ckpt)
    idx = tokens()
    assert torch.equal(model(idx, targets=idx)[0], loaded(idx, targets=idx)[0])


def test_bad_checkpoint_errors():
    with pytest.raises(ValueError, match="model_args"):
        GPT.from_checkpoint({"model": {}})
    with pytest.raises(ValueError, match="unknown keys.*'n_expert'"):
        GPT.from_checkpoint({"model_args": {**TINY, "n_expert": 4}, "model": {}})


# ---------------------------------------------------------------- config validation
BAD_CONFIGS = [
    (dict(update="adam"), "update", ("gd", "polyak", "nesterov")),
    (dict(split="rk4"), "split", ("lie_trotter", "euler", "imex")),
    (dict(v0="random"), "v0", ("embed", "zero")),
    (dict(arch="mamba"), "arch", ("gpt", "ngpt", "nugpt")),
    (dict(split="imex", imex_iters=0), "imex_iters", ()),
    (dict(update="nesterov", split="lie_trotter", imex_iters=2), "imex_iters", ("imex",)),
    (dict(update="gd", lnv=True), "lnv", ("polyak", "nesterov")),
    (dict(update="gd", v0="embed"), "v0", ("polyak", "nesterov")),
    (dict(update="gd", mu_init=0.3), "mu_init", ()),
    (dict(update="gd", beta_init=0.3), "beta_init", ()),
    (dict(update="gd", gamma_init=1.0), "gamma_init", ()),
    (dict(update="polyak", mu_init=0.3), "mu_init", ("nesterov",)),
    (dict(update="nesterov", mu_init=1.0), "mu_init", ("(0, 1)",)),
    (dict(update="nesterov", beta_init=0.0), "beta_init", ("(0, 1)",)),
    (dict(update="nesterov", gamma_init=0.0), "gamma_init", ("> 0",)),
    (dict(update="nesterov", lnv="yes"), "lnv", ("True", "False")),
    (dict(bias=1), "bias", ("True", "False")),
    (dict(n_embd=30, n_head=4), "n_embd", ("n_head",)),
    (dict(n_layer=0), "n_layer", ()),
    (dict(block_size=2.5), "block_size", ()),
    (dict(dropout=1.0), "dropout", ()),
    (dict(arch="ngpt", update="nesterov", bias=False), "arch", ("gd", "lie_trotter")),
    (dict(arch="ngpt", bias=True), "arch", ("bias=False",)),
    (dict(arch="nugpt", bias=False), "ref_width", ("nugpt",)),
    (dict(ref_width=4, ref_depth=2), "ref_width", ("nugpt",)),
    (dict(arch="ngpt", bias=False, embed_extra=True), "embed_extra", ("gpt",)),
    (dict(shortlist=64), "shortlist", ("vocab_size=64",)),
    (dict(shortlist=-1), "shortlist", ()),
    (dict(arch="ngpt", bias=False, shortlist=8), "shortlist", ("gpt",)),
]


@pytest.mark.parametrize("kw, field, allowed", BAD_CONFIGS, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD_CONFIGS)])
def test_invalid_config_names_the_field(kw, field, allowed):
    with pytest.raises(ValueError) as err:
        GPTConfig(**{**TINY, **kw})
    msg = str(err.value)
    assert field in msg and "\n" not in msg, msg
    for word in allowed:
        assert word in msg, msg


# ---------------------------------------------------------------- coefficients, groups, counts
def expected_coef_keys(kw):
    if kw["arch"] != "gpt":
        return {"alpha_a", "alpha_m"}
    if kw["update"] == "gd":
        return set()
    lt = kw["split"] == "lie_trotter"
    keys = {"beta_a", "gamma_a", "beta_m", "gamma_m"} if lt else {"beta", "gamma_a", "gamma_m"}
    if kw["update"] == "nesterov":
        keys |= {"mu_a", "mu_m"} if lt else {"mu"}
    return keys


@pytest.mark.parametrize("kw", VARIANTS)
def test_coefficients(kw):
    model = make(**kw)
    for block in model.transformer.h:
        coef = block.coefficients()
        assert set(coef) == expected_coef_keys(kw)
        assert all(type(v) is float for v in coef.values())
        for k, v in coef.items():
            want = {"mu": 0.5, "beta": 0.5, "gamma": math.log(2), "alpha": None}[k.split("_")[0]]
            assert want is None or abs(v - want) < 1e-6, (k, v)
    assert set(model.coefficients()) == {f"{i}.{k}" for i in range(TINY["n_layer"]) for k in expected_coef_keys(kw)}


def test_coefficient_inits_are_in_the_constrained_space():
    model = make(update="nesterov", split="euler", mu_init=0.2, beta_init=0.9, gamma_init=1.5)
    coef = model.transformer.h[1].coefficients()
    assert coef == pytest.approx(dict(mu=0.2, beta=0.9, gamma_a=1.5, gamma_m=1.5), abs=1e-6)


@pytest.mark.parametrize("kw", VARIANTS)
def test_param_groups_cover_every_parameter_once(kw):
    model = make(**kw)
    groups = model.param_groups()
    seen = [id(p) for named in groups.values() for _, p in named]
    assert len(seen) == len(set(seen))
    assert set(seen) == {id(p) for p in model.parameters()}
    names = {kind: {n for n, _ in named} for kind, named in groups.items()}
    n_coef = len(expected_coef_keys(kw)) if kw["arch"] == "gpt" else 0
    assert len(names["coef"]) == TINY["n_layer"] * n_coef
    assert all(p.dim() == 0 for _, p in groups["coef"])
    assert all(p.dim() == 2 for _, p in groups["matrix"] + groups["embed"])
    assert all(p.dim() <= 1 for _, p in groups["scalar"])
    embed = {"transformer.wte.weight", "transformer.wpe.weight"}
    if kw["v0"] == "embed":
        embed |= {"transformer.wte_v.weight", "transformer.wpe_v.weight"}
    if kw.get("embed_extra"):
        embed |= {"transformer.wte_x.weight", "transformer.wpe_x.weight"}
    assert names["embed"] == embed
    assert names["head"] == ({"lm_head.weight"} if kw["arch"] != "gpt" else set())
    if kw["lnv"]:
        assert any(".lnv" in n for n in names["scalar"])


@pytest.mark.parametrize("kw", VARIANTS)
def test_num_params(kw):
    model = make(**kw)
    d, V, T = TINY["n_embd"], TINY["vocab_size"], TINY["block_size"]
    total = sum(p.numel() for p in model.parameters())
    embed = kw["v0"] == "embed" or kw.get("embed_extra", False)  # a second token + position table
    assert model.num_params() == total
    assert model.num_params(positions=False) == total - T * d * (2 if embed else 1)
    assert model.num_params(v0_tables=False) == total - (V + T) * d * embed
    assert model.num_params(positions=False, v0_tables=False) == total - T * d - (V + T) * d * embed


@pytest.mark.parametrize("bias", (True, False))
def test_flops_baseline_is_nanogpt_formula(bias):
    model = make(**PRESETS["baseline"], bias=bias)
    ref = RefGPT(RefConfig(**{**TINY, "bias": bias}))
    norms_biases = sum(p.numel() for _, p in model.param_groups()["scalar"])  # in 6N, but no matmul FLOPs
    for T in (8, 16):
        assert model.flops_per_token(T) == ref.flops_per_token(T) - 6 * norms_biases
    assert model.flops_per_token() == model.flops_per_token(TINY["block_size"])


@pytest.mark.parametrize("kw", VARIANTS)
def test_flops_count_oracle_calls(kw):
    c = GPTConfig(**{**TINY, **kw})
    d, L = c.n_embd, c.n_layer
    base = make(**PRESETS["baseline"]).flops_per_token(12)
    mlp_calls = c.imex_iters if c.split == "imex" else 1
    model = make(**kw)
    assert model.flops_per_token(12) == base + (mlp_calls - 1) * 3 * 16 * d * d * L
    layer = (model.flops_per_token(12) - 6 * d * c.vocab_size) // L
    assert model.flops_per_token(12, level=1) == 6 * d * c.vocab_size + layer * L // 2


# ---------------------------------------------------------------- KV cache and multilevel
@pytest.mark.parametrize("kw", VARIANTS)
def test_kv_cache_matches_full_forward(kw):
    model = make(dtype=torch.float64, **kw).eval()
    idx = tokens(T=10)
    full, _ = model(idx, targets=idx)  # (B, T, V)
    for chunks in ((4, 1, 1, 1, 1, 1, 1), (1,) * 10, (3, 4, 3)):  # prefill, then steps or chunks after a past
        cache, t = model.new_cache(2, dtype=torch.float64), 0
        for n in chunks:
            logits, _ = model(idx[:, t:t + n], cache=cache)
            t += n
            torch.testing.assert_close(logits[:, 0], full[:, t - 1], rtol=0, atol=1e-10)
        assert cache[0].n == 10
    with pytest.raises(ValueError, match="block_size"):
        model(tokens(T=8), cache=cache)  # 10 + 8 > block_size


@pytest.mark.parametrize("kw", VARIANTS)
def test_multilevel(kw):
    model = make(**kw)
    idx = tokens()
    outs = [model(idx, targets=idx, level=1, offset=o)[0] for o in (0, 1)]
    assert all(o.shape == (2, 12, TINY["vocab_size"]) and torch.isfinite(o).all() for o in outs)
    assert not torch.equal(outs[0], outs[1])
    for level, offset in ((1, 2), (1, -1), (2, 0), (-1, 0)):
        with pytest.raises(ValueError, match="level"):
            model(idx, level=level, offset=offset)


def test_embed_extra_starts_as_the_baseline_with_v0_parameter_count():
    """Zero extra tables, made after every other weight: the baseline's weights and logits; the yuriiformer's
    embedding parameter count."""
    base, extra = make(**PRESETS["baseline"]), make(**PRESETS["baseline"], embed_extra=True)
    x = tokens()
    assert torch.equal(base(x, x)[0], extra(x, x)[0])
    yf = make(**PRESETS["yuriiformer"])
    tables = lambda m, t: sum(p.numel() for n, p in m.named_parameters() if n.startswith(t))  # noqa: E731
    assert tables(extra, ("transformer.wte_x", "transformer.wpe_x")) == tables(yf, ("transformer.wte_v", "transformer.wpe_v"))
    assert extra.num_params(v0_tables=False) == base.num_params()


def test_too_long_sequence():
    with pytest.raises(ValueError, match="block_size=16"):
        make()(tokens(T=17))


# ---------------------------------------------------------------- torch.compile
@pytest.mark.slow
def test_compile_runs_on_cpu():
    model = make(**PRESETS["yuriiformer"])
    compiled = torch.compile(model, fullgraph=True)  # one graph: no breaks in the layer loop
    idx = tokens()
    (a, _), (b, lb) = model(idx, targets=idx), compiled(idx, targets=idx)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    lb.backward()
    assert all(p.grad is not None for p in model.parameters())


# ---------------------------------------------------------------- vocabulary shortlist
SHORT = dict(shortlist=8)


def shortlisted(counts, **kw):
    model = make(dtype=torch.float64, **PRESETS["yuriiformer"], **SHORT, **kw)
    model.set_shortlist(counts)
    return model.eval()


def test_shortlist_classes_follow_the_counts():
    counts = torch.arange(60.0).flip(0)  # token i occurs 59 - i times; ids 60..63 are padding (never seen)
    counts[[3, 40]] = 1000.0
    model = shortlisted(counts)
    cls, logq = model.token_class, model.tail_logq
    top = [3, 40, 0, 1, 2, 4, 5]  # the K - 1 = 7 most frequent, in order
    tail = torch.tensor([i for i in range(60) if i not in top])
    assert cls[top].tolist() == list(range(7)) and (cls[tail] == 7).all() and (cls[60:] == 7).all()
    assert (logq[top] == 0).all() and torch.isinf(logq[60:]).all()  # padding ids: never predicted
    q = counts[tail].double() + 1  # the tail: (count + 1) / sum over the tail
    torch.testing.assert_close(logq[tail].exp(), q / q.sum(), rtol=1e-12, atol=0)
    tail = model.transformer.wte(cls[[6, 59]])
    assert torch.equal(tail[0], tail[1])  # tail tokens share one embedding row (and one head row)


def test_shortlist_is_a_distribution_over_every_token_and_its_loss_is_the_nll():
    """head() gives log p over all V tokens (summing to 1); forward's loss from the K class logits is the mean -log p
    of the targets, with ignored (-1) targets left out; the KV-cache and the all-position logits agree."""
    model = shortlisted(torch.rand(60) * 100)
    idx = tokens(T=10)
    logp = model.logits(idx)  # (B, T, V)
    assert logp.shape == (2, 10, TINY["vocab_size"])
    torch.testing.assert_close(logp.logsumexp(-1), torch.zeros(2, 10, dtype=torch.float64))
    targets = torch.roll(idx, -1, 1).clone()
    targets[0, 3] = targets[1, -1] = -1
    class_logits, loss = model(idx, targets)
    assert class_logits.shape == (2, 10, 8)
    keep = targets >= 0
    want = -logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0][keep].mean()
    torch.testing.assert_close(loss, want)
    cache = model.new_cache(2, dtype=torch.float64)
    for t in range(10):
        step, _ = model(idx[:, t:t + 1], cache=cache)
        torch.testing.assert_close(step[:, 0], logp[:, t])


def test_shortlist_checkpoint_roundtrip_and_size():
    model = shortlisted(torch.rand(60) * 100)
    again = GPT.from_checkpoint({"model_args": model.model_args(), "model": model.state_dict()}).double().eval()
    assert torch.equal(again.token_class, model.token_class)  # (from_checkpoint builds fp32: tail_logq rounds)
    torch.testing.assert_close(again.tail_logq, model.tail_logq)
    torch.testing.assert_close(again.logits(tokens()), model.logits(tokens()), rtol=1e-5, atol=1e-5)
    full = make(**PRESETS["yuriiformer"])
    assert full.num_params() - model.num_params() == 2 * (TINY["vocab_size"] - 8) * TINY["n_embd"]  # wte, wte_v
    assert model.flops_per_token() < full.flops_per_token()
