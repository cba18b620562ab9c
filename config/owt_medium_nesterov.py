"""OpenWebText medium, the YuriiFormer: Nesterov + Lie-Trotter, velocity LayerNorm, V_0 from embeddings.
Paper recipe: 24L/16H/1024, T=1024, 30k steps of 30 x 16 x 1024 tokens, Muon lr 0.006 + AdamW 6e-4, 3k warmup.
On 8 GPUs: torchrun --standalone --nproc_per_node=8 train.py config/owt_medium_nesterov.py"""

out_dir = "out-owt-medium-nesterov"
wandb_project = "yuriiformer-owt"
wandb_run_name = "medium-nesterov"
dataset = "openwebtext"
data_order = "epoch"
variant = "yuriiformer"

n_layer = 24
n_head = 16
n_embd = 1024
block_size = 1024
vocab_size = 50304
bias = False
dropout = 0.0

batch_size = 30
gradient_accumulation_steps = 16
max_iters = 30000
lr_decay_iters = 30000
warmup_iters = 3000

optimizer = "muon"
muon_lr = 0.006
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
