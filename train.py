"""
Train a GPT variant on one CPU/GPU or with DDP:

    python train.py config/tinystories_nesterov_cpu.py --max_iters=200
    torchrun --standalone --nproc_per_node=8 train.py config/tinystories_nesterov.py
    torchrun --nnodes=2 --node_rank=0 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 --nproc_per_node=8 train.py ...

Config files are plain `key = value` lines (see configurator.py); the keys are trainer.TrainConfig's and
model.GPTConfig's. Resume with the same command plus --init_from=resume. SIGTERM/SIGINT: finish the step, save,
exit 0 (under DDP at the next log step). The run directory gets config.json, metrics.jsonl (runlog.py) and
ckpt.pt / best.pt (checkpoint.py). The training library (config, checks, the loop) is trainer.py.
"""

from trainer import main

if __name__ == "__main__":
    main()
