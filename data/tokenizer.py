"""GPT-2's BPE tokenizer from the ranks file shipped beside this module (data/gpt2.tiktoken): no network needed.

It is tiktoken's own Encoding built from tiktoken's loader with GPT-2's split pattern and <|endoftext|> = 50256, so it
encodes byte for byte as tiktoken.get_encoding("gpt2"); the ranks' sha256 is checked when they are loaded.
"""

import functools
import hashlib
from pathlib import Path

import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str  # GPT-2's split pattern (gpt2 = r50k_base)

ENCODING = "gpt2"
RANKS = Path(__file__).with_name("gpt2.tiktoken")  # = tiktoken's r50k_base.tiktoken (data/README.md)
RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
EOT = 50256


class TokenizerError(RuntimeError):
    """The embedded ranks file is missing or damaged (one line naming the fix)."""


@functools.cache
def get_encoding():
    """The GPT-2 encoding (cached per process)."""
    try:  # tiktoken skips its own hash check when its cache is off (an empty TIKTOKEN_CACHE_DIR): check it here
        if hashlib.sha256(RANKS.read_bytes()).hexdigest() != RANKS_SHA256:
            raise ValueError("sha256 mismatch")
        ranks = load_tiktoken_bpe(str(RANKS), expected_hash=RANKS_SHA256)
    except (OSError, ValueError) as e:
        raise TokenizerError(f"cannot load the GPT-2 BPE ranks from {RANKS} ({type(e).__name__}): the file is "
                             "missing or damaged; restore it with `git checkout -- data/gpt2.tiktoken`") from None
    return tiktoken.Encoding(name=ENCODING, pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: EOT}, explicit_n_vocab=EOT + 1)
