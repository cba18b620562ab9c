"""bench/gpu_check.py in its CPU mode, and torch.compile seeing GPT.forward as one graph for every variant."""

import json
import subprocess
import sys

import pytest
import torch

from model import GPT, PRESETS, GPTConfig
from tests.helpers import ROOT


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    p = subprocess.run([sys.executable, "bench/gpu_check.py", "--device=cpu", "--dry_run", f"--out={out}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["tests"]["collected"] >= 10 and res["tests"]["failed"] == 0
    rows = {r["variant"]: r for r in res["throughput"]["rows"]}
    assert set(rows) == {"baseline", "yuriiformer", "nesterov_euler", "imex"} and rows["baseline"]["time_ratio"] == 1.0
    assert res["correctness"]["fp32_ok"] and res["correctness"]["fp32_max_diff"] == 0.0  # CPU against itself
    assert "| variant | step ms |" in p.stdout


@pytest.mark.slow
def test_gpu_check_runs_the_profile_as_a_part(tmp_path):
    """--parts=profile: only bench/gpu_profile.py (its dry run, cut by a 1 s budget to the first item), its JSON
    written next to --out and included."""
    out = tmp_path / "gpu_check.json"
    p = subprocess.run([sys.executable, "bench/gpu_check.py", "--device=cpu", "--dry_run", "--parts=profile",
                        "--profile_budget_s=1", f"--out={out}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["parts"] == ["profile"] and not {"tests", "throughput", "correctness"} & set(res)
    prof = res["profile"]
    assert [r["name"] for r in prof["items"]] == ["baseline/b2"] and prof["skipped"] and not prof["complete"]
    assert json.loads((tmp_path / "gpu_profile.json").read_text())["items"] == prof["items"]
    assert "4. profile" in p.stdout and "| baseline/b2 |" in p.stdout


def test_gpu_check_refuses_unknown_parts():
    p = subprocess.run([sys.executable, "bench/gpu_check.py", "--device=cpu", "--dry_run", "--parts=tests,speed"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and p.stderr.strip().startswith("error: --parts='tests,speed'")


def test_gpu_check_refuses_a_missing_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    p = subprocess.run([sys.executable, "bench/gpu_check.py"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and p.stderr.strip().startswith("error: no CUDA device") and p.stderr.count("\n") == 1


@pytest.mark.parametrize("name", list(PRESETS) + ["ngpt-rope-swiglu", "baseline-rope"])
def test_forward_compiles_without_graph_breaks(name):
    """torch._dynamo.explain: one graph, no break, for every preset (and the RoPE / SwiGLU options)."""
    kw = dict(PRESETS[name.split("-")[0]])
    if "rope" in name:
        kw["position"] = "rope"
    if "swiglu" in name:
        kw["activation"] = "swiglu"
    torch._dynamo.reset()
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64, **kw))
    x = torch.randint(0, 64, (2, 16))
    explained = torch._dynamo.explain(model)(x, x)
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
