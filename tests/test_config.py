"""config/: each family of config files is one recipe in several variants: its files, read by the configurator (parsed,
not executed), differ only in variant, out_dir and wandb_run_name, so running two of them compares the variants."""

import pytest

from configurator import read_config_file
from tests.helpers import ROOT

CONFIG = ROOT / "config"
PER_FILE = {"variant", "out_dir", "wandb_run_name"}
SINGLE = {"finetune_tinystories.py", "eval_gpt2.py"}  # one-off jobs, as nanoGPT's finetune_shakespeare.py, eval_gpt2.py


FAMILIES = {"tinystories_cpu": sorted(CONFIG.glob("tinystories_*_cpu.py")),
            "tinystories": sorted(f for f in CONFIG.glob("tinystories_*.py") if not f.stem.endswith("_cpu")),
            "owt_small": sorted(CONFIG.glob("owt_small_*.py")), "owt_medium": sorted(CONFIG.glob("owt_medium_*.py"))}


def test_every_config_file_is_in_one_family():
    members = [f for files in FAMILIES.values() for f in files]
    rest = sorted(f for f in CONFIG.glob("*.py") if f.name not in SINGLE)
    assert sorted(members) == rest and len(set(members)) == len(members)


@pytest.mark.parametrize("name", FAMILIES)
def test_a_family_differs_only_in_the_variant(name):
    files = FAMILIES[name]
    assert len(files) >= 2
    recipes = {f.name: {k: v for k, v in read_config_file(f).items() if k not in PER_FILE} for f in files}
    first, recipe = next(iter(recipes.items()))
    for other, theirs in recipes.items():
        diff = {k: (recipe.get(k, "<unset>"), theirs.get(k, "<unset>")) for k in recipe.keys() | theirs.keys()
                if recipe.get(k, "<unset>") != theirs.get(k, "<unset>")}
        assert not diff, f"{other} differs from {first} in more than {sorted(PER_FILE)}: {diff}"
    variants = [read_config_file(f)["variant"] for f in files]
    assert len(set(variants)) == len(variants)


def test_the_cpu_family_keeps_the_quick_start_recipe():
    """config/tinystories_nesterov_cpu.py is the README quick start's (about 4 minutes on 2 cores, val loss 3.0)."""
    c = read_config_file(CONFIG / "tinystories_nesterov_cpu.py")
    assert c["variant"] == "yuriiformer" and (c["max_iters"], c["shortlist"], c["eval_interval"]) == (400, 8192, 200)
    assert (c["compile"], c["adamw_fused"], c["optimizer"]) == (False, True, "muon")
