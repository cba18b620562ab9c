"""The study runner (studies/runner.py, python -m studies): records land as runs end, a killed queue resumes, plan."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import runlog
from studies import runner
from tests.helpers import ROOT, TINY

TOY_QUEUE = '''
from studies.runner import Job, Study
RESULTS, SCRATCH, DATA = {results!r}, {scratch!r}, {data!r}
ARGS = {args!r}

def jobs(study):
    if study is None:
        return Study("toy", results=RESULTS, scratch=SCRATCH, guess={{"tiny": 50}})
    return [Job(f"runs/{{name}}", ["train.py", *ARGS, f"--max_iters={{steps}}", f"--lr_decay_iters={{steps}}",
                                 f"--eval_interval={{steps}}"], steps, "tiny")
            for name, steps in (("first", 10), ("second", 400))]
'''


@pytest.fixture
def toy_queue(tmp_path, toy):
    """A queue of 2 tiny train.py runs (module toyqueue:jobs in tmp_path) and the env to run the runner with it."""
    args = [f"--{k}={v}" for k, v in {**TINY, "data_dir": toy, "log_interval": 5}.items()]
    (tmp_path / "toyqueue.py").write_text(TOY_QUEUE.format(results=str(tmp_path / "results"),
                                                           scratch=str(tmp_path / "scratch"), data=str(toy), args=args))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return tmp_path, env


def runner_cmd(action="run"):
    return [sys.executable, "-m", "studies", "toyqueue:jobs", action, "--jobs=1"]


@pytest.mark.slow
def test_killed_queue_resumes_with_the_unfinished_run_only(toy_queue):
    tmp, env = toy_queue
    proc = subprocess.Popen(runner_cmd(), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    first = tmp / "results" / "runs" / "first" / runlog.FILE
    deadline = time.time() + 120
    while not first.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert first.exists(), "the first run's records never landed"
    time.sleep(1.0)  # the second run is under way
    os.killpg(proc.pid, signal.SIGKILL)  # the whole queue dies at once: no final record, no checkpoint for it
    proc.wait()
    assert runlog.Run(first.parent).finished and (first.parent / "config.json").is_file()
    assert not (tmp / "results" / "runs" / "second").exists()  # a half-run never looks finished
    plan = subprocess.run(runner_cmd("plan"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    assert "2 jobs, 1 done, 1 to do" in lines[0]
    assert any(line.split()[:2] == ["done", "runs/first"] for line in lines)
    assert any(line.split()[:2] == ["todo", "runs/second"] for line in lines)
    assert "left:" in lines[-1]
    again = subprocess.run(runner_cmd(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "start runs/second" in again.stdout and "start runs/first" not in again.stdout
    second = runlog.Run(tmp / "results" / "runs" / "second")
    assert second.finished and second.final["iters"] == 400
    assert not (tmp / "scratch" / "runs" / "second").exists()  # scratch (checkpoints) dropped once landed


def test_interrupted_run_resumes_from_its_checkpoint(toy_queue):
    """A run stopped by a signal (final record marked interrupted, ckpt.pt kept) is not landed; the next start
    passes --init_from=resume."""
    tmp, _ = toy_queue
    study = runner.Study("toy", results=tmp / "results", scratch=tmp / "scratch")
    job = runner.Job("runs/a", ["train.py"], 10, "tiny")
    out = tmp / "scratch" / "runs" / "a"
    out.mkdir(parents=True)
    (out / runlog.FILE).write_text(json.dumps({"kind": "header", "iter": 0}) + "\n" +
                                   json.dumps({"kind": "final", "iter": 5, "interrupted": True}) + "\n")
    (out / "ckpt.pt").write_bytes(b"x")
    assert not study.land(job) and not study.done(job)
    argv, _ = study.command(job)
    assert "--init_from=resume" in argv and f"--out_dir={out}" in argv
    (out / "ckpt.pt").unlink()  # no checkpoint: the run starts again from scratch
    argv, _ = study.command(job)
    assert "--init_from=resume" not in argv and not (out / runlog.FILE).exists()


def test_diverged_run_is_a_result(toy, tmp_path):
    """A run that reaches a non-finite loss writes a final record with diverged_at; the runner lands it as done."""
    from tests.helpers import args, run
    out = tmp_path / "scratch" / "runs" / "d"
    with pytest.raises(FloatingPointError):
        run(args(toy, out, learning_rate=1e6, min_lr=1e5, max_iters=50, lr_decay_iters=50, eval_interval=50,
                 grad_clip=0.0, warmup_iters=0))
    r = runlog.Run(out)
    assert r.diverged and r.done and not r.finished and r.final["diverged_at"] > 0
    study = runner.Study("toy", results=tmp_path / "results", scratch=tmp_path / "scratch")
    job = runner.Job("runs/d", [], 50, "tiny")
    assert study.land(job) and study.done(job) and study.run("runs/d").diverged


def test_half_written_line_is_skipped_and_mended(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps({"key": "a"}) + "\n" + '{"key": "b", "los')  # a kill during an append
    assert [r["key"] for r in runlog.read_lines(path)] == ["a"]
    runlog.append_line(path, {"key": "c"})
    assert [r["key"] for r in runlog.read_lines(path)] == ["a", "c"]


def test_bracket_grows_past_an_edge_and_stops_at_the_range():
    grid, best, _ = runner.bracket({1: 3.0, 2: 2.0, 4: 1.0}, (1, 2, 4), 0.25, 16)
    assert grid == [1, 2, 4, 8] and best is None  # 8 is to run
    grid, best, _ = runner.bracket({1: 3.0, 2: 2.0, 4: 1.0, 8: 1.5}, (1, 2, 4), 0.25, 16)
    assert best == 4
    grid, best, note = runner.bracket({4: 1.0, 8: 2.0, 16: 3.0}, (4, 8, 16), 4, 16)
    assert best == 4 and "edge optimum" in note
    _, best, note = runner.bracket({1: float("inf"), 2: float("inf")}, (1, 2), 1, 2)
    assert best is None and "diverged" in note
    grid, best, _ = runner.bracket({1: float("inf"), 2: float("inf")}, (1, 2), 0.25, 2)  # all diverged: go lower
    assert grid == [0.5, 1, 2] and best is None
    grid, best, _ = runner.bracket({0.5: 1.0, 1: float("inf"), 2: float("inf")}, (1, 2), 0.25, 2)
    assert grid == [0.25, 0.5, 1, 2] and best is None  # 0.5 is the best at the edge: 0.25 is to run


@pytest.mark.parametrize("study", runner.STUDIES)
def test_every_study_plans(study, tmp_path):
    """`python -m studies NAME plan` of every study lists its jobs and a total estimate, without running anything."""
    p = subprocess.run([sys.executable, "-m", "studies", study, "plan"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"{study}: ") and "left:" in p.stdout.splitlines()[-1]


def test_unknown_study_is_a_one_line_error():
    p = subprocess.run([sys.executable, "-m", "studies", "nosuch", "plan"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode != 0 and p.stderr.strip().startswith("error:") and len(p.stderr.strip().splitlines()) == 1


def test_commit_every_commits_the_landed_records(monkeypatch, tmp_path):
    """run --commit_every: tick() commits studies/results/<study> once the interval passed (force: now), and only it."""
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True, text=True).stdout  # noqa: E731
    git("init", "-q")
    git("config", "user.email", "t@t")
    git("config", "user.name", "t")
    monkeypatch.setattr(runner, "ROOT", tmp_path)
    study = runner.Study("toy", results=tmp_path / "studies" / "results" / "toy", scratch=tmp_path / "scratch")
    tick = runner.committer(study, minutes=25)
    (study.results / "runs" / "a").mkdir(parents=True)
    (study.results / "runs" / "a" / runlog.FILE).write_text("{}\n")
    (tmp_path / "other.txt").write_text("not a record")
    tick()  # the interval has not passed
    assert not git("log", "--oneline", "--all")
    tick(force=True)
    assert git("show", "--name-only", "--format=", "HEAD").split() == ["studies/results/toy/runs/a/metrics.jsonl"]
    assert "other.txt" in git("status", "--short")
