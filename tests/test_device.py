"""Devices: auto prefers cuda, then mps (Apple GPUs), then cpu; an unavailable device is a one-line error; dtype=auto
is float16 on MPS; autocast follows the device; the loader pins memory for CUDA only; the trainer's device type and
RNG state on MPS. CUDA and MPS availability are mocked (untested on real Apple hardware)."""

import numpy as np
import pytest
import torch

import trainer
import utils
from data.loader import BinLoader
from data.prepare_common import write_dataset


@pytest.fixture
def available(monkeypatch):
    """available(cuda, mps): mock which accelerators torch reports."""
    def set_available(cuda, mps):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    return set_available


@pytest.mark.parametrize("cuda, mps, want", [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"),
                                             (False, False, "cpu")])
def test_auto_device(available, cuda, mps, want):
    available(cuda, mps)
    assert utils.resolve_device("auto") == want


@pytest.mark.parametrize("device, word", [("mps", "MPS"), ("cuda", "CUDA"), ("cuda:1", "CUDA")])
def test_unavailable_device(available, device, word):
    available(False, False)
    with pytest.raises(ValueError) as e:
        utils.resolve_device(device)
    assert word in str(e.value) and "use --device=cpu" in str(e.value) and "\n" not in str(e.value)


def test_named_device(available):
    available(False, True)
    assert utils.resolve_device("mps") == "mps" and utils.resolve_device("cpu") == "cpu"


def test_mps_dtype():
    """auto on MPS is float16 (native on every Apple GPU); an explicit choice is kept."""
    assert utils.resolve_dtype("auto", "mps") == "float16"
    assert utils.resolve_dtype("bfloat16", "mps") == "bfloat16" and utils.resolve_dtype("float32", "mps") == "float32"


@pytest.mark.parametrize("device, dtype, kind", [
    ("mps", "float16", "mps"), ("cpu", "bfloat16", "cpu"),
    pytest.param("cuda:1", "bfloat16", "cuda", marks=pytest.mark.filterwarnings("ignore:CUDA is not available")),
])
def test_autocast_device(device, dtype, kind):
    ctx = utils.autocast(device, dtype)
    assert ctx.device == kind and ctx.fast_dtype == utils.DTYPES[dtype]


def test_loader_pins_for_cuda_only(tmp_path, monkeypatch):
    """A device other than CUDA (meta stands in for mps here) gets its batches without pinned memory."""
    write_dataset(tmp_path, {"train": np.arange(2000) % 500, "val": np.arange(200)})
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pytest.fail("pinned for a device other than CUDA"))
    x, y = BinLoader(tmp_path, "train", 4, 16, device="meta").next_batch()
    assert x.is_meta and y.is_meta and x.shape == y.shape == (4, 16)
    x, _ = BinLoader(tmp_path, "train", 4, 16, device="cpu").next_batch()
    assert x.device.type == "cpu"


def test_mps_device_type_and_rng(monkeypatch):
    """device=mps: the device type autocast, GradScaler and the RNG state follow is 'mps'; its generator's state is
    saved and restored with the CPU's."""
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    for key in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    d = trainer.Dist(trainer.TrainConfig(device="mps"))
    assert (d.device, d.device_type, d.ddp) == ("mps", "mps", False)
    saved = {}
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda: torch.tensor([7], dtype=torch.uint8))
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda s: saved.setdefault("mps", s))
    state = trainer.rng_state("mps")
    assert state["mps"].tolist() == [7] and "cuda" not in state
    trainer.set_rng_state(state, "mps")
    assert saved["mps"].tolist() == [7]
