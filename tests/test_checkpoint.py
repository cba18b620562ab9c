"""checkpoint.load_for_inference: the one loader of sample.py, eval.py and export.py, from a checkpoint file or a run
directory, with one-line errors."""

import pytest
import torch

import checkpoint
from model import GPT, PRESETS, GPTConfig

TINY = dict(n_layer=2, n_head=2, n_embd=16, block_size=16, vocab_size=64)


@pytest.fixture
def run_dir(tmp_path):
    """A run directory whose best.pt and ckpt.pt hold two different models."""
    for seed, name in ((0, checkpoint.BEST), (1, checkpoint.LATEST)):
        torch.manual_seed(seed)
        model = GPT(GPTConfig(**TINY, **PRESETS["yuriiformer"]))
        torch.save({"model_args": model.model_args(), "model": model.state_dict(), "iter_num": seed}, tmp_path / name)
    return tmp_path


def assert_same_weights(model, path):
    saved = torch.load(path, weights_only=True)["model"]
    assert all(torch.equal(v.float(), saved[k].float()) for k, v in model.state_dict().items() if k in saved)


@pytest.mark.parametrize("which, name", [("auto", checkpoint.BEST), ("best", checkpoint.BEST), ("latest", checkpoint.LATEST)])
def test_from_a_run_directory(run_dir, which, name):
    """The file `which` of the run directory, its weights as saved, in eval mode on the device."""
    model, ckpt, file = checkpoint.load_for_inference(run_dir, which, device="cpu")
    assert file == run_dir / name and ckpt["iter_num"] == (name == checkpoint.LATEST)
    assert not model.training and next(model.parameters()).device.type == "cpu"
    assert_same_weights(model, file)


def test_from_a_checkpoint_file(run_dir):
    """ckpt_path wins over out_dir; dtype casts the floating-point weights (export: float32)."""
    model, _, file = checkpoint.load_for_inference("no/such/dir", "best", str(run_dir / checkpoint.LATEST),
                                                   dtype=torch.bfloat16)
    assert file == run_dir / checkpoint.LATEST and {p.dtype for p in model.parameters()} == {torch.bfloat16}
    model, _, _ = checkpoint.load_for_inference("", path=str(run_dir / checkpoint.LATEST), dtype=torch.float32)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert_same_weights(model, file)


def test_one_line_errors(run_dir, tmp_path):
    """A missing directory or file, a bad choice, a damaged file, a file that is no checkpoint: one line each."""
    (run_dir / "damaged.pt").write_bytes(b"not a torch file")
    torch.save({"something": 1}, run_dir / "other.pt")
    cases = [(dict(out_dir=tmp_path / "none"), "no checkpoint in"),
             (dict(out_dir="", path=str(tmp_path / "none.pt")), "check --ckpt_path"),
             (dict(out_dir=run_dir, which="newest"), "choose one of auto, best, latest"),
             (dict(out_dir="", path=str(run_dir / "damaged.pt")), "truncated or damaged"),
             (dict(out_dir="", path=str(run_dir / "other.pt")), "unknown checkpoint format")]
    for kw, message in cases:
        with pytest.raises(checkpoint.CheckpointError) as e:
            checkpoint.load_for_inference(**kw)
        assert message in str(e.value) and "\n" not in str(e.value), str(e.value)
