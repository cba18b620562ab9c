"""Fixtures: one-thread tiny ops, the toy dataset, the prepared TinyStories sample; GPU tests skip without CUDA."""

import pytest
import torch

from data.prepare_common import write_dataset
from tests.helpers import toy_tokens

torch.set_flush_denormal(True)


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def one_thread():
    """One intra-op thread for tests of tiny ops: as fast, and immune to a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A prepared dataset of a learnable toy stream (vocab 64, eot 63)."""
    path = tmp_path_factory.mktemp("toy")
    write_dataset(path, {"train": toy_tokens(40_000, 0), "val": toy_tokens(4_000, 1)}, vocab_size=64, eot_token=63,
                  tokenizer="toy")
    return path
