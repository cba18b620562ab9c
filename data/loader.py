"""
Training batches from prepared token bins (data/<name>/{train,val}.bin + meta.json, see prepare_common.py).

Two orders. "random": nanoGPT's, block_size+1 windows at uniform random offsets. "epoch": the token
stream is cut into non-overlapping blocks of block_size+1 tokens starting at o_e + j*(block_size+1);
epoch e has its own offset o_e in [0, block_size] and block permutation, both derived from (seed, e)
only, so every model variant and every rank sees the same order. Each global step takes the next
batch_size*world_size entries of the permutation, rank r its own slice; a final incomplete global
batch is dropped. The state (epoch, position) goes in checkpoints, so a resumed run continues with
exactly the next batch.
"""

import json
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


class DataError(RuntimeError):
    """A problem with the data, told in one line that names the fix."""


def prepare_command(data_dir):
    """The command that prepares data_dir: python data/<name>/prepare.py [--out_dir ...]."""
    d = Path(data_dir)
    if (REPO / "data" / d.name / "prepare.py").exists():
        default = d.resolve() == (REPO / "data" / d.name).resolve()
        return f"python data/{d.name}/prepare.py" + ("" if default else f" --out_dir {data_dir}")
    return f"python data/<dataset>/prepare.py --out_dir {data_dir}"


def read_meta(data_dir):
    """meta.json of a prepared dataset, or a DataError naming the prepare command."""
    path = Path(data_dir) / "meta.json"
    if not path.exists():
        raise DataError(f"dataset not prepared: {path} is missing; run `{prepare_command(data_dir)}`")
    try:
        meta = json.loads(path.read_text())
        assert isinstance(meta["splits"], dict) and isinstance(meta["vocab_size"], int)
    except Exception as e:
        raise DataError(f"{path} is unreadable ({type(e).__name__}); rerun `{prepare_command(data_dir)} --force`") from e
    return meta


def open_split(data_dir, split, vocab_size=None, verify=False):
    """Token memmap of one split, checked against meta.json (and the model's vocab_size when given).

    The token-range check trusts meta.json's max_token; verify=True also scans the bin for it.
    """
    meta, fix = read_meta(data_dir), f"rerun `{prepare_command(data_dir)} --force`"
    if split not in meta["splits"]:
        raise DataError(f"{data_dir} has no {split!r} split (it has {', '.join(meta['splits'])})")
    info, path = meta["splits"][split], Path(data_dir) / f"{split}.bin"
    if not path.exists():
        raise DataError(f"{path} is missing although meta.json lists it; {fix}")
    size = path.stat().st_size
    if size % 2:
        raise DataError(f"{path} has an odd length ({size} bytes), so it is not uint16 tokens; {fix}")
    if size != 2 * info["tokens"]:
        raise DataError(f"{path} is truncated or altered: {size // 2:,} tokens, meta.json says {info['tokens']:,}; {fix}")
    if vocab_size is not None:
        if meta["vocab_size"] > vocab_size:
            raise DataError(f"{data_dir} was tokenized with vocab_size {meta['vocab_size']} ({meta.get('tokenizer')}) "
                            f"but the model has vocab_size {vocab_size}: set vocab_size >= {meta['vocab_size']}")
        if info.get("max_token", -1) >= vocab_size:
            raise DataError(f"{path} holds token {info['max_token']} >= the model's vocab_size {vocab_size}; {fix}")
    data = np.memmap(path, dtype=np.uint16, mode="r") if size else np.zeros(0, dtype=np.uint16)
    if verify and len(data):
        top = max(int(data[i:i + (1 << 26)].max()) for i in range(0, len(data), 1 << 26))
        limit = min(meta["vocab_size"], vocab_size or meta["vocab_size"])
        if top >= limit or top != info.get("max_token", top):
            raise DataError(f"{path} holds token {top}, out of vocab range {limit} (meta.json max_token "
                            f"{info.get('max_token')}); {fix}")
    return data


def token_counts(data_dir, split="train", limit=1 << 26):
    """How often each token id (< meta vocab_size) occurs in the first `limit` tokens of a split: (vocab,) int64."""
    data = open_split(data_dir, split)
    return np.bincount(data[:limit], minlength=read_meta(data_dir)["vocab_size"]).astype(np.int64)


def _seed(*ints):
    """A 63-bit torch/numpy seed mixed from non-negative ints."""
    return int(np.random.SeedSequence(list(ints)).generate_state(2, np.uint64)[0] >> np.uint64(1))


class BinLoader:
    """Batches x, y (int64, batch_size x block_size, y = x shifted by one) of one split, for one DDP rank."""

    def __init__(self, data_dir, split, batch_size, block_size, *, order="epoch", seed=1337, rank=0, world_size=1,
                 device="cpu", vocab_size=None):
        if order not in ("epoch", "random"):
            raise ValueError(f"order={order!r} is not valid: choose 'epoch' or 'random'")
        for k, v in dict(batch_size=batch_size, block_size=block_size, world_size=world_size).items():
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{k}={v!r} must be a positive integer")
        if not 0 <= rank < world_size or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"need 0 <= rank < world_size and seed >= 0 (got rank={rank}, world_size={world_size}, seed={seed})")
        self.data = open_split(data_dir, split, vocab_size)
        self.split, self.order, self.seed, self.rank, self.world_size = split, order, seed, rank, world_size
        self.batch_size, self.block_size, self.tokens_per_batch = batch_size, block_size, batch_size * block_size
        self.device = torch.device(device)
        n, need = len(self.data), block_size + 1
        if order == "random" and n < need:
            raise DataError(f"{split} split of {data_dir} has {n} tokens, fewer than block_size+1 = {need}")
        if order == "epoch" and (n - block_size) // need < batch_size * world_size:  # worst offset o = block_size
            raise DataError(f"{split} split of {data_dir} has {n:,} tokens, too few for one global batch of "
                            f"{batch_size * world_size} blocks of {need} tokens: lower batch_size or block_size")
        self._perm_epoch = None
        self.reset()

    def reset(self):
        """Back to the first batch (evaluate on the same batches every time)."""
        self.epoch, self.position = 0, 0

    def state_dict(self):
        """Where the loader is (plain ints/strs, fine for torch.load(weights_only=True)); the same on every rank."""
        return dict(order=self.order, seed=self.seed, block_size=self.block_size, num_tokens=len(self.data),
                    epoch=self.epoch, position=self.position)

    def load_state_dict(self, state):
        """Continue from state_dict(): the next batch is the one that would have come next."""
        mine = self.state_dict()
        for k in ("order", "seed", "block_size", "num_tokens"):
            if state.get(k) != mine[k]:
                raise DataError(f"loader state is for {k}={state.get(k)!r} but this loader has {k}={mine[k]!r}: "
                                f"resume with the same data and settings")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def epoch_order(self, epoch):
        """(offset o_e, block permutation) of an epoch: a function of (seed, epoch) and the data length only."""
        rng = np.random.default_rng([self.seed, epoch])
        offset = int(rng.integers(0, self.block_size + 1))
        return offset, rng.permutation((len(self.data) - offset) // (self.block_size + 1))

    def _starts(self):
        """Start indices of this rank's next batch; advances the state."""
        B, G = self.batch_size, self.batch_size * self.world_size
        if self.order == "random":  # generator reseeded from (seed, rank, step): rank-free, resumable state
            g = torch.Generator().manual_seed(_seed(self.seed, self.rank, self.position))
            starts = torch.randint(len(self.data) - self.block_size, (B,), generator=g).numpy()
            self.position += 1
            self.epoch = self.position * G * self.block_size // len(self.data)  # nominal epochs seen
            return starts
        if self._perm_epoch != self.epoch:
            self._offset, self._perm = self.epoch_order(self.epoch)
            self._perm_epoch = self.epoch
        if self.position + G > len(self._perm):  # drop the incomplete final global batch
            self.epoch, self.position = self.epoch + 1, 0
            return self._starts()
        blocks = self._perm[self.position + self.rank * B: self.position + (self.rank + 1) * B]
        self.position += G
        return self._offset + blocks * (self.block_size + 1)

    def next_batch(self):
        """x, y of shape (batch_size, block_size), int64, on the device; consecutive calls continue the order."""
        T = self.block_size
        buf = torch.from_numpy(np.stack([self.data[i:i + T + 1] for i in self._starts()]).astype(np.int64))  # (B, T+1)
        if self.device.type == "cuda":  # pinned memory, an asynchronous copy (CUDA only)
            buf = buf.pin_memory().to(self.device, non_blocking=True)
        else:  # cpu (no copy), mps
            buf = buf.to(self.device)
        return buf[:, :-1].contiguous(), buf[:, 1:].contiguous()  # (B, T), (B, T)
