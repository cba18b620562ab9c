"""
Train a GPT variant on one CPU/GPU or with DDP:

    python train.py config/tinystories_cpu.py --max_iters=200
    torchrun --standalone --nproc_per_node=8 train.py config/tinystories_nesterov.py
    torchrun --nnodes=2 --node_rank=0 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 --nproc_per_node=8 train.py ...

Config files are plain `key = value` lines (see configurator.py); model keys go to model.GPTConfig.
Resume with the same command plus --init_from=resume. SIGTERM/SIGINT: finish the step, save, exit 0.
"""

import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import multilevel
import utils
from configurator import ConfigError, build, known_keys, parse_args
from data.loader import BinLoader, DataError
from model import GPT, PRESETS, GPTConfig
from manifold import GEOMETRIES, spectral_record
from optim import OPTIMIZERS, build_optimizers, init_manifolds, muon_dtype, set_lr

CKPT_FORMAT = "yuriiformer-ckpt-v1"


@dataclass
class TrainConfig:
    # I/O
    out_dir: str = "out"
    eval_interval: int = 250
    log_interval: int = 10
    eval_iters: int = 50
    eval_only: bool = False
    always_save_checkpoint: bool = True
    init_from: str = "scratch"  # scratch | resume | path to a checkpoint (this repo's or nanoGPT's) to start from
    wandb_log: bool = False
    wandb_project: str = "yuriiformer"
    wandb_run_name: str = "run"
    # data
    dataset: str = "tinystories"
    data_dir: str = ""  # default: data/<dataset>
    data_order: str = "epoch"  # epoch (each block once per epoch) | random (nanoGPT offsets)
    gradient_accumulation_steps: int = 1  # total over all ranks
    batch_size: int = 12  # per micro-step and rank
    variant: str = ""  # a preset of model.PRESETS; explicit model keys override it
    # optimizer
    optimizer: str = "adamw"  # adamw | muon | manifold_muon
    learning_rate: float = 6e-4  # AdamW learning rate
    max_iters: int = 5000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 disables
    muon_lr: float = 0.02
    muon_momentum: float = 0.95
    muon_weight_decay: float = 0.0
    muon_dtype: str = "auto"  # Muon's Newton-Schulz: auto (bfloat16 where native, else float32) | bfloat16 | float32
    scalar_lr_mult: float = 5.0  # learning-rate multiplier of the update coefficients
    ref_steps: int = 0  # nuGPT: reference horizon, m_T = max_iters / ref_steps (required for arch='nugpt')
    nu_c_out: float = 1.0  # nuGPT: output-layer learning-rate constant c_out
    geometry_attn: str = "none"  # manifold_muon: none | stiefel | dgram | oblique for the '.attn.' matrices
    geometry_mlp: str = "none"  # manifold_muon: the same for the '.mlp.' matrices
    mm_iters: int = 20  # manifold_muon: dual-ascent iterations K
    mm_alpha: float = 0.1  # manifold_muon: dual step alpha, decayed by (1 - k/K)
    mm_tol: float = 1e-3  # manifold_muon: stop the dual ascent when rms(H) < mm_tol
    spectral_interval: int = 0  # every N iters a "spectral" metrics record (singular values, attention logits); 0: off
    # schedule: linear warmup, then cosine to min_lr at lr_decay_iters
    decay_lr: bool = True
    warmup_iters: int = 100
    lr_decay_iters: int = 0  # 0: max_iters
    min_lr: float = 6e-5
    # system
    backend: str = "auto"  # auto (nccl on CUDA, gloo on CPU) | nccl | gloo
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bfloat16 where supported) | bfloat16 | float16 | float32
    compile: bool = False
    seed: int = 1337
    # multilevel training (multilevel.py): coarse levels use every 2^j-th layer with 2^j times longer steps
    multilevel_levels: int = 1  # m levels, 1: off
    multilevel_cycle: tuple[int, ...] = ()  # steps per cycle at level 0 (fine), 1, ..., m-1; run coarse to fine
    multilevel_mode: str = "cycle"  # cycle (repeat) | cascade (coarsest first, each level once, then fine)
    multilevel_until: int = 0  # iterations >= this train the fine model only (0: no limit)
    multilevel_reset_momentum: bool = False  # zero first moments (AdamW exp_avg, Muon buffer) at a level switch

    def __post_init__(self):
        positive = ("eval_interval", "log_interval", "eval_iters", "gradient_accumulation_steps", "batch_size",
                    "mm_iters")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("max_iters", "warmup_iters", "lr_decay_iters", "ref_steps", "spectral_interval"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        for name in ("learning_rate", "min_lr", "weight_decay", "grad_clip", "muon_lr", "scalar_lr_mult", "nu_c_out",
                     "mm_alpha", "mm_tol"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        choices = {"data_order": ("epoch", "random"), "optimizer": OPTIMIZERS,
                   "geometry_attn": GEOMETRIES, "geometry_mlp": GEOMETRIES,
                   "backend": ("auto", "nccl", "gloo"), "dtype": ("auto", *utils.DTYPES),
                   "muon_dtype": ("auto", "bfloat16", "float32")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: choose one of {', '.join(allowed)}")
        if self.variant and self.variant not in PRESETS:
            raise ValueError(f"variant={self.variant!r}: choose one of {', '.join(PRESETS)}")
        if self.min_lr > self.learning_rate:
            raise ValueError(f"min_lr={self.min_lr} must not exceed learning_rate={self.learning_rate}")
        if self.optimizer != "manifold_muon" and {self.geometry_attn, self.geometry_mlp} != {"none"}:
            raise ValueError(f"geometry_attn={self.geometry_attn!r}, geometry_mlp={self.geometry_mlp!r} need "
                             "optimizer='manifold_muon'")
        multilevel.check(self)


def load_config(argv):
    """(TrainConfig, GPTConfig, raw key -> value as given) from config files and --key=value overrides."""
    raw = parse_args(argv)
    unknown = set(raw) - known_keys(TrainConfig, GPTConfig)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(sorted(unknown))} (see TrainConfig in train.py "
                          "and GPTConfig in model.py)")
    return *resolve(raw), raw


def resolve(raw, base=None):
    """Dataclasses from raw keys on top of a base dict (a checkpoint's config); a variant preset sits under
    the explicit model keys."""
    base = base or {}
    cfg = build(TrainConfig, {**base, **raw}, strict=False)
    model_keys = {f.name for f in fields(GPTConfig)}
    merged = {**base, **PRESETS.get(raw.get("variant"), {}), **raw}
    mcfg = build(GPTConfig, {k: v for k, v in merged.items() if k in model_keys}, strict=False)
    if mcfg.arch != "gpt":  # nGPT needs no weight decay and no warmup: 0 unless given explicitly
        given = {**base, **raw}
        cfg = replace(cfg, **{k: v for k, v in dict(weight_decay=0.0, warmup_iters=0).items() if k not in given})
    if mcfg.arch == "nugpt" and not cfg.ref_steps:
        raise ConfigError("arch='nugpt' needs ref_steps > 0, the reference horizon (m_T = max_iters / ref_steps)")
    if mcfg.arch != "nugpt" and (cfg.ref_steps or cfg.nu_c_out != 1.0):
        raise ConfigError(f"ref_steps and nu_c_out only apply to arch='nugpt' (got arch={mcfg.arch!r}): remove them")
    multilevel.check(cfg, mcfg.n_layer)
    return cfg, mcfg


def lr_factor(it, cfg):
    """Linear warmup to 1, cosine decay to min_lr/learning_rate at lr_decay_iters, constant after."""
    if not cfg.decay_lr:
        return 1.0
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    floor = cfg.min_lr / cfg.learning_rate if cfg.learning_rate else 0.0
    if it < cfg.warmup_iters:
        return (it + 1) / (cfg.warmup_iters + 1)
    if it >= decay_iters:
        return floor
    ratio = (it - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    return floor + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (1.0 - floor)


class Dist:
    """Process group facts: rank, world size, device; a single process is world size 1."""

    def __init__(self, cfg):
        self.ddp = int(os.environ.get("RANK", -1)) != -1
        self.rank = int(os.environ.get("RANK", 0))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        device = utils.resolve_device(cfg.device)
        if self.ddp and device.startswith("cuda"):
            device = f"cuda:{self.local_rank}"
            torch.cuda.set_device(device)
        self.device, self.device_type = device, "cuda" if device.startswith("cuda") else "cpu"
        if self.ddp:
            backend = cfg.backend if cfg.backend != "auto" else ("nccl" if self.device_type == "cuda" else "gloo")
            dist.init_process_group(backend=backend)
        self.master = self.rank == 0

    def mean(self, value):
        """All-rank mean of a float."""
        if not self.ddp:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.item() / self.world

    def any(self, flag):
        if not self.ddp:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t)
        return t.item() > 0

    def gather(self, obj):
        """List of obj from every rank (just [obj] for one process)."""
        if not self.ddp:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def init_model(cfg, mcfg, raw):
    """(model, checkpoint or None, train config, model config) for init_from scratch | resume | a checkpoint.
    Resuming takes the run's saved config, with the given keys on top; model keys must not change."""
    if cfg.init_from == "scratch":
        return GPT(mcfg), None, cfg, mcfg
    path = Path(cfg.out_dir) / "ckpt.pt" if cfg.init_from == "resume" else Path(cfg.init_from)
    if not path.is_file():
        raise FileNotFoundError(f"init_from={cfg.init_from!r}: no checkpoint at {path} (train from scratch first)")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if cfg.init_from == "resume":
        if ckpt.get("format") != CKPT_FORMAT:
            raise ValueError(f"{path} is not a checkpoint of train.py: start from it with --init_from={path}")
        system = {"device": cfg.device, "backend": cfg.backend}  # where to run is not part of the run
        cfg, mcfg = resolve(raw, {**ckpt["config"], **ckpt["model_args"], **system})
    saved = asdict(GPTConfig(**ckpt.get("model_args", {})))
    asked = set(saved) if cfg.init_from == "resume" else set(raw) | set(PRESETS.get(raw.get("variant"), {}))
    differ = sorted(k for k in asked & set(saved) if k != "dropout" and saved[k] != getattr(mcfg, k))
    if differ:
        details = ", ".join(f"{k}: checkpoint {saved[k]!r} vs config {getattr(mcfg, k)!r}" for k in differ)
        raise ValueError(f"checkpoint {path} has a different model config ({details}): drop these keys or train anew")
    model = GPT(GPTConfig(**{**saved, "dropout": mcfg.dropout}))
    model.load_state_dict(GPT.from_checkpoint(ckpt).state_dict())
    return model, ckpt, cfg, model.config


class Stop:
    """SIGTERM/SIGINT set a flag (while entered); the loop finishes its step, saves a checkpoint and exits 0."""

    requested = False

    def __enter__(self):
        self.requested = False
        self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        self.requested = True


def rng_state(device_type):
    state = {"torch": torch.get_rng_state()}
    if device_type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state()
    return state


@torch.no_grad()
def evaluate(model, loaders, iters, ctx, dist_):
    """Mean loss over the same `iters` batches of each split every time, averaged over ranks."""
    out = {}
    model.eval()
    for split, loader in loaders.items():
        loader.reset()
        total = 0.0
        for _ in range(iters):
            x, y = loader.next_batch()
            with ctx:
                total += model(x, y)[1].item()
        out[split] = dist_.mean(total / iters)
    model.train()
    return out


def header(cfg, mcfg, model, d, tokens_per_iter):
    return {"kind": "header", "config": asdict(cfg), "model_args": asdict(mcfg), "num_params": model.num_params(),
            "num_params_no_pos_v0": model.num_params(positions=False, v0_tables=False),
            "flops_per_token": model.flops_per_token(), "tokens_per_iter": tokens_per_iter,
            "git_commit": utils.git_commit(), "versions": utils.versions(), "device": utils.device_name(d.device),
            "world_size": d.world, "argv": sys.argv}


class Metrics:
    """metrics.jsonl (one JSON object per line) and optional wandb, written by the master rank."""

    def __init__(self, path, cfg, keep_until=None):
        self.path, self.wandb = path, None
        if keep_until is not None and path.exists():  # resume: drop lines written after the checkpoint
            lines = [r for r in utils.read_jsonl(path) if r.get("iter", 0) <= keep_until and r["kind"] != "final"]
            utils.atomic_write_text("".join(json.dumps(r) + "\n" for r in lines), path)
        self.file = open(path, "a" if keep_until is not None else "w")
        if cfg.wandb_log:
            try:
                import wandb  # optional dependency, imported only when asked for
            except ImportError:
                raise ConfigError("wandb_log=True needs wandb: pip install wandb (or set wandb_log=False)") from None
            self.wandb = wandb.init(project=cfg.wandb_project, name=cfg.wandb_run_name, config=asdict(cfg),
                                    resume="allow")

    def log(self, record):
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.wandb is not None and record["kind"] != "header":
            self.wandb.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record["iter"])


def train(cfg, mcfg, raw=None, stop=None):
    """Run training; returns a summary dict (best/final val loss, iterations, wall time)."""
    d = Dist(cfg)
    utils.setup_runtime(d.device, seed=cfg.seed)  # same seed on every rank: identical initial weights
    model, ckpt, cfg, mcfg = init_model(cfg, mcfg, raw or {})
    out_dir = Path(cfg.out_dir)
    dtype = utils.resolve_dtype(cfg.dtype, d.device)
    cfg = replace(cfg, dtype=dtype, muon_dtype=muon_dtype(cfg.muon_dtype, d.device))  # saved resolved
    if cfg.gradient_accumulation_steps % d.world:
        raise ValueError(f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} must be divisible by "
                         f"the number of processes ({d.world})")
    accum = cfg.gradient_accumulation_steps // d.world
    model.to(d.device)
    ctx = utils.autocast(d.device, dtype)
    data_dir = cfg.data_dir or str(Path(__file__).parent / "data" / cfg.dataset)
    T, B = mcfg.block_size, cfg.batch_size
    loader_args = dict(rank=d.rank, world_size=d.world, device=d.device, vocab_size=mcfg.vocab_size)
    train_loader = BinLoader(data_dir, "train", B, T, order=cfg.data_order, seed=cfg.seed, **loader_args)
    eval_loaders = {s: BinLoader(data_dir, s, B, T, order="epoch", seed=cfg.seed + 1, **loader_args)
                    for s in ("train", "val")}
    optimizers = build_optimizers(model, cfg, d.device_type)
    scaler = torch.amp.GradScaler(d.device_type, enabled=dtype == "float16")
    it, best_val = 0, float("inf")
    resumed = cfg.init_from == "resume"
    if resumed:
        for opt, state in zip(optimizers, ckpt["optimizer"]):
            opt.load_state_dict(state)
        scaler.load_state_dict(ckpt["scaler"])
        it, best_val = ckpt["iter_num"], ckpt["best_val_loss"]
        rank_state = ckpt["rank_states"][d.rank % len(ckpt["rank_states"])]
        train_loader.load_state_dict(rank_state["loader"])
        torch.set_rng_state(rank_state["rng"]["torch"])
        if "cuda" in rank_state["rng"] and d.device_type == "cuda":
            torch.cuda.set_rng_state(rank_state["rng"]["cuda"])
    elif ckpt is None:
        torch.manual_seed(cfg.seed + d.rank)  # dropout differs across ranks
    if not resumed:
        init_manifolds(optimizers)  # manifold_muon: fresh weights onto their manifolds
    raw_model = model
    if cfg.compile:
        model = torch.compile(model)  # one graph per multilevel (level, offset)
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit,
                                                   multilevel.recompile_limit(cfg.multilevel_levels))
    if d.ddp:
        model = DDP(model, device_ids=[d.local_rank] if d.device_type == "cuda" else None,
                    find_unused_parameters=multilevel.enabled(cfg))  # coarse levels skip layers
    tokens_per_iter = cfg.gradient_accumulation_steps * B * T
    fpt = raw_model.flops_per_token(T)
    peak = utils.peak_flops(d.device, d.world)
    metrics = None
    if d.master:
        out_dir.mkdir(parents=True, exist_ok=True)
        resolved = {**asdict(cfg), **asdict(mcfg)}
        utils.atomic_write_text(json.dumps(resolved, indent=2) + "\n", out_dir / "config.json")
        metrics = Metrics(out_dir / "metrics.jsonl", cfg, keep_until=it if resumed else None)
        head = header(cfg, mcfg, raw_model, d, tokens_per_iter)
        metrics.log({**head, "iter": it, "tokens": it * tokens_per_iter})
        print(f"git {head['git_commit']} | {json.dumps(head['versions'])} | {head['device']} x{d.world} | {dtype}")
        print(json.dumps(resolved))
        print(f"{head['num_params'] / 1e6:.2f}M parameters | {tokens_per_iter:,} tokens/iter | "
              f"{fpt / 1e6:.1f} MFLOPs/token | data {data_dir} ({cfg.data_order})")

    def checkpoint(name):
        states = d.gather({"loader": train_loader.state_dict(), "rng": rng_state(d.device_type)})
        if d.master:
            utils.atomic_save({"format": CKPT_FORMAT, "model_args": asdict(mcfg), "model": raw_model.state_dict(),
                               "optimizer": [o.state_dict() for o in optimizers], "scaler": scaler.state_dict(),
                               "iter_num": it, "best_val_loss": best_val, "evaluated": evaluated == it,
                               "last_val_loss": last_val, "flops": flops, "elapsed": elapsed(), "config": asdict(cfg),
                               "rank_states": states}, out_dir / name)

    start, stop = time.time(), stop or Stop()
    elapsed = lambda: time.time() - start + (ckpt.get("elapsed", 0.0) if resumed else 0.0)  # noqa: E731
    flops = ckpt.get("flops", 0) if resumed else 0  # cumulative training FLOPs
    loss_sum = torch.zeros((), device=d.device)  # summed micro-step losses since the last log line
    t_log, it_log, f_log, evaluated = time.time(), it, flops, -1
    last_val = ckpt.get("last_val_loss") if resumed else None
    summary = {}
    while True:
        done_before = resumed and it == ckpt["iter_num"] and ckpt["evaluated"]  # this eval is in the checkpoint
        if cfg.spectral_interval and it % cfg.spectral_interval == 0 and d.master and not done_before:
            eval_loaders["val"].reset()
            rec = spectral_record(raw_model, eval_loaders["val"].next_batch()[0], ctx, cfg.geometry_attn,
                                  cfg.geometry_mlp, optimizers)
            metrics.log({"kind": "spectral", "iter": it, "tokens": it * tokens_per_iter, "flops": flops,
                         "time": elapsed(), **rec})
        if (it % cfg.eval_interval == 0 or it >= cfg.max_iters or cfg.eval_only) and not done_before:
            losses = evaluate(model, eval_loaders, cfg.eval_iters, ctx, d)
            if not math.isfinite(losses["val"]):
                raise FloatingPointError(f"val loss is {losses['val']} at iter {it}: stopping without saving; "
                                         f"the last good checkpoint in {out_dir} is kept")
            last_val, evaluated = losses["val"], it
            improved = losses["val"] < best_val
            best_val = min(best_val, losses["val"])
            if d.master:
                print(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                metrics.log({"kind": "eval", "iter": it, "tokens": it * tokens_per_iter, "flops": flops,
                             "time": elapsed(), "train_loss": losses["train"],
                             "val_loss": losses["val"], "lr": cfg.learning_rate * lr_factor(it, cfg),
                             "coef": raw_model.coefficients()})
            if not cfg.eval_only and it > 0:
                if improved:
                    checkpoint("best.pt")
                if improved or cfg.always_save_checkpoint or it >= cfg.max_iters:
                    checkpoint("ckpt.pt")
        if cfg.eval_only or it >= cfg.max_iters:
            break
        set_lr(optimizers, lr_factor(it, cfg))
        level, offset = multilevel.level_at(it, cfg)
        if cfg.multilevel_reset_momentum and multilevel.switched(it, cfg):
            multilevel.reset_momentum(optimizers)
        for micro in range(accum):
            if d.ddp:
                model.require_backward_grad_sync = micro == accum - 1  # all-reduce on the last micro-step only
            x, y = train_loader.next_batch()
            with ctx:
                _, loss = model(x, y, level=level, offset=offset)
            loss_sum += loss.detach()
            scaler.scale(loss / accum).backward()
        if cfg.grad_clip:
            for opt in optimizers:
                scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)
        for opt in optimizers:
            scaler.step(opt)
        scaler.update()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        raw_model.normalize_weights()  # nGPT: back onto the sphere (no-op for GPT)
        it += 1
        flops += tokens_per_iter * raw_model.flops_per_token(T, level)  # the active depth's FLOPs
        log_now = it % cfg.log_interval == 0 or it % cfg.eval_interval == 0 or it >= cfg.max_iters
        if log_now or stop.requested:
            loss = d.mean(loss_sum.item() / ((it - it_log) * accum))
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss is {loss} at iter {it}: stopping without saving; the last good "
                                         f"checkpoint in {out_dir} is kept (lower learning_rate or check the data)")
            dt = time.time() - t_log
            tok_s = (it - it_log) * tokens_per_iter / dt
            mfu = (flops - f_log) / dt / peak if peak else None
            if d.master:
                print(f"iter {it}: loss {loss:.4f}, lr {cfg.learning_rate * lr_factor(it - 1, cfg):.2e}, "
                      f"{1000 * dt / (it - it_log):.1f} ms/iter, {tok_s:,.0f} tok/s"
                      + (f", mfu {100 * mfu:.2f}%" if mfu else ""))
                metrics.log({"kind": "train", "iter": it, "tokens": it * tokens_per_iter, "flops": flops,
                             "time": elapsed(), "loss": loss,
                             "lr": cfg.learning_rate * lr_factor(it - 1, cfg), "tok_per_s": tok_s, "mfu": mfu,
                             "level": level, "offset": offset})
            loss_sum.zero_()
            t_log, it_log, f_log = time.time(), it, flops
        if d.any(stop.requested):
            checkpoint("ckpt.pt")
            if d.master:
                print(f"stopped by signal at iter {it}; checkpoint saved, resume with --init_from=resume")
            summary["interrupted"] = True
            break
    summary.update(iters=it, best_val_loss=best_val, final_val_loss=last_val, wall_time=elapsed())
    if d.master:
        metrics.log({"kind": "final", "iter": it, "tokens": it * tokens_per_iter, "flops": flops,
                     "time": summary["wall_time"], **summary})
        print(f"done: best val loss {best_val:.4f}, final val loss {last_val}, {summary['wall_time']:.0f}s")
    if d.ddp:
        dist.destroy_process_group()
    return summary


def main(argv=None):
    try:
        with Stop() as stop:
            train(*load_config(sys.argv[1:] if argv is None else argv), stop=stop)
    except (ConfigError, DataError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except FloatingPointError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
