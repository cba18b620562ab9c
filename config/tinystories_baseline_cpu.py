"""TinyStories on a laptop CPU, GD + Lie-Trotter: exactly nanoGPT's GPT-2 block.
A small model that trains in minutes on 2 cores: python train.py config/tinystories_baseline_cpu.py"""

out_dir = "out-tinystories-baseline-cpu"
dataset = "tinystories"
data_order = "epoch"
variant = "baseline"

n_layer = 4
n_head = 4
n_embd = 256
block_size = 128
vocab_size = 50304
bias = False
dropout = 0.0

batch_size = 16
gradient_accumulation_steps = 1
max_iters = 300
lr_decay_iters = 300
warmup_iters = 30

optimizer = "muon"
muon_lr = 0.02
learning_rate = 2e-3
min_lr = 2e-4
weight_decay = 0.1
scalar_lr_mult = 5.0
grad_clip = 1.0
adamw_fused = True  # torch's fused AdamW on CPU: 5x faster on the 12.9M-entry embedding

eval_interval = 50
eval_iters = 20
log_interval = 10
device = "cpu"
dtype = "auto"  # bf16 where the CPU has it natively (AVX512-BF16, AMX), else fp32
compile = True  # about 2x faster steps on CPU after ~40 s of compilation
