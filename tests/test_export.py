"""export.py: transformers models with our logits (GPT-2 for the baseline, trust_remote_code for every variant), the
GPT-2 tokenizer built from the embedded ranks, one-line errors. Skipped without transformers (the eval extra has it)."""

import lzma

import pytest
import torch

import export
from data.tokenizer import get_encoding
from model import GPT, PRESETS, GPTConfig
from tests.helpers import ROOT

transformers = pytest.importorskip("transformers", reason='export needs transformers: pip install -e ".[eval]"')
pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = dict(n_layer=2, n_head=2, n_embd=32, block_size=48, vocab_size=50304, bias=False, dropout=0.0)


def scrambled(variant, seed=0, **kw):
    """A tiny GPT-2-vocabulary model with weights far from their init (std 0.1, random norm gains, biases and
    coefficients), so that a wrong layout, activation or tie shows in the logits."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**SMALL, **PRESETS[variant], **kw})).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def save(model, path):
    torch.save({"model_args": model.model_args(), "model": model.state_dict(), "iter_num": 7}, path)
    return path


def logits(model, idx):
    with torch.no_grad():
        return model.logits(idx)


@pytest.mark.parametrize("variant, kw, fmt", [
    ("baseline", {}, "GPT2LMHeadModel"),
    ("baseline", {"bias": True}, "GPT2LMHeadModel"),
    ("yuriiformer", {}, "YuriiForCausalLM"),
    ("polyak", {}, "YuriiForCausalLM"),
    ("imex2", {}, "YuriiForCausalLM"),
    ("gd_euler", {}, "YuriiForCausalLM"),
    ("baseline", {"position": "rope", "activation": "swiglu"}, "YuriiForCausalLM"),
    ("ngpt", {"position": "rope"}, "YuriiForCausalLM"),
    ("yuriiformer", {"shortlist": 300}, "YuriiForCausalLM"),
])
def test_exported_logits_equal_ours(tmp_path, variant, kw, fmt):
    """AutoModelForCausalLM loads every variant from the export (trust_remote_code for the non-GPT-2 ones); its fp32
    logits over the padded vocabulary equal ours within 1e-5."""
    model = scrambled(variant, **kw)
    out = export.export(export.ExportConfig(ckpt_path=str(save(model, tmp_path / "m.pt")), to=str(tmp_path / "hf")))
    assert out["format"] == ("gpt2" if fmt == "GPT2LMHeadModel" else "yuriiformer") and out["max_logit_diff"] <= 1e-5
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), trust_remote_code=fmt != "GPT2LMHeadModel")
    assert type(hf).__name__ == fmt
    idx = torch.randint(0, 50257, (3, SMALL["block_size"]), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = hf.eval()(idx).logits
    assert got.shape == (3, SMALL["block_size"], 50304)
    torch.testing.assert_close(got, logits(model, idx), atol=1e-5, rtol=0)


def test_gpt2_export_layout(tmp_path):
    """The GPT-2 export: tied head, zero biases where the model has none, activation 'gelu'; the check is sensitive
    (transformers' default tanh GELU gives other logits), and the model generates."""
    model = scrambled("baseline")
    export.export(export.ExportConfig(ckpt_path=str(save(model, tmp_path / "m.pt")), to=str(tmp_path / "hf")))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    assert hf.config.activation_function == "gelu" and hf.config.n_positions == SMALL["block_size"]
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()
    h0 = hf.transformer.h[0]
    assert not h0.attn.c_attn.bias.any() and not h0.ln_1.bias.any() and not hf.transformer.ln_f.bias.any()
    torch.testing.assert_close(h0.attn.c_attn.weight, model.transformer.h[0].attn.c_attn.weight.t(), atol=0, rtol=0)
    idx = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(2))
    tanh = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), activation_function="gelu_new")
    with torch.no_grad():
        assert (tanh.eval()(idx).logits - logits(model, idx)).abs().max() > 1e-4
        new = hf.generate(idx[:1, :4], max_new_tokens=3, do_sample=False)
    assert new.shape == (1, 7)


def test_yuriiformer_export_is_self_contained(tmp_path):
    """The remote code is written beside the weights (model.py as yuriiformer_model.py) and the head stays tied."""
    model = scrambled("yuriiformer")
    export.export(export.ExportConfig(ckpt_path=str(save(model, tmp_path / "m.pt")), to=str(tmp_path / "hf")))
    files = {p.name for p in (tmp_path / "hf").iterdir()}
    assert {"config.json", "model.safetensors", "modeling_yuriiformer.py", "yuriiformer_model.py", "tokenizer.json"} <= files
    assert (tmp_path / "hf" / "yuriiformer_model.py").read_text() == (ROOT / "model.py").read_text()
    assert (tmp_path / "hf" / "modeling_yuriiformer.py").read_text() == (ROOT / "hf" / "modeling_yuriiformer.py").read_text()
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), trust_remote_code=True)
    assert hf.gpt.lm_head.weight.data_ptr() == hf.gpt.transformer.wte.weight.data_ptr()
    assert hf.config.max_position_embeddings == SMALL["block_size"]
    with pytest.raises(ValueError, match="pad on the right"):
        hf(torch.ones(2, 4, dtype=torch.long), attention_mask=torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]))


def sample_texts(n=200):
    """Real TinyStories stories from the sample in the repo, and strings that stress the split pattern."""
    with lzma.open(ROOT / "data" / "tinystories" / "sample" / "val.txt.xz", "rt") as f:
        stories = f.read().split("<|endoftext|>")[:n]
    tricky = ["Hello world!  It's   a test\n\n\tof  whitespace 12345 ünïcödé 日本語 🤖 'll 've 'RE",
              " leading space", "trailing spaces   ", "\r\n\r\n  \n", "a" * 300, "don't I'M we'RE x'd",
              "3.14159 1,000,000 $5 @user #tag <html> é‡±", "\u00a0non-breaking\u00adsoft", ""]
    return stories + tricky


def test_exported_tokenizer_encodes_as_ours(tmp_path):
    """The tokenizer written with the export (from data/gpt2.tiktoken, no download) gives our ids and decodes back."""
    model = scrambled("baseline")
    export.export(export.ExportConfig(ckpt_path=str(save(model, tmp_path / "m.pt")), to=str(tmp_path / "hf"),
                                      check=False))
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    enc, texts = get_encoding(), sample_texts()
    assert len(texts) > 200 and tok.eos_token_id == 50256 and len(tok) == 50257
    for text in texts:
        ids = enc.encode_ordinary(text)
        assert tok.encode(text, add_special_tokens=False) == ids, text[:60]
        assert tok.decode(ids) == text


def test_merges_rebuild_the_ranks():
    """Every multi-byte token is one merge of two lower-ranked tokens, in rank order (GPT-2: 50,000 merges)."""
    vocab, merges = export.gpt2_vocab()
    assert len(vocab) == 50257 and len(merges) == 50000
    assert all(vocab[a + b] == 256 + i for i, (a, b) in enumerate(merges))
    assert set(export.byte_chars().values()) <= set(vocab) and len(set(export.byte_chars().values())) == 256


def test_export_cli_and_errors(tmp_path, capsys):
    """The CLI prints what it wrote; user errors are one line with the fix, exit 2."""
    ck = save(scrambled("yuriiformer"), tmp_path / "best.pt")
    export.main([f"--out_dir={tmp_path}", f"--to={tmp_path / 'hf'}"])
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {tmp_path / 'hf'} (yuriiformer") and "trust_remote_code=True" in out
    small = GPT(GPTConfig(**{**SMALL, "vocab_size": 64}))
    cases = [([f"--ckpt_path={ck}"], "give the directory to write: --to=DIR"),
             ([f"--ckpt_path={ck}", f"--to={tmp_path / 'hf'}"], "exists and is not empty"),
             ([f"--ckpt_path={ck}", f"--to={tmp_path / 'x'}", "--format=gpt2"], "update='nesterov'"),
             ([f"--ckpt_path={ck}", f"--to={tmp_path / 'x'}", "--format=onnx"], "choose one of auto, gpt2, yuriiformer"),
             ([f"--ckpt_path={save(small, tmp_path / 's.pt')}", f"--to={tmp_path / 'x'}"], "vocab_size=64"),
             ([f"--out_dir={tmp_path / 'none'}", f"--to={tmp_path / 'x'}"], "no checkpoint in"),
             (["--too=x"], "unknown config key(s): too")]
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            export.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and message in err, err


@pytest.mark.parametrize("variant", ["yuriiformer", "ngpt"])
def test_modeling_code_runs_in_the_repository(variant):
    """hf/modeling_yuriiformer.py, the file an export copies, imported from the repository: YuriiForCausalLM around
    model.py's GPT gives its logits."""
    from hf.modeling_yuriiformer import YuriiConfig, YuriiForCausalLM
    model = scrambled(variant)
    hf = YuriiForCausalLM(YuriiConfig(model_args=model.model_args(), tie_word_embeddings=model.config.arch == "gpt"))
    hf.gpt.load_state_dict(model.state_dict())
    idx = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(hf.eval()(idx).logits, logits(model, idx), atol=0, rtol=0)
