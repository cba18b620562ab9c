"""Shared fixtures: repo root on sys.path, the shared real-text folder, GPU skipping."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_flush_denormal(True)


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data():
    """Folder of real text (../shared/data or $YURII_SHARED_DATA); skips the test when absent."""
    path = Path(os.environ.get("YURII_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"shared real-text folder not found at {path} (set YURII_SHARED_DATA)")
    return path


@pytest.fixture
def one_thread():
    """One intra-op thread for tests of tiny ops: as fast, and immune to a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def torchrun(argv, nproc=2, attempts=2):
    """`torchrun --standalone --nproc_per_node=nproc train.py argv` with one thread per rank. A launch can fail
    for reasons outside the code (a busy machine: rendezvous or gloo socket timeouts), so it is tried `attempts`
    times; the error names every attempt's stderr tail."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(ROOT / "train.py"), *argv]
    tails = []
    for _ in range(attempts):
        p = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                           timeout=300)
        if p.returncode == 0:
            return p
        tails.append(f"exit {p.returncode}:\n{p.stdout[-1500:]}\n{p.stderr[-3000:]}")
    raise AssertionError("torchrun failed:\n" + "\n---\n".join(tails))
