"""Dataset preparation (data/<dataset>/prepare.py) and the training data loader."""
