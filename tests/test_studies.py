"""The studies (studies/<name>.py, python -m studies): every report rebuilds from a few records, the tuned variants'
reading rule, the import picture (studies and bench stand above the product)."""

import ast
import json
import shutil

import pytest

from studies import __main__ as entry
from studies import multilevel, runner, variants
from tests.helpers import ROOT

RESULTS = ROOT / "studies" / "results"
SAMPLE = {  # a few committed records of each study (run folders, or keys of runs.jsonl)
    "variants": ["runs/baseline/seed0", "runs/baseline/seed1", "runs/yuriiformer/seed0", "runs/yuriiformer/seed1",
                 "vocab/top4096/baseline/seed0", "vocab/top4096/yuriiformer/seed0",
                 "tuned/baseline/adamw0.002-muon0.02/seed0"],
    "geometry": ["runs/none-none/seed0", "runs/none-none/seed1", "runs/stiefel-dgram/seed0", "runs/stiefel-dgram/seed1",
                 "clean/stiefel-dgram/seed0", "long/stiefel-dgram/seed0", "sweep/none-none/lr0.02"],
    "multilevel": ["runs/single/seed0", "runs/single/seed1", "runs/plain/seed0", "runs/plain/seed1", "sweep/lr0.1"],
    "lr_transfer": ["gpt/width/"],
    "lab": ["core/normal/", "grid/normal/adam/lr0.01/", "noise/normal/L3"],
}
OUTPUTS = {  # what each report writes
    "variants": ["results.md", "results.json", "val_loss_steps.png", "coef_yuriiformer.png", "tuned.md"],
    "geometry": ["compare/results.md", "compare/results.json", "spectral/summary.json", "spectral/spectral.png",
                 "long_spectral/val_loss.png"],
    "multilevel": ["results.md", "summary.json", "loss_vs_flops.png"],
    "lr_transfer": ["lr_transfer.md", "summary.json", "lr_transfer_width.png"],
    "lab": ["results.md", "results.json", "adam_vs_sgd.png", "noise_hist.png"],
}


def copy_records(name, dst):
    """The SAMPLE records of a study, copied from studies/results/<name>/ into dst."""
    if name in ("lr_transfer", "lab"):
        lines = [r for r in runner.read_lines(RESULTS / name / "runs.jsonl") if r["key"].startswith(tuple(SAMPLE[name]))]
        dst.mkdir(parents=True)
        (dst / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        return
    for key in SAMPLE[name]:
        shutil.copytree(RESULTS / name / key, dst / key)


@pytest.mark.slow
def test_report_all_rebuilds_every_study_from_a_few_records(monkeypatch, tmp_path):
    """`python -m studies report all` on a few copied records per study: each report runs and writes its files."""
    for name in runner.STUDIES:
        copy_records(name, tmp_path / name)
    monkeypatch.setattr(runner, "RESULTS", tmp_path)
    assert entry.main(["report", "all"]) == 0
    for name, files in OUTPUTS.items():
        for f in files:
            assert (tmp_path / name / f).stat().st_size > 0, f"{name}: {f} not written"


def test_report_json_rounds_floats_so_a_rebuild_elsewhere_writes_the_same_text():
    """Two values ~1e-15 apart (another BLAS's summation order) give one text; ints, bools, NaN and None stay."""
    import numpy as np

    a = {"loss": 4.749585974967786, "xs": [np.float64(1 / 3), 2, True], "nan": float("nan"), "none": None}
    b = {"loss": 4.749585974967793, "xs": [1 / 3 + 1e-16, 2, True], "nan": float("nan"), "none": None}
    assert runner.report_json(a) == runner.report_json(b)
    assert json.loads(runner.report_json(a).replace("NaN", "null")) == {
        "loss": 4.749585975, "xs": [0.3333333333, 2, True], "nan": None, "none": None}


def fake_run(folder, loss, seed):
    """A landed run record with only what the reports read: header (config), final record."""
    folder.mkdir(parents=True)
    recs = [{"kind": "header", "iter": 0, "config": {"seed": seed}},
            {"kind": "final", "iter": 1500, "final_val_loss": loss, "best_val_loss": loss, "wall_time": 1.0}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


@pytest.mark.parametrize("offset, verdict", [(-0.05, "holds"), (0.05, "reversed"), (0.0, "unresolved")])
def test_tuned_variants_report_reads_the_predeclared_rule(tmp_path, offset, verdict):
    """Each core arm: an AdamW sweep with its optimum at 2e-3, a Muon sweep there with its optimum at 0.02, 3 seeds
    at the pair; yuriiformer sits `offset` (+- a little) from baseline_embed on every seed (0: signs split); the other
    arms wait."""
    adamw, muon = {1e-3: 3.1, 2e-3: 3.0, 4e-3: 3.05, 8e-3: 3.2}, {0.01: 3.1, 0.04: 3.05}
    for arm, shift, noise in (("baseline_embed", 0.0, (0.01, -0.01, 0.004)), ("yuriiformer", offset, (0.012, -0.013, 0.005))):
        for a, loss in adamw.items():  # seed 0 at 2e-3 is also the best pair's seed 0
            fake_run(tmp_path / variants.vt_key(arm, a, 0.02, 0), loss + shift + noise[0] * (a == 2e-3), 0)
        for m, loss in muon.items():
            fake_run(tmp_path / variants.vt_key(arm, 2e-3, m, 0), loss + shift, 0)
        for seed in (1, 2):
            fake_run(tmp_path / variants.vt_key(arm, 2e-3, 0.02, seed), 3.0 + shift + noise[seed], seed)
        for seed in (0, 1, 2):  # the untuned runs: 0.1 higher, yuriiformer 0.06 below baseline_embed on each seed
            fake_run(tmp_path / f"runs/{arm}/seed{seed}", 3.1 + seed / 100 - 0.06 * (arm == "yuriiformer"), seed)
    variants.tuned_report(tmp_path)
    text = (tmp_path / "tuned.md").read_text()
    assert "best pair AdamW 0.002, Muon 0.02: final val loss" in text
    row = next(line for line in text.splitlines() if line.startswith("| yuriiformer - baseline_embed"))
    assert row.endswith(f"| {verdict} |")
    assert "| yuriiformer_v0zero - baseline | waiting for the runs of yuriiformer_v0zero and baseline |" in text
    assert "- AdamW sweep (Muon 0.02, seed 0): waiting for 4 runs" in text  # polyak, nesterov_euler, ...
    assert "| baseline_embed | 3.1100 ± 0.0100 | 3.0013 ± 0.0103 | -0.1087 |" in text  # tuned against untuned
    assert "Other pairs" not in text  # a described pair shows once both its arms are tuned


def test_variants_jobs_keep_their_keys_and_arguments(tmp_path):
    """The untuned runs are all recorded (nothing reruns); a tuned run's command is the untuned one plus its rates."""
    study = runner.Study("variants")
    untuned = [j for j in variants.jobs(study) if not j.key.startswith(("tuned/", "rerun/"))]
    assert len(untuned) == 32 and all(study.done(j) for j in untuned)
    tuned = variants.tuned_jobs(runner.Study("variants", results=tmp_path))
    first = next(j for j in tuned if j.key == "tuned/baseline/adamw0.001-muon0.02/seed0")
    base = next(j for j in untuned if j.key == "runs/baseline/seed0")
    assert first.argv == base.argv[:-1] + ["--learning_rate=0.001", "--min_lr=0.0001", "--muon_lr=0.02", "--seed=0"]


def test_tuned_variants_checks_queue_and_report(tmp_path):
    """Stages 4-5: once an arm's best pair is known (here AdamW 2e-3, Muon 0.01), AdamW at half and twice its rate
    (seed 0) and the RERUN seeds are queued; the report names a lower check point and reads each claim with one
    machine per seed."""
    study = runner.Study("variants", results=tmp_path)
    xeon, epyc = "Intel(R) Xeon(R) Processor (2 cores, 1 threads)", "AMD EPYC (2 cores, 1 threads)"
    shifts = {"baseline": 0.0, "baseline_embed": -0.02, "yuriiformer": -0.06, "yuriiformer_v0zero": -0.03}

    def land(key, loss, seed, device):
        fake_run(tmp_path / key, loss, seed)
        path = tmp_path / key / "metrics.jsonl"
        recs = [json.loads(line) for line in path.read_text().splitlines()]
        recs[0]["device"] = device
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    for arm, shift in shifts.items():
        for a, loss in {1e-3: 3.1, 2e-3: 3.0, 4e-3: 3.05, 8e-3: 3.2}.items():
            land(variants.vt_key(arm, a, 0.02, 0), loss + shift, 0, xeon)
        for m, loss in {0.005: 3.1, 0.01: 2.99, 0.04: 3.05}.items():
            land(variants.vt_key(arm, 2e-3, m, 0), loss + shift, 0, xeon)
    keys = [j.key for j in variants.tuned_jobs(study) if not study.done(j)]
    assert {f"tuned/{arm}/adamw{a}-muon0.01/seed0" for arm in shifts for a in ("0.001", "0.004")} <= set(keys)
    assert {"rerun/baseline/adamw0.002-muon0.01/seed1", "rerun/baseline/adamw0.002-muon0.01/seed2",
            "rerun/baseline_embed/adamw0.002-muon0.01/seed2"} <= set(keys)
    assert not any(k.startswith("rerun/yuriiformer") for k in keys)
    assert {f"tuned/{arm}/adamw0.002-muon0.01/seed{s}" for arm in shifts for s in variants.EXTRA_SEEDS} <= set(keys)
    assert keys.index("tuned/baseline/adamw0.002-muon0.01/seed3") < keys.index("tuned/baseline/adamw0.001-muon0.01/seed0")
    for arm, shift in shifts.items():
        for a, loss in {1e-3: 3.0, 4e-3: 2.98 if arm == "yuriiformer" else 3.0}.items():
            land(variants.vt_key(arm, a, 0.01, 0), loss + shift, 0, xeon)
        for seed in (1, 2):
            device = epyc if arm.startswith("yuriiformer") and (seed == 2 or arm.endswith("zero")) else xeon
            land(variants.vt_key(arm, 2e-3, 0.01, seed), 3.0 + shift + seed / 100, seed, device)
    for arm, seed in variants.RERUN:
        land(variants.rerun_key(arm, 2e-3, 0.01, seed), 3.001 + seed / 100 + shifts[arm], seed, epyc)
    variants.tuned_report(tmp_path)
    text = (tmp_path / "tuned.md").read_text()
    assert "- baseline, AdamW at Muon 0.01: 0.001 3.0000, 0.002 2.9900, 0.004 3.0000: the best pair is the AdamW " \
           "optimum at its own Muon rate" in text
    assert "- yuriiformer, AdamW at Muon 0.01: 0.001 2.9400, 0.002 2.9300, 0.004 2.9200: **AdamW 0.004 is lower than " \
           "the best pair by 0.0100**" in text
    row = next(line for line in text.splitlines() if line.startswith("| yuriiformer_v0zero - baseline") and "machines" in line)
    assert "(-0.0300, -0.0310, -0.0310)" in row and row.endswith("; machines: Intel(R) Xeon(R) Processor, AMD EPYC, AMD EPYC |")
    assert "baseline seed 1 3.0110 on the AMD EPYC vs 3.0100 on the Intel(R) Xeon(R) Processor (+0.0010)" in text
    assert "| yuriiformer - baseline_embed | waiting for the runs of yuriiformer and baseline_embed |" in text  # 0-4
    for arm, shift in shifts.items():
        for seed in variants.EXTRA_SEEDS:
            land(variants.vt_key(arm, 2e-3, 0.01, seed), 3.0 + shift + seed / 100, seed, epyc)
    variants.tuned_report(tmp_path)
    text = (tmp_path / "tuned.md").read_text()
    row = [line for line in text.splitlines() if line.startswith("| yuriiformer - baseline_embed")][1]
    assert row.startswith("| yuriiformer - baseline_embed | -0.0400 (-0.0400, -0.0400, -0.0400, -0.0400, -0.0400) |")


def test_multilevel_bracket_grows_past_an_edge_and_reads_the_rule(monkeypatch, tmp_path):
    """The bracket around the chosen rate 0.1: 0.05, 0.1, 0.2 per arm; an edge optimum (plain at 0.2) adds 0.4; the
    report says interior or edge and, once both are interior, plain - single at each arm's own best."""
    study = runner.Study("multilevel", results=tmp_path)
    monkeypatch.setattr(multilevel, "multilevel_best", lambda losses: (multilevel.ML_LRS, 0.1))
    keys = lambda: [j.key for j in multilevel.jobs(study) if j.key.startswith("bracket/")]  # noqa: E731
    assert keys() == [f"bracket/{a}/lr{lr}/seed0" for a in ("single", "plain") for lr in ("0.05", "0.1", "0.2")]
    for arm, losses in (("single", {0.05: 3.20, 0.1: 3.17, 0.2: 3.19}), ("plain", {0.05: 3.4, 0.1: 3.31, 0.2: 3.28})):
        for lr, loss in losses.items():
            fake_run(tmp_path / f"bracket/{arm}/lr{lr:g}/seed0", loss, 0)
    assert keys()[-1] == "bracket/plain/lr0.4/seed0"
    summary = {}
    text = "\n".join(multilevel.bracket_report(tmp_path, summary))
    assert "- single: 0.05: 3.2000, **0.1: 3.1700**, 0.2: 3.1900 (interior; " in text
    assert "(edge optimum at 0.2; " in text and "each at its own best" not in text
    fake_run(tmp_path / "bracket/plain/lr0.4/seed0", 3.30, 0)
    text = "\n".join(multilevel.bracket_report(tmp_path, summary))
    assert "**0.2: 3.2800**, 0.4: 3.3000 (interior; " in text
    assert "plain - single, each at its own best rate (seed 0, one seed: no p-value): +0.1100" in text
    assert summary["bracket"]["plain"]["best"] == 0.2


def imports(path):
    """The top-level package of every import in a Python file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


def test_product_modules_do_not_import_studies_or_bench():
    """studies/ and bench/ stand above the product: no top-level module, nothing in data/ or lab/ imports them."""
    files = [*ROOT.glob("*.py"), *(ROOT / "data").rglob("*.py"), *(ROOT / "lab").rglob("*.py")]
    assert len(files) > 10
    bad = {str(f.relative_to(ROOT)): m for f in files for m in imports(f) if m in ("studies", "bench")}
    assert not bad, f"product modules import studies/bench: {bad}"
