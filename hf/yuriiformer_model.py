"""model.py under the name modeling_yuriiformer.py imports it by (.yuriiformer_model). An exported directory holds a
copy of model.py under this name instead (export.py), so the same modeling file runs here and beside the weights."""

from model import GPT, GPTConfig, rope_tables

__all__ = ["GPT", "GPTConfig", "rope_tables"]
