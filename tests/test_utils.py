"""utils: dtype=auto picks bf16 only where it is native (a GPU's compute capability, a CPU's flags)."""

import pytest
import torch

import optim
import utils


@pytest.mark.parametrize("gpu, capability, dtype, muon", [("V100", (7, 0), "float16", "float32"),
                                                          ("T4", (7, 5), "float16", "float32"),
                                                          ("A100", (8, 0), "bfloat16", "bfloat16"),
                                                          ("H100", (9, 0), "bfloat16", "bfloat16")])
def test_auto_dtype_on_cuda_follows_compute_capability(monkeypatch, gpu, capability, dtype, muon):
    """bf16 is native from compute capability 8.0 on; torch.cuda.is_bf16_supported() would also say True where it
    is emulated (V100, T4), so it must not decide."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulation counted (its default)
    assert utils.resolve_dtype("auto", "cuda") == dtype
    assert optim.muon_dtype("auto", "cuda:0") == muon


@pytest.mark.parametrize("flags, dtype", [({"avx2"}, "float32"), ({"avx2", "avx512_bf16"}, "bfloat16"),
                                          ({"amx_bf16"}, "bfloat16"), ({"asimd", "bf16"}, "bfloat16")])
def test_auto_dtype_on_the_cpu_follows_its_flags(monkeypatch, flags, dtype):
    monkeypatch.setattr(utils, "cpu_flags", lambda: flags)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: pytest.fail("asked the GPU"))
    assert utils.resolve_dtype("auto", "cpu") == dtype


def test_explicit_dtype_is_kept():
    assert utils.resolve_dtype("float16", "cpu") == "float16" and utils.resolve_dtype("bfloat16", "cuda") == "bfloat16"
