"""Fine-tune GPT-2 small (OpenAI's 124M weights) on TinyStories: nanoGPT's finetune_shakespeare recipe, a small
constant learning rate for a few steps from the pretrained model.
    python data/tinystories/prepare.py
    python train.py config/finetune_tinystories.py            # --init_from=gpt2-medium|gpt2-large|gpt2-xl, or a directory
The weights come through transformers (pip install -e ".[export]"): downloaded once into the Hugging Face cache, or a
local GPT-2 directory with --init_from=DIR; --init_from=auto:gpt2 resumes the fine-tune when out_dir holds ckpt.pt (a
restarted or requeued job). The architecture is GPT-2's (12L/12H/768, biases, its tanh GELU, vocabulary
50257, 1024 positions): model keys that differ are refused. On an Apple laptop: --device=mps (float16)."""

out_dir = "out-finetune-tinystories"
wandb_project = "yuriiformer-finetune"
wandb_run_name = "ft-gpt2-tinystories"
dataset = "tinystories"
init_from = "gpt2"
always_save_checkpoint = False  # only an improved validation loss is saved

batch_size = 4
gradient_accumulation_steps = 8  # 32 x 1024 tokens per step
max_iters = 200
learning_rate = 3e-5
decay_lr = False  # constant, as nanoGPT's fine-tuning
min_lr = learning_rate  # unused without decay (it must not exceed learning_rate)

eval_interval = 25
eval_iters = 40
log_interval = 5
