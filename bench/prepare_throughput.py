"""
Prepare throughput (tokens/s) on the shared TinyStories sample: --num_proc 1 vs 2, and nanoGPT's
datasets.map(num_proc) pipeline as the alternative we did not pick.

    python bench/prepare_throughput.py [--source FILE_OR_FOLDER (default: the TinyStories sample)] [--repeats 3]

Timed: one prepare() call (reading + tokenizing + writing train.bin/val.bin, worker start-up included);
interpreter start-up and imports are not.
"""

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from data import prepare_common as pc
from data.tokenizer import get_encoding

HUB = dict(path="roneneldan/TinyStories", splits={"train": "train", "val": "validation"})


def ours(source, out, num_proc):
    t0 = time.time()  # includes starting the worker processes
    meta = pc.prepare("tinystories", HUB, ["--source", source, "--out_dir", out, "--num_proc", str(num_proc), "--force"])
    return sum(s["tokens"] for s in meta["splits"].values()) / (time.time() - t0)


def datasets_map(source, out, num_proc):
    """nanoGPT's recipe: Dataset -> .map(tokenize, num_proc) -> concatenate into a memmap."""
    import datasets
    datasets.disable_progress_bars()
    t0 = time.time()
    docs = [t for b in pc.read_local(source, argparse.Namespace(one_per_line=False, text_field="text")) for t in b]
    ds = datasets.Dataset.from_dict({"text": docs})
    enc = get_encoding()

    def proc(ex):
        ids = enc.encode_ordinary(ex["text"]) + [enc.eot_token]
        return {"ids": ids, "len": len(ids)}
    tok = ds.map(proc, remove_columns=["text"], num_proc=num_proc if num_proc > 1 else None)
    n = int(np.sum(tok["len"], dtype=np.uint64))
    arr = np.memmap(Path(out) / "map.bin", dtype=np.uint16, mode="w+", shape=(n,))
    i = 0
    for batch in tok.iter(batch_size=4096):
        b = np.concatenate([np.asarray(x, dtype=np.uint16) for x in batch["ids"]])
        arr[i:i + len(b)] = b
        i += len(b)
    arr.flush()
    return n / (time.time() - t0)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--source", default=str(Path(__file__).resolve().parents[1] / "data" / "tinystories" / "sample"))
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):  # interleaved, so drifting machine load hits every variant alike
            for name, fn, n in [("ours", ours, 1), ("ours", ours, 2), ("datasets.map", datasets_map, 1),
                                ("datasets.map", datasets_map, 2)]:
                rows.setdefault((name, n), []).append(fn(a.source, tmp, n))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"\nsource {a.source}, commit {commit}, {a.repeats} repeats (median, min-max tokens/s)")
    print("| pipeline | num_proc | tokens/s (median) | min - max |\n|---|---:|---:|---:|")
    for (name, n), v in rows.items():
        print(f"| {name} | {n} | {statistics.median(v):,.0f} | {min(v):,.0f} - {max(v):,.0f} |")


if __name__ == "__main__":
    main()
