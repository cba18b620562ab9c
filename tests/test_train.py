"""train.py: configs, every variant learning, exact resume, signals, NaN handling, DDP on CPU."""

import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

import trainer
from configurator import ConfigError, read_config_file
from model import GPT, PRESETS
from tests.helpers import ROOT, args, assert_config_error, metrics, run, torchrun, train_losses

# ----------------------------------------------------------------------------- configuration

def test_config_file_is_parsed_not_executed(tmp_path):
    f = tmp_path / "c.py"
    f.write_text('"""doc"""\nbatch_size = 4 * 8\nmax_iters = 100\nlr_decay_iters = max_iters\nout_dir = "x"\n')
    assert read_config_file(f) == {"batch_size": 32, "max_iters": 100, "lr_decay_iters": 100, "out_dir": "x"}
    f.write_text("import os\n")
    with pytest.raises(ConfigError, match="only `key = value`"):
        read_config_file(f)
    f.write_text("batch_size = open('x').read()\n")
    with pytest.raises(ConfigError, match=r"c.py:1: only literals"):
        read_config_file(f)


def test_overrides_win_and_types_are_checked(tmp_path):
    cfg, mcfg, raw = trainer.load_config([str(ROOT / "config/tinystories_nesterov_cpu.py"), "--batch_size=3",
                                        "--learning_rate=1", "--compile=True", "--dataset=owt"])
    assert (cfg.batch_size, cfg.learning_rate, cfg.compile, cfg.dataset) == (3, 1.0, True, "owt")
    assert isinstance(cfg.learning_rate, float)  # an int where a float is expected is fine
    assert (mcfg.update, mcfg.split, mcfg.lnv, mcfg.v0) == ("nesterov", "lie_trotter", True, "embed")
    assert trainer.load_config(["--variant=yuriiformer", "--lnv=False"])[1].lnv is False  # explicit beats preset


@pytest.mark.parametrize("argv, message", [
    (["--batch_sise=3"], "unknown config key(s): batch_sise"),
    (["--batch_size=3.5"], "batch_size=3.5: expected int"),
    (["--compile=1"], "compile=1: expected bool"),
    (["--n_layer=two"], "n_layer='two': expected int"),
    (["--batch_size=0"], "batch_size=0 must be >= 1"),
    (["--optimizer=lbfgs"], "optimizer='lbfgs': choose one of adamw, sgd, muon, manifold_muon"),
    (["--variant=nesterov"], "variant='nesterov': choose one of baseline"),
    (["--update=gd", "--lnv=True"], "lnv=True needs a velocity"),
    (["--split=euler", "--imex_iters=2"], "imex_iters=2 only applies to split='imex'"),
    (["--min_lr=1", "--learning_rate=0.1"], "min_lr=1.0 must not exceed learning_rate=0.1"),
    (["--batch_size"], "must be written --key=value"),
    (["config.txt"], "neither a config file"),
])
def test_config_errors_name_the_key(argv, message):
    assert_config_error(argv, message)


def test_main_prints_one_line_error(capsys):
    with pytest.raises(SystemExit) as e:
        trainer.main(["--batch_size=x"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == "error: batch_size='x': expected int, got str"


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.py")), ids=lambda p: p.name)
def test_every_config_loads_and_builds_on_meta(path):
    cfg, mcfg, _ = trainer.load_config([str(path)])
    with torch.device("meta"):
        model = GPT(mcfg)
    assert model.num_params() > 0 and cfg.max_iters > 0


def test_lr_schedule():
    cfg = trainer.TrainConfig(learning_rate=1.0, min_lr=0.1, warmup_iters=10, max_iters=110)
    f = [trainer.lr_factor(i, cfg) for i in range(120)]
    assert f[0] == pytest.approx(1 / 11) and f[9] == pytest.approx(10 / 11) and f[10] == pytest.approx(1.0)
    assert f[60] == pytest.approx(0.55) and f[110] == pytest.approx(0.1) and f[119] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))


# ----------------------------------------------------------------------------- training

@pytest.mark.parametrize("variant", list(PRESETS))
def test_every_variant_learns(toy, tmp_path, variant):
    s = run(args(toy, tmp_path, variant=variant, max_iters=40, eval_interval=40))
    losses = [loss for _, loss in train_losses(tmp_path)]
    slack = 0.15 if PRESETS[variant]["arch"] != "gpt" else 0.0  # nGPT's unit-norm logits start slower
    assert np.mean(losses[-5:]) < (0.7 + slack) * np.mean(losses[:3])
    assert s["final_val_loss"] < (0.75 + slack) * np.log(64)


def test_shortlist_is_the_train_splits_most_frequent_tokens(toy, tmp_path):
    """shortlist=K: the K-1 most frequent train tokens get their own rows (the rest share one), set once at the start
    and kept by a resume; the model still learns and its val loss is a loss over every token."""
    run(args(toy, tmp_path, variant="yuriiformer", shortlist=32, max_iters=30, eval_interval=10, lr_decay_iters=40))
    counts = np.bincount(np.memmap(toy / "train.bin", dtype=np.uint16, mode="r"), minlength=64)
    top = np.argsort(-counts, kind="stable")[:31]
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    cls = ckpt["model"]["token_class"].numpy()
    assert (cls[top] == np.arange(31)).all() and (np.delete(cls, top) == 31).all()
    run(["--init_from=resume", f"--out_dir={tmp_path}", "--max_iters=40"])
    assert np.array_equal(torch.load(tmp_path / "ckpt.pt", weights_only=True)["model"]["token_class"].numpy(), cls)
    evals = [r["val_loss"] for r in metrics(tmp_path) if r["kind"] == "eval"]
    assert evals[-1] < 0.85 * evals[0]  # half the toy tokens sit in the tail, where q is their unigram rate


def test_run_directory_describes_itself(toy, tmp_path):
    run(args(toy, tmp_path, variant="yuriiformer", max_iters=10, eval_interval=5))
    recs = metrics(tmp_path)
    head = recs[0]
    assert head["kind"] == "header" and head["git_commit"] and "torch" in head["versions"] and head["device"]
    assert head["model_args"]["update"] == "nesterov" and head["flops_per_token"] > 0
    evals = [r for r in recs if r["kind"] == "eval"]
    assert [r["iter"] for r in evals] == [0, 5, 10] and "0.mu_a" in evals[-1]["coef"]
    assert recs[-1]["kind"] == "final" and recs[-1]["best_val_loss"] == min(r["val_loss"] for r in evals)
    train_recs = [r for r in recs if r["kind"] == "train"]
    assert train_recs[-1]["flops"] == 10 * 8 * 32 * head["flops_per_token"]
    assert json.loads((tmp_path / "config.json").read_text())["update"] == "nesterov"
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod") for k in ckpt["model"]) and ckpt["config"]["max_iters"] == 10
    assert (tmp_path / "best.pt").exists()


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_is_exact(toy, tmp_path, optimizer):
    """N steps + resume + N steps gives the losses and weights of 2N uninterrupted steps."""
    common = dict(variant="yuriiformer", optimizer=optimizer, dropout=0.1, eval_interval=4, lr_decay_iters=16,
                  data_order="random" if optimizer == "muon" else "epoch")
    run(args(toy, tmp_path / "a", max_iters=16, **common))
    run(args(toy, tmp_path / "b", max_iters=8, **common))
    run(["--init_from=resume", f"--out_dir={tmp_path / 'b'}", "--max_iters=16"])
    assert train_losses(tmp_path / "a") == train_losses(tmp_path / "b")
    a, b = (torch.load(tmp_path / d / "ckpt.pt", weights_only=True) for d in "ab")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [r["iter"] for r in metrics(tmp_path / "b") if r["kind"] == "eval"] == [0, 4, 8, 12, 16]


RECORDED = {  # (run, train losses of iterations 1..8 and the final val loss, as the code gave them before a refactor)
    "plain": (dict(variant="yuriiformer", dropout=0.1),
              [4.152819, 4.133021, 4.110669, 4.10166, 4.009598, 3.910767, 3.774689, 3.645876, 3.57612]),
    "multilevel": (dict(variant="yuriiformer", optimizer="muon", n_layer=4, multilevel_levels=2, multilevel_cycle=[2, 2],
                        multilevel_momentum="per_level", multilevel_correction=1.0, multilevel_correction_batches=2),
                   [4.172554, 4.143177, 4.133223, 4.045271, 3.986773, 3.947029, 3.729492, 3.568402, 3.549936]),
}


@pytest.mark.parametrize("name", list(RECORDED))
def test_losses_are_the_recorded_ones(toy, tmp_path, one_thread, name):
    """A fixed fp32 run (dropout; multilevel with per-level states and the coherence term) gives the losses recorded
    before the Trainer's refactor: a change of behaviour (batch order, RNG use, step order) moves them by far more."""
    kw, recorded = RECORDED[name]
    s = run(args(toy, tmp_path, max_iters=8, eval_interval=8, dtype="float32", **kw))
    assert [v for _, v in train_losses(tmp_path)] + [s["final_val_loss"]] == pytest.approx(recorded, rel=1e-4)


def test_resume_refuses_another_model(toy, tmp_path):
    run(args(toy, tmp_path, max_iters=2, eval_interval=2))
    with pytest.raises(ValueError, match=r"different model config \(lnv: checkpoint False vs config True, "
                                         r"n_layer: checkpoint 2 vs config 3, update: checkpoint 'gd' vs"):
        run(["--init_from=resume", f"--out_dir={tmp_path}", "--n_layer=3", "--variant=yuriiformer"])


def test_nan_stops_and_keeps_last_checkpoint(toy, tmp_path, monkeypatch):
    run(args(toy, tmp_path, max_iters=4, eval_interval=4))
    before = (tmp_path / "ckpt.pt").read_bytes()
    forward = GPT.forward

    def poisoned(self, idx, targets=None, **kw):
        logits, loss = forward(self, idx, targets, **kw)
        return logits, None if loss is None else loss * float("nan")

    monkeypatch.setattr(GPT, "forward", poisoned)
    with pytest.raises(FloatingPointError, match="loss is nan at iter 5: stopping without saving"):
        run(["--init_from=resume", f"--out_dir={tmp_path}", "--max_iters=8"])
    assert (tmp_path / "ckpt.pt").read_bytes() == before


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_that_resumes(toy, tmp_path):
    cmd = [sys.executable, str(ROOT / "train.py"), *args(toy, tmp_path, max_iters=100000, eval_interval=100000)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    for line in proc.stdout:
        if line.startswith("iter 3/"):
            proc.send_signal(signal.SIGTERM)
            break
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out
    assert "stopped by signal" in out
    it = torch.load(tmp_path / "ckpt.pt", weights_only=True)["iter_num"]
    assert it >= 3
    s = run(["--init_from=resume", f"--out_dir={tmp_path}", f"--max_iters={it + 2}"])
    assert s["iters"] == it + 2


@pytest.mark.slow
@pytest.mark.parametrize("dtype, compile, rtol", [("float32", False, 1e-4), ("bfloat16", True, 1e-3)])
def test_ddp_two_processes_match_single_process(toy, tmp_path, dtype, compile, rtol):
    """torchrun --nproc_per_node=2 (gloo) equals one process with twice the accumulation; also compiled with bf16
    autocast (fp32 weights), as on a GPU: each micro-batch's forward is the same, only the gradients' summation order
    differs (measured: 1e-5 relative over 6 steps; tolerance 1e-3)."""
    common = args(toy, tmp_path, max_iters=6, eval_interval=3, gradient_accumulation_steps=2, dtype=dtype,
                  compile=compile, variant="yuriiformer")
    torchrun([*common, f"--out_dir={tmp_path / 'ddp'}"])
    run([*common, f"--out_dir={tmp_path / 'one'}"])
    ddp, one = train_losses(tmp_path / "ddp"), train_losses(tmp_path / "one")
    assert [i for i, _ in ddp] == [i for i, _ in one]
    np.testing.assert_allclose([v for _, v in ddp], [v for _, v in one], rtol=rtol)


@pytest.mark.slow
def test_ddp_sigterm_on_one_rank_stops_every_rank_at_the_same_log_step(toy, tmp_path):
    """Two gloo ranks, SIGTERM to rank 1 only: the ranks agree at the next log step (no host sync in between),
    both save their state there and exit 0, and the run resumes from it under torchrun."""
    argv = args(toy, tmp_path, max_iters=100000, eval_interval=100000, log_interval=3, gradient_accumulation_steps=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    ranks = [subprocess.Popen([sys.executable, str(ROOT / "train.py"), *argv], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in (0, 1)]
    try:
        for line in ranks[0].stdout:
            if line.startswith("iter 3/"):  # both ranks are past the agreement at iteration 3
                ranks[1].send_signal(signal.SIGTERM)
                break
        out = [p.communicate(timeout=120)[0] for p in ranks]
    finally:
        for p in ranks:
            p.kill()
    assert [p.returncode for p in ranks] == [0, 0], out
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    it = ckpt["iter_num"]
    assert f"stopped by signal at iter {it};" in out[0] and it % 3 == 0 and it >= 6
    loader = [r["loader"] for r in ckpt["rank_states"]]
    assert len(loader) == 2 and loader[0] == loader[1]  # each rank's data position: the same step
    assert metrics(tmp_path)[-1]["interrupted"] is True
    torchrun(["--init_from=resume", f"--out_dir={tmp_path}", f"--max_iters={it + 2}"])
    assert metrics(tmp_path)[-1]["iters"] == it + 2 and train_losses(tmp_path)[-1][0] == it + 2


# ----------------------------------------------------------------------------- the run directory's lock

HOLD = "import sys, time, utils; lock = utils.DirLock(sys.argv[1]); print('held', flush=True); time.sleep(120)"


def hold_lock(out):
    """A live process holding out's lock (as a running train.py would)."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_live_run_holds_its_out_dir(toy, tmp_path, capsys):
    """A second train.py (or a resume) on an out_dir a live run holds gets a one-line error naming that process."""
    run(args(toy, tmp_path, max_iters=2, eval_interval=2))
    holder = hold_lock(tmp_path)
    try:
        for extra in ([], ["--init_from=resume", "--max_iters=4"]):
            with pytest.raises(SystemExit) as e:
                trainer.main(args(toy, tmp_path, max_iters=2, eval_interval=2) + extra)
            err = capsys.readouterr().err.strip()
            assert e.value.code == 2 and err.startswith("error: out_dir") and f"pid {holder.pid}" in err
            assert len(err.splitlines()) == 1
    finally:
        holder.kill()
        holder.wait()
    assert [r["kind"] for r in metrics(tmp_path)][-1] == "final"  # the refused runs wrote nothing


def test_a_killed_runs_lock_is_taken_over(toy, tmp_path):
    holder = hold_lock(tmp_path)
    holder.kill()  # SIGKILL: the .lock file stays, the kernel drops the lock
    holder.wait()
    assert (tmp_path / ".lock").exists()
    run(args(toy, tmp_path, max_iters=2, eval_interval=2))
    assert metrics(tmp_path)[-1]["kind"] == "final"
    run(args(toy, tmp_path, max_iters=2, eval_interval=2))  # released at the end of a run: the next one starts


def test_console_is_a_few_human_lines(toy, tmp_path, capsys):
    """The start: variant, parameters, tokens per step, device and dtype, data, the run folder (the config stays in
    config.json); one line per log interval with loss, ms/step, tok/s and an ETA."""
    run(args(toy, tmp_path, max_iters=4, eval_interval=4, log_interval=2))
    out = capsys.readouterr().out.splitlines()
    head = out[:4]
    assert all(len(line) < 300 for line in out) and not any(line.startswith("{") for line in out)
    assert "parameters" in head[0] and "tokens/step" in head[1] and "x1 |" in head[2] and str(tmp_path) in head[3]
    logs = [line for line in out if line.startswith("iter ")]
    assert len(logs) == 2 and all(k in logs[0] for k in ("iter 2/4: loss", "ms/iter", "tok/s", "ETA"))


def test_adamw_fused_on_cpu_matches_the_default_step():
    """adamw_fused=True builds torch's fused AdamW on CPU; its steps agree with the default (foreach) ones."""
    import optim
    from model import GPTConfig
    results = []
    for fused in (False, True):
        torch.manual_seed(0)
        model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=64))
        opt = optim.build_optimizers(model, trainer.TrainConfig(optimizer="adamw", adamw_fused=fused), "cpu")[0]
        assert opt.defaults.get("fused") is (True if fused else None)
        for _ in range(3):
            x = torch.randint(0, 64, (2, 8))
            model(x, x)[1].backward()
            opt.step()
            opt.zero_grad()
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(*results, atol=1e-6)
