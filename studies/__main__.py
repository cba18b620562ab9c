"""
The five studies, one entry each (the design and the report of a study are studies/<name>.py; the runner,
studies/runner.py, runs any of them):

    python -m studies NAME plan              # every job, done or to do, and the estimated time of what is left
    python -m studies NAME run [--jobs=2]    # prepare the data, run or resume the queue, then the report
    python -m studies NAME report            # every table, JSON and plot of the study from its records
    python -m studies report all             # ... of all five, from the committed records in studies/results/

NAME: variants, geometry, multilevel, lr_transfer, lab (or module:function, a queue of your own: plan and run).
run options: --source PATH (TinyStories text, a file or folder; default: the embedded sample), --commit_every=MIN
(commit studies/results/NAME every MIN minutes while the queue runs), --quick (lab only: a tiny plan and its report
in out-studies/lab_quick, a smoke run). A stopped queue (kill, Ctrl-C) resumes by the same command.
"""

import argparse
import importlib
import os
import subprocess
import sys

from studies import runner

ACTIONS = ("plan", "run", "report")
DATA = "data/tinystories_study"  # the train.py studies read DATA_top4096 (and variants' vocabulary check DATA too)


def prepare(source):
    """TinyStories tokens in DATA and DATA_top4096 (its 4,095 most frequent tokens + <unk>), from source (a local
    TinyStories text file or folder) or, when source is empty, the embedded sample."""
    for argv in (["data/tinystories/prepare.py", *(["--source", source] if source else ["--sample"]), "--out_dir", DATA],
                 ["-m", "data.reduce_vocab", DATA, "--vocab", "4096"]):
        if subprocess.run([sys.executable, *argv], cwd=runner.ROOT).returncode:
            sys.exit(f"error: the data preparation failed: python {' '.join(argv)}")


def report(name, quick=False):
    """Run the study's report on its records (studies/results/NAME, or the quick lab's scratch folder)."""
    module = importlib.import_module(f"studies.{name}")
    out = runner.SCRATCH / "lab_quick" if quick else runner.RESULTS / name
    records = out / ("runs.jsonl" if name in ("lr_transfer", "lab") else "runs")
    if not records.exists():
        return f"{name}: no run records in {os.path.relpath(out, runner.ROOT)}/ yet: run python -m studies {name} run first"
    if quick:
        module.report(out, "python -m studies lab run --quick", quick=True)
    else:
        module.report(out, f"python -m studies {name} report")
    return None


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m studies", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("name", metavar="NAME", help=f"a study: {', '.join(runner.STUDIES)} ('all' with report)")
    p.add_argument("action", metavar="ACTION", help=f"{' | '.join(ACTIONS)} (either order: report all)")
    p.add_argument("--jobs", type=int, default=int(os.environ.get("JOBS", 2)), help="runs at a time (one thread each)")
    p.add_argument("--source", default=os.environ.get("SOURCE", ""), help="local TinyStories text (default: the sample)")
    p.add_argument("--commit_every", type=float, default=0, help="commit the records every N minutes while running")
    p.add_argument("--quick", action="store_true", help="lab: a tiny plan and its report (a smoke run)")
    a = p.parse_args(argv)
    words = (a.name, a.action)
    action = next((w for w in words if w in ACTIONS), None)
    name = next((w for w in words if w != action), None)
    if action is None or name is None:
        sys.exit(f"error: give a study and one of {', '.join(ACTIONS)}, e.g. python -m studies geometry plan")
    if name not in (*runner.STUDIES, "all") and ":" not in name:
        sys.exit(f"error: unknown study {name!r}: choose one of {', '.join(runner.STUDIES)} or give module:function")
    if name == "all" and action != "report" or ":" in name and action == "report":
        sys.exit(f"error: {name} {action}: 'all' is for report, module:function for plan and run")
    if a.quick and name != "lab":
        sys.exit("error: --quick is the lab's smoke run: python -m studies lab run --quick")
    if a.jobs < 1:
        sys.exit(f"error: --jobs={a.jobs}: give at least 1")
    return name, action, a


def main(argv=None):
    name, action, a = parse(argv)
    spec = "studies.lab:quick_jobs" if a.quick else name
    if action == "plan":
        jobs_fn = runner.load_jobs(spec)
        study = jobs_fn(None)
        print(runner.plan(study, jobs_fn(study), a.jobs)[0])
        return 0
    if action == "report":
        for study in runner.STUDIES if name == "all" else (name,):
            missing = report(study, a.quick)
            if missing and name != "all":
                sys.exit(f"error: {missing}")
            if missing:
                print(missing)
        return 0
    if name in runner.STUDIES and name != "lab":
        prepare(a.source)
    rc = runner.run(spec, a.jobs, a.commit_every)
    if rc == 0 and name in runner.STUDIES:
        report(name, a.quick)
    return rc


if __name__ == "__main__":
    sys.exit(main())
