"""
Prepare TinyStories: GPT-2 BPE tokens in data/tinystories/{train,val}.bin + meta.json.

    python data/tinystories/prepare.py                       # roneneldan/TinyStories from the hub (train/validation)
    python data/tinystories/prepare.py --sample                  # the real sample in data/tinystories/sample/
    python data/tinystories/prepare.py --source stories/         # local files, seeded 95/5 hash split
    python data/tinystories/prepare.py --source TinyStories-train.txt --val_source TinyStories-valid.txt

Options: python data/tinystories/prepare.py --help (shared code: data/prepare_common.py).
"""

import sys
from pathlib import Path


try:
    from data.prepare_common import main
except ModuleNotFoundError:  # a plain-file run needs the repo installed (pip install -e .) or -m from its root
    sys.exit("error: the repo is not importable: run `pip install -e .` in its root, or run "
             "`python -m data.tinystories.prepare` from there")

SAMPLE = Path(__file__).resolve().parent / "sample"  # the real sample in the repo (README there)
HUB = dict(path="roneneldan/TinyStories", splits={"train": "train", "val": "validation"},
           sample=dict(source=str(SAMPLE / "train.txt.xz"), val_source=str(SAMPLE / "val.txt.xz")))

if __name__ == "__main__":
    main("tinystories", HUB, val_fraction=0.05)
