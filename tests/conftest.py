"""Shared fixtures: repo root on sys.path, the shared real-text folder, GPU skipping."""

import os
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
