"""TinyStories, Polyak heavy ball + Lie-Trotter, velocity LayerNorm, V_0 from embeddings.
The paper's recipe (docs/update-rules.md): 12L/12H/768, T=1024, 10k steps of
30 x 16 x 1024 tokens, Muon (lr 0.02) on hidden matrices + AdamW (lr 6e-4) elsewhere, bf16.
On 8 GPUs: torchrun --standalone --nproc_per_node=8 train.py config/tinystories_polyak.py"""

out_dir = "out-tinystories-polyak"
wandb_project = "yuriiformer-tinystories"
wandb_run_name = "polyak"
dataset = "tinystories"
data_order = "epoch"
variant = "polyak"

n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
vocab_size = 50304
bias = False
dropout = 0.0

batch_size = 30
gradient_accumulation_steps = 16
max_iters = 10000
lr_decay_iters = 10000
warmup_iters = 1000

optimizer = "muon"
muon_lr = 0.02
muon_momentum = 0.95
learning_rate = 6e-4
min_lr = 6e-5
beta1 = 0.9
beta2 = 0.95
weight_decay = 0.1
scalar_lr_mult = 5.0
grad_clip = 1.0

eval_interval = 100
eval_iters = 160
log_interval = 10
dtype = "bfloat16"
compile = True
