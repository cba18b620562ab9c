"""model.py under the name modeling_yuriiformer.py imports it by: an exported directory holds a copy of model.py
instead of this file (export.py), so the modeling code runs the same in the repository and beside the weights."""

from model import GPT, GPTConfig, rope_tables

__all__ = ["GPT", "GPTConfig", "rope_tables"]
