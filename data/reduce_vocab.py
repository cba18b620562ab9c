"""
A prepared dataset with its K-1 most frequent training tokens (new ids 0..K-2 by frequency) and one <unk> id (K-1)
for the rest, so that a tiny model's body, not a 50k-row head, dominates its cost (TinyStories, K=4096: 0.9% of
tokens become <unk>).

    python -m data.reduce_vocab data/tinystories --vocab 4096            # -> data/tinystories_top4096
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from data.loader import DataError, open_split, read_meta
from data.prepare_common import write_dataset


def reduced_data(src, vocab, dst=None):
    """dst (default <src>_top<vocab>) holding src with the vocab-1 most frequent train tokens and one <unk>."""
    src = Path(src)
    dst = Path(dst) if dst else src.with_name(f"{src.name}_top{vocab}")
    if (dst / "meta.json").exists():
        return dst
    if not 2 <= vocab <= 65536:
        raise DataError(f"--vocab {vocab} must be in [2, 65536]")
    meta = read_meta(src)
    train_ids, val_ids = (open_split(src, s) for s in ("train", "val"))
    top = np.argsort(-np.bincount(train_ids, minlength=65536), kind="stable")[:vocab - 1]
    table = np.full(65536, vocab - 1, dtype=np.uint16)  # token id -> reduced id
    table[top] = np.arange(vocab - 1)
    write_dataset(dst, {"train": table[train_ids], "val": table[val_ids]}, vocab_size=vocab,
                  eot_token=int(table[meta["eot_token"]]), tokenizer=f"{meta['tokenizer']}-top{vocab - 1}+unk",
                  source=str(src), source_splits=meta["splits"], unk_token=vocab - 1)
    return dst


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("src", help="a prepared dataset folder (train.bin, val.bin, meta.json)")
    p.add_argument("--vocab", type=int, default=4096, help="K: K-1 kept tokens plus <unk>")
    p.add_argument("--out_dir", help="default: <src>_top<K>")
    a = p.parse_args(argv)
    try:
        dst = reduced_data(a.src, a.vocab, a.out_dir)
    except DataError as e:
        sys.exit(f"error: {e}")
    print(f"{dst}: {json.dumps({s: v['tokens'] for s, v in read_meta(dst)['splits'].items()})} tokens")


if __name__ == "__main__":
    main()
