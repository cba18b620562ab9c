"""eval.py and evaluation.py: the lm-evaluation-harness adapter against direct computations, the local task, val_ppl, errors."""

import json
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

import checkpoint
import eval as eval_script
import evaluation
import runlog
from data.tokenizer import get_encoding
from model import GPT, PRESETS, GPTConfig
from tests.helpers import ROOT, run

SMALL = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=50304, bias=False, dropout=0.0)
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_lm(variant, seed=0):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**SMALL, **PRESETS[variant])).eval()
    return model, evaluation.make_lm(model, "cpu", "float32", batch_size=3)


def requests(pairs):
    from lm_eval.api.instance import Instance
    return [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(pairs)]


def direct(model, ctx, cont):
    """log p(cont | ctx) by one full forward of the (block_size-cut) sequence, summed over the continuation."""
    seq = (ctx + cont)[-(model.config.block_size + 1):]
    x, y = torch.tensor([seq[:-1]]), torch.tensor([seq[1:]])
    logp = F.log_softmax(model(x, y)[0][0].double(), -1)
    k = min(len(cont), model.config.block_size)
    return logp[-k:].gather(-1, y[0, -k:, None]).sum().item()


@pytest.mark.parametrize("variant", ["baseline", "yuriiformer"])
def test_loglikelihoods_equal_a_direct_computation(variant):
    """Per-choice loglikelihoods of a few TinyStories-style items, batched with padding, against model.forward on
    each pair alone (fp32, 1e-5); contexts longer than block_size are cut from the left."""
    model, lm = tiny_lm(variant)
    items = [json.loads(line) for line in open(ROOT / "evals" / "tinystories_endings.jsonl")][:3]
    long_ctx = " ".join(["Once upon a time there was a little girl who loved to play in the park."] * 8)
    pairs = [(it["ctx"], " " + e) for it in items for e in it["endings"]] + [(long_ctx, " She smiled.")]
    got = lm.loglikelihood(requests(pairs), disable_tqdm=True)
    enc = get_encoding()
    assert len(enc.encode_ordinary(long_ctx)) > 2 * SMALL["block_size"]
    for (ctx, cont), (ll, greedy) in zip(pairs, got):
        c_enc, k_enc = lm._encode_pair(ctx, cont)
        assert ll == pytest.approx(direct(model, c_enc, k_enc), abs=1e-5 * max(1.0, abs(ll)))
        assert isinstance(greedy, bool)


def test_rolling_loglikelihood_is_the_sum_over_disjoint_windows():
    model, lm = tiny_lm("baseline")
    from lm_eval.api.instance import Instance
    text = " ".join(["The little dog ran to the big red barn."] * 10)
    (ll,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)
    ids = get_encoding().encode_ordinary(text)
    T, total, prev = SMALL["block_size"], 0.0, [50256]
    for start in range(0, len(ids), T):  # non-overlapping windows, each conditioned on what precedes it
        cont = ids[start:start + T]
        total += direct(model, (prev + ids[:start])[-(T + 1 - len(cont)):] if start else prev, cont)
    assert ll == pytest.approx(total, rel=1e-5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained briefly on the TinyStories sample (GPT-2 vocabulary)."""
    tmp = tmp_path_factory.mktemp("eval")
    data = tmp / "ts"
    subprocess.run([sys.executable, "data/tinystories/prepare.py", "--sample", "--out_dir", str(data), "--max_docs",
                    "1000", "--num_proc", "1"], cwd=ROOT, check=True, capture_output=True)
    out = tmp / "run"
    run([f"--data_dir={data}", "--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=8",
         "--max_iters=80", "--eval_interval=80", "--eval_iters=2", "--log_interval=40", "--learning_rate=1e-2",
         "--min_lr=1e-3", "--warmup_iters=10", "--dtype=float32", "--device=cpu", f"--out_dir={out}",
         "--eval_tasks=tinystories_endings"])
    return out


@pytest.mark.slow
def test_trained_model_beats_chance_on_the_local_task(trained):
    """Trained on TinyStories, the model picks the fitting ending far above chance (1/4) and above an untrained
    model of the same shape; train.py's eval_tasks ran the evaluation on best.pt and logged it."""
    tasks = {r["task"]: r["metrics"] for r in runlog.Run(trained).of("task")}
    assert set(tasks) == {"tinystories_endings"}
    acc = tasks["tinystories_endings"]["acc,none"]
    assert acc >= 0.6 and tasks["tinystories_endings"]["acc_norm,none"] > 0.25
    assert (trained / "eval" / "tinystories_endings.json").exists()
    torch.manual_seed(0)
    fresh = GPT(GPTConfig(**{**SMALL, "n_layer": 1, "bias": True}))
    items = [json.loads(line) for line in open(ROOT / "evals" / "tinystories_endings.jsonl")]
    lm = evaluation.make_lm(fresh.eval(), "cpu", "float32", 16)
    lls = lm.loglikelihood(requests([(it["ctx"], " " + e) for it in items for e in it["endings"]]), disable_tqdm=True)
    picks = [max(range(4), key=lambda j: lls[4 * i + j][0]) for i in range(len(items))]
    untrained = sum(p == it["label"] for p, it in zip(picks, items)) / len(items)
    assert acc > untrained + 0.2


@pytest.mark.slow
def test_val_ppl_on_the_runs_own_val_split(trained, capsys):
    eval_script.main([f"--out_dir={trained}", "--tasks=val_ppl", "--limit=8", "--batch_size=8"])
    out = capsys.readouterr().out
    assert out.startswith("val_ppl: ppl ") and float(out.split()[2].rstrip(",")) < 2000
    (rec,) = [r for r in runlog.Run(trained).of("task") if r["task"] == "val_ppl"]
    assert rec["metrics"]["tokens"] == 8 * 8 * 32 and rec["metrics"]["loss"] == pytest.approx(
        float(out.split()[-1]), abs=1e-4)


@pytest.mark.parametrize("argv, message", [
    (["--out_dir=/nonexistent/run"], "no checkpoint in /nonexistent/run: looked for /nonexistent/run/best.pt"),
    (["--ckpt_path=/nonexistent.pt"], "no checkpoint file /nonexistent.pt: check --ckpt_path"),
    (["--tasks="], "tasks is empty"),
    (["--tasks=evals/nope.yaml"], "no task config at evals/nope.yaml"),
    (["--batchsize=2"], "unknown config key(s): batchsize"),
])
def test_errors_are_one_line(tmp_path, capsys, argv, message):
    if message == "tasks is empty" or "nope.yaml" in message:
        torch.manual_seed(0)
        model = GPT(GPTConfig(**SMALL))
        torch.save({"model_args": model.model_args(), "model": model.state_dict()}, tmp_path / "best.pt")
        argv = [f"--out_dir={tmp_path}", *argv]
    with pytest.raises(SystemExit) as e:
        eval_script.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and message in err, err


@pytest.mark.slow
def test_unknown_harness_task_is_one_line(tmp_path, capsys):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL))
    torch.save({"model_args": model.model_args(), "model": model.state_dict()}, tmp_path / "best.pt")
    with pytest.raises(SystemExit):
        eval_script.main([f"--out_dir={tmp_path}", "--tasks=no_such_task_xyz"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no_such_task_xyz" in err, err


def test_without_the_harness_says_how_to_install(monkeypatch):
    import builtins
    real = builtins.__import__

    def no_lm_eval(name, *a, **k):
        if name.startswith("lm_eval"):
            raise ImportError(name)
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_lm_eval)
    with pytest.raises(evaluation.EvalError, match=r'pip install -e "\.\[eval\]"'):
        evaluation.load_lm_eval()


def test_checkpoint_helpers_find_best_then_latest(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint in"):
        checkpoint.find(tmp_path)
    (tmp_path / "ckpt.pt").write_bytes(b"x")
    assert checkpoint.find(tmp_path).name == "ckpt.pt"
    (tmp_path / "best.pt").write_bytes(b"x")
    assert checkpoint.find(tmp_path).name == "best.pt" and checkpoint.find(tmp_path, "latest").name == "ckpt.pt"
