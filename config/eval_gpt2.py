"""GPT-2's validation loss on the prepared OpenWebText split (nanoGPT's eval_gpt2): no training step.
    python data/openwebtext/prepare.py
    python train.py config/eval_gpt2.py                       # --init_from=gpt2-medium|gpt2-large|gpt2-xl
nanoGPT reports val losses 3.12 (gpt2), 2.84 (medium), 2.67 (large), 2.54 (xl) on its own split of OpenWebText
(not measured here). The weights come through transformers (pip install -e ".[export]"), as in
config/finetune_tinystories.py."""

out_dir = "out-eval-gpt2"
dataset = "openwebtext"
init_from = "gpt2"
eval_only = True

batch_size = 8
eval_iters = 500  # 500 x 8 x 1024 tokens: a good estimate
