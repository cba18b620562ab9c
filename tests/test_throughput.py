"""bench/throughput.py: variants with GPTConfig fields, several batch sizes per call, one-line argument errors."""

import json
import subprocess
import sys

import pytest

from bench import throughput
from tests.helpers import ROOT

TOY = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=16", "--vocab_size=64", "--steps=1", "--warmup=1",
       "--dtype=float32", "--no-live_mem", "--device=cpu"]


def test_a_variant_takes_config_fields():
    a = throughput.parse_args(["--variants=yuriiformer:lnv=False:v0=zero", *TOY])
    assert a.variant_list == ["baseline", "yuriiformer:lnv=False:v0=zero"] and a.batch_list == [16]
    config = throughput.model_config(a.variant_list[1], a)
    assert (config.update, config.lnv, config.v0, config.n_embd) == ("nesterov", False, "zero", 32)


@pytest.mark.parametrize("argv, message", [(["--variants=yuriiformer:foo=1"], "unknown config key(s): foo"),
                                           (["--variants=yuriiformer:lnv"], "field=value"),
                                           (["--variants=baseline:lnv=True"], "needs a velocity"),
                                           (["--variants=nanogpt_ref:lnv=False"], "takes no fields"),
                                           (["--batch_size=8,x"], "distinct positive integers"),
                                           (["--batch_size=8,8"], "distinct positive integers")])
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        throughput.parse_args([*argv, *TOY])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error:" in err and message in err


@pytest.mark.slow
def test_rows_per_variant_and_batch_size(tmp_path):
    p = subprocess.run([sys.executable, "bench/throughput.py", "--variants=baseline,yuriiformer:lnv=False",
                        "--batch_size=1,2", *TOY], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    rows = {(r["variant"], r["batch_size"]): r for r in out["rows"]}
    assert list(rows) == [("baseline", 1), ("yuriiformer:lnv=False", 1), ("baseline", 2), ("yuriiformer:lnv=False", 2)]
    assert all(rows["baseline", b]["time_ratio"] == 1.0 for b in (1, 2)) and out["args"]["batch_size"] == [1, 2]
    assert rows["yuriiformer:lnv=False", 1]["params"] > rows["baseline", 1]["params"]  # V_0 tables, coefficients
    assert all(r["cpu_ms"] > 0 for r in rows.values()) and " batch " in p.stdout
