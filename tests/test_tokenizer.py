"""data/tokenizer.py: the embedded GPT-2 BPE equals tiktoken's gpt2 encoding, offline."""

import hashlib
import json
import lzma
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tiktoken

from data import tokenizer
from data.tokenizer import RANKS, RANKS_SHA256, TokenizerError, get_encoding

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "tinystories" / "sample", ROOT / "data" / "openwebtext" / "sample"
# sha256 of the uint32 ids that tiktoken's own r50k_base (= gpt2) gives each sample, computed from tiktoken's cache
REFERENCE = {
    "tinystories/train.txt.xz": (2637032, "396e3fa3af2525745ec6b8192a3d4222731979178bd0754b977a56af0ea9e25a"),
    "tinystories/val.txt.xz": (142090, "768c7bc921d00419b305f8b5468668615df21ffa4bb90b62c1cb909eaa448866"),
    "openwebtext/openwebtext_600docs.jsonl.xz": (693374, "6d6d94983fee8df0f76786f2a31d9c844de358b78822889266f47876060c47da"),
}


def sample_ids(enc, name):
    """ids of a sample file: a txt sample as one string, a jsonl one document by document with <|endoftext|>."""
    f = ROOT / "data" / name.split("/")[0] / "sample" / name.split("/")[1]
    with lzma.open(f, "rt", encoding="utf-8") as fh:
        if name.endswith(".txt.xz"):
            return enc.encode_ordinary(fh.read())
        return [t for line in fh for t in enc.encode_ordinary(json.loads(line)["text"]) + [enc.eot_token]]


def digest(ids):
    return len(ids), hashlib.sha256(np.array(ids, dtype=np.uint32).tobytes()).hexdigest()


@pytest.mark.parametrize("text, ids", [
    ("Hello world", [15496, 995]),
    (" hello  world\n\n", [23748, 220, 995, 628]),
    ("ünïcödé ✓ 1234567", [9116, 77, 26884, 66, 9101, 67, 2634, 24762, 17031, 2231, 3134]),
])
def test_known_gpt2_ids(text, ids):
    enc = get_encoding()
    assert enc.encode_ordinary(text) == ids and enc.decode(ids) == text


def test_encoding_facts():
    enc = get_encoding()
    assert (enc.name, enc.n_vocab, enc.eot_token) == ("gpt2", 50257, 50256)
    assert enc.encode("<|endoftext|>", allowed_special="all") == [50256]
    assert hashlib.sha256(RANKS.read_bytes()).hexdigest() == RANKS_SHA256


@pytest.mark.parametrize("name", REFERENCE)
def test_samples_match_tiktoken_gpt2(name):
    """Byte-identical to tiktoken's gpt2 on the whole sample corpus (the reference digests were made with it; where
    a tiktoken cache holding the ranks is set, TIKTOKEN_CACHE_DIR, tiktoken's own encoding is compared live too)."""
    ids = sample_ids(get_encoding(), name)
    assert digest(ids) == REFERENCE[name]
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        assert sample_ids(tiktoken.get_encoding("r50k_base"), name) == ids


def test_round_trip_real_text():
    enc = get_encoding()
    with lzma.open(SAMPLES[1] / "openwebtext_600docs.jsonl.xz", "rt", encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f]
    for d in docs:
        assert enc.decode(enc.encode_ordinary(d)) == d


def test_damaged_ranks_file_is_one_line(tmp_path, monkeypatch):
    bad = tmp_path / "gpt2.tiktoken"
    shutil.copy(RANKS, bad)
    bad.write_bytes(bad.read_bytes()[:-100])
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # no cached copy of the good file
    monkeypatch.setattr(tokenizer, "RANKS", bad)
    tokenizer.get_encoding.cache_clear()
    try:
        with pytest.raises(TokenizerError, match="missing or damaged; restore it") as e:
            tokenizer.get_encoding()
        assert "\n" not in str(e.value)
    finally:
        tokenizer.get_encoding.cache_clear()
