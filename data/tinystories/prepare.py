"""
Prepare TinyStories: GPT-2 BPE tokens in data/tinystories/{train,val}.bin + meta.json.

    python data/tinystories/prepare.py                       # roneneldan/TinyStories from the hub (train/validation)
    python data/tinystories/prepare.py --sample                  # the real sample in data/tinystories/sample/
    python data/tinystories/prepare.py --source stories/         # local files, seeded 95/5 hash split
    python data/tinystories/prepare.py --source TinyStories-train.txt --val_source TinyStories-valid.txt

Options: python data/tinystories/prepare.py --help (shared code: data/prepare_common.py).
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))  # the repo root

from data.prepare_common import main  # noqa: E402

SAMPLE = Path(__file__).resolve().parent / "sample"  # the real sample in the repo (README there)
HUB = dict(path="roneneldan/TinyStories", splits={"train": "train", "val": "validation"},
           sample=dict(source=str(SAMPLE / "train.txt.xz"), val_source=str(SAMPLE / "val.txt.xz")))

if __name__ == "__main__":
    main("tinystories", HUB, val_fraction=0.05)
