"""The CUDA paths (run by bench/gpu_check.py; skipped without a GPU): mixed precision steps, fused AdamW and Muon,
compile, NCCL DDP, resume, cached and compiled decoding, manifold Muon's bf16 ascent. The pinned non-blocking loader
and plain cached decoding have their GPU tests in test_loader.py and test_sample.py."""

import numpy as np
import pytest
import torch

import optim
import trainer
from manifold import ManifoldMuon
from model import GPT, PRESETS, GPTConfig
from generate import compiled_decoder, generate_all
from tests.helpers import args, metrics, run, torchrun, train_losses

pytestmark = pytest.mark.gpu
CUDA = dict(device="cuda", dtype="float32")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("variant", ["baseline", "yuriiformer", "imex"])
def test_mixed_precision_training_steps(toy, tmp_path, dtype, variant):
    """bf16 autocast, and fp16 with the GradScaler: finite, falling losses on the GPU."""
    s = run(args(toy, tmp_path, **{**CUDA, "dtype": dtype}, variant=variant, max_iters=30, eval_interval=30))
    losses = [loss for _, loss in train_losses(tmp_path)]
    assert np.isfinite(losses).all() and np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])
    assert np.isfinite(s["final_val_loss"])


def test_fused_adamw_and_torch_muon_on_cuda():
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=32, vocab_size=64)).cuda()
    adamw = optim.build_optimizers(model, trainer.TrainConfig(optimizer="adamw"), "cuda")[0]
    assert adamw.defaults.get("fused") is True
    muon = optim.build_optimizers(model, trainer.TrainConfig(optimizer="muon"), "cuda")
    assert type(muon[0]) is torch.optim.Muon  # bf16 is native on CUDA: torch's own Muon
    x = torch.randint(0, 64, (4, 32), device="cuda")
    model(x, x)[1].backward()
    for opt in (adamw, *muon):
        opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_compile_on_cuda_matches_eager(toy, tmp_path):
    common = dict(**CUDA, variant="yuriiformer", max_iters=6, eval_interval=6)
    run(args(toy, tmp_path / "eager", **common))
    run(args(toy, tmp_path / "compiled", **common, compile=True))
    a, b = train_losses(tmp_path / "eager"), train_losses(tmp_path / "compiled")
    np.testing.assert_allclose([v for _, v in a], [v for _, v in b], rtol=2e-3)


def test_resume_on_gpu_is_exact(toy, tmp_path):
    common = dict(**CUDA, variant="yuriiformer", optimizer="muon", dropout=0.1, eval_interval=4, lr_decay_iters=12)
    run(args(toy, tmp_path / "a", max_iters=12, **common))
    run(args(toy, tmp_path / "b", max_iters=6, **common))
    run(["--init_from=resume", f"--out_dir={tmp_path / 'b'}", "--max_iters=12", "--device=cuda"])
    assert train_losses(tmp_path / "a") == train_losses(tmp_path / "b")


@pytest.mark.parametrize("nproc", [1, 2])
def test_nccl_ddp(toy, tmp_path, nproc):
    if torch.cuda.device_count() < nproc:
        pytest.skip(f"needs {nproc} GPUs")
    common = args(toy, tmp_path, **CUDA, max_iters=6, eval_interval=3, gradient_accumulation_steps=2,
                  variant="yuriiformer", backend="nccl")
    torchrun([*common, f"--out_dir={tmp_path / 'ddp'}"], nproc=nproc)
    run([*common, f"--out_dir={tmp_path / 'one'}", "--backend=auto"])
    ddp, one = train_losses(tmp_path / "ddp"), train_losses(tmp_path / "one")
    np.testing.assert_allclose([v for _, v in ddp], [v for _, v in one], rtol=1e-3)
    assert metrics(tmp_path / "ddp")[0]["world_size"] == nproc


@pytest.mark.parametrize("variant", ["baseline", "yuriiformer", "nesterov_euler", "imex"])
def test_compiled_cached_decoding_matches_the_full_forward(variant):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=96, **PRESETS[variant])).cuda()
    model.eval()
    idx = torch.randint(0, 96, (2, 8), device="cuda")
    with torch.no_grad():
        eager = generate_all(model, idx, 20, top_k=1)
        compiled = generate_all(model, idx, 20, top_k=1, decode=compiled_decoder(model))
        full = generate_all(model, idx, 20, top_k=1, use_cache=False)
    assert torch.equal(eager, full) and torch.equal(compiled, full)


def test_manifold_muon_bf16_ascent_keeps_the_constraints():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(256, 64, device="cuda") * 0.02) for _ in range(3)]
    opt = ManifoldMuon(params, lr=0.02, geometry="stiefel", ns_dtype="bfloat16")
    opt.project_()
    for _ in range(5):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    for p in params:
        gram = p.T @ p
        assert (gram - torch.eye(64, device="cuda")).abs().max() < 1e-3
