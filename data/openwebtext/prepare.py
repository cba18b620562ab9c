"""
Prepare OpenWebText: GPT-2 BPE tokens in data/openwebtext/{train,val}.bin + meta.json.

OpenWebText has no validation split: document i goes to val by a seeded hash of i (95/5 by default).

    python data/openwebtext/prepare.py                        # Skylion007/openwebtext from the hub
    python data/openwebtext/prepare.py --streaming            # stream it instead of downloading it first
    python data/openwebtext/prepare.py --sample               # the real 600-document sample in data/openwebtext/sample/
    python data/openwebtext/prepare.py --source docs.jsonl    # local files

Options: python data/openwebtext/prepare.py --help (shared code: data/prepare_common.py).
"""

import sys
from pathlib import Path


try:
    from data.prepare_common import main
except ModuleNotFoundError:  # a plain-file run needs the repo installed (pip install -e .) or -m from its root
    sys.exit("error: the repo is not importable: run `pip install -e .` in its root, or run "
             "`python -m data.openwebtext.prepare` from there")

SAMPLE = Path(__file__).resolve().parent / "sample"  # the real sample in the repo (README there)
HUB = dict(path="Skylion007/openwebtext", splits=None, streaming=True,
           sample=dict(source=str(SAMPLE / "openwebtext_600docs.jsonl.xz")))

if __name__ == "__main__":
    main("openwebtext", HUB, val_fraction=0.05)
