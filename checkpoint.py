"""
Checkpoints: the one module that writes and reads train.py's checkpoint files.

A run directory holds `ckpt.pt`, the latest state (what --init_from=resume continues), and `best.pt`, the state at
the best validation loss. A checkpoint is a dict with format, model_args, model (state dict), optimizer (one state
dict per optimizer), scaler, iter_num, best_val_loss, evaluated, last_val_loss, flops, elapsed, config and
rank_states; a nanoGPT checkpoint (model_args + model) loads as well (model.GPT.from_checkpoint).

Writing is crash safe: a file is written to `<name>.<random>.tmp` in the same folder, flushed to disk and renamed
over the old one, so a kill or a full disk leaves the previous file intact. The free space is checked first. When
several names get the same state (an improved validation loss: ckpt.pt and best.pt), ckpt.pt is written first and
best.pt becomes a hard link to it (a copy where links are not supported), so a run always has a resumable ckpt.pt
once anything was saved. Stale temporaries of this naming, left by a kill, are removed when a run starts.
"""

import os
import shutil
import tempfile
from pathlib import Path

import torch

import pretrained
from model import GPT
from utils import first_line

FORMAT = "yuriiformer-ckpt-v1"
LATEST, BEST = "ckpt.pt", "best.pt"
CHOICES = {"auto": (BEST, LATEST), "best": (BEST,), "latest": (LATEST,)}  # which file of a run directory


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read, told in one line that names the file and the fix."""


def nbytes(obj):
    """Bytes of the tensors in a nested dict/list (what torch.save writes, less a small overhead)."""
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(v) for v in obj)
    return 0


def clean_stale(out_dir):
    """Remove the temporaries a killed save left in out_dir (only names of this module's making)."""
    for name in (LATEST, BEST):
        for f in Path(out_dir).glob(f"{name}.*.tmp"):
            f.unlink(missing_ok=True)


def _disk_error(path, need):
    free = shutil.disk_usage(path.parent).free
    return CheckpointError(f"cannot save {path}: not enough free disk in {path.parent} (needs about {need:,} bytes, "
                           f"{free:,} free): free some space or use another --out_dir; the previous {path.name} "
                           "is kept")


def _atomic(path, write):
    """write(file object) into a temporary beside path, fsync, rename over path; the temporary never stays."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save(state, out_dir, names=(LATEST,)):
    """Write state as out_dir/names[0]; the other names become links to (or copies of) it."""
    first = Path(out_dir) / names[0]
    need = int(nbytes(state) * 1.01) + (1 << 20)
    if shutil.disk_usage(first.parent).free < need:
        raise _disk_error(first, need)
    try:
        _atomic(first, lambda f: torch.save(state, f))
    except (OSError, RuntimeError) as e:  # a full disk surfaces as OSError or as torch's "unexpected pos"
        if shutil.disk_usage(first.parent).free < need or getattr(e, "errno", None) == 28:
            raise _disk_error(first, need) from None
        raise CheckpointError(f"cannot save {first}: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}") from None
    for name in names[1:]:
        path = Path(out_dir) / name
        try:
            tmp = path.with_name(f"{path.name}.{os.getpid()}.link.tmp")
            tmp.unlink(missing_ok=True)
            os.link(first, tmp)
            os.replace(tmp, path)
        except OSError:  # no hard links here: an atomic copy
            try:
                _atomic(path, lambda f: f.write(first.read_bytes()))
            except OSError:
                raise _disk_error(path, need) from None


def load(path, fix):
    """The checkpoint dict at path, or a one-line CheckpointError naming the file and `fix`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, damaged, or not a torch file
        raise CheckpointError(f"{path} is truncated or damaged ({type(e).__name__}: {first_line(e, 160)}): {fix}") from None


def choice_problem(which):
    """Why `which` names no file of a run directory (CHOICES), or '' when it does."""
    return "" if which in CHOICES else f"ckpt={which!r}: choose one of {', '.join(CHOICES)} (or give --ckpt_path=FILE)"


def find(out_dir, which="auto", path=""):
    """The checkpoint file to read: `path` if given, else the first of CHOICES[which] present in out_dir."""
    if path:
        if not Path(path).is_file():
            raise CheckpointError(f"no checkpoint file {path}: check --ckpt_path")
        return Path(path)
    if choice_problem(which):
        raise CheckpointError(choice_problem(which))
    paths = [Path(out_dir) / name for name in CHOICES[which]]
    for p in paths:
        if p.is_file():
            return p
    raise CheckpointError(f"no checkpoint in {out_dir}: looked for {' and '.join(map(str, paths))}; train one with "
                          f"`python train.py CONFIG --out_dir={out_dir}`, or pass --out_dir=DIR or --ckpt_path=FILE")


def load_model(path):
    """(GPT, checkpoint dict) from a checkpoint of this repo or nanoGPT (the config from its model_args)."""
    path = Path(path)
    other = {BEST: "--ckpt=latest (ckpt.pt)", LATEST: "--ckpt=best (best.pt)"}.get(path.name)
    ckpt = load(path, f"use {other} or train anew" if other else "check --ckpt_path")
    try:
        return GPT.from_checkpoint(ckpt), ckpt
    except (ValueError, TypeError, AttributeError, RuntimeError) as e:  # not model_args + model, or weights unfit
        raise CheckpointError(f"{path}: unknown checkpoint format: {first_line(e)}") from None


def load_for_inference(out_dir, which="auto", path="", device="cpu", dtype=None, init_from=""):
    """(model, checkpoint dict, file) for sample.py, eval.py and export.py: the checkpoint file `path` if given, else
    the file `which` (CHOICES) of the run directory out_dir, as a GPT in eval mode on device, its floating-point
    weights cast to dtype (None: as saved). init_from (a GPT-2 name or directory, pretrained.py) loads that instead,
    with an empty checkpoint dict. A missing or unreadable file is a one-line CheckpointError."""
    if init_from:
        try:
            model, ckpt, file = pretrained.load_gpt2(init_from), {}, init_from
        except pretrained.PretrainedError as e:
            raise CheckpointError(str(e)) from None
    else:
        file = find(out_dir, which, path)
        model, ckpt = load_model(file)
    return model.to(device=device, dtype=dtype).eval(), ckpt, file
