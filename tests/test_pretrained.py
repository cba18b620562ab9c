"""pretrained.py: a transformers GPT-2 as our GPT with transformers' logits (tanh GELU, Conv1D transposed, biases),
vocabulary padding, cropped positions, exact variants only, one-line errors; export.py's gpt2 format read back. All
offline: a tiny random GPT2LMHeadModel in tmp_path; the hub name runs with HF_HUB_OFFLINE=1 and an empty HF_HOME."""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

import export
from model import GPT, PRESETS, GPTConfig
from pretrained import GPT2_SIZES, PretrainedError, load_gpt2, source
from tests import helpers
from tests.helpers import ROOT

transformers = pytest.importorskip("transformers", reason='pretrained.py needs transformers: pip install -e ".[export]"')
pytestmark = pytest.mark.usefixtures("one_thread")
V, T = 100, 64  # the tiny GPT-2's vocabulary and positions


def tiny_gpt2(path, activation="gelu_new", seed=0):
    return helpers.tiny_gpt2(path, activation, seed, vocab=V, positions=T)


@pytest.fixture
def gpt2_dir(tmp_path):
    return tmp_path / "gpt2", tiny_gpt2(tmp_path / "gpt2")


def ids(n=3, length=T, vocab=V, seed=1):
    return torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(seed))


def logits(model, idx):
    with torch.no_grad():
        return model.eval().logits(idx) if isinstance(model, GPT) else model(idx).logits


@pytest.mark.parametrize("activation, ours", [("gelu_new", "gelu_tanh"), ("gelu", "gelu")])
@pytest.mark.parametrize("overrides", [{}, {"split": "imex"}, {"embed_extra": True}, {"dropout": 0.1}])
def test_logits_equal_transformers(tmp_path, activation, ours, overrides):
    """GPT-2's fp32 logits at every position, for the baseline and the variants that compute the same function
    (imex with one sweep: A(X) + M(X + A(X)); embed_extra's zero tables; dropout, off in eval mode)."""
    hf = tiny_gpt2(tmp_path, activation)
    model = load_gpt2(str(tmp_path), **overrides)
    c = model.config
    assert (c.activation, c.bias, c.vocab_size, c.block_size, c.n_layer, c.n_embd) == (ours, True, V, T, 2, 32)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    idx = ids()
    torch.testing.assert_close(logits(model, idx), logits(hf, idx), atol=1e-5, rtol=0)


def test_activation_matters(gpt2_dir):
    """The check is sensitive: GPT-2's weights with the exact GELU give other logits than its tanh GELU."""
    path, hf = gpt2_dir
    tanh = load_gpt2(str(path))
    exact = GPT(GPTConfig(**{**tanh.model_args(), "activation": "gelu"}))
    exact.load_state_dict(tanh.state_dict())
    assert (logits(exact, ids()) - logits(hf, ids())).abs().max() > 1e-4


def test_vocab_padding(gpt2_dir):
    """vocab_size=128: zero rows appended, the real tokens' logits (hence their log-probs over the real vocabulary)
    unchanged, each padded id's logit exactly 0; without vocab_size, GPT-2's own vocabulary."""
    path, hf = gpt2_dir
    model = load_gpt2(str(path), vocab_size=128)
    assert model.config.vocab_size == 128 and not model.transformer.wte.weight[V:].any()
    got, want = logits(model, ids()), logits(hf, ids())
    assert got.shape == (3, T, 128) and not got[..., V:].any()
    torch.testing.assert_close(got[..., :V], want, atol=1e-5, rtol=0)
    torch.testing.assert_close(F.log_softmax(got[..., :V], -1), F.log_softmax(want, -1), atol=1e-5, rtol=0)


def test_block_size_crop(gpt2_dir):
    """block_size=16 keeps the first 16 positions (nanoGPT's crop_block_size): the same logits on 16 tokens."""
    path, hf = gpt2_dir
    model = load_gpt2(str(path), block_size=16)
    assert model.transformer.wpe.weight.shape == (16, 32)
    torch.testing.assert_close(logits(model, ids(length=16)), logits(hf, ids(length=16)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(GPT2_SIZES))
def test_gpt2_sizes(name):
    """The four published sizes have their published parameter counts (tied head, vocab 50257, 1024 positions)."""
    published = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200}
    with torch.device("meta"):
        model = GPT(GPTConfig(**GPT2_SIZES[name], vocab_size=50257, block_size=1024, bias=True))
    assert model.num_params() == published[name]


def one_line(e, *words):
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


@pytest.mark.parametrize("overrides, words", [
    ({"n_layer": 3}, ("n_layer=3 (it has 2)", "remove")),
    ({"bias": False}, ("bias=False",)),
    ({"position": "rope", "activation": "swiglu"}, ("position='rope'", "activation='swiglu'")),
    ({"vocab_size": 50}, ("vocab_size=50 (it has 100 tokens)",)),
    ({"block_size": 128}, ("block_size=128 (it has 64 positions)",)),
    (PRESETS["yuriiformer"], ("update='nesterov'", "momentum", "from scratch")),
    (PRESETS["polyak"], ("update='polyak'", "momentum")),
    (PRESETS["gd_euler"], ("split='euler'",)),
    (PRESETS["gd_imex2"], ("imex_iters=2",)),
    (PRESETS["ngpt"], ("arch='ngpt'",)),
])
def test_refused_settings(gpt2_dir, overrides, words):
    """Settings GPT-2 fixes, and variants that are another function at step 0, are one-line errors."""
    with pytest.raises(PretrainedError) as e:
        load_gpt2(str(gpt2_dir[0]), **overrides)
    one_line(e, *words)


def test_source(tmp_path):
    """A directory wins over a name (as in transformers); anything else is no GPT-2 source (train.py: a file)."""
    assert [source(n) for n in ("gpt2", "gpt2-xl", str(tmp_path), "gpt3", "out/ckpt.pt")] == ["hub", "hub", "dir", None, None]


def test_not_gpt2(tmp_path):
    """An unknown name, an empty directory, another model type, a GPT-2 config without weights, a GPT-2 whose
    settings our GPT lacks: one line each."""
    with pytest.raises(PretrainedError) as e:
        load_gpt2("gpt3")
    one_line(e, "neither a GPT-2 name (gpt2, gpt2-medium, gpt2-large, gpt2-xl) nor a directory")
    with pytest.raises(PretrainedError) as e:
        load_gpt2(str(tmp_path))
    one_line(e, "has no readable config.json")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(PretrainedError) as e:
        load_gpt2(str(tmp_path))
    one_line(e, "holds a 'llama' model, not GPT-2")
    transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=V).save_pretrained(str(tmp_path))
    with pytest.raises(PretrainedError) as e:
        load_gpt2(str(tmp_path))
    one_line(e, "cannot load GPT-2", "model.safetensors")
    transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=V, n_inner=64, layer_norm_epsilon=1e-6,
                            activation_function="relu").save_pretrained(str(tmp_path))
    with pytest.raises(PretrainedError) as e:
        load_gpt2(str(tmp_path))
    one_line(e, "settings this repo's GPT does not have (layer_norm_epsilon=1e-06, n_inner=64, activation_function='relu')")


def test_offline_without_cache(tmp_path):
    """gpt2 with HF_HUB_OFFLINE=1 and an empty cache: one line naming the cache and both fixes (a fresh process, so
    that huggingface_hub reads the environment; it cannot reach the network)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": str(ROOT)}
    code = "import pretrained\ntry:\n    pretrained.load_gpt2('gpt2')\nexcept pretrained.PretrainedError as e:\n    print(e)"
    p = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.count("\n") == 1, p.stdout + p.stderr
    assert "gpt2 is neither in the Hugging Face cache" in p.stdout and str(tmp_path / "hf_home") in p.stdout
    assert "HF_HUB_OFFLINE unset" in p.stdout and "--init_from=DIR" in p.stdout


@pytest.mark.parametrize("activation, bias", [("gelu", False), ("gelu", True), ("gelu_tanh", True)])
def test_export_round_trip(tmp_path, activation, bias):
    """A baseline checkpoint exported in the gpt2 format (zero biases where it has none; gelu_tanh as gelu_new) loads
    back through load_gpt2 with our logits over the whole padded vocabulary."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=48, vocab_size=50304, bias=bias,
                          activation=activation)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ckpt = tmp_path / "m.pt"
    torch.save({"model_args": model.model_args(), "model": model.state_dict()}, ckpt)
    out = export.export(export.ExportConfig(ckpt_path=str(ckpt), to=str(tmp_path / "hf")))
    assert out["format"] == "gpt2"
    back = load_gpt2(str(tmp_path / "hf"))
    assert (back.config.activation, back.config.vocab_size, back.config.block_size) == (activation, 50304, 48)
    idx = ids(2, 48, 50257)
    torch.testing.assert_close(logits(back, idx), logits(model, idx), atol=1e-5, rtol=0)
