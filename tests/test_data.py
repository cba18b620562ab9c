"""Data preparation: bins decode to the source documents, meta.json, splits, reruns, errors, crash safety."""

import json
import lzma
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from data import prepare_common as pc
from data.loader import DataError, open_split, read_meta
from data.openwebtext import prepare as OWT_PREPARE
from data.tinystories import prepare as TS_PREPARE
from data.tokenizer import RANKS_SHA256, get_encoding

ROOT = Path(__file__).resolve().parents[1]
TS = dict(path="roneneldan/TinyStories", splits={"train": "train", "val": "validation"})
OWT = dict(path="Skylion007/openwebtext", splits=None, streaming=True)
DOCS = [f"Story {i}: Tom saw a {'big red' if i % 3 else 'small'} ball.\nHe said, \"Wow!\" ünïcödé ✓ {i * 7}" for i in range(60)]


def prep(out, *argv, hub=OWT, name="openwebtext"):
    return pc.prepare(name, hub, ["--out_dir", str(out), "--num_proc", "1", *map(str, argv)])


def decode_docs(out, split):
    """The documents of a split, read back from its bin (each must end with the eot token)."""
    enc = get_encoding()
    ids = open_split(out, split).tolist()
    assert ids and ids[-1] == enc.eot_token
    return enc.decode(ids).split("<|endoftext|>")[:-1]


def expected(docs, seed=2357, frac=0.05):
    return {s: [d for i, d in enumerate(docs) if pc.hash_split(i, seed, frac) == s] for s in pc.SPLITS}


def write_txt(path, docs, one_per_line=False):
    sep = "\n" if one_per_line else "\n<|endoftext|>\n"
    path.write_text(sep.join(docs) + sep, encoding="utf-8")
    return path


def check_meta(out, docs_by_split):
    meta = read_meta(out)
    assert (meta["tokenizer"], meta["vocab_size"], meta["eot_token"]) == ("gpt2", 50257, 50256)
    assert meta["tokenizer_sha256"] == RANKS_SHA256
    for s, docs in docs_by_split.items():
        st = meta["splits"][s]
        assert st["docs"] == len(docs) and st["tokens"] == len(open_split(out, s))
        assert st["sha256"] == pc.file_sha256(Path(out) / f"{s}.bin") and st["max_token"] == 50256
    return meta


def test_txt_folder_roundtrip(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_txt(src / "a.txt", DOCS[:25])
    write_txt(src / "b.txt", DOCS[25:])
    meta = prep(tmp_path / "out", "--source", src, "--val_fraction", 0.2)
    want = expected(DOCS, frac=0.2)
    assert all(want.values())
    for s in pc.SPLITS:
        assert decode_docs(tmp_path / "out", s) == want[s]
    check_meta(tmp_path / "out", want)
    assert meta["seed"] == 2357 and meta["val_fraction"] == 0.2 and "hash" in meta["split_rule"]
    assert "--source" in meta["command"] and len(meta["inputs_fingerprint"]) == 64


def test_one_per_line_json_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    docs = [d.replace("\n", " ") for d in DOCS]
    src = tmp_path / "src"
    src.mkdir()
    write_txt(src / "1.txt", docs[:10], one_per_line=True)
    (src / "2.jsonl").write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs[10:30])))
    (src / "3.json").write_text(json.dumps([{"text": d} for d in docs[30:40]]))
    pq.write_table(pa.table({"text": docs[40:]}), src / "4.parquet")
    prep(tmp_path / "out", "--source", src, "--one_per_line", "--val_fraction", 0.3)
    want = expected(docs, frac=0.3)
    assert [decode_docs(tmp_path / "out", s) for s in pc.SPLITS] == [want["train"], want["val"]]
    check_meta(tmp_path / "out", want)


def test_num_proc_gives_identical_bins(tmp_path):
    src = write_txt(tmp_path / "a.txt", DOCS * 20)
    m1 = prep(tmp_path / "one", "--source", src)
    m2 = pc.prepare("openwebtext", OWT, ["--out_dir", str(tmp_path / "two"), "--num_proc", "2", "--source", str(src)])
    assert m1["splits"] == m2["splits"] and m1["inputs_fingerprint"] == m2["inputs_fingerprint"]


def test_val_source_and_max_docs(tmp_path):
    tr, va = write_txt(tmp_path / "train.txt", DOCS[:40]), write_txt(tmp_path / "valid.txt", DOCS[40:])
    meta = prep(tmp_path / "out", "--source", tr, "--val_source", va, "--max_docs", 30, name="tinystories", hub=TS)
    assert decode_docs(tmp_path / "out", "train") == DOCS[:30]
    assert decode_docs(tmp_path / "out", "val") == DOCS[40:]
    assert meta["split_rule"] == "official train/validation splits" and meta["seed"] is None


def fake_hub(tmp_path, monkeypatch, splits):
    """datasets.load_dataset answering the hub name from local parquet files (the hub's own code path)."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    files = {}
    for name, docs in splits.items():
        files[name] = str(tmp_path / f"{name}.parquet")
        pq.write_table(pa.table({"text": docs}), files[name])
    real, calls = datasets.load_dataset, []

    def load_dataset(path, split=None, streaming=False, **kw):
        calls.append((path, split, streaming))
        return real("parquet", data_files={split: files[split]}, split=split, streaming=streaming,
                    cache_dir=str(tmp_path / "hf_cache"))
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_tinystories_hub_official_splits(tmp_path, monkeypatch):
    calls = fake_hub(tmp_path, monkeypatch, {"train": DOCS[:45], "validation": DOCS[45:]})
    meta = prep(tmp_path / "out", "--max_docs", 40, name="tinystories", hub=TS)
    assert {c[:2] for c in calls} == {("roneneldan/TinyStories", "train"), ("roneneldan/TinyStories", "validation")}
    assert decode_docs(tmp_path / "out", "train") == DOCS[:40]
    assert decode_docs(tmp_path / "out", "val") == DOCS[45:]
    assert meta["source"].startswith("roneneldan/TinyStories") and meta["splits"]["val"]["docs"] == 15


def test_openwebtext_hub_streaming_hash_split(tmp_path, monkeypatch):
    calls = fake_hub(tmp_path, monkeypatch, {"train": DOCS})
    prep(tmp_path / "out", "--streaming", "--val_fraction", 0.25)
    assert calls == [("Skylion007/openwebtext", "train", True)]
    want = expected(DOCS, frac=0.25)
    assert [decode_docs(tmp_path / "out", s) for s in pc.SPLITS] == [want["train"], want["val"]]


def test_hub_unreachable_is_one_line(tmp_path, monkeypatch):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'roneneldan/TinyStories' on the Hub\n(LocalEntryNotFoundError)")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="pass --sample .* or --source PATH") as e:
        prep(tmp_path / "out", name="tinystories", hub=TS)
    assert "\n" not in str(e.value) and not (tmp_path / "out" / "train.bin").exists()


def test_owt_split_deterministic_and_disjoint(tmp_path):
    idx = range(20000)
    a = [pc.hash_split(i, 2357, 0.05) for i in idx]
    assert a == [pc.hash_split(i, 2357, 0.05) for i in idx]  # deterministic
    assert 0.04 < a.count("val") / len(a) < 0.06  # 95/5
    assert a != [pc.hash_split(i, 1, 0.05) for i in idx]  # the seed matters
    src = write_txt(tmp_path / "a.txt", DOCS)
    m1, m2 = (prep(tmp_path / d, "--source", src, "--val_fraction", 0.3) for d in "xy")
    assert m1["splits"] == m2["splits"]
    train, val = decode_docs(tmp_path / "x", "train"), decode_docs(tmp_path / "x", "val")
    assert not set(train) & set(val) and sorted(train + val) == sorted(DOCS)


def test_rerun_is_noop_other_inputs_refused(tmp_path, capsys):
    src, out = write_txt(tmp_path / "a.txt", DOCS), tmp_path / "out"
    prep(out, "--source", src)
    stamp = [(out / f).stat().st_mtime_ns for f in ("train.bin", "val.bin", "meta.json")]
    prep(out, "--source", src, "--verify")
    assert "already prepared" in capsys.readouterr().out
    assert stamp == [(out / f).stat().st_mtime_ns for f in ("train.bin", "val.bin", "meta.json")]
    with pytest.raises(DataError, match=r"other inputs \(max_docs differ\): pass --force"):
        prep(out, "--source", src, "--max_docs", 30)
    assert prep(out, "--source", src, "--max_docs", 30, "--force")["splits"]["train"]["docs"] < len(DOCS)
    (out / "meta.json").unlink()
    with pytest.raises(DataError, match="no meta.json .* pass --force"):
        prep(out, "--source", src)


def test_a_moved_folder_is_the_same_input(tmp_path, capsys):
    """Moving the clone (the embedded sample and its output) or the source folder keeps names, sizes and mtimes: the
    rerun is a no-op, not 'prepared from other inputs'; another file of the same name is still refused."""
    (tmp_path / "a").mkdir()
    src, out = write_txt(tmp_path / "a" / "a.txt", DOCS), tmp_path / "a" / "out"
    prep(out, "--source", src)
    (tmp_path / "a").rename(tmp_path / "b")
    prep(tmp_path / "b" / "out", "--source", tmp_path / "b" / "a.txt")
    assert "already prepared" in capsys.readouterr().out
    (tmp_path / "c").mkdir()
    write_txt(tmp_path / "c" / "a.txt", DOCS[:30])
    with pytest.raises(DataError, match=r"other inputs \(source differ\)"):
        prep(tmp_path / "b" / "out", "--source", tmp_path / "c" / "a.txt")


def test_rerun_repairs_damaged_bins(tmp_path):
    src, out = write_txt(tmp_path / "a.txt", DOCS), tmp_path / "out"
    meta = prep(out, "--source", src)
    with open(out / "train.bin", "r+b") as f:
        f.truncate(10)
    assert prep(out, "--source", src)["splits"] == meta["splits"]


@pytest.mark.parametrize("name, content, source, match", [
    ("missing.txt", None, "missing.txt", "does not exist"),
    ("e.txt", "", "e.txt", "no train documents"),
    ("s.txt", "\n<|endoftext|>\n  \n<|endoftext|>\n", "s.txt", "no train documents"),
    ("d/x.csv", "a,b", "d", "holds no .txt"),
    ("x.csv", "a,b", "x.csv", "unsupported file type"),
    ("b.txt", b"ok\n\xff\xfe bad", "b.txt", "cannot read .* as UTF-8"),
    ("t.jsonl", '{"body": "x"}\n', "t.jsonl", "no 'text' field .* --text_field"),
    ("j.jsonl", '{"text": "x"\n', "j.jsonl", "cannot read"),
])
def test_bad_input_errors(tmp_path, name, content, source, match):
    f = tmp_path / name
    f.parent.mkdir(exist_ok=True)
    if content is not None:
        (f.write_bytes if isinstance(content, bytes) else f.write_text)(content)
    with pytest.raises(DataError, match=match) as e:
        prep(tmp_path / "out", "--source", tmp_path / source)
    assert "\n" not in str(e.value)
    assert not list((tmp_path / "out").glob("*.bin*"))  # temporaries removed, nothing published


def test_bad_options(tmp_path):
    src = write_txt(tmp_path / "a.txt", DOCS)
    for argv, match in [(["--val_fraction", "1.5"], "val_fraction"), (["--num_proc", "0"], "positive"),
                        (["--val_fraction", "0.001", "--max_docs", "5"], "no val documents")]:
        with pytest.raises(DataError, match=match):
            prep(tmp_path / "out", "--source", src, *argv)


def test_cli_one_line_error_and_default_out_dir(tmp_path):
    r = subprocess.run([sys.executable, "data/tinystories/prepare.py", "--source", str(tmp_path / "nope")],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [f"error: --source {tmp_path / 'nope'} does not exist"]
    p = pc.parser("tinystories", TS, 0.05)
    assert Path(p.parse_args([]).out_dir) == ROOT / "data" / "tinystories"


KILLER = """
import os, signal, sys
from data import prepare_common as pc
{patch}
pc.prepare("openwebtext", {owt!r}, {argv!r})
"""


def run_killed(patch, argv):
    code = KILLER.format(patch=textwrap.dedent(patch), owt=OWT, argv=[*map(str, argv), "--num_proc", "1"])
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]


WRITE_THEN_DIE = """
orig, n = pc.SplitWriter.write, [0]
def write(self, *a):
    orig(self, *a); self.f.flush(); n[0] += 1
    if n[0] == 3: os.kill(os.getpid(), signal.SIGKILL)
pc.SplitWriter.write = write
"""
PUBLISH_THEN_DIE = """
orig = os.replace
def replace(a, b):
    orig(a, b)
    if str(b).endswith("train.bin"): os.kill(os.getpid(), signal.SIGKILL)
pc.os.replace = replace
"""


def test_killed_mid_write_leaves_nothing_complete(tmp_path):
    src, out = write_txt(tmp_path / "a.txt", DOCS * 40), tmp_path / "out"
    run_killed(WRITE_THEN_DIE, ["--source", src, "--out_dir", out])
    assert (out / "train.bin.tmp").stat().st_size > 0 and not (out / "train.bin").exists()
    with pytest.raises(DataError, match="dataset not prepared.*prepare.py"):
        open_split(out, "train")
    prep(out, "--source", src)  # a rerun starts over and completes
    good = open_split(out, "train").copy()
    run_killed(WRITE_THEN_DIE, ["--source", src, "--out_dir", out, "--max_docs", 500, "--force"])
    assert np.array_equal(open_split(out, "train"), good)  # killed while tokenizing: old dataset intact
    run_killed(PUBLISH_THEN_DIE, ["--source", src, "--out_dir", out, "--max_docs", 500, "--force"])
    assert (out / "train.bin").stat().st_size != 2 * len(good)  # new train.bin in place, but ...
    with pytest.raises(DataError, match="meta.json is missing"):  # ... without meta.json it is refused
        open_split(out, "train")
    with pytest.raises(DataError, match="no meta.json"):
        prep(out, "--source", src)


# ----------------------------------------------------------------------------- the real samples in the repo

def split_eot_text(text):
    return [d.strip() for d in text.split("\n<|endoftext|>\n") if d.strip()]


def test_tinystories_sample(tmp_path):
    """--sample: the embedded stories (official train/val files), decoded back exactly."""
    sample = ROOT / "data" / "tinystories" / "sample"
    docs = {s: split_eot_text(lzma.open(sample / f"{s}.txt.xz", "rt", encoding="utf-8").read()) for s in ("train", "val")}
    assert (len(docs["train"]), len(docs["val"])) == (12573, 687) and not set(docs["train"]) & set(docs["val"])
    meta = prep(tmp_path / "out", "--sample", "--max_docs", 300, name="tinystories", hub=TS_PREPARE.HUB)
    want = {s: d[:300] for s, d in docs.items()}
    assert [decode_docs(tmp_path / "out", s) for s in pc.SPLITS] == [want["train"], want["val"]]
    check_meta(tmp_path / "out", want)
    assert meta["sample"] and meta["split_rule"] == "official train/validation splits"


def test_openwebtext_sample(tmp_path):
    f = ROOT / "data" / "openwebtext" / "sample" / "openwebtext_600docs.jsonl.xz"
    docs = [json.loads(line)["text"] for line in lzma.open(f, "rt", encoding="utf-8")]
    assert len(docs) == 600
    prep(tmp_path / "out", "--sample", "--max_docs", 150, "--num_proc", 2, hub=OWT_PREPARE.HUB)
    want = expected(docs[:150])
    enc = get_encoding()
    for s in pc.SPLITS:  # exact: the bin is encode_ordinary(doc) + [eot] for each doc, in order
        ids = [t for d in want[s] for t in enc.encode_ordinary(d) + [enc.eot_token]]
        assert open_split(tmp_path / "out", s).tolist() == ids
    check_meta(tmp_path / "out", want)
