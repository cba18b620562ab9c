"""
Prepare TinyStories: GPT-2 BPE tokens in data/tinystories/{train,val}.bin + meta.json.

    python data/tinystories/prepare.py                       # roneneldan/TinyStories from the hub (train/validation)
    python data/tinystories/prepare.py --source ../shared/data/tinystories   # local files, seeded 95/5 hash split
    python data/tinystories/prepare.py --source TinyStories-train.txt --val_source TinyStories-valid.txt

Options: python data/tinystories/prepare.py --help (shared code: data/prepare_common.py).
"""

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))  # the repo root

from data.prepare_common import main  # noqa: E402

HUB = dict(path="roneneldan/TinyStories", splits={"train": "train", "val": "validation"})

if __name__ == "__main__":
    main("tinystories", HUB, val_fraction=0.05)
