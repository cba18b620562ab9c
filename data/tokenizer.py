"""The GPT-2 BPE tokenizer, shared by data preparation and sampling."""

import os
from pathlib import Path

import tiktoken

ENCODING = "r50k_base"  # byte-identical to tiktoken's "gpt2" encoding (GPT-2 BPE, eot id 50256)
_OFFLINE_CACHE = Path(__file__).resolve().parents[2] / "shared" / "tiktoken"


def get_encoding():
    """GPT-2 BPE via tiktoken; with no network, set TIKTOKEN_CACHE_DIR to a folder holding its ranks file."""
    if "TIKTOKEN_CACHE_DIR" not in os.environ and _OFFLINE_CACHE.is_dir():
        os.environ["TIKTOKEN_CACHE_DIR"] = str(_OFFLINE_CACHE)  # the offline copy next to this checkout
    try:
        return tiktoken.get_encoding(ENCODING)
    except Exception as e:  # network failures surface as assorted requests/urllib errors
        raise RuntimeError(f"cannot load the {ENCODING} BPE ranks ({type(e).__name__}): connect to the internet once "
                           "or set TIKTOKEN_CACHE_DIR to a tiktoken cache folder that holds them") from e
