"""
Tokenize documents with GPT-2 BPE and write them as uint16 token bins, shared by data/*/prepare.py.

Every document becomes enc.encode_ordinary(text) + [eot]; the tokens of one split are concatenated
into <split>.bin (raw little-endian uint16, read back with np.memmap) and described by meta.json.
Crash safety: bins are written to <split>.bin.tmp and renamed into place only when complete, and
meta.json (which data/loader.py requires) is written last, atomically; an interrupted run never
leaves a dataset that looks complete. A rerun with the same inputs is a no-op.
"""

import argparse
import hashlib
import json
import lzma
import os
import shlex
import sys
import time
from collections import deque
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data.loader import DataError, read_meta
from data.tokenizer import ENCODING, RANKS_SHA256, TokenizerError, get_encoding

FORMAT = "yuriiformer-bins-v1"
SPLITS = ("train", "val")
EXTENSIONS = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}  # each also as .xz
EOT_LINE = "<|endoftext|>"
CHUNK_DOCS = 256  # documents per unit of work sent to a tokenizer process


# ----------------------------------------------------------------------------- reading

def hash_split(index, seed, val_fraction):
    """'val' iff blake2b('<seed>:<index>') / 2^64 < val_fraction: a seeded, order-free 95/5 rule."""
    h = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return "val" if int.from_bytes(h, "little") < val_fraction * 2**64 else "train"


def file_kind(path):
    """'text', 'json' or 'parquet' by the file's extension (an .xz one by the extension before it), or None."""
    suffixes = Path(path).suffixes
    if suffixes[-1:] == [".xz"]:
        suffixes = suffixes[:-1]
    return EXTENSIONS.get(suffixes[-1]) if suffixes else None


def local_files(source):
    """The .txt/.json/.jsonl/.parquet files (or .xz-compressed ones) of a file or folder (recursively, by path)."""
    p = Path(source).expanduser()
    if not p.exists():
        raise DataError(f"--source {source} does not exist")
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and file_kind(f))
    if not files:
        raise DataError(f"--source {source} holds no .txt, .json, .jsonl or .parquet files")
    for f in files:
        if not file_kind(f):
            raise DataError(f"--source {f}: unsupported file type {''.join(f.suffixes)!r} "
                            "(use .txt, .json, .jsonl or .parquet, optionally .xz-compressed)")
        if not os.access(f, os.R_OK):
            raise DataError(f"--source {f} is not readable")
    return files


def read_txt(path, one_per_line, batch=1024):
    """Documents of a .txt file: separated by '<|endoftext|>' lines (or one per line), stripped, empty ones skipped."""
    docs, lines = [], []
    try:
        with (lzma.open if path.suffix == ".xz" else open)(path, "rt", encoding="utf-8") as f:
            for line in f:
                if one_per_line:
                    lines = [line]
                elif line.strip() != EOT_LINE:
                    lines.append(line)
                    continue
                doc = "".join(lines).strip()
                lines = []
                if doc:
                    docs.append(doc)
                if len(docs) == batch:
                    yield docs
                    docs = []
    except (UnicodeDecodeError, OSError, lzma.LZMAError) as e:
        raise DataError(f"cannot read {path} as UTF-8 text: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    doc = "".join(lines).strip()
    yield docs + [doc] if doc else docs


def read_dataset(ds, text_field, what, batch=1024):
    """Text batches of a HuggingFace Dataset or IterableDataset (hub or local json/parquet)."""
    try:
        for b in ds.iter(batch_size=batch):
            if text_field not in b:
                raise DataError(f"{what} has no {text_field!r} field (fields: {', '.join(b)}): pass --text_field")
            yield [t for t in b[text_field] if t and t.strip()]
    except DataError:
        raise
    except Exception as e:  # arrow/json parse errors of a broken file
        raise DataError(f"cannot read {what}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e


def read_local(source, args):
    """Text batches of every file under a local --source, in path order."""
    for f in local_files(source):
        if file_kind(f) == "text":
            yield from read_txt(f, args.one_per_line)
        else:
            import datasets
            try:
                ds = datasets.load_dataset(file_kind(f), data_files=str(f), split="train", streaming=True)
            except Exception as e:
                raise DataError(f"cannot read {f}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
            yield from read_dataset(ds, args.text_field, f)


def load_hub(path, split, args):
    """One split of a HuggingFace hub dataset; one-line error pointing to --source when the hub is out of reach."""
    import datasets
    kw = dict(streaming=True) if args.streaming else dict(num_proc=args.num_proc if args.num_proc > 1 else None)
    try:
        return datasets.load_dataset(path, split=split, **kw)
    except Exception as e:
        msg = str(e).splitlines()[0][:200] if str(e) else ""
        raise DataError(f"cannot load {path} ({split}) from the HuggingFace hub ({type(e).__name__}: {msg}): "
                        "pass --sample for the real sample in this repo, or --source PATH with local "
                        ".txt/.json/.jsonl/.parquet files") from e


def documents(args, hub):
    """(split, [texts]) batches: official splits (hub or --val_source) or the seeded-hash split of one stream.

    Opens the sources now (a hub failure surfaces before any progress bar) and returns a generator.
    """
    if args.source and args.val_source:  # local official split
        streams = {"train": read_local(args.source, args), "val": read_local(args.val_source, args)}
    elif args.source is None and hub.get("splits"):  # hub official split
        streams = {s: read_dataset(load_hub(hub["path"], hs, args), args.text_field, f"{hub['path']}:{hs}")
                   for s, hs in hub["splits"].items()}
    else:  # one stream, split by a seeded hash of the document index
        stream = read_local(args.source, args) if args.source else \
            read_dataset(load_hub(hub["path"], "train", args), args.text_field, hub["path"])
        return hashed(limit(stream, args.max_docs), args.seed, args.val_fraction)
    return ((s, texts) for s, stream in streams.items() for texts in limit(stream, args.max_docs))


def hashed(batches, seed, val_fraction):
    """(split, texts) batches of one document stream, document i routed by hash_split(i)."""
    index = 0
    for texts in batches:
        label = [hash_split(i, seed, val_fraction) for i in range(index, index + len(texts))]
        for s in SPLITS:
            part = [t for t, lab in zip(texts, label) if lab == s]
            if part:
                yield s, part
        index += len(texts)


def limit(batches, max_docs):
    """Batches of documents cut after max_docs documents in all (None: no limit)."""
    n = 0
    for b in batches:
        if max_docs is not None:
            b = b[:max_docs - n]
        if b:
            yield b
        n += len(b)
        if max_docs is not None and n >= max_docs:
            return


def chunks(stream, size=CHUNK_DOCS):
    """Re-cut (split, texts) batches into units of at most `size` documents."""
    for s, texts in stream:
        for i in range(0, len(texts), size):
            yield s, texts[i:i + size]


# ----------------------------------------------------------------------------- tokenizing and writing

_enc = None


def tokenize(item):
    """(split, texts) -> (split, n_docs, uint16 tokens of encode_ordinary(text) + [eot] for each text)."""
    global _enc
    if _enc is None:
        _enc = get_encoding()
    split, texts = item
    ids = []
    for t in texts:
        ids.extend(_enc.encode_ordinary(t))
        ids.append(_enc.eot_token)
    return split, len(texts), np.array(ids, dtype=np.uint16)


class SplitWriter:
    """Appends uint16 tokens to <split>.bin.tmp, keeping counts, max token and sha256."""

    def __init__(self, out_dir, split):
        self.path = Path(out_dir) / f"{split}.bin"
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.f = open(self.tmp, "wb")
        self.sha, self.docs, self.tokens, self.max_token = hashlib.sha256(), 0, 0, -1

    def write(self, n_docs, ids):
        b = ids.astype("<u2", copy=False).tobytes()
        self.f.write(b)
        self.sha.update(b)
        self.docs, self.tokens = self.docs + n_docs, self.tokens + len(ids)
        self.max_token = max(self.max_token, int(ids.max()) if len(ids) else -1)

    def close(self):
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        return dict(docs=self.docs, tokens=self.tokens, max_token=self.max_token, sha256=self.sha.hexdigest())


def write_bins(out_dir, stream, num_proc, desc=""):
    """Tokenize (split, texts) batches over num_proc processes into <split>.bin.tmp; returns per-split stats."""
    writers = {s: SplitWriter(out_dir, s) for s in SPLITS}
    pool = Pool(num_proc) if num_proc > 1 else None
    bars = [tqdm(desc=f"{d:>8} {desc}", unit=u, unit_scale=True, position=i, dynamic_ncols=True)
            for i, (d, u) in enumerate((("read", "doc"), ("tokenize", "doc"), ("write", "tok")))]

    def finish(split, n_docs, ids):
        bars[1].update(n_docs)
        writers[split].write(n_docs, ids)
        bars[2].update(len(ids))
    try:
        pending = deque()  # results in source order; at most 4 chunks per process in flight (bounded memory)
        for item in chunks(stream):
            bars[0].update(len(item[1]))
            if pool is None:
                finish(*tokenize(item))
                continue
            pending.append(pool.apply_async(tokenize, (item,)))
            if len(pending) >= 4 * num_proc:
                finish(*pending.popleft().get())
        while pending:
            finish(*pending.popleft().get())
        return {s: w.close() for s, w in writers.items()}
    finally:
        for b in bars:
            b.close()
        if pool:
            pool.terminate()
        for w in writers.values():
            if not w.f.closed:
                w.f.close()


def publish(out_dir, stats, meta):
    """Rename the finished temporaries into place, then write meta.json atomically (last)."""
    out_dir = Path(out_dir)
    (out_dir / "meta.json").unlink(missing_ok=True)  # the old dataset stops looking complete first
    for s in stats:
        os.replace(out_dir / f"{s}.bin.tmp", out_dir / f"{s}.bin")
    tmp = out_dir / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out_dir / "meta.json")


def write_dataset(out_dir, splits, vocab_size=50257, eot_token=50256, tokenizer=ENCODING, **extra):
    """Write token arrays {split: 1-D ints} as a prepared dataset (bins + meta.json); handy for tests."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    stats = {}
    for s, ids in splits.items():
        w = SplitWriter(out_dir, s)
        w.write(0, np.asarray(ids, dtype=np.uint16))
        stats[s] = w.close()
    meta = dict(format=FORMAT, tokenizer=tokenizer, vocab_size=vocab_size, eot_token=eot_token, dtype="uint16",
                splits=stats, **extra)
    publish(out_dir, stats, meta)
    return meta


# ----------------------------------------------------------------------------- the command

def parser(name, hub, val_fraction):
    p = argparse.ArgumentParser(description=f"Tokenize {name} with GPT-2 BPE into train.bin/val.bin + meta.json.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sample", action="store_true", help=f"the real {name} sample embedded in this repo "
                   f"(data/{name}/sample/, see the README there) instead of the hub")
    p.add_argument("--source", help=f"local .txt/.json/.jsonl/.parquet file or folder, optionally .xz "
                   f"(default: {hub['path']} from the hub)")
    p.add_argument("--val_source",
                   help="local validation file or folder (official split; default: seeded-hash split of --source)")
    p.add_argument("--out_dir", default=str(Path(__file__).resolve().parent / name), help="where the bins go")
    p.add_argument("--num_proc", type=int, default=os.cpu_count() or 1, help="tokenizer processes")
    p.add_argument("--max_docs", type=int, help="only the first N documents (of each official split)")
    p.add_argument("--val_fraction", type=float, default=val_fraction, help="hash split: share of documents in val")
    p.add_argument("--seed", type=int, default=2357, help="hash split seed")
    p.add_argument("--text_field", default="text", help="field of .json/.jsonl/.parquet records holding the text")
    p.add_argument("--one_per_line", action="store_true", help=".txt: one document per line (default: '<|endoftext|>' lines)")
    p.add_argument("--force", action="store_true", help="overwrite an output prepared from other inputs")
    p.add_argument("--verify", action="store_true", help="when already prepared, also check the bins' sha256")
    if hub.get("streaming"):
        p.add_argument("--streaming", action="store_true", help="stream from the hub instead of downloading it first")
    return p


def inputs(args, hub):
    """What decides the output: source identity (path, size, mtime of each file), split rule and limits."""
    def ident(src):
        return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in local_files(src)]
    hashed = not (args.val_source or (args.source is None and hub.get("splits")))
    return dict(source=ident(args.source) if args.source else hub["path"],
                val_source=ident(args.val_source) if args.val_source else None,
                split_rule="hash" if hashed else "official", val_fraction=args.val_fraction if hashed else None,
                seed=args.seed if hashed else None, max_docs=args.max_docs, tokenizer=ENCODING,
                tokenizer_sha256=RANKS_SHA256,
                text_field=args.text_field, one_per_line=args.one_per_line)


def same_inputs(old, new):
    """True when two inputs() differ at most in the folders of their files: a moved clone or source folder (names,
    sizes and mtimes kept) is the same input."""
    def moved(inp):
        return {k: [[Path(f[0]).name, *f[1:]] for f in v] if k in ("source", "val_source") and isinstance(v, list)
                else v for k, v in inp.items()}
    return isinstance(old, dict) and moved(old) == moved(new)


def fingerprint(inp):
    return hashlib.sha256(json.dumps(inp, sort_keys=True).encode()).hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 24):
            h.update(b)
    return h.hexdigest()


def check_existing(out_dir, fp, inp, args):
    """True if out_dir already holds this exact dataset; raises if it holds another one (unless --force)."""
    meta_path = Path(out_dir) / "meta.json"
    if not meta_path.exists():
        bins = [f"{s}.bin" for s in SPLITS if (Path(out_dir) / f"{s}.bin").exists()]
        if bins and not args.force:
            raise DataError(f"{out_dir} has {', '.join(bins)} but no meta.json (an interrupted or foreign prepare): "
                            "pass --force to overwrite")
        return False
    try:
        meta = read_meta(out_dir)
    except DataError:
        meta = {}
    if meta.get("inputs_fingerprint") != fp and not same_inputs(meta.get("inputs"), inp):
        if args.force:
            return False
        old = meta.get("inputs", {})
        diff = [k for k in inp if old.get(k) != inp[k]] or ["meta.json"]
        raise DataError(f"{out_dir} was prepared from other inputs ({', '.join(diff)} differ): pass --force to overwrite")
    for s, st in meta["splits"].items():
        path = Path(out_dir) / f"{s}.bin"
        if not path.exists() or path.stat().st_size != 2 * st["tokens"]:
            return False
        if args.verify and file_sha256(path) != st["sha256"]:
            return False
    return not args.force


def prepare(name, hub, argv=None, val_fraction=0.05):
    """Parse argv and build out_dir/{train,val}.bin + meta.json (see parser() for the options)."""
    args = parser(name, hub, val_fraction).parse_args(argv)
    args.streaming = getattr(args, "streaming", False)
    if args.num_proc < 1 or (args.max_docs is not None and args.max_docs < 1):
        raise DataError("--num_proc and --max_docs must be positive integers")
    if not 0.0 < args.val_fraction < 1.0:
        raise DataError(f"--val_fraction={args.val_fraction} must be in (0, 1)")
    if args.val_source and not args.source:
        raise DataError("--val_source needs --source too")
    if args.sample:
        if args.source:
            raise DataError("--sample and --source exclude each other: give one of them")
        args.source, args.val_source = hub["sample"]["source"], hub["sample"].get("val_source")
    inp = inputs(args, hub)
    fp = fingerprint(inp)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if check_existing(out_dir, fp, inp, args):
        meta = read_meta(out_dir)
        sizes = ", ".join(f"{s} {v['tokens']:,} tokens" for s, v in meta["splits"].items())
        print(f"already prepared: {out_dir} ({sizes}); pass --force to redo")
        return meta
    enc = get_encoding()
    assert enc.n_vocab <= 2**16, "uint16 bins need a vocabulary of at most 65536 tokens"
    t0 = time.time()
    try:
        stats = write_bins(out_dir, documents(args, hub), args.num_proc, desc=name)
        for s in SPLITS:
            if stats[s]["docs"] == 0:
                raise DataError(f"no {s} documents in the input (empty or unreadable source, or --max_docs/--val_fraction "
                                "too small): give more documents")
    except BaseException:
        for s in SPLITS:
            (out_dir / f"{s}.bin.tmp").unlink(missing_ok=True)
        raise
    dt = time.time() - t0
    src = args.source or f"{hub['path']} (HuggingFace hub{', streamed' if args.streaming else ''})"
    rule = ("hash: document i (0-based, source order) goes to val iff blake2b('{seed}:{i}', 8 bytes, little-endian)"
            " / 2^64 < val_fraction" if inp["split_rule"] == "hash" else "official train/validation splits")
    meta = dict(format=FORMAT, dataset=name, tokenizer=ENCODING, tokenizer_sha256=RANKS_SHA256,
                vocab_size=enc.n_vocab, eot_token=enc.eot_token, sample=args.sample,
                dtype="uint16", splits=stats, source=os.path.abspath(src) if args.source else src,
                val_source=os.path.abspath(args.val_source) if args.val_source else None, split_rule=rule,
                val_fraction=inp["val_fraction"], seed=inp["seed"], max_docs=args.max_docs,
                command=shlex.join(["python", *sys.argv]) if argv is None else shlex.join(["prepare", *argv]),
                inputs_fingerprint=fp, inputs=inp, num_proc=args.num_proc, seconds=round(dt, 3),
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    publish(out_dir, stats, meta)
    total = sum(v["tokens"] for v in stats.values())
    print(f"wrote {out_dir}: " + ", ".join(f"{s} {v['docs']:,} docs {v['tokens']:,} tokens" for s, v in stats.items())
          + f" ({total / max(dt, 1e-9):,.0f} tokens/s)")
    return meta


def main(name, hub, val_fraction=0.05):
    """Command-line entry: one-line error and exit status 1 on bad input."""
    try:
        prepare(name, hub, val_fraction=val_fraction)
    except (DataError, TokenizerError) as e:
        sys.exit(f"error: {e}")
