"""
The study runner: a study is a queue of runs whose raw records land in studies/results/<study>/ the moment each run
ends, so a queue can be stopped at any time (a kill, a restart, the end of a session) and resumed by starting it again.

    python -m studies geometry run            # run or resume the queue: --jobs (default 2) one-thread runs at a time
    python -m studies geometry plan           # every run, done or not, and the estimated time of what is left
    python -m studies geometry run --commit_every=25    # meanwhile commit studies/results/geometry every 25 minutes

A job is one command, of one of two kinds:
- "run": `python train.py ARGS --out_dir=out-studies/<study>/<key>` (a scratch folder). When it ends with a final
  record (finished, or diverged: a result too), its metrics.jsonl and config.json are written to
  studies/results/<study>/<key>/ (a temporary folder renamed into place: a folder there is always a whole record) and
  the scratch folder is removed. A run stopped half-way (signal, kill) keeps its scratch folder and is resumed from
  its ckpt.pt on the next start (--init_from=resume), or started again when it has none.
- "line": a command that appends one JSON line with its "key" to studies/results/<study>/runs.jsonl when done.
The queue is a function of the records so far (`jobs(study)` of each study module): a sweep grows its grid when its
best point sits at an edge (`bracket`), the main runs take the sweep's best rate. A job that waits on others is listed
by the plan (with its estimate) but started only once the queue function returns it ready.
"""

import fcntl
import importlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import runlog
from runlog import read_lines

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "studies" / "results"
SCRATCH = ROOT / "out-studies"
LINES = "runs.jsonl"
RECORD_FILES = (runlog.FILE, "config.json")
STUDIES = ("variants", "geometry", "multilevel", "lr_transfer", "lab")  # each studies/<name>.py: jobs(), report()


def bracket(losses, start, lo, hi):
    """Grow a factor-2 grid until its best point is interior: (grid to run, best or None while growing, edge note).
    losses: {value: loss or None (not run yet)}; start: the first grid; lo, hi: how far the grid may grow."""
    grid = sorted(set(start) | {v for v, x in losses.items() if x is not None})
    while True:
        if any(losses.get(v) is None for v in grid):
            return grid, None, ""
        scores = [losses[v] for v in grid]
        i = min(range(len(grid)), key=scores.__getitem__)
        if not math.isfinite(scores[i]):  # every point diverged: smaller values, down to lo
            if grid[0] / 2 < lo * 0.999:
                return grid, None, f"every point diverged (the grid may not grow below {lo:g})"
            grid = sorted(grid + [grid[0] / 2])
            continue
        if 0 < i < len(grid) - 1:
            return grid, grid[i], ""
        nxt = grid[0] / 2 if i == 0 else grid[-1] * 2
        if not lo * 0.999 <= nxt <= hi * 1.001:
            return grid, grid[i], f"edge optimum at {grid[i]:g} (the grid may not grow past {lo:g} .. {hi:g})"
        grid = sorted(grid + [nxt])


@dataclass
class Job:
    """One queue entry. argv: the arguments of `python` (train.py ... or -m module ...); steps and shape give the
    estimate (runs of one shape take the same time per step); waits: why it cannot start yet ("" when ready)."""
    key: str
    argv: list
    steps: int
    shape: str
    kind: str = "run"
    waits: str = ""
    env: dict = field(default_factory=dict)


class Study:
    """The records of one study (studies/results/<name>/) and its scratch folder, as the queue functions see them."""

    def __init__(self, name, results=None, scratch=None, guess=None):
        self.name = name
        self.results = Path(results or RESULTS / name)
        self.scratch = Path(scratch or SCRATCH / name)
        self.guess = guess or {}  # shape -> ms per step, for shapes with no finished run yet
        self._lines = None

    def run(self, key):
        """The landed record of a run job (runlog.Run: finished or diverged), or None."""
        d = self.results / key
        if not (d / runlog.FILE).is_file():
            return None
        run = runlog.Run(d)
        return run if run.done else None

    def lines(self):
        if self._lines is None:
            self._lines = read_lines(self.results / LINES)
        return self._lines

    def line(self, key):
        return next((r for r in self.lines() if r.get("key") == key), None)

    def refresh(self):
        self._lines = None

    def done(self, job):
        return (self.run(job.key) if job.kind == "run" else self.line(job.key)) is not None

    def wall(self, job):
        """Seconds the finished job took (its record), or None."""
        if job.kind == "run":
            run = self.run(job.key)
            return run.final.get("wall_time") if run else None
        rec = self.line(job.key)
        return rec.get("wall") if rec else None

    # ------------------------------------------------------------------------- running one job

    def command(self, job):
        """(argv, log path) to start job; a run job resumes from its scratch checkpoint when there is one."""
        argv = [sys.executable, *job.argv]
        if job.kind == "line":
            log = self.scratch / "logs" / (job.key.replace("/", "_") + ".log")
            log.parent.mkdir(parents=True, exist_ok=True)
            return argv, log
        out = self.scratch / job.key
        if (out / "ckpt.pt").is_file():
            argv.append("--init_from=resume")
        else:
            shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        return argv + [f"--out_dir={out}"], out / "train.log"

    def land(self, job):
        """Copy a finished or diverged run's records into results/<key>/ (atomically) and drop its scratch folder;
        returns whether the run was done."""
        src = self.scratch / job.key
        if not (src / runlog.FILE).is_file() or not runlog.Run(src).done:
            return False
        dst = self.results / job.key
        tmp = dst.parent / f".{dst.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in RECORD_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, tmp / name)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
        shutil.rmtree(src, ignore_errors=True)
        return True

    # ------------------------------------------------------------------------- estimates

    def ms_per_step(self, jobs):
        """shape -> (ms per step, source): measured from the finished jobs of each shape, else the study's guess."""
        measured = {}
        for job in jobs:
            wall = self.wall(job)
            if wall and job.steps:
                measured.setdefault(job.shape, []).append(1000 * wall / job.steps)
        out = {shape: (sum(v) / len(v), f"measured, {len(v)} run{'s' * (len(v) > 1)}") for shape, v in measured.items()}
        for shape, ms in self.guess.items():
            out.setdefault(shape, (ms, "guess"))
        return out


def final_loss(run):
    """A landed run's final val loss (inf when it diverged or is missing)."""
    if run is None or run.diverged:
        return math.inf
    loss = run.final.get("final_val_loss")
    return loss if loss is not None and math.isfinite(loss) else math.inf


def machine(run):
    """The machine of a run record: its header's device without the core and thread counts."""
    return run.header.get("device", "an unnamed machine").split(" (")[0]


def fmt(x):
    return f"{x:g}"


def report_json(obj):
    """A report's JSON text, every float to 10 significant digits, so that a rebuild on another CPU (whose BLAS may
    sum in another order, ~1e-15 apart) writes the same text but for near-zero differences of such numbers."""
    def rounded(x):
        if isinstance(x, dict):
            return {k: rounded(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [rounded(v) for v in x]
        if hasattr(x, "item") and getattr(x, "ndim", None) == 0:  # a numpy scalar
            x = x.item()
        if isinstance(x, float) and math.isfinite(x):
            return float(f"{x:.10g}")
        return x
    return json.dumps(rounded(obj), indent=1) + "\n"


def landed_values(study, prefix):
    """The numbers v of the landed runs named prefix + v, e.g. grid points added by an earlier growth."""
    out = set()
    parent, stem = (study.results / prefix).parent, (study.results / prefix).name
    if parent.is_dir():
        for d in parent.iterdir():
            rest = d.name[len(stem):] if d.name.startswith(stem) else ""
            try:
                out.add(float(rest))
            except ValueError:
                pass
    return out


def load_jobs(name):
    """The queue function of a study: a name of STUDIES (studies/<name>.py:jobs), or module:function (your own)."""
    spec = f"studies.{name}:jobs" if name in STUDIES else name
    module, _, fn = spec.partition(":")
    if not fn:
        sys.exit(f"error: unknown study {name!r}: choose one of {', '.join(STUDIES)} or give module:function")
    try:
        return getattr(importlib.import_module(module), fn)
    except (ImportError, AttributeError) as e:
        sys.exit(f"error: cannot load the queue {spec}: {e}")


def fmt_time(seconds):
    if seconds is None or not math.isfinite(seconds):
        return "?"
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min" if seconds >= 90 else \
        f"{seconds:.0f} s"


def plan(study, jobs, slots):
    """The plan as text: every job (done / to do / waiting), its time, and the estimate of what is left."""
    rates = study.ms_per_step(jobs)
    lines, left, unknown, n_done = [], 0.0, 0, 0
    for job in jobs:
        if study.done(job):
            n_done += 1
            status, t = "done", fmt_time(study.wall(job))
        else:
            ms = rates.get(job.shape, (None, ""))[0]
            est = ms * job.steps / 1000 if ms else None
            left += est or 0.0
            unknown += est is None
            status = "wait" if job.waits else "todo"
            t = f"~{fmt_time(est)}" + (f"  (waits on {job.waits})" if job.waits else "")
        lines.append(f"  {status:4}  {job.key:52} {job.steps:6} steps  {t}")
    todo = len(jobs) - n_done
    head = [f"{study.name}: {len(jobs)} jobs, {n_done} done, {todo} to do; records in "
            f"{os.path.relpath(study.results, ROOT)}/"]
    used = {j.shape for j in jobs}
    tail = ["time per step by shape: " + "; ".join(f"{s} {ms:.0f} ms ({src})" for s, (ms, src) in sorted(rates.items())
                                                   if s in used),
            f"left: {fmt_time(left)} of one-thread run time, about {fmt_time(left / slots)} on {slots} slots"
            + (f" (+ {unknown} jobs of unmeasured shape)" if unknown else "")]
    return "\n".join(head + lines + tail), left


def run_queue(study, jobs_fn, slots, stop, tick=lambda: None):
    """Run the study's ready jobs, `slots` at a time, recomputing the queue after each one (and calling tick() once a
    second); returns an exit code."""
    running, failed = {}, {}
    for job in jobs_fn(study):  # runs that ended after their runner stopped: land them now
        if job.kind == "run" and not job.waits and not study.done(job) and study.land(job):
            print(f"landed {job.key} (finished in its scratch folder)", flush=True)
    while True:
        study.refresh()
        jobs = jobs_fn(study)
        ready = [j for j in jobs if not j.waits and j.key not in running and j.key not in failed and not study.done(j)]
        while ready and len(running) < slots and not stop["now"]:
            job = ready.pop(0)
            argv, log = study.command(job)
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **job.env}
            with open(log, "w") as f:
                proc = subprocess.Popen(argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
            running[job.key] = (proc, job, log, time.time())
            stop["procs"].add(proc)
            print(f"[{time.strftime('%H:%M:%S')}] start {job.key}" + (" (resumed)" if "--init_from=resume" in argv
                                                                       else ""), flush=True)
        if not running:
            break
        time.sleep(1.0)
        tick()
        for key, (proc, job, log, t0) in list(running.items()):
            rc = proc.poll()
            if rc is None:
                continue
            del running[key]
            stop["procs"].discard(proc)
            study.refresh()
            ok = study.land(job) if job.kind == "run" else study.done(job)
            took = fmt_time(time.time() - t0)
            if ok:
                run = study.run(job.key) if job.kind == "run" else None
                note = f" (diverged at iter {run.final.get('diverged_at')})" if run is not None and run.diverged else ""
                print(f"[{time.strftime('%H:%M:%S')}] done  {key} in {took}{note}", flush=True)
            elif stop["now"]:
                print(f"[{time.strftime('%H:%M:%S')}] stopped {key} after {took}; it resumes on the next start",
                      flush=True)
            else:
                tail = log.read_text().strip().splitlines()[-3:] if log.exists() else []
                failed[key] = rc
                print(f"[{time.strftime('%H:%M:%S')}] FAILED {key} (exit {rc}): {' | '.join(tail)}", flush=True)
    study.refresh()
    jobs = jobs_fn(study)
    todo = [j for j in jobs if not study.done(j)]
    if stop["now"]:
        print(f"{study.name}: stopped; {len(todo)} jobs left, resumed by the same command")
        return 130
    if failed:
        print(f"error: {len(failed)} jobs of {study.name} failed ({', '.join(failed)}): see their logs in "
              f"{os.path.relpath(study.scratch, ROOT)}/")
        return 1
    if todo:
        print(f"error: {len(todo)} jobs of {study.name} still wait ({todo[0].key}: {todo[0].waits or 'not run'})")
        return 1
    print(f"{study.name}: all {len(jobs)} jobs done; records in {os.path.relpath(study.results, ROOT)}/")
    return 0


def committer(study, minutes):
    """tick(force=False): commit the study's records (git add + commit of its results folder) when `minutes` have
    passed since the last commit (0: never), so a stop loses no landed record."""
    last, path = [time.time()], os.path.relpath(study.results, ROOT)

    def tick(force=False):
        if not minutes or not force and time.time() - last[0] < 60 * minutes:
            return
        last[0] = time.time()
        subprocess.run(["git", "add", "--", path], cwd=ROOT, check=False)
        if subprocess.run(["git", "diff", "--cached", "--quiet", "--", path], cwd=ROOT).returncode:
            subprocess.run(["git", "commit", "--quiet", "-m", f"{path}: records of the running queue "
                            f"({time.strftime('%H:%M')})", "--", path], cwd=ROOT, check=False)
            print(f"[{time.strftime('%H:%M:%S')}] committed {path}", flush=True)
    return tick


def run(name, slots, commit_every=0):
    """Run (or resume) the queue of a study under a lock on its scratch folder; SIGTERM/SIGINT stop it cleanly (each
    run saves a checkpoint). Returns an exit code."""
    jobs_fn = load_jobs(name)
    study = jobs_fn(None)  # called without a study, a queue function returns its Study (folders, guesses)
    study.scratch.mkdir(parents=True, exist_ok=True)
    lock = open(study.scratch / ".lock", "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(f"error: another runner of {name} is working ({study.scratch / '.lock'}): wait for it or stop it")
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    stop = {"now": False, "procs": set()}

    def handle(signum, frame):  # each run saves a checkpoint and exits; the queue starts nothing new
        stop["now"] = True
        for proc in list(stop["procs"]):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    print(plan(study, jobs_fn(study), slots)[0].splitlines()[0], flush=True)
    tick = committer(study, commit_every)
    rc = run_queue(study, jobs_fn, slots, stop, tick)
    tick(force=True)
    return rc
