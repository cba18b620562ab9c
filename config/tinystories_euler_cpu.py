"""TinyStories on a laptop CPU, GD + Euler: attention and MLP evaluated at the same point (parallel block).
The quick start's recipe (config/tinystories_nesterov_cpu.py) with another variant: only variant and out_dir differ,
so two of these files compare the update rules (python train.py config/tinystories_euler_cpu.py)."""

out_dir = "out-tinystories-euler-cpu"
dataset = "tinystories"
data_order = "epoch"
variant = "gd_euler"

n_layer = 4
n_head = 4
n_embd = 256
block_size = 128
vocab_size = 50304
shortlist = 8192  # the embedded sample has 9,863 distinct training tokens; the tail holds 0.25% of val tokens
bias = False
dropout = 0.0

batch_size = 16
gradient_accumulation_steps = 1
max_iters = 400
lr_decay_iters = 400
warmup_iters = 30

optimizer = "muon"
muon_lr = 0.02
learning_rate = 2e-3
min_lr = 2e-4
weight_decay = 0.1
scalar_lr_mult = 5.0
grad_clip = 1.0
adamw_fused = True  # torch's fused AdamW on CPU (5x faster than the default on a 50k-row embedding)

eval_interval = 200  # evaluations at 0, 200 and 400 (each about 7 s)
eval_iters = 20
log_interval = 10
device = "cpu"
dtype = "auto"  # bf16 where the CPU has it natively (AVX512-BF16, AMX), else fp32
compile = False  # compiled: 400 vs 518 ms/step after ~33 s of compilation (+ more for evaluation): no gain at 400 steps
