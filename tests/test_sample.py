"""generate.py and sample.py: KV-cached decoding equals the full forward for every variant; sampling, streaming and errors."""

import itertools
from dataclasses import asdict

import pytest
import torch

import generate
import sample
from model import GPT, PRESETS, GPTConfig

TINY = dict(n_layer=2, n_head=2, n_embd=16, block_size=32, vocab_size=64)


def all_variants():
    """The presets, nuGPT, and every valid update x split x lnv x v0 (x imex_iters) combination."""
    out = dict(PRESETS)
    out["nugpt"] = {**PRESETS["ngpt"], "arch": "nugpt", "ref_width": 8, "ref_depth": 1}
    for update, split, lnv, v0 in itertools.product(("gd", "polyak", "nesterov"), ("lie_trotter", "euler", "imex"),
                                                    (False, True), ("embed", "zero")):
        for k in (1, 2) if split == "imex" else (1,):
            args = dict(update=update, split=split, lnv=lnv, v0=v0, imex_iters=k)
            try:
                GPTConfig(**TINY, **args)
            except ValueError:
                continue  # a combination without meaning (gd with a velocity option)
            out[f"{update}-{split}-lnv{int(lnv)}-{v0}-k{k}"] = args
    return out


VARIANTS = all_variants()


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops (tests/conftest.py)


def tiny_model(variant, seed=0, **kw):
    """A random tiny model whose update coefficients are moved off their initial values."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**TINY, **VARIANTS[variant], **kw})).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 0:
                p.add_(torch.randn(()))
    return model


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_logits_equal_full_forward(variant):
    model = tiny_model(variant)
    idx = torch.randint(0, 64, (2, TINY["block_size"]), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, _ = model(idx, targets=idx)  # (B, T, V): every position
        cache = model.new_cache(2, dtype=torch.float32)
        steps = [model(idx[:, :5], cache=cache)[0][:, -1]]  # prefill, then one position at a time
        steps += [model(idx[:, t:t + 1], cache=cache)[0][:, -1] for t in range(5, 20)]
        steps.append(model(idx[:, 20:], cache=cache)[0][:, -1])  # a chunk after cached positions, up to block_size
    torch.testing.assert_close(torch.stack(steps[:-1], 1), full[:, 4:20], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(steps[-1], full[:, -1], atol=1e-5, rtol=1e-5)
    assert cache[0].n == TINY["block_size"]


@pytest.mark.parametrize("variant", list(PRESETS) + ["nugpt", "polyak-imex-lnv1-zero-k2"])
def test_greedy_same_with_and_without_cache(variant):
    model, crops = tiny_model(variant), []
    prompt = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(2))
    fast = generate.generate_all(model, prompt, 40, top_k=1, on_crop=crops.append)  # 47 > block_size: crops
    slow = generate.generate_all(model, prompt, 40, top_k=1, use_cache=False, on_crop=crops.append)
    assert fast.shape == (2, 47) and torch.equal(fast, slow)
    assert crops == [TINY["block_size"]] * 2  # the notice comes once per call


@pytest.mark.slow
def test_compiled_decoder():
    """The compiled one-token step equals the eager model at every position, compiles once, and crops like it."""
    torch._dynamo.reset()  # graphs of GPT.forward compiled by other tests would count as earlier compiles
    model = tiny_model("yuriiformer")
    idx = torch.randint(0, 64, (2, TINY["block_size"]), generator=torch.Generator().manual_seed(3))
    decode = generate.compiled_decoder(model)
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        full, _ = model(idx, targets=idx)  # (B, T, V)
        cache = model.new_cache(2, dtype=torch.float32)
        model(idx[:, :5], cache=cache)
        steps = [decode(idx[:, t:t + 1].contiguous(), cache)[0][:, -1] for t in range(5, TINY["block_size"])]
        torch.testing.assert_close(torch.stack(steps, 1), full[:, 5:], atol=1e-5, rtol=1e-5)
        prompt = idx[:, :7]
        fast = generate.generate_all(model, prompt, 40, top_k=1, decode=decode, on_crop=None)  # crosses block_size
    assert torch.equal(fast, generate.generate_all(model, prompt, 40, top_k=1, use_cache=False, on_crop=None))


def test_long_prompt_is_cropped():
    model, crops = tiny_model("yuriiformer"), []
    prompt = torch.randint(0, 64, (1, 40))
    out = generate.generate_all(model, prompt, 3, top_k=1, on_crop=crops.append)
    assert out.shape == (1, 43) and crops == [32]
    assert torch.equal(out, generate.generate_all(model, prompt, 3, top_k=1, use_cache=False, on_crop=None))


@pytest.mark.parametrize("variant", ["yuriiformer", "ngpt", "imex2"])
def test_bf16_autocast_cache(variant):
    model = tiny_model(variant)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert generate.cache_dtype(model, "cpu") == torch.bfloat16
        out = generate.generate_all(model, torch.zeros(1, 3, dtype=torch.long), 10, top_k=5)
    assert out.shape == (1, 13)


def test_same_seed_same_samples():
    model = tiny_model("yuriiformer")
    prompt = torch.zeros(3, 2, dtype=torch.long)
    run = lambda seed: generate.generate_all(model, prompt, 20, temperature=1.5, top_k=50, top_p=0.95,  # noqa: E731
                                           generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


def test_filter_logits():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    keep = lambda **kw: torch.isfinite(generate.filter_logits(logits, **kw))[0].tolist()  # noqa: E731
    assert keep(top_k=2) == [True, True, False, False]
    assert keep(top_p=0.5) == [True, False, False, False]
    assert keep(top_p=0.79) == [True, True, False, False]
    assert keep(top_p=0.81) == [True, True, True, False]
    assert keep(top_p=1.0) == [True] * 4
    assert torch.allclose(generate.filter_logits(logits, temperature=2.0), logits / 2)
    assert generate.next_token(torch.tensor([[0.0, 3.0, 1.0]]), top_k=1).item() == 1  # greedy


@pytest.mark.parametrize("kw, msg", [(dict(temperature=0.0), "temperature=0.0 must be > 0"),
                                     (dict(top_k=0), "top_k=0 must be >= 1"),
                                     (dict(top_p=0.0), "top_p=0.0 must be in (0, 1]"),
                                     (dict(top_p=1.5), "top_p=1.5 must be in (0, 1]")])
def test_generate_rejects_bad_parameters(kw, msg):
    with pytest.raises(generate.SampleError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        next(generate.generate(tiny_model("baseline"), torch.zeros(1, 1, dtype=torch.long), 1, **kw))


# ---- the command line: checkpoints, tokenizer, streaming, errors ----

@pytest.fixture(scope="module")
def enc():
    from data.tokenizer import get_encoding
    try:
        return get_encoding()
    except RuntimeError as e:
        pytest.skip(f"GPT-2 BPE ranks unavailable: {e}")


def save_run(out_dir, variant="yuriiformer", name="ckpt.pt", nanogpt=False):
    """A checkpoint of a tiny model with the GPT-2 vocabulary, in this repo's format or nanoGPT's."""
    model = tiny_model(variant, vocab_size=50304, block_size=64, bias=variant != "ngpt")
    out_dir.mkdir(exist_ok=True)
    if nanogpt:  # seven model_args and a torch.compile'd state dict
        args = {k: v for k, v in asdict(model.config).items()
                if k in ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout")}
        ckpt = {"model_args": args, "model": {"_orig_mod." + k: v for k, v in model.state_dict().items()},
                "iter_num": 0, "best_val_loss": 9.0, "config": {}}
    else:
        ckpt = {"format": "yuriiformer-ckpt-v1", "model_args": model.model_args(), "model": model.state_dict()}
    torch.save(ckpt, out_dir / name)
    return out_dir / name


def run_main(argv, capsys):
    """(exit code, stdout, stderr) of sample.main(argv)."""
    code = 0
    try:
        sample.main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


ARGS = ["--device=cpu", "--dtype=float32", "--num_samples=2", "--max_new_tokens=12"]


def test_main_streams_samples(tmp_path, capsys, enc):
    save_run(tmp_path / "run")
    code, out, err = run_main([f"--out_dir={tmp_path / 'run'}", "--start=Once upon a time", *ARGS], capsys)
    assert code == 0 and err == ""
    samples = out.split("\n---------------\n")
    assert len(samples) == 3 and samples[-1] == "" and all(s.startswith("Once upon a time") for s in samples[:2])
    assert samples[0] != samples[1]
    assert run_main([f"--out_dir={tmp_path / 'run'}", "--start=Once upon a time", *ARGS], capsys)[1] == out  # seed
    assert run_main([f"--out_dir={tmp_path / 'run'}", "--start=Once upon a time", "--seed=2", *ARGS],
                    capsys)[1] != out


def test_main_file_prompt_best_and_nanogpt(tmp_path, capsys, enc):
    (tmp_path / "prompt.txt").write_text("Lily saw a dog.", encoding="utf-8")
    save_run(tmp_path / "run", variant="ngpt", name="best.pt")
    code, out, _ = run_main([f"--out_dir={tmp_path / 'run'}", f"--start=FILE:{tmp_path / 'prompt.txt'}", *ARGS],
                            capsys)
    assert code == 0 and out.startswith("Lily saw a dog.")
    nano = save_run(tmp_path / "nano", variant="baseline", nanogpt=True)
    code, out, _ = run_main([f"--ckpt_path={nano}", "--start=Hi", "--top_k=1", "--max_new_tokens=70", *ARGS[:3]],
                            capsys)
    assert code == 0 and out.startswith("Hi")
    assert capsys.readouterr().err == ""
    code, out, err = run_main([f"--ckpt_path={nano}", "--start=Hi", "--top_k=1", "--max_new_tokens=70", *ARGS[:3]],
                              capsys)
    assert err.count("block_size=64") == 1  # the crop notice, once for both samples


def test_text_stream_joins_split_characters(enc):
    text = "naïve café 日本語 🙂 done"
    ids = enc.encode(text)
    stream = sample.TextStream(enc)
    pieces = [stream.push(t) for t in ids] + [stream.flush()]
    assert "".join(pieces) == text and "\ufffd" not in "".join(pieces)
    assert sample.TextStream(enc).push(50300) == "\ufffd"  # a padding id


def small_vocab_ckpt():
    model = tiny_model("baseline")  # vocab_size=64: not a GPT-2 BPE model
    return {"model_args": model.model_args(), "model": model.state_dict()}


def write(path, data):
    path.write_bytes(data) if isinstance(data, bytes) else torch.save(data, path)
    return path


def truncate(path):
    path.write_bytes(path.read_bytes()[:1000])
    return path


@pytest.mark.parametrize("case, msg", [
    ("no_ckpt", "no checkpoint in {d}: looked for {d}/best.pt and {d}/ckpt.pt; train one with `python train.py"),
    ("not_torch", "{d}/x.pt is truncated or damaged ("),
    ("truncated_best", "{d}/run/best.pt is truncated or damaged"),
    ("no_keys", "unknown checkpoint format: not a checkpoint of this repo or nanoGPT"),
    ("not_dict", "unknown checkpoint format: not a checkpoint of this repo or nanoGPT"),
    ("missing_file", "no checkpoint file {d}/nope.pt"),
    ("empty_prompt", "the prompt is empty after encoding"),
    ("temperature", "temperature=0.0 must be > 0 (for greedy decoding use --top_k=1)"),
    ("temperature_neg", "temperature=-1.0 must be > 0"),
    ("top_k", "top_k=0 must be >= 1"),
    ("top_p", "top_p=0.0 must be in (0, 1]"),
    ("top_p_big", "top_p=1.2 must be in (0, 1]"),
    ("ckpt", "ckpt='newest': choose one of auto, best, latest"),
    ("unknown_key", "unknown config key(s): temp"),
    ("train_config", "no checkpoint in {d}/out-x: looked for"),  # a train config supplies out_dir
    ("small_vocab", "the model's vocab_size=64 is smaller than GPT-2 BPE's 50257"),
])
def test_main_errors(tmp_path, capsys, case, msg, enc):
    d = tmp_path
    argv = {"no_ckpt": lambda: [f"--out_dir={d}"],
            "not_torch": lambda: [f"--ckpt_path={write(d / 'x.pt', b'hello')}"],
            "no_keys": lambda: [f"--ckpt_path={write(d / 'x.pt', {'weights': {}})}"],
            "not_dict": lambda: [f"--ckpt_path={write(d / 'x.pt', [1, 2])}"],
            "missing_file": lambda: [f"--ckpt_path={d / 'nope.pt'}"],
            "truncated_best": lambda: [f"--out_dir={truncate(save_run(d / 'run', name='best.pt')).parent}"],
            "empty_prompt": lambda: [f"--ckpt_path={save_run(d / 'run')}", "--start="],
            "temperature": lambda: ["--temperature=0"], "temperature_neg": lambda: ["--temperature=-1"],
            "top_k": lambda: ["--top_k=0"], "top_p": lambda: ["--top_p=0"], "top_p_big": lambda: ["--top_p=1.2"],
            "ckpt": lambda: ["--ckpt=newest"], "unknown_key": lambda: ["--temp=1"],
            "small_vocab": lambda: [f"--ckpt_path={write(d / 'x.pt', small_vocab_ckpt())}"],
            "train_config": lambda: [str(write(d / "c.py", f"out_dir = '{d}/out-x'\nmax_iters = 5\n".encode()))],
            }[case]()
    code, out, err = run_main(argv + ["--device=cpu"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and msg.format(d=d) in err, err
    if case in ("not_torch", "truncated_best"):  # and the fix
        assert err.rstrip().endswith("check --ckpt_path" if case == "not_torch" else
                                     "use --ckpt=latest (ckpt.pt) or train anew"), err


@pytest.mark.gpu
def test_cuda_cached_decoding(tmp_path, capsys, enc):
    model = tiny_model("yuriiformer").cuda()
    idx = torch.randint(0, 64, (2, 20), device="cuda")
    with torch.no_grad():
        full, _ = model(idx, targets=idx)
        cache = model.new_cache(2, "cuda", torch.float32)
        model(idx[:, :10], cache=cache)
        step = torch.stack([model(idx[:, t:t + 1], cache=cache)[0][:, -1] for t in range(10, 20)], 1)
    torch.testing.assert_close(step, full[:, 10:], atol=1e-3, rtol=1e-3)  # TF32 may be on
    save_run(tmp_path / "run")
    code, out, err = run_main([f"--out_dir={tmp_path / 'run'}", "--device=cuda", "--num_samples=2",
                               "--max_new_tokens=70"], capsys)  # bf16 autocast, crosses block_size=64
    assert code == 0 and out.count("---------------") == 2 and err.count("block_size=64") == 1
