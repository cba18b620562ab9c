"""model.py bit for bit against tests/golden/presets.json: a refactor of model.py must not change a single bit.

For every preset and the forms presets leave out (shortlist, embed_extra, v0="zero", rope, SwiGLU, nuGPT, dropout), a
tiny fp32 model on one CPU thread, fixed seed and batch: the initial state dict, then (parameters moved off their
init by seeded noise) the loss and every parameter's gradient at level 0, the loss and gradients of the multilevel
coarse level 1 (both offsets), the last-position logits, GPT.logits and the KV-cached decoding logits. Values are
stored exactly (the loss's repr, sha256 of tensor bytes) with float64 sums to make a diff readable.

The values depend on torch's CPU kernels, so they are stored per torch version and per CPU (model name and the ISA
torch dispatches to: a Xeon and an EPYC, both AVX512, differ in the last bits of some logits) and checked only where
both match; another machine skips. The Intel Xeon entry was recorded from model.py before the refactor of issue 37
(commit abceb93), the AMD EPYC entry from that same model.py on an EPYC. To add this machine, run the command at a
commit whose model.py you trust (abceb93, or the current one after a check elsewhere) and review the diff; after an
intentional change of the model's numbers (or a torch upgrade), drop the file and record every machine again:

    PYTHONPATH=. python tests/test_bitexact.py
"""

import hashlib
import json
from pathlib import Path

import pytest
import torch

import utils
from model import GPT, PRESETS, GPTConfig

GOLDEN = Path(__file__).resolve().parent / "golden" / "presets.json"
TINY = dict(n_layer=2, n_head=2, n_embd=32, vocab_size=64, block_size=16)
CASES = {
    **PRESETS,
    "baseline-shortlist": {**PRESETS["baseline"], "shortlist": 16},
    "baseline-embed_extra": {**PRESETS["baseline"], "embed_extra": True},
    "yuriiformer-v0zero": {**PRESETS["yuriiformer"], "v0": "zero"},
    "nesterov_euler-nolnv": {**PRESETS["nesterov_euler"], "lnv": False},
    "polyak-imex2": {**PRESETS["polyak"], "split": "imex", "imex_iters": 2},
    "baseline-rope": {**PRESETS["baseline"], "position": "rope"},
    "yuriiformer-rope-swiglu": {**PRESETS["yuriiformer"], "position": "rope", "activation": "swiglu"},
    "ngpt-rope-swiglu": {**PRESETS["ngpt"], "position": "rope", "activation": "swiglu"},
    "nugpt-rope": {**PRESETS["ngpt"], "arch": "nugpt", "ref_width": 16, "ref_depth": 1, "position": "rope"},
    "yuriiformer-dropout": {**PRESETS["yuriiformer"], "dropout": 0.1},
}


def digest(tensors):
    """sha256 (first 16 hex digits) of the tensors' bytes, and their float64 sum."""
    h, total = hashlib.sha256(), 0.0
    for t in tensors:
        t = t.detach().contiguous()
        h.update(t.numpy().tobytes())
        total += t.double().sum().item() if t.is_floating_point() else 0.0
    return f"{h.hexdigest()[:16]} {total!r}"


def loss_and_grads(model, idx, **kw):
    torch.manual_seed(1)  # dropout
    model.zero_grad(set_to_none=True)
    _, loss = model(idx, targets=idx, **kw)
    loss.backward()
    return repr(loss.item()), {n: digest([p.grad]) for n, p in model.named_parameters() if p.grad is not None}


@torch.no_grad()
def inference(model, idx):
    """Last-position logits, GPT.logits, and the cached logits: a 5-token prompt, then one token at a time."""
    model.eval()
    last, _ = model(idx)
    cache = model.new_cache(idx.size(0), dtype=torch.float32)
    cached = [model(idx[:, :5], cache=cache)[0]] + [model(idx[:, t:t + 1], cache=cache)[0] for t in range(5, 9)]
    out = dict(last=digest([last]), logits=digest([model.logits(idx)]), cached=digest(cached))
    model.train()
    return out


def record(kw):
    """Every stored value of one case (the test's one thread and fixed seeds)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY, **kw))
    if model.config.shortlist:
        model.set_shortlist(torch.arange(64, 0, -1) ** 2)
    out = dict(init=digest(model.state_dict().values()))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # off the init: LayerNorm gains, coefficients, zero tables all distinct
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    idx = torch.randint(0, 64, (2, 16), generator=g)
    out["loss"], out["grads"] = loss_and_grads(model, idx)
    for offset in (0, 1):
        loss, grads = loss_and_grads(model, idx, level=1, offset=offset)
        out[f"level1_offset{offset}"] = dict(loss=loss, grads=digest(model.get_parameter(n).grad for n in grads))
    out.update(inference(model, idx))
    return out


def machine():
    """The CPU the values are stored under: its model name and the ISA torch's kernels dispatch to."""
    return f"{utils.device_name('cpu').split(' (')[0]}, {torch.backends.cpu.get_cpu_capability()}"


def compute():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {name: record(kw) for name, kw in CASES.items()}
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def golden():
    data = json.loads(GOLDEN.read_text())
    if data["torch"] != torch.__version__:
        pytest.skip(f"golden values recorded with torch {data['torch']} (this is {torch.__version__})")
    if machine() not in data["machines"]:
        pytest.skip(f"no golden values for this CPU ({machine()}; recorded: {', '.join(data['machines'])})")
    return data["machines"][machine()]


@pytest.fixture(scope="module")
def current():
    return compute()


@pytest.mark.parametrize("name", CASES)
def test_bit_exact(name, golden, current):
    assert current[name] == golden[name]


if __name__ == "__main__":
    GOLDEN.parent.mkdir(exist_ok=True)
    data = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else dict(torch=torch.__version__, machines={})
    if data["torch"] != torch.__version__:
        raise SystemExit(f"error: {GOLDEN} holds torch {data['torch']} values: remove it to record torch "
                         f"{torch.__version__} on every machine again")
    data["machines"][machine()] = compute()
    GOLDEN.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {GOLDEN} for {machine()}")
