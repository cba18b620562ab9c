"""The training loader: open_split checks, epoch order, DDP shares, resume, random order, devices."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data.loader import BinLoader, DataError, open_split
from data.prepare_common import write_dataset

N, T, B = 5000, 15, 4  # tokens, block_size, batch_size: blocks of 16 tokens


@pytest.fixture
def ds(tmp_path):
    """A prepared dataset whose token at position i is i % 50000 (so a window tells where it came from)."""
    d = tmp_path / "tinystories"
    write_dataset(d, {"train": np.arange(N) % 50000, "val": np.arange(N // 2)})
    return d


def starts(x):
    return x[:, 0].tolist()  # token value == stream position (N < 50000)


def epoch_blocks(loader, world_size=1, ranks=(0,)):
    """Start positions of every block served during epoch 0, per rank."""
    out = {}
    for r in ranks:
        ld = BinLoader(loader[0], "train", B, T, rank=r, world_size=world_size, seed=loader[1])
        seen = []
        while True:
            x, _ = ld.next_batch()
            if ld.epoch:
                break
            seen += starts(x)
        out[r] = seen
    return out


def test_batches_are_shifted_windows(ds):
    ld = BinLoader(ds, "train", B, T)
    x, y = ld.next_batch()
    assert x.shape == y.shape == (B, T) and x.dtype == y.dtype == torch.int64 and x.is_contiguous() and y.is_contiguous()
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y[:, -1], x[:, -1] + 1)
    assert ld.tokens_per_batch == B * T and ld.epoch == 0


def test_epoch_covers_every_block_once_and_reshuffles(ds):
    ld = BinLoader(ds, "train", B, T, seed=7)
    seen = {}
    while ld.epoch < 3:
        x, _ = ld.next_batch()  # afterwards ld.epoch is the epoch this batch belongs to
        seen.setdefault(ld.epoch, []).extend(starts(x))
    for e in range(3):
        off, perm = ld.epoch_order(e)
        blocks = off + np.arange(len(perm)) * (T + 1)
        assert len(seen[e]) == len(perm) // B * B  # incomplete final batch dropped
        assert len(set(seen[e])) == len(seen[e]) and set(seen[e]) <= set(blocks)  # each block at most once
        assert len(blocks) - len(seen[e]) < B and all((s - off) % (T + 1) == 0 for s in seen[e])
    assert seen[0] != seen[1] != seen[2]
    assert len({ld.epoch_order(e)[0] for e in range(20)}) > 1  # the block boundaries move too


def test_epoch_order_is_a_function_of_seed_only(ds, tmp_path):
    a = BinLoader(ds, "train", B, T, seed=3)
    b = BinLoader(ds, "train", 2 * B, T, seed=3, vocab_size=50304, device="cpu")  # another "variant"
    assert [starts(a.next_batch()[0]) + starts(a.next_batch()[0]) for _ in range(5)] == \
           [starts(b.next_batch()[0]) for _ in range(5)]
    c = BinLoader(ds, "train", B, T, seed=4)
    assert starts(c.next_batch()[0]) != starts(BinLoader(ds, "train", B, T, seed=3).next_batch()[0])


def test_ddp_shares_are_disjoint_and_cover_the_epoch(ds):
    one = epoch_blocks((ds, 11))[0]
    two = epoch_blocks((ds, 11), world_size=2, ranks=(0, 1))
    assert not set(two[0]) & set(two[1]) and len(two[0]) == len(two[1])
    assert sorted(two[0] + two[1]) == sorted(one[:len(two[0]) * 2])  # the same blocks, in the same global order
    G = 2 * B
    for step in range(len(two[0]) // B):  # global step s: rank 0 takes the first half, rank 1 the second
        assert two[0][step * B:(step + 1) * B] + two[1][step * B:(step + 1) * B] == one[step * G:(step + 1) * G]


@pytest.mark.parametrize("order", ["epoch", "random"])
def test_resume_continues_with_the_identical_next_batch(ds, order):
    ld = BinLoader(ds, "train", B, T, order=order, seed=5, rank=1, world_size=2)
    for _ in range(90):  # into epoch 2 (about 312 blocks / 8 per global step = 39 steps an epoch)
        ld.next_batch()
    buf = io.BytesIO()
    torch.save(ld.state_dict(), buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    assert all(isinstance(v, (int, str)) for v in state.values())
    nxt = [ld.next_batch() for _ in range(3)]
    new = BinLoader(ds, "train", B, T, order=order, seed=5, rank=1, world_size=2)
    new.load_state_dict(state)
    for x, y in nxt:
        x2, y2 = new.next_batch()
        assert torch.equal(x, x2) and torch.equal(y, y2)
    assert new.state_dict() == ld.state_dict()
    if order == "epoch":
        assert state["epoch"] >= 1
    with pytest.raises(DataError, match="seed=5 but this loader has seed=6"):
        BinLoader(ds, "train", B, T, order=order, seed=6).load_state_dict(state)


def test_reset_replays_the_same_batches(ds):
    ld = BinLoader(ds, "val", B, T, seed=2)
    first = [ld.next_batch()[0] for _ in range(30)]
    ld.reset()
    assert all(torch.equal(a, ld.next_batch()[0]) for a in first)


def test_random_order(ds):
    a = BinLoader(ds, "train", B, T, order="random", seed=9)
    xs = [a.next_batch()[0] for _ in range(200)]
    s = np.array([starts(x) for x in xs]).ravel()
    assert s.min() >= 0 and s.max() <= N - T - 1 and len(set(s.tolist())) > 500  # uniform offsets, any alignment
    assert len(set((s % (T + 1)).tolist())) == T + 1
    b = BinLoader(ds, "train", B, T, order="random", seed=9, rank=1, world_size=2)
    assert not torch.equal(xs[0], b.next_batch()[0])  # ranks draw differently
    a.reset()
    assert torch.equal(xs[0], a.next_batch()[0])


def test_too_little_data_and_bad_args(ds):
    with pytest.raises(DataError, match="too few for one global batch"):
        BinLoader(ds, "val", 64, 64)
    with pytest.raises(DataError, match="fewer than block_size"):
        BinLoader(ds, "val", 1, 4000, order="random")
    with pytest.raises(ValueError, match="order='shuffle'"):
        BinLoader(ds, "train", B, T, order="shuffle")
    with pytest.raises(ValueError, match="rank"):
        BinLoader(ds, "train", B, T, rank=2, world_size=2)


# ----------------------------------------------------------------------------- open_split errors

def one_line(excinfo):
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


def test_not_prepared_names_the_command(tmp_path):
    with pytest.raises(DataError) as e:
        open_split(tmp_path / "tinystories", "train")
    assert f"run `python data/tinystories/prepare.py --out_dir {tmp_path / 'tinystories'}`" in one_line(e)
    with pytest.raises(DataError) as e:
        BinLoader(Path(__file__).resolve().parents[1] / "data" / "openwebtext" / "nowhere", "train", 1, 1)
    assert "python data/<dataset>/prepare.py" in one_line(e)


def test_bin_checks(ds):
    with open(ds / "train.bin", "ab") as f:
        f.write(b"\0")
    with pytest.raises(DataError, match="odd length") as e:
        open_split(ds, "train")
    one_line(e)
    with open(ds / "train.bin", "r+b") as f:
        f.truncate(2 * N - 100)
    with pytest.raises(DataError, match="truncated .* 4,950 tokens, meta.json says 5,000; rerun .*--force") as e:
        open_split(ds, "train")
    (ds / "val.bin").unlink()
    with pytest.raises(DataError, match="val.bin is missing"):
        open_split(ds, "val")
    with pytest.raises(DataError, match="no 'test' split"):
        open_split(ds, "test")
    (ds / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match="meta.json is unreadable") as e:
        open_split(ds, "train")
    one_line(e)


def test_vocab_checks(tmp_path):
    d = tmp_path / "ds"
    write_dataset(d, {"train": [1, 2, 3, 50256], "val": [5, 60000]})
    assert len(open_split(d, "train", vocab_size=50304)) == 4  # GPT-2's padded vocab is fine
    with pytest.raises(DataError, match="vocab_size 50257 .* model has vocab_size 1000: set vocab_size >= 50257") as e:
        open_split(d, "train", vocab_size=1000)
    one_line(e)
    with pytest.raises(DataError, match="holds token 60000 >= the model's vocab_size 50304"):
        open_split(d, "val", vocab_size=50304)
    meta = json.loads((d / "meta.json").read_text())
    meta["splits"]["val"]["max_token"] = 9  # a bin that lies about its contents: found by the full scan
    (d / "meta.json").write_text(json.dumps(meta))
    open_split(d, "val", vocab_size=50304)
    with pytest.raises(DataError, match="holds token 60000, out of vocab range 50257") as e:
        open_split(d, "val", vocab_size=50304, verify=True)
    one_line(e)
    small = tmp_path / "small"
    write_dataset(small, {"train": [1, 2, 3], "val": [4]}, vocab_size=10, eot_token=9, tokenizer="custom")
    assert open_split(small, "train", vocab_size=16, verify=True).tolist() == [1, 2, 3]


@pytest.mark.gpu
def test_cuda_pinned_batches(ds):
    ld = BinLoader(ds, "train", B, T, device="cuda")
    cpu = BinLoader(ds, "train", B, T)
    for _ in range(5):
        (x, y), (xc, yc) = ld.next_batch(), cpu.next_batch()
        assert x.is_cuda and torch.equal(x.cpu(), xc) and torch.equal(y.cpu(), yc)
