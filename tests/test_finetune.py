"""Starting from GPT-2 (--init_from=NAME|DIR) in train.py, sample.py and eval.py; init_from=auto[:X] and a torchrun
run that restarts itself. All offline: a tiny random GPT-2 with GPT-2's vocabulary, saved by transformers in tmp_path."""

import io
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import checkpoint
import evaluation
import export
import sample
import trainer
from configurator import ConfigError
from data.tokenizer import get_encoding
from pretrained import load_gpt2
from tests.helpers import ROOT, args, metrics, run, tiny_gpt2, torchrun, train_losses

transformers = pytest.importorskip("transformers", reason='pretrained.py needs transformers: pip install -e ".[export]"')
pytestmark = pytest.mark.usefixtures("one_thread")
FT = dict(block_size=32, batch_size=4, eval_iters=2, eval_interval=4, learning_rate=3e-3, warmup_iters=0, lr_decay_iters=8,
          dropout=0.1, dtype="float32", device="cpu", log_interval=1)  # a fine-tune on the toy data (ids < 64)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """(directory, transformers model) of a tiny GPT-2 with GPT-2's 50257 tokens and 64 positions."""
    path = tmp_path_factory.mktemp("gpt2")
    return path, tiny_gpt2(path, vocab=50257, positions=64)


def ft_args(toy, out, init_from, **kw):
    return [f"--{k}={v}" for k, v in {**FT, "data_dir": toy, "out_dir": out, "init_from": init_from, **kw}.items()]


@pytest.fixture(scope="module")
def finetuned(toy, gpt2, tmp_path_factory):
    """A run directory of 8 fine-tuning steps from the tiny GPT-2, uninterrupted."""
    out, n = tmp_path_factory.mktemp("ft"), torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests (one_thread): bit-exact comparisons need the same reductions
    try:
        run(ft_args(toy, out, gpt2[0], max_iters=8))
    finally:
        torch.set_num_threads(n)
    return out


def headers(out):
    return [r["init_from"] for r in metrics(out) if r["kind"] == "header"]


def test_sample_greedy_equals_transformers(gpt2):
    """sample.py --init_from=DIR --top_k=1 writes the prompt and the tokens of transformers' greedy generate."""
    path, hf = gpt2
    buf = io.StringIO()
    sample.sample(sample.load_config([f"--init_from={path}", "--start=Once upon a time", "--top_k=1", "--num_samples=1",
                                      "--max_new_tokens=12", "--device=cpu", "--dtype=float32"]), out=buf)
    enc = get_encoding()
    prompt = enc.encode("Once upon a time")
    with torch.no_grad():
        want = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, pad_token_id=enc.eot_token)[0]
    assert buf.getvalue() == enc.decode(want.tolist()) + "\n---------------\n"


def test_finetune_trains_and_resumes_exactly(toy, gpt2, finetuned, tmp_path):
    """From GPT-2 (its weights at step 0: transformers' val loss), the val loss falls; init_from=auto:DIR starts from
    GPT-2 in an empty out_dir, then resumes the fine-tune (not GPT-2 again): 4 + 4 steps equal 8 uninterrupted."""
    evals = [r["val_loss"] for r in metrics(finetuned) if r["kind"] == "eval"]
    assert evals[-1] < evals[0]
    out = tmp_path / "b"
    run(ft_args(toy, out, f"auto:{gpt2[0]}", max_iters=4))
    run(ft_args(toy, out, f"auto:{gpt2[0]}", max_iters=8))
    assert headers(out) == [dict(given=f"auto:{gpt2[0]}", resolved=str(gpt2[0])),
                            dict(given=f"auto:{gpt2[0]}", resolved="resume")]
    assert train_losses(out) == train_losses(finetuned)
    a, b = (torch.load(d / "ckpt.pt", weights_only=True)["model"] for d in (finetuned, out))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_finetune_exports_and_loads_back(finetuned, tmp_path):
    """export.py --format=gpt2 of the fine-tuned run, read back by load_gpt2, gives its logits exactly."""
    export.export(export.ExportConfig(out_dir=str(finetuned), ckpt="latest", to=str(tmp_path / "hf"), format="gpt2"))
    ours = checkpoint.load_for_inference(finetuned, "latest")[0]
    back = load_gpt2(str(tmp_path / "hf")).eval()
    idx = torch.randint(0, 50257, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(ours.logits(idx), back.logits(idx))


def test_auto_starts_fresh_then_resumes(toy, tmp_path):
    """init_from=auto: from scratch in an empty out_dir, a resume in a used one; the steps continue, none repeated."""
    run(args(toy, tmp_path, max_iters=4, eval_interval=2, init_from="auto"))
    run(args(toy, tmp_path, max_iters=8, eval_interval=2, init_from="auto"))
    assert headers(tmp_path) == [dict(given="auto", resolved="scratch"), dict(given="auto", resolved="resume")]
    assert [i for i, _ in train_losses(tmp_path)] == list(range(1, 9))


def test_configs_run_from_a_local_gpt2(toy, gpt2, tmp_path):
    """config/finetune_tinystories.py and config/eval_gpt2.py with --init_from=DIR and a tiny override set."""
    tiny = [f"--init_from={gpt2[0]}", f"--data_dir={toy}", "--block_size=32", "--batch_size=2", "--eval_iters=1",
            "--device=cpu"]
    s = run([str(ROOT / "config/finetune_tinystories.py"), *tiny, f"--out_dir={tmp_path / 'ft'}", "--max_iters=2",
             "--eval_interval=1", "--gradient_accumulation_steps=1"])
    assert s["iters"] == 2 and (tmp_path / "ft" / "ckpt.pt").exists()  # the last step always saves
    s = run([str(ROOT / "config/eval_gpt2.py"), *tiny, f"--out_dir={tmp_path / 'ev'}"])
    assert s["iters"] == 0 and not (tmp_path / "ev" / "ckpt.pt").exists()
    assert [r["kind"] for r in metrics(tmp_path / "ev")] == ["header", "eval", "final"]


@pytest.mark.parametrize("extra, message", [
    (["--vocab_size=50304"], "padded ids would get logit 0"),
    (["--n_layer=3"], "does not fit n_layer=3"),
    (["--update=nesterov"], "adds momentum"),
])
def test_pretrained_start_errors(toy, gpt2, tmp_path, capsys, extra, message):
    """What GPT-2 cannot start is a one-line error: a padded vocabulary, another shape, a variant of another function."""
    with pytest.raises(SystemExit) as e:
        trainer.main(ft_args(toy, tmp_path, gpt2[0], max_iters=1) + extra)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_auto_needs_a_fresh_start():
    with pytest.raises(ConfigError, match="after auto: comes what a fresh run starts from"):
        trainer.load_config(["--init_from=auto:resume"])


def test_eval_val_ppl_of_gpt2(toy, gpt2, tmp_path):
    """eval.py --init_from=DIR --tasks=val_ppl on the given data: the loss of the pretrained model; no data: an error."""
    cfg = evaluation.EvalConfig(init_from=str(gpt2[0]), tasks="val_ppl", data_dir=str(toy), limit=2, batch_size=2,
                                device="cpu", out_dir=str(tmp_path))
    res = evaluation.evaluate(cfg)["val_ppl"]
    model = load_gpt2(str(gpt2[0])).eval()
    loader = evaluation.BinLoader(toy, "val", 2, 64, order="epoch", seed=0, device="cpu", vocab_size=50257)
    with torch.no_grad():
        want = sum(model(*loader.next_batch())[1].item() for _ in range(2)) / 2
    assert res["loss"] == pytest.approx(want, rel=1e-6)
    with pytest.raises(evaluation.EvalError, match="needs the prepared data: give --data_dir"):
        evaluation.evaluate(evaluation.EvalConfig(init_from=str(gpt2[0]), tasks="val_ppl", device="cpu"))


def test_sample_bad_init_from(capsys):
    with pytest.raises(SystemExit):
        sample.main(["--init_from=gpt3", "--device=cpu"])
    err = capsys.readouterr().err
    assert err.startswith("error: init_from='gpt3' is neither a GPT-2 name") and err.count("\n") == 1


def test_sample_ignores_a_config_files_init_from(tmp_path):
    """A training config's init_from (GPT-2, the run's start) is not what sample.py should load from its out_dir."""
    assert sample.load_config([str(ROOT / "config/finetune_tinystories.py")]).init_from == ""


# ----------------------------------------------------------------------------- a run that restarts itself

def worker(agent_pid, local_rank):
    """The pid of torchrun's worker process of local_rank (its child with that LOCAL_RANK), or None."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == agent_pid and f"LOCAL_RANK={local_rank}".encode() in env:
            return int(pid)
    return None


def killed_run(argv, out):
    """`torchrun --max_restarts=1 train.py argv` with rank 1 SIGKILLed as soon as out/ckpt.pt exists: (exit code,
    output)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max_restarts=1",
           str(ROOT / "train.py"), *argv]
    p = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "ckpt.pt").exists() and p.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        pid = worker(p.pid, 1)
        assert pid is not None, "rank 1 was not found running once ckpt.pt existed"
        os.kill(pid, signal.SIGKILL)
        return p.wait(timeout=240), p.stdout.read()
    finally:
        p.kill()


@pytest.mark.slow
def test_torchrun_restart_continues_bit_exactly(toy, tmp_path):
    """torchrun --max_restarts=1 ... --init_from=auto, one rank SIGKILLed once a checkpoint exists: torchrun restarts
    both ranks, which resume from ckpt.pt; the final weights equal an uninterrupted run's bit for bit, and the run log
    shows the restart once (a second header) and every step once. A launch can fail for reasons outside the code (on
    a busy machine gloo's connection at the restart may time out): the killed run is tried twice."""
    tails = []
    for attempt in range(2):
        out = tmp_path / f"killed{attempt}"
        argv = args(toy, out, max_iters=150, eval_interval=10, log_interval=10, init_from="auto",
                    gradient_accumulation_steps=2)
        code, text = killed_run(argv, out)
        if code == 0:
            break
        tails.append(text[-2000:])
    assert code == 0, "\n---\n".join(tails)
    torchrun([a.replace(out.name, "whole") for a in argv])
    assert len(headers(out)) == 2 and headers(out)[1]["resolved"] == "resume"
    steps = [i for i, _ in train_losses(out)]
    assert steps == sorted(set(steps)) == [i for i, _ in train_losses(tmp_path / "whole")]
    a, b = (torch.load(d / "ckpt.pt", weights_only=True) for d in (out, tmp_path / "whole"))
    assert a["iter_num"] == b["iter_num"] == 150
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
