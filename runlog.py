"""
Run records: `metrics.jsonl` in a run directory, one JSON object per line; this module writes and reads them (the
spectral records' diagnostics are computed in diagnostics.py).

Every record has `kind`, `iter` (optimizer steps done), `tokens`, `flops` (cumulative training FLOPs) and `time`
(seconds of training so far, across resumes). The kinds:

    header    once per start of train.py: config, model_args, num_params, flops_per_token, tokens_per_iter,
              git_commit, versions, device, world_size, argv
    train     every log_interval steps: loss (mean since the last one), lr, tok_per_s, ms_per_iter, mfu, level, offset
    eval      every eval_interval steps: train_loss, val_loss, lr, eval_seconds, coef (the update coefficients)
    spectral  every spectral_interval steps: sigma_max, sigma_min, violation per hidden matrix, attn_logit_max,
              attn_entropy, attn_saturated per layer, dual_iters and tangent_rms of manifold Muon
              (diagnostics.spectral_record)
    task      a downstream evaluation (eval.py): task, metrics, checkpoint
    final     at the end: best_val_loss, final_val_loss, iters, wall_time, interrupted (on a signal); a run that
              stopped on a non-finite loss writes one too, with diverged, diverged_at (the iteration) and error

`RunLog` is the writer (the master rank; optionally mirrored to wandb). `Run(path)` reads a run back, for the
studies, benchmarks and tests. A study's runs.jsonl (one JSON line per finished run of the lab and lr_transfer
queues) is written by append_line and read by read_lines, here too.
"""

import fcntl
import json
import os
from pathlib import Path

import numpy as np

import utils

FILE = "metrics.jsonl"


# ----------------------------------------------------------------------------- writing

class RunLog:
    """Appends records to out_dir/metrics.jsonl, flushed per line; resume_at=it drops the lines written after the
    checkpoint of iteration it (and the final record), so a resumed run continues the file exactly; append=True
    adds to a finished run's file (eval.py)."""

    def __init__(self, out_dir, resume_at=None, wandb=None, append=False):
        self.path = Path(out_dir) / FILE
        if resume_at is not None and self.path.exists():
            keep = [r for r in read(self.path) if r.get("iter", 0) <= resume_at and r["kind"] != "final"]
            utils.atomic_write_text("".join(json.dumps(r) + "\n" for r in keep), self.path)
        self.file = open(self.path, "a" if resume_at is not None or append else "w")
        self.wandb = None
        if wandb is not None:  # dict(project=..., name=..., config=...)
            try:
                import wandb as wandb_module  # optional at run time, imported only when asked for
            except ImportError:
                raise ImportError("wandb_log=True needs wandb: pip install wandb (or set wandb_log=False)") from None
            self.wandb = wandb_module.init(**wandb, resume="allow")

    def log(self, kind, **fields):
        record = {"kind": kind, **fields}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.wandb is not None and kind != "header":
            numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.wandb.log({f"{kind}/{k}" if kind != "train" else k: v for k, v in numbers.items()},
                           step=record["iter"])

    def close(self):
        self.file.close()
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


# ----------------------------------------------------------------------------- reading

def read_lines(path):
    """The records of a study's runs.jsonl (one line per run, studies/runner.py); a half-written last line (a kill
    during an append) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def append_line(path, record):
    """Append one record to a runs.jsonl under a lock, after a newline if a killed writer left a partial line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0, os.SEEK_END)
        if f.tell():
            f.seek(f.tell() - 1)
            if f.read(1) != "\n":
                f.write("\n")
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read(path):
    """Every record of a metrics.jsonl (path: the file or its run directory)."""
    path = Path(path)
    path = path / FILE if path.is_dir() else path
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class Run:
    """One run directory read back: records by kind, the header, final record, evals (one per iter)."""

    def __init__(self, path):
        path = Path(path)
        self.dir = path if path.is_dir() or not path.suffix else path.parent
        if not (self.dir / FILE).is_file():
            raise FileNotFoundError(f"{self.dir / FILE} not found: train the run first or fix the run path")
        self.records = read(self.dir)

    def of(self, kind):
        return [r for r in self.records if r["kind"] == kind]

    @property
    def header(self):
        heads = self.of("header")
        return heads[0] if heads else None

    @property
    def config(self):
        return self.header["config"]

    @property
    def model_args(self):
        return self.header["model_args"]

    @property
    def final(self):
        finals = self.of("final")
        return finals[-1] if finals else None

    @property
    def finished(self):
        """A final record that was written neither by an interrupt nor by a divergence."""
        return self.final is not None and not self.final.get("interrupted", False) and not self.diverged

    @property
    def diverged(self):
        """The run stopped on a non-finite loss (final record with diverged_at: the iteration)."""
        return self.final is not None and bool(self.final.get("diverged", False))

    @property
    def done(self):
        """Finished or diverged: a result either way (an interrupted run is neither)."""
        return self.finished or self.diverged

    def evals(self):
        """Eval records by increasing iter (a resumed run may repeat one: the last is kept)."""
        by_iter = {r["iter"]: r for r in self.of("eval")}
        return [by_iter[k] for k in sorted(by_iter)]

    def series(self, kind, key):
        """(iters, values) arrays of key (a name or a function of the record) over the records of kind."""
        rs = self.evals() if kind == "eval" else self.of(kind)
        get = key if callable(key) else (lambda r: r[key])
        return np.array([r["iter"] for r in rs]), np.array([get(r) for r in rs], dtype=float)

    def require_finished(self):
        if self.header is None or self.final is None:
            missing = "header" if self.header is None else "final"
            raise ValueError(f"{self.dir / FILE} has no {missing} record: the run is not finished "
                             "(resume it with --init_from=resume)")
        return self
