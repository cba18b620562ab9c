"""The transformers code that export.py copies beside exported weights (modeling_yuriiformer.py); importable here too,
where yuriiformer_model stands for model.py."""
