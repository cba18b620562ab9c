"""studies/compare.py: trains variants on identical data, reads metrics.jsonl, writes the table, p-values and plots."""

import json

import matplotlib.image
import numpy as np
import pytest
from scipy.stats import ttest_ind

from data.prepare_common import write_dataset
from studies import compare

TINY = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=64, batch_size=4, eval_iters=2, max_iters=6,
            eval_interval=3, log_interval=3, warmup_iters=2, learning_rate=1e-2, min_lr=1e-3, device="cpu",
            optimizer="adamw", always_save_checkpoint=False)
PNG = b"\x89PNG\r\n\x1a\n"


def write_run(out, variant, seed, best, final, evals=((0, 4.0), (5, 3.0), (10, 2.5)), coef=True):
    """A synthetic finished run directory: header, eval records (with coefficients) and final record."""
    out.mkdir(parents=True)
    recs = [{"kind": "header", "iter": 0, "tokens": 0, "config": {"seed": seed, "variant": variant},
             "num_params": 1000, "flops_per_token": 6000, "git_commit": "abc", "device": "cpu"}]
    for it, loss in evals:
        c = {f"{layer}.{n}": 0.5 + 0.01 * it * (layer + 1) for layer in range(2) for n in ("mu", "beta")}
        recs.append({"kind": "eval", "iter": it, "tokens": 100 * it, "flops": 6e5 * it, "time": it,
                     "train_loss": loss, "val_loss": loss, "coef": c if coef else {}})
    recs.append({"kind": "final", "iter": 10, "tokens": 1000, "flops": 6e6, "time": 12.0,
                 "best_val_loss": best, "final_val_loss": final, "wall_time": 12.0 + seed})
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def check_pngs(out, names):
    for name in names:
        path = out / name
        assert path.read_bytes()[:8] == PNG, name
        assert matplotlib.image.imread(path).ndim == 3


def test_table_numbers_and_welch_p(tmp_path):
    base = {0: (2.0, 2.1), 1: (2.2, 2.3), 2: (2.1, 2.2)}
    nest = {0: (1.9, 2.0), 1: (1.95, 2.05), 2: (1.85, 1.95)}
    for seed in base:
        write_run(tmp_path / "runs/baseline" / f"seed{seed}", "baseline", seed, *base[seed])
        write_run(tmp_path / "runs/yuriiformer" / f"seed{seed}", "yuriiformer", seed, *nest[seed])
    write_run(tmp_path / "runs/gd_euler/seed0", "gd_euler", 0, 2.05, 2.15, coef=False)  # one seed: no p-value
    out = tmp_path / "out"
    compare.main(["--root", str(tmp_path / "runs"), "--variants", "baseline,yuriiformer,gd_euler", "--out", str(out)])
    res = json.loads((out / "results.json").read_text())
    rows = {r["variant"]: r for r in res["variants"]}
    assert res["baseline"] == "baseline" and list(rows) == ["baseline", "yuriiformer", "gd_euler"]
    b, y = [v[0] for v in base.values()], [v[0] for v in nest.values()]
    assert rows["yuriiformer"]["best_val"] == y
    assert rows["yuriiformer"]["best_val_mean"] == pytest.approx(np.mean(y))
    assert rows["yuriiformer"]["best_val_std"] == pytest.approx(np.std(y, ddof=1))
    assert rows["yuriiformer"]["best_val_delta"] == pytest.approx(np.mean(y) - np.mean(b))
    assert rows["yuriiformer"]["best_val_p"] == pytest.approx(ttest_ind(y, b, equal_var=False).pvalue)
    yf, bf = [v[1] for v in nest.values()], [v[1] for v in base.values()]
    assert rows["yuriiformer"]["final_val_p"] == pytest.approx(ttest_ind(yf, bf, equal_var=False).pvalue)
    assert rows["baseline"]["best_val_p"] is None and rows["gd_euler"]["best_val_p"] is None
    assert rows["gd_euler"]["best_val_std"] is None
    assert rows["baseline"]["wall_time"] == pytest.approx(13.0)
    assert (rows["baseline"]["tokens"], rows["baseline"]["num_params"], rows["baseline"]["flops_per_token"]) == \
        (1000, 1000, 6000)
    md = (out / "results.md").read_text()
    line = next(row for row in md.splitlines() if row.startswith("| yuriiformer "))
    assert f"{np.mean(y):.4f} ± {np.std(y, ddof=1):.4f}" in line
    assert compare.fmt_p(rows["yuriiformer"]["best_val_p"]) in line
    assert "yuriiformer (1.9000) < gd_euler (2.0500) < baseline (2.1000)" in md
    check_pngs(out, ["val_loss_steps.png", "val_loss_tokens.png", "val_loss_flops.png", "coef_baseline.png"])
    assert not (out / "coef_gd_euler.png").exists()  # gd has no coefficients


def test_errors_name_the_fix(tmp_path, capsys):
    write_run(tmp_path / "runs/baseline/seed0", "baseline", 0, 2.0, 2.1)
    with pytest.raises(SystemExit, match="no runs found"):
        compare.main(["--root", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="baseline 'polyak' has no runs"):
        compare.main(["--root", str(tmp_path / "runs"), "--baseline", "polyak", "--out", str(tmp_path / "o")])
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished/metrics.jsonl").write_text(json.dumps({"kind": "header"}) + "\n")
    with pytest.raises(SystemExit, match="no finished runs"):
        compare.main(["--run", f"x={tmp_path / 'unfinished'}", "--out", str(tmp_path / "o")])
    assert "no final record" in capsys.readouterr().err
    compare.main(["--run", f"x={tmp_path / 'unfinished'}", "--run", f"baseline={tmp_path / 'runs/baseline/seed0'}",
                  "--out", str(tmp_path / "o")])  # an unfinished run is reported and left out
    assert json.loads((tmp_path / "o/results.json").read_text())["skipped_runs"] == [str(tmp_path / "unfinished")]
    with pytest.raises(SystemExit, match="unknown variant"):
        compare.main(["--config", "c.py", "--root", str(tmp_path), "--variants", "gdd"])


def test_dry_run_prints_torchrun_commands_and_resumes(tmp_path, capsys):
    write_run(tmp_path / "baseline/seed0", "baseline", 0, 2.0, 2.1)  # complete: skipped
    (tmp_path / "polyak/seed0").mkdir(parents=True)
    (tmp_path / "polyak/seed0/ckpt.pt").write_bytes(b"")  # checkpoint, no final record: resumed
    compare.main(["--config", "config/tinystories_baseline.py", "--variants", "baseline,polyak,yuriiformer",
                  "--seeds", "0", "--root", str(tmp_path), "--launcher", "torchrun", "--nproc_per_node", "8",
                  "--dry_run", "--", "--max_iters=10"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [
        f"torchrun --standalone --nproc_per_node=8 train.py config/tinystories_baseline.py --variant=polyak "
        f"--seed=0 --out_dir={tmp_path}/polyak/seed0 --wandb_run_name=polyak-seed0 --max_iters=10 --init_from=resume",
        f"torchrun --standalone --nproc_per_node=8 train.py config/tinystories_baseline.py --variant=yuriiformer "
        f"--seed=0 --out_dir={tmp_path}/yuriiformer/seed0 --wandb_run_name=yuriiformer-seed0 --max_iters=10"]


@pytest.mark.slow
def test_trains_two_tiny_runs_and_reports(tmp_path):
    """Two variants x two seeds trained by train.py on a toy dataset; the table matches the metrics files."""
    rng = np.random.default_rng(0)
    write_dataset(tmp_path / "toy", {"train": rng.integers(0, 63, 6000), "val": rng.integers(0, 63, 2000)},
                  vocab_size=64, eot_token=63, tokenizer="toy")
    cfg = tmp_path / "tiny.py"
    cfg.write_text("".join(f"{k} = {v!r}\n" for k, v in {**TINY, "data_dir": str(tmp_path / "toy")}.items()))
    runs, out = tmp_path / "runs", tmp_path / "out"
    argv = ["--config", str(cfg), "--variants", "baseline,polyak", "--seeds", "0,1", "--root", str(runs),
            "--out", str(out)]
    compare.main(argv)
    res = json.loads((out / "results.json").read_text())
    for row in res["variants"]:
        for i, seed in enumerate((0, 1)):
            recs = [json.loads(x) for x in open(runs / row["variant"] / f"seed{seed}" / "metrics.jsonl")]
            final = recs[-1]
            assert final["kind"] == "final" and recs[0]["config"]["seed"] == seed
            # results.json keeps 10 significant digits (studies.runner.report_json)
            assert row["best_val"][i] == float(f"{final['best_val_loss']:.10g}")
            assert row["final_val"][i] == float(f"{final['final_val_loss']:.10g}")
            assert row["tokens"] == final["tokens"] == 6 * 4 * 16
            assert row["flops_per_token"] == recs[0]["flops_per_token"]
    polyak = res["variants"][1]
    assert polyak["best_val_p"] == pytest.approx(
        ttest_ind(polyak["best_val"], res["variants"][0]["best_val"], equal_var=False).pvalue)
    assert "p (best)" in (out / "results.md").read_text()
    check_pngs(out, ["val_loss_steps.png", "val_loss_tokens.png", "val_loss_flops.png", "coef_polyak.png"])
    mtime = (runs / "baseline/seed0/metrics.jsonl").stat().st_mtime
    compare.main(argv)  # finished runs are skipped
    assert (runs / "baseline/seed0/metrics.jsonl").stat().st_mtime == mtime


def test_report_names_the_queue_when_a_study_has_no_records(monkeypatch, tmp_path, capsys):
    from studies import __main__ as entry
    from studies import runner
    monkeypatch.setattr(runner, "RESULTS", tmp_path)
    with pytest.raises(SystemExit, match="error: geometry: no run records .* run python -m studies geometry run first"):
        entry.main(["geometry", "report"])
    entry.main(["report", "all"])  # every study empty: one line each, no traceback
    assert capsys.readouterr().out.count("no run records") == len(runner.STUDIES)


@pytest.mark.slow
def test_geometry_and_multilevel_reports_from_tiny_records(tmp_path, toy):
    """The geometry and multilevel reports on tiny real runs laid out as their queues land them: the verdict tables
    (pairwise paired p, instability, mechanism with attention entropy), spectral plots, FLOPs ratios."""
    from studies import geometry, multilevel
    from tests.helpers import args, run
    geo = dict(optimizer="manifold_muon", spectral_interval=4, max_iters=8, eval_interval=4, n_layer=2)
    for arm in ("none-none", "stiefel-dgram", "dgram-stiefel"):
        attn, mlp = arm.split("-")
        for seed in (0, 1):
            run(args(toy, tmp_path / "geometry" / "runs" / arm / f"seed{seed}", geometry_attn=attn, geometry_mlp=mlp,
                     seed=seed, **geo))
    geometry.report(tmp_path / "geometry", "test")
    text = (tmp_path / "geometry" / "compare" / "results.md").read_text()
    assert "stiefel-dgram - dgram-stiefel" in text and "unstable runs" in text and "entropy (min)" in text
    assert (tmp_path / "geometry" / "spectral" / "attention_saturation.png").stat().st_size > 0
    ml = dict(n_layer=4, max_iters=12, eval_interval=4, optimizer="sgd", learning_rate=0.05, min_lr=0.05)
    arms = {"single": {}, "plain": dict(multilevel_levels=2, multilevel_cycle=[2, 2], multilevel_until=8,
                                        eval_coarse=True),
            "corrected": dict(multilevel_levels=2, multilevel_cycle=[2, 2], multilevel_until=8, eval_coarse=True,
                              multilevel_correction=1.0, multilevel_correction_batches=2)}
    for arm, extra in arms.items():
        for seed in (0, 1):
            run(args(toy, tmp_path / "multilevel" / "runs" / arm / f"seed{seed}", seed=seed, **ml, **extra))
    multilevel.report(tmp_path / "multilevel", "test")
    text = (tmp_path / "multilevel" / "results.md").read_text()
    assert "| corrected | 2 |" in text and "without the head" in text
    summary = json.loads((tmp_path / "multilevel" / "summary.json").read_text())
    assert {"flops_ratio", "flops_ratio_no_head", "single_flops_at_arm_loss"} <= set(summary["plain"][0])
    diff = np.mean([p["val"] for p in summary["plain"]]) - np.mean([p["val"] for p in summary["single"]])
    assert summary["plain_vs_single"]["seeds"] == 2 and summary["plain_vs_single"]["diff"] == pytest.approx(diff)


def test_results_json_names_runs_relative_to_the_repository(tmp_path):
    """results.json is the same in every clone: a run inside the repository is named by its path from the root."""
    head = {"config": {"seed": 0}, "git_commit": "x", "device": "cpu"}
    final = {"best_val_loss": 1.0, "final_val_loss": 1.0, "iter": 1, "tokens": 1, "flops": 1, "wall_time": 1.0}
    inside = compare.ROOT / "studies" / "results" / "v" / "runs" / "a" / "seed0"
    assert compare.run_record({"dir": str(inside), "header": head, "final": final})["dir"] == \
        "studies/results/v/runs/a/seed0"
    assert compare.run_record({"dir": str(tmp_path), "header": head, "final": final})["dir"] == str(tmp_path)
