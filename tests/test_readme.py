"""The README's commands, at toy scale: the quick start (prepare, train, sample) and the test command of .ci/run."""

import re
import shlex
import subprocess
import sys

import pytest

from tests.helpers import ROOT

README = (ROOT / "README.md").read_text()
SH_BLOCKS = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
TOY = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=2", "--max_iters=3",
       "--lr_decay_iters=3", "--warmup_iters=1", "--eval_interval=3", "--eval_iters=1", "--log_interval=1",
       "--compile=False", "--dtype=float32"]


def commands(block):
    """The shell commands of a README block: lines joined, split at '&&'."""
    return [shlex.split(c) for c in block.replace("\\\n", " ").split("&&") if c.strip()]


def test_readme_opens_with_the_two_commands():
    main, tests = SH_BLOCKS[0], SH_BLOCKS[1]
    assert [c[:2] for c in commands(main)] == [["pip", "install"], ["python", "data/tinystories/prepare.py"],
                                                ["python", "train.py"], ["python", "sample.py"]]
    assert commands(main)[1][2:] == ["--sample"]  # the sample in the repo: no network, nothing beside the clone
    assert commands(tests)[-1] == ["python", "-m", "pytest", "-q", "tests"]
    ci = [norm(shlex.split(line)) for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci == [norm(c) for c in commands(tests)]  # .ci/run is the README's test command, line by line


def norm(command):
    """A command without `python -m` and pip's --quiet."""
    command = [a for a in command if a != "--quiet"]
    return command[2:] if command[:2] == ["python", "-m"] else command


@pytest.mark.slow
def test_quick_start_at_toy_scale(tmp_path):
    """The quick start's prepare, train and sample commands with their own flags, on 40 documents and a tiny model."""
    _, prepare, train, sample = commands(SH_BLOCKS[0])
    data, out = tmp_path / "tinystories", tmp_path / "out"
    run = lambda argv: subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, check=True, capture_output=True,  # noqa: E731
                                      text=True, timeout=300)
    run([*prepare, "--out_dir", str(data), "--max_docs=40", "--num_proc=1"])
    run([*train, *TOY, f"--data_dir={data}", f"--out_dir={out}"])
    sample = [a for a in sample if not a.startswith(("--out_dir=", "--max_new_tokens="))]
    text = run([*sample, f"--out_dir={out}", "--max_new_tokens=5", "--dtype=float32"]).stdout
    assert text.count("Once upon a time") == 3 and text.count("---------------") == 3
