"""The README and docs/: the quick start at toy scale (prepare, train, sample), the test command of .ci/run, the
front page's length, links and anchors that resolve, and the scripts, keys and flags of every documented command."""

import importlib
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from configurator import known_keys
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


# ----------------------------------------------------------------------------- the README and docs/ as a whole

DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
CONFIG_SCRIPTS = {  # the scripts that take --key=value through configurator.py: the dataclasses holding their keys
    "train.py": ("trainer.TrainConfig", "model.GPTConfig"),
    "sample.py": ("sample.SampleConfig",),
    "eval.py": ("evaluation.EvalConfig",),
    "export.py": ("export.ExportConfig",),
}
PASSED_ON = {"studies.compare": "train.py"}  # its arguments after a bare `--` are this script's
SEPARATORS = {"&&", "||", ";", "&", "|"}


def test_readme_is_a_front_page():
    assert len(README.splitlines()) <= 260, "the README is the front page: move reference text to docs/"


def prose(text):
    """Markdown without fenced code blocks and inline code spans (links and headings there are not links)."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M))


def slug(heading):
    """GitHub's anchor of a heading: link text kept, lowercased, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@pytest.mark.parametrize("heading, anchor", [
    ("Training on the CPU (train.py)", "training-on-the-cpu-trainpy"),
    ("Geometry: which constraint each module prefers (manifold Muon, 1,500 steps)",
     "geometry-which-constraint-each-module-prefers-manifold-muon-1500-steps"),
    ("The paper's setting and numbers", "the-papers-setting-and-numbers"),
    ("`gpt2.tiktoken`: GPT-2's vocabulary", "gpt2tiktoken-gpt-2s-vocabulary"),
    ("Linear-transformer lab in the paper's protocol (Ahn et al. 2310.01082)",
     "linear-transformer-lab-in-the-papers-protocol-ahn-et-al-231001082"),
])
def test_slug_is_githubs(heading, anchor):
    assert slug(heading) == anchor


def anchors(path):
    """Every heading anchor of a Markdown file; a repeated heading gets -1, -2, ... as on GitHub."""
    out, seen = set(), {}
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, flags=re.M):
        base = slug(heading)
        out.add(f"{base}-{seen[base]}" if base in seen else base)
        seen[base] = seen.get(base, 0) + 1
    return out


def links(page):
    """(path, anchor) of every relative link and image of a page; a link to '#anchor' has the page's own path."""
    for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:|//", target):
            continue  # https:, mailto:, ...
        path, _, anchor = target.partition("#")
        yield (page.parent / path).resolve() if path else page, anchor


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    missing = [f"{path.relative_to(ROOT)}#{anchor}" for path, anchor in links(page)
               if not path.exists() or anchor and (path.suffix != ".md" or anchor not in anchors(path))]
    assert not missing, f"{page.name} links to missing files or headings: {', '.join(missing)}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {path for path, _ in links(ROOT / "README.md")}
    assert not [p.name for p in DOCS if p not in linked], "docs pages the README does not link"


def shell_commands(text):
    """Every command of the ```sh blocks of a page: continuation lines joined, comments dropped, split at && ; | &."""
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            command = []
            for token in [*lexer, ";"]:
                if token not in SEPARATORS:
                    command.append(token)
                elif command:
                    yield command
                    command = []


def invocation(command):
    """(script path or module name, its arguments) of a `python ...` or `torchrun ...` command, else None."""
    while command and re.fullmatch(r"[A-Z_]+=\S*", command[0]):
        command = command[1:]  # VAR=value python ...
    if command[:1] == ["torchrun"]:
        i = next(i for i, a in enumerate(command) if a.endswith(".py"))
        return command[i], command[i + 1:]
    if command[:1] in (["python"], ["python3"]) and len(command) > 1:
        return (command[2], command[3:]) if command[1] == "-m" else (command[1], command[2:])
    return None


def test_shell_commands_are_parsed_like_a_shell():
    text = "```sh\nA=1 python x.py --a=\"b c\" \\\n  --d=1 && torchrun --nnodes=2 y.py --e=1   # f\nfor v in a; do\n```\n"
    assert [invocation(c) for c in shell_commands(text)] == [("x.py", ["--a=b c", "--d=1"]), ("y.py", ["--e=1"]),
                                                             None, None]


PYTHON_COMMANDS = [(page.relative_to(ROOT).as_posix(), *found) for page in PAGES
                   for command in shell_commands(page.read_text()) if (found := invocation(command))]


def ours(target):
    """Whether a script or module is this repository's (pytest, say, is not: its flags are its own)."""
    if target.endswith(".py"):
        return True
    spec = importlib.util.find_spec(target)
    return spec is not None and Path(spec.origin).is_relative_to(ROOT)


def config_problems(where, script, args):
    """The arguments of a configurator script that it does not take: a --flag that is not --key=value with one of
    its keys, a config file that does not exist."""
    keys = known_keys(*[getattr(importlib.import_module(module), name)
                        for module, _, name in (path.rpartition(".") for path in CONFIG_SCRIPTS[script])])
    problems = []
    for arg in args:
        key, eq, _ = arg.removeprefix("--").partition("=")
        if arg.startswith("--") and not (eq and key in keys):
            problems.append(f"{where}: {arg} is not --key=value with one of its keys")
        elif arg.endswith(".py") and "$" not in arg and not (ROOT / arg).is_file():
            problems.append(f"{where}: no config file {arg}")
    return problems


def test_documented_commands_name_existing_scripts_and_keys():
    """Every `python <script>.py`, `python -m <module>` and torchrun command of the README and docs/ names a script or
    module that exists; those of train/sample/eval/export pass only keys (and config files) they accept."""
    assert len(PYTHON_COMMANDS) > 20
    problems = []
    for page, target, args in PYTHON_COMMANDS:
        where = f"{page}: {target}"
        if not ((ROOT / target).is_file() if target.endswith(".py") else importlib.util.find_spec(target)):
            problems.append(f"{where}: no such script or module")
        elif target in CONFIG_SCRIPTS:
            problems += config_problems(where, target, args)
        elif target in PASSED_ON and "--" in args:
            problems += config_problems(where, PASSED_ON[target], args[args.index("--") + 1:])
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_documented_commands_use_the_argparse_options():
    """The --flags of the documented commands of this repo's argparse scripts are options their --help lists (slow:
    one interpreter start per script)."""
    problems, helps = [], {}
    for page, target, args in PYTHON_COMMANDS:
        if target in CONFIG_SCRIPTS or not ours(target):
            continue
        if target not in helps:
            argv = [target] if target.endswith(".py") else ["-m", target]
            out = subprocess.run([sys.executable, *argv, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
            helps[target] = set(re.findall(r"--[\w-]+", out.stdout))
            problems += [f"{target} --help failed: {out.stderr[-300:]}"] if out.returncode else []
        own = args[:args.index("--")] if "--" in args else args  # after `--`: another script's (PASSED_ON)
        problems += [f"{page}: {target} {arg}" for arg in own
                     if arg.startswith("--") and arg.partition("=")[0] not in helps[target]]
    assert helps, "no argparse commands found"
    assert not problems, "\n".join(problems)
