"""
The training library behind train.py: TrainConfig and its checks (problems), load_config, the learning-rate
schedule, the process group (Dist), the Trainer (setup, step, evaluate/save, the loop) and train()/main().

A run is Trainer(cfg, mcfg, raw).run(stop): evaluate/save on schedule, step, log, until max_iters or a signal. The
run directory gets config.json, metrics.jsonl (runlog.py) and ckpt.pt / best.pt (checkpoint.py); multilevel
training (multilevel.py) is one object the step asks which level to run and hands the gradients to.
"""

import contextlib
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import checkpoint
import multilevel
import pretrained
import utils
from configurator import ConfigError, build, known_keys, parse_args
from data.loader import BinLoader, DataError, token_counts
from diagnostics import spectral_record
from manifold import GEOMETRIES, INITS, RETRACTIONS, SCALINGS
from model import GPT, PRESETS, GPTConfig
from optim import GROUPS, OPTIMIZERS, build_optimizers, init_manifolds, muon_dtype, set_lr
from runlog import RunLog

ARCH_DEFAULTS = {  # training defaults of model.PRESETS' normalized family, where a config does not give the key
    "ngpt": dict(weight_decay=0.0, warmup_iters=0),  # nGPT: no weight decay, no warmup
    "nugpt": dict(weight_decay=0.0, warmup_iters=0, adam_eps=1e-16),  # nuGPT: the same, and the reference's Adam eps
}


@dataclass
class TrainConfig:
    # I/O
    out_dir: str = "out"
    eval_interval: int = 250
    log_interval: int = 10
    eval_iters: int = 50
    eval_only: bool = False
    always_save_checkpoint: bool = True
    init_from: str = "scratch"  # scratch | resume | auto[:X] (resume if out_dir has ckpt.pt, else X, default scratch) |
    #                             gpt2[-medium|-large|-xl] | a GPT-2 directory | a checkpoint (this repo's or nanoGPT's)
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
    optimizer: str = "adamw"  # adamw | sgd | muon | manifold_muon
    learning_rate: float = 6e-4  # AdamW learning rate
    max_iters: int = 5000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    adamw_fused: bool = False  # fused AdamW on CPU too (5x faster step there); CUDA always fuses, as nanoGPT
    adam_eps: float = 1e-8  # AdamW's eps (arch='nugpt': 1e-16 unless given, the nuGPT reference's)
    sgd_momentum: float = 0.9  # optimizer=sgd: heavy-ball momentum
    sgd_nesterov: bool = False  # optimizer=sgd: Nesterov momentum
    group_lr_mult: dict[str, float] = field(default_factory=dict)  # per-group lr factors, e.g. {'head': 2.0} (optim.py)
    grad_clip: float = 1.0  # 0 disables
    muon_lr: float = 0.02
    muon_momentum: float = 0.95
    muon_weight_decay: float = 0.0
    muon_dtype: str = "auto"  # Muon's Newton-Schulz: auto (bfloat16 where native, else float32) | bfloat16 | float32
    scalar_lr_mult: float = 5.0  # learning-rate multiplier of the update coefficients
    ref_steps: int = 0  # nuGPT: reference horizon, m_T = max_iters / ref_steps (required for arch='nugpt')
    nu_c_out: float = 0.5  # nuGPT: output-layer learning-rate constant c_out (the reference's 0.5)
    nu_lr_scaling: bool = True  # nuGPT: False sets m_w = m_T = 1 in its lr multipliers (c_out kept; a control)
    geometry_attn: str = "none"  # manifold_muon: none | stiefel | dgram | oblique for the '.attn.' matrices
    geometry_mlp: str = "none"  # manifold_muon: the same for the '.mlp.' matrices
    mm_iters: int = 2  # manifold_muon: dual-ascent iterations K (2: a step costs < 3x Muon's; bench/RESULTS.md)
    mm_alpha: float = 0.3  # manifold_muon: dual step alpha, decayed by (1 - k/K); in units of G's RMS (mm_scaling=rms)
    mm_tol: float = 1e-3  # manifold_muon: stop the dual ascent when rms(H) < mm_tol
    mm_warm_start: bool = False  # manifold_muon: start the ascent from the previous step's multiplier (measured: no gain)
    mm_scaling: str = "rms"  # manifold_muon: rms (unit-RMS momentum, Muon's lr) | reference (the paper's raw momentum)
    mm_init: str = "reference"  # manifold_muon: reference (DGram keeps its singular values) | polar (all 1)
    mm_retraction: str = "clean"  # manifold_muon: clean (idempotent DGram retraction) | reference (the paper's SVD)
    spectral_interval: int = 0  # every N iters a "spectral" metrics record (singular values, attention logits); 0: off
    # schedule: linear warmup, then cosine to min_lr at lr_decay_iters
    decay_lr: bool = True
    warmup_iters: int = 100
    lr_decay_iters: int = 0  # 0: max_iters
    min_lr: float = 6e-5
    # system
    backend: str = "auto"  # auto (nccl on CUDA, gloo on CPU) | nccl | gloo
    device: str = "auto"  # auto (cuda, else mps, else cpu) | cpu | cuda | cuda:N | mps (Apple GPUs)
    dtype: str = "auto"  # auto (bfloat16 where native, else float16 on CUDA, float32 on CPU) | bfloat16 | ...
    compile: bool = False
    tf32: bool = True  # CUDA: TF32 matmuls for fp32 work (False: exact fp32)
    seed: int = 1337
    # multilevel training (multilevel.py): coarse levels use every 2^j-th layer with 2^j times longer steps
    multilevel_levels: int = 1  # m levels, 1: off
    multilevel_cycle: tuple[int, ...] = ()  # steps per cycle at level 0 (fine), 1, ..., m-1; run coarse to fine
    multilevel_mode: str = "cycle"  # cycle (repeat) | cascade (coarsest first, each level once, then fine)
    multilevel_until: int = 0  # iterations >= this train the fine model only (0: no limit)
    multilevel_momentum: str = "keep"  # optimizer state at a level switch: keep | reset (a fresh state) | per_level
    multilevel_correction: float = 0.0  # tau: coarse steps get the first-order coherence term (MG/OPT); 0: plain
    multilevel_correction_batches: int = 1  # the coherence term from gradients averaged over this many batches
    eval_coarse: bool = False  # evaluations also report the 2-level coarse networks (offsets 0, 1) at the shared weights
    eval_tasks: str = ""  # at the end, eval.py on best.pt: e.g. "tinystories_endings,val_ppl" or "hellaswag" ('' off)


def load_config(argv):
    """(TrainConfig, GPTConfig, raw key -> value as given) from config files and --key=value overrides."""
    raw = parse_args(argv)
    unknown = set(raw) - known_keys(TrainConfig, GPTConfig)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(sorted(unknown))} (see TrainConfig in trainer.py "
                          "and GPTConfig in model.py)")
    return *resolve(raw), raw


def resolve(raw, base=None):
    """(TrainConfig, GPTConfig) from raw keys on top of a base dict (a checkpoint's config), a variant preset under
    the explicit model keys and the arch's ARCH_DEFAULTS under the given training keys; every problem (types, the
    model config's own, problems()) in one ConfigError line."""
    base, errors, cfg, mcfg = base or {}, [], None, None
    given = {**base, **raw}
    try:
        cfg = build(TrainConfig, given, strict=False)  # types only: problems() checks the values
    except ConfigError as e:
        errors.append(str(e))
    model_keys = {f.name for f in fields(GPTConfig)}
    merged = {**base, **PRESETS.get(raw.get("variant"), {}), **raw}
    try:
        mcfg = build(GPTConfig, {k: v for k, v in merged.items() if k in model_keys}, strict=False)  # checks itself
    except ConfigError as e:
        errors.append(str(e))
    if cfg is not None:
        if mcfg is not None:
            cfg = replace(cfg, **{k: v for k, v in ARCH_DEFAULTS.get(mcfg.arch, {}).items() if k not in given})
        errors += problems(cfg, mcfg)
    if errors:
        raise ConfigError("; ".join(errors))
    return cfg, mcfg


def problems(cfg, mcfg=None):
    """What is wrong with a training config and (given its GPTConfig, itself already valid) with the pair, the
    multilevel schedule included: one message per problem, each naming its key."""
    out = [f"{n}={getattr(cfg, n)} must be >= 1" for n in ("eval_interval", "log_interval", "eval_iters",
           "gradient_accumulation_steps", "batch_size", "mm_iters") if getattr(cfg, n) < 1]
    out += [f"{n}={getattr(cfg, n)} must be >= 0" for n in ("max_iters", "warmup_iters", "lr_decay_iters",
            "ref_steps", "spectral_interval", "learning_rate", "min_lr", "weight_decay", "grad_clip", "muon_lr",
            "muon_momentum", "muon_weight_decay", "beta1", "beta2", "adam_eps", "sgd_momentum", "scalar_lr_mult",
            "nu_c_out", "mm_alpha", "mm_tol", "multilevel_correction") if getattr(cfg, n) < 0]
    choices = {"data_order": ("epoch", "random"), "optimizer": OPTIMIZERS, "geometry_attn": GEOMETRIES,
               "geometry_mlp": GEOMETRIES, "backend": ("auto", "nccl", "gloo"), "dtype": ("auto", *utils.DTYPES),
               "muon_dtype": ("auto", "bfloat16", "float32"), "mm_scaling": SCALINGS, "mm_init": INITS,
               "mm_retraction": RETRACTIONS}
    out += [f"{n}={getattr(cfg, n)!r}: choose one of {', '.join(allowed)}"
            for n, allowed in choices.items() if getattr(cfg, n) not in allowed]
    bad = sorted(set(cfg.group_lr_mult) - set(GROUPS))
    if bad or any(v <= 0 for v in cfg.group_lr_mult.values()):
        out.append(f"group_lr_mult={cfg.group_lr_mult}: keys from {', '.join(GROUPS)}, values > 0")
    if {"attn", "mlp"} & set(cfg.group_lr_mult) and cfg.optimizer not in ("muon", "manifold_muon"):
        out.append("group_lr_mult's attn and mlp scale Muon's hidden matrices: use optimizer=muon or manifold_muon")
    if cfg.variant and cfg.variant not in PRESETS:
        out.append(f"variant={cfg.variant!r}: choose one of {', '.join(PRESETS)}")
    kind, _, then = cfg.init_from.partition(":")
    if kind == "auto" and then in ("auto", "resume"):
        out.append(f"init_from={cfg.init_from!r}: after auto: comes what a fresh run starts from (scratch, gpt2, a "
                   "directory, a checkpoint): e.g. init_from=auto:gpt2")
    if cfg.min_lr > cfg.learning_rate:
        out.append(f"min_lr={cfg.min_lr} must not exceed learning_rate={cfg.learning_rate}")
    if cfg.optimizer != "manifold_muon" and {cfg.geometry_attn, cfg.geometry_mlp} != {"none"}:
        out.append(f"geometry_attn={cfg.geometry_attn!r}, geometry_mlp={cfg.geometry_mlp!r} need "
                   "optimizer='manifold_muon'")
    if mcfg is not None:
        if mcfg.arch == "nugpt" and not cfg.ref_steps:
            out.append("arch='nugpt' needs ref_steps > 0, the reference horizon (m_T = max_iters / ref_steps)")
        if mcfg.arch != "nugpt" and (cfg.ref_steps or cfg.nu_c_out != TrainConfig.nu_c_out or not cfg.nu_lr_scaling):
            out.append(f"ref_steps, nu_c_out and nu_lr_scaling only apply to arch='nugpt' (got arch={mcfg.arch!r}): "
                       "remove them")
        if mcfg.arch != "gpt" and {cfg.geometry_attn, cfg.geometry_mlp} != {"none"}:
            out.append(f"arch={mcfg.arch!r} keeps its matrices on spheres itself: use geometry_attn=none and "
                       "geometry_mlp=none with it")
    return out + multilevel.problems(cfg, None if mcfg is None else mcfg.n_layer)


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
        self.device, self.device_type = device, torch.device(device).type  # cuda | mps | cpu
        if self.ddp:
            backend = cfg.backend if cfg.backend != "auto" else ("nccl" if self.device_type == "cuda" else "gloo")
            dist.init_process_group(backend=backend, **self.restart_store())
        self.master = self.rank == 0

    def restart_store(self):
        """init_process_group's store after torchrun restarted the group (--max_restarts): torchrun's store (its agent
        hosts it) keeps the last group's keys, whose dead addresses gloo would dial (connection refused), so each
        restart gets keys of its own (a prefix); {} otherwise (the default env:// store)."""
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        if restart == "0" or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
            return {}
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), self.world, is_master=False)
        return dict(store=dist.PrefixStore(f"restart{restart}", store), rank=self.rank, world_size=self.world)

    @contextlib.contextmanager
    def master_first(self):
        """Rank 0 runs the block first (e.g. a download into a shared cache), the other ranks after it."""
        if self.ddp and not self.master:
            dist.barrier()
        yield
        if self.ddp and self.master:
            dist.barrier()

    def mean(self, value):
        """All-rank mean of a float."""
        if not self.ddp:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.item() / self.world

    def any(self, flag):
        """Whether flag is set on any rank (an all-reduce and a host sync under DDP)."""
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


def auto_init(cfg):
    """cfg with init_from=auto[:X] decided: resume when out_dir holds ckpt.pt (a restarted or requeued run goes on
    with its own command), else X (scratch when not given; e.g. auto:gpt2 for a fine-tune)."""
    kind, _, then = cfg.init_from.partition(":")
    if kind != "auto":
        return cfg
    return replace(cfg, init_from="resume" if (Path(cfg.out_dir) / checkpoint.LATEST).is_file() else then or "scratch")


def init_pretrained(cfg, raw, d):
    """(GPT-2 as our GPT, its config) for init_from a GPT-2 name or directory, with the model keys the run gives
    (dropout, a smaller block_size; pretrained.py refuses the rest); rank 0 loads (downloads) first."""
    asked = {k: v for k, v in {**PRESETS.get(raw.get("variant"), {}), **raw}.items() if k in GPTConfig.__dataclass_fields__}
    with d.master_first():
        if "vocab_size" in asked and asked["vocab_size"] != pretrained.model_config(cfg.init_from).vocab_size:
            raise ValueError(f"vocab_size={asked['vocab_size']} is not {cfg.init_from}'s vocabulary: padded ids would "
                             "get logit 0 and nothing masks them; remove vocab_size (GPT-2 keeps its own)")
        model = pretrained.load_gpt2(cfg.init_from, **asked)
    return model, model.config


def init_model(cfg, mcfg, raw, d):
    """(model, checkpoint or None, train config, model config) for init_from scratch | resume | GPT-2 | a checkpoint.
    Resuming takes the run's saved config, with the given keys on top; model keys must not change."""
    if cfg.init_from == "scratch":
        return GPT(mcfg), None, cfg, mcfg
    if pretrained.source(cfg.init_from):
        model, mcfg = init_pretrained(cfg, raw, d)
        return model, None, cfg, mcfg
    resume = cfg.init_from == "resume"
    path = Path(cfg.out_dir) / checkpoint.LATEST if resume else Path(cfg.init_from)
    best = Path(cfg.out_dir) / checkpoint.BEST
    fix = (f"resume from the best checkpoint instead (cp {best} {path}), or train anew with --init_from=scratch"
           if resume and best.is_file() else "train anew with --init_from=scratch" if resume else "check --init_from")
    ckpt = checkpoint.load(path, fix)
    if resume:
        if ckpt.get("format") != checkpoint.FORMAT:
            raise ValueError(f"{path} is not a checkpoint of train.py: start from it with --init_from={path}")
        system = {"device": cfg.device, "backend": cfg.backend}  # where to run is not part of the run
        cfg, mcfg = resolve({**raw, "init_from": "resume"}, {**ckpt["config"], **ckpt["model_args"], **system})
    saved = asdict(GPTConfig(**ckpt.get("model_args", {})))
    asked = set(saved) if resume else set(raw) | set(PRESETS.get(raw.get("variant"), {}))
    differ = sorted(k for k in asked & set(saved) if k != "dropout" and saved[k] != getattr(mcfg, k))
    if differ:
        details = ", ".join(f"{k}: checkpoint {saved[k]!r} vs config {getattr(mcfg, k)!r}" for k in differ)
        raise ValueError(f"checkpoint {path} has a different model config ({details}): drop these keys or train anew")
    model = GPT(GPTConfig(**{**saved, "dropout": mcfg.dropout}))
    model.load_state_dict(GPT.from_checkpoint(ckpt).state_dict())
    return model, ckpt, cfg, model.config


class Stop:
    """SIGTERM/SIGINT set a flag (while entered); the loop finishes its step (under DDP: steps on to the next log
    step, where the ranks agree), saves a checkpoint and exits 0."""

    def __init__(self):
        self.requested, self.previous = False, {}

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
    """The generators a step draws from: the CPU's and the device's (cuda, mps)."""
    state = {"torch": torch.get_rng_state()}
    if device_type in ("cuda", "mps"):
        state[device_type] = getattr(torch, device_type).get_rng_state()
    return state


def set_rng_state(state, device_type):
    torch.set_rng_state(state["torch"])
    if device_type in state:
        getattr(torch, device_type).set_rng_state(state[device_type])


@torch.no_grad()
def evaluate(model, loaders, iters, ctx, dist_, level=0, offset=0):
    """Mean loss over the same `iters` batches of each split every time, averaged over ranks (level, offset: a
    coarse network of multilevel.py); a progress bar on a terminal."""
    out = {}
    model.eval()
    bar = tqdm(total=iters * len(loaders), desc="eval", unit="batch", leave=False, disable=not sys.stdout.isatty())
    for split, loader in loaders.items():
        loader.reset()
        total = 0.0
        for _ in range(iters):
            x, y = loader.next_batch()
            with ctx:
                total += model(x, y, level=level, offset=offset)[1].item()
            bar.update()
        out[split] = dist_.mean(total / iters)
    bar.close()
    model.train()
    return out


def short_commit(sha):
    return "none" if not sha else sha[:12] + ("-dirty" if sha.endswith("-dirty") else "")


class Trainer:
    """One training run: __init__ sets it up (model, data, optimizers, the resumed state, the run log), step() is one
    optimizer step, checkpoint() saves, run() is the loop."""

    def __init__(self, cfg, mcfg, raw=None):
        self.init_given, cfg = cfg.init_from, auto_init(cfg)  # auto decided first: the run header records both
        self.d = d = Dist(cfg)
        utils.setup_runtime(d.device, seed=cfg.seed, tf32=cfg.tf32)  # same seed on every rank: identical weights
        model, ckpt, cfg, mcfg = init_model(cfg, mcfg, raw or {}, d)
        dtype = utils.resolve_dtype(cfg.dtype, d.device)
        self.cfg = cfg = replace(cfg, dtype=dtype, muon_dtype=muon_dtype(cfg.muon_dtype, d.device))  # saved resolved
        self.mcfg, self.out_dir = mcfg, Path(cfg.out_dir)
        if cfg.gradient_accumulation_steps % d.world:
            raise ValueError(f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} must be divisible by "
                             f"the number of processes ({d.world})")
        self.accum = cfg.gradient_accumulation_steps // d.world
        self.raw_model = model.to(d.device)
        self.ctx = utils.autocast(d.device, dtype)
        self.data_dir = cfg.data_dir or str(Path(__file__).parent / "data" / cfg.dataset)
        self.T, B = mcfg.block_size, cfg.batch_size
        loader_args = dict(rank=d.rank, world_size=d.world, device=d.device, vocab_size=mcfg.vocab_size)
        self.train_loader = BinLoader(self.data_dir, "train", B, self.T, order=cfg.data_order, seed=cfg.seed,
                                      **loader_args)
        self.eval_loaders = {s: BinLoader(self.data_dir, s, B, self.T, order="epoch", seed=cfg.seed + 1,
                                          **loader_args) for s in ("train", "val")}
        if cfg.init_from == "scratch" and mcfg.shortlist:
            model.set_shortlist(token_counts(self.data_dir))  # the K-1 most frequent train tokens
        self.optimizers = build_optimizers(model, cfg, d.device_type)
        self.scaler = torch.amp.GradScaler(d.device_type, enabled=dtype == "float16")
        self.it, self.best_val, self.last_val, self.flops, self.elapsed0 = 0, float("inf"), None, 0, 0.0
        self.resumed_at = None  # the iteration of the checkpoint resumed from, evaluated there already or not
        self.multilevel = multilevel.Multilevel(cfg, self.optimizers, model.parameters())
        if cfg.init_from == "resume":
            self.load_state(ckpt)
        elif ckpt is None:
            torch.manual_seed(cfg.seed + d.rank)  # dropout differs across ranks
        if cfg.init_from != "resume":
            init_manifolds(self.optimizers)  # manifold_muon: fresh weights onto their manifolds
        self.model = model
        if cfg.compile:
            self.model = torch.compile(model)  # one graph per multilevel (level, offset)
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit,
                                                       multilevel.recompile_limit(cfg.multilevel_levels))
        if d.ddp:
            self.model = DDP(self.model, device_ids=[d.local_rank] if d.device_type == "cuda" else None,
                             find_unused_parameters=multilevel.enabled(cfg))  # coarse levels skip layers
        self.tokens_per_iter = cfg.gradient_accumulation_steps * B * self.T
        self.peak = utils.peak_flops(d.device, d.world)
        self.evaluated, self.last_eval_seconds = -1, 0.0  # the iteration of the last evaluation and its duration
        self.bar, self.it_start = None, self.it  # the progress bar until the next log line; the first iteration run
        self.start = time.time()
        self.lock = utils.DirLock(self.out_dir) if d.master else None  # a second run on this out_dir is refused
        try:
            self.log = self.open_log() if d.master else None
        except BaseException:
            self.lock.release()
            raise
        self.loss_sum = torch.zeros((), device=d.device)  # summed micro-step losses since the last log line
        # time, iteration and FLOPs at the last log line; seconds since then that are not step time (evaluations)
        self.t_log, self.it_log, self.f_log, self.paused = time.time(), self.it, self.flops, 0.0

    def load_state(self, ckpt):
        """Optimizer, scaler, counters, data position and RNG of a train.py checkpoint (resume)."""
        for opt, state in zip(self.optimizers, ckpt["optimizer"]):
            opt.load_state_dict(state)
        self.scaler.load_state_dict(ckpt["scaler"])
        self.it, self.best_val, self.last_val = ckpt["iter_num"], ckpt["best_val_loss"], ckpt.get("last_val_loss")
        self.flops, self.elapsed0 = ckpt.get("flops", 0), ckpt.get("elapsed", 0.0)
        self.resumed_at = (ckpt["iter_num"], ckpt["evaluated"])
        self.multilevel.load_state_dict(ckpt.get("multilevel", {}))
        rank_state = ckpt["rank_states"][self.d.rank % len(ckpt["rank_states"])]
        self.train_loader.load_state_dict(rank_state["loader"])
        set_rng_state(rank_state["rng"], self.d.device_type)

    def open_log(self):
        """The run directory (stale temporaries removed, config.json) and its run log, with the header record."""
        cfg, mcfg, model = self.cfg, self.mcfg, self.raw_model
        self.out_dir.mkdir(parents=True, exist_ok=True)
        checkpoint.clean_stale(self.out_dir)
        resolved = {**asdict(cfg), **asdict(mcfg)}
        utils.atomic_write_text(json.dumps(resolved, indent=2) + "\n", self.out_dir / "config.json")
        wandb = dict(project=cfg.wandb_project, name=cfg.wandb_run_name, config=resolved) if cfg.wandb_log else None
        log = RunLog(self.out_dir, resume_at=self.it if self.resumed_at else None, wandb=wandb)
        head = dict(config=asdict(cfg), model_args=asdict(mcfg), num_params=model.num_params(),
                    num_params_no_pos_v0=model.num_params(positions=False, v0_tables=False),
                    flops_per_token=model.flops_per_token(), tokens_per_iter=self.tokens_per_iter,
                    git_commit=utils.git_commit(), versions=utils.versions(), device=utils.device_name(self.d.device),
                    world_size=self.d.world, argv=sys.argv, init_from=dict(given=self.init_given, resolved=cfg.init_from))
        log.log("header", **self.stamp(), **head)
        c = self.mcfg
        name = cfg.variant or ("gpt" if c.arch == "gpt" else c.arch)
        print(f"{name} ({c.arch}, {c.update} + {c.split}) | {c.n_layer} layers, {c.n_head} heads, width {c.n_embd}, "
              f"context {self.T}, vocab {c.vocab_size:,}{f' (shortlist {c.shortlist:,})' if c.shortlist else ''} | "
              f"{head['num_params'] / 1e6:.2f}M parameters")
        print(f"{self.tokens_per_iter:,} tokens/step (batch {cfg.batch_size} x {self.T} x {cfg.gradient_accumulation_steps}"
              f" accumulation) | {cfg.max_iters:,} steps | {cfg.optimizer} | {model.flops_per_token(self.T) / 1e6:.1f} "
              f"MFLOPs/token")
        print(f"{head['device']} x{self.d.world} | {cfg.dtype}{' | compiled' if cfg.compile else ''} | git "
              f"{short_commit(head['git_commit'])}")
        n_train, n_val = (len(self.eval_loaders[s].data) for s in ("train", "val"))
        print(f"data {self.data_dir}: {n_train:,} train / {n_val:,} val tokens ({cfg.data_order} order) | writing "
              f"{self.out_dir}/ (config.json: the full config, metrics.jsonl, ckpt.pt)"
              + (f" | resuming at step {self.it}" if self.resumed_at else f" | from {cfg.init_from}"
                 if cfg.init_from != "scratch" else "")
              + (f" (init_from={self.init_given})" if self.init_given != cfg.init_from else ""))
        return log

    def stamp(self):
        """The fields every record starts with."""
        return dict(iter=self.it, tokens=self.it * self.tokens_per_iter, flops=self.flops, time=self.elapsed())

    def elapsed(self):
        """Seconds of training, across resumes."""
        return time.time() - self.start + self.elapsed0

    def checkpoint(self, names):
        """Save the full state as out_dir/names[0] (and links to it under the other names); every rank takes part."""
        states = self.d.gather({"loader": self.train_loader.state_dict(), "rng": rng_state(self.d.device_type)})
        if self.d.master:
            checkpoint.save({"format": checkpoint.FORMAT, "model_args": asdict(self.mcfg),
                             "model": self.raw_model.state_dict(), "optimizer": [o.state_dict() for o in self.optimizers],
                             "scaler": self.scaler.state_dict(), "iter_num": self.it, "best_val_loss": self.best_val,
                             "evaluated": self.evaluated == self.it, "last_val_loss": self.last_val,
                             "flops": self.flops, "elapsed": self.elapsed(), "config": asdict(self.cfg),
                             "multilevel": self.multilevel.state_dict(), "rank_states": states}, self.out_dir, names)

    def eval_and_save(self):
        """Evaluate (and save ckpt.pt, and best.pt when the validation loss improved)."""
        cfg, t0 = self.cfg, time.time()
        losses = evaluate(self.model, self.eval_loaders, cfg.eval_iters, self.ctx, self.d)
        if not math.isfinite(losses["val"]):
            raise FloatingPointError(f"val loss is {losses['val']} at iter {self.it}: stopping without saving; "
                                     f"the last good checkpoint in {self.out_dir} is kept")
        self.last_val, self.evaluated = losses["val"], self.it
        improved = losses["val"] < self.best_val
        self.best_val = min(self.best_val, losses["val"])
        coarse = {}
        if cfg.eval_coarse:  # the coarse networks at the same weights: how coherent they are with the fine one
            coarse = {f"1.{o}": evaluate(self.model, self.eval_loaders, cfg.eval_iters, self.ctx, self.d, 1, o)
                      for o in (0, 1)}
            coarse = dict(coarse_train_loss={k: v["train"] for k, v in coarse.items()},
                          coarse_val_loss={k: v["val"] for k, v in coarse.items()})
        seconds = self.last_eval_seconds = time.time() - t0
        if self.d.master:
            print(f"step {self.it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f} (eval {seconds:.1f} s)")
            self.log.log("eval", **self.stamp(), train_loss=losses["train"], val_loss=losses["val"],
                         lr=cfg.learning_rate * lr_factor(self.it, cfg), eval_seconds=seconds,
                         coef=self.raw_model.coefficients(), **coarse)
        if not cfg.eval_only and self.it > 0:
            if improved:
                self.checkpoint((checkpoint.LATEST, checkpoint.BEST))
            elif cfg.always_save_checkpoint or self.it >= cfg.max_iters:
                self.checkpoint((checkpoint.LATEST,))

    def spectral(self):
        self.eval_loaders["val"].reset()
        rec = spectral_record(self.raw_model, self.eval_loaders["val"].next_batch()[0], self.ctx,
                              self.cfg.geometry_attn, self.cfg.geometry_mlp, self.optimizers)
        self.log.log("spectral", **self.stamp(), **rec)

    def backward(self, batches, level, offset):
        """Forward and backward of the (level, offset) network over the micro-batches; their summed loss."""
        total = torch.zeros((), device=self.d.device)
        for micro, (x, y) in enumerate(batches):
            if self.d.ddp:
                self.model.require_backward_grad_sync = micro == len(batches) - 1  # all-reduce on the last only
            with self.ctx:
                _, loss = self.model(x, y, level=level, offset=offset)
            total += loss.detach()
            self.scaler.scale(loss / len(batches)).backward()
        return total

    def mean_grad(self, sets, level, offset):
        """{param: gradient} of the (level, offset) network averaged over sets of micro-batches (FLOPs counted);
        the gradients are cleared afterwards."""
        params = list(self.raw_model.parameters())
        for batches in sets:
            self.backward(batches, level, offset)
        out = {p: p.grad / len(sets) for p in params if p.grad is not None}
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        self.flops += len(sets) * self.tokens_per_iter * self.raw_model.flops_per_token(self.T, level)
        return out

    def next_batches(self):
        """This rank's micro-batches of one step."""
        return [self.train_loader.next_batch() for _ in range(self.accum)]

    def step(self):
        """One optimizer step: forward/backward of the multilevel schedule's network over the micro-batches (their
        summed loss kept for the log), clipping, the update; FLOPs of the active depth."""
        set_lr(self.optimizers, lr_factor(self.it, self.cfg))
        level, offset = self.multilevel.before_step(self.it)
        batches = self.next_batches()
        self.multilevel.before_backward(batches, self.next_batches, self.mean_grad)
        self.loss_sum += self.backward(batches, level, offset)
        self.multilevel.on_grads()
        if self.cfg.grad_clip:
            for opt in self.optimizers:
                self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), self.cfg.grad_clip)
        for opt in self.optimizers:
            self.scaler.step(opt)
        self.scaler.update()
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        self.raw_model.normalize_weights()  # nGPT: back onto the sphere (no-op for GPT)
        self.it += 1
        self.flops += self.tokens_per_iter * self.raw_model.flops_per_token(self.T, level)  # the active depth's

    def log_train(self):
        """The train record: mean loss, step time and throughput since the last one (evaluations excluded)."""
        cfg, steps = self.cfg, self.it - self.it_log
        loss = self.d.mean(self.loss_sum.item() / (steps * self.accum))
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at iter {self.it}: stopping without saving; the last good "
                                     f"checkpoint in {self.out_dir} is kept (lower learning_rate or check the data)")
        dt = time.time() - self.t_log - self.paused
        tok_s, mfu = steps * self.tokens_per_iter / dt, (self.flops - self.f_log) / dt / self.peak if self.peak else None
        lr = cfg.learning_rate * lr_factor(self.it - 1, cfg)
        if self.d.master:
            left = cfg.max_iters - self.it
            evals_left = cfg.max_iters // cfg.eval_interval - self.it // cfg.eval_interval + (
                cfg.max_iters % cfg.eval_interval != 0)  # the last step always evaluates
            eta = left * dt / steps + evals_left * self.last_eval_seconds
            print(f"iter {self.it}/{cfg.max_iters}: loss {loss:.4f}, {1000 * dt / steps:.1f} ms/iter, {tok_s:,.0f} tok/s, "
                  f"lr {lr:.2e}" + (f", mfu {100 * mfu:.2f}%" if mfu else "") + f", ETA {utils.duration(eta)}")
            self.log.log("train", **self.stamp(), loss=loss, lr=lr, tok_per_s=tok_s, ms_per_iter=1000 * dt / steps,
                         mfu=mfu, level=self.multilevel.level[0], offset=self.multilevel.level[1])
        self.loss_sum.zero_()
        self.t_log, self.it_log, self.f_log, self.paused = time.time(), self.it, self.flops, 0.0

    def timed(self, fn):
        """Run fn; its time does not count as step time."""
        t0 = time.time()
        fn()
        self.paused += time.time() - t0

    def run(self, stop):
        """The loop: evaluate/save on schedule, step, log; a signal saves and stops; a non-finite loss writes a
        diverged final record and raises. Returns a summary dict."""
        try:
            interrupted = self.loop(stop)
        except FloatingPointError as e:  # a divergence is a result: recorded, then reported as an error
            if self.d.master:
                self.log.log("final", **{**self.stamp(), "time": self.elapsed()}, iters=self.it, diverged=True,
                             diverged_at=self.it, error=str(e), best_val_loss=self.best_val, final_val_loss=None,
                             wall_time=self.elapsed())
            raise
        summary = {"interrupted": True} if interrupted else {}
        summary.update(iters=self.it, best_val_loss=self.best_val, final_val_loss=self.last_val,
                       wall_time=self.elapsed())
        if self.d.master:
            self.log.log("final", **{**self.stamp(), "time": summary["wall_time"]}, **summary)
            print(f"done: best val loss {self.best_val:.4f}, final val loss {self.last_val}, "
                  f"{summary['wall_time']:.0f}s")
        return summary

    def loop(self, stop):
        """Evaluate/save on schedule, step, log, until max_iters (returns False) or a signal (saves, returns True)."""
        cfg = self.cfg
        while True:
            done_before = self.resumed_at == (self.it, True)  # this evaluation is in the checkpoint resumed from
            if cfg.spectral_interval and self.it % cfg.spectral_interval == 0 and self.d.master and not done_before:
                self.timed(self.spectral)
            if (self.it % cfg.eval_interval == 0 or self.it >= cfg.max_iters or cfg.eval_only) and not done_before:
                self.timed(self.eval_and_save)
            if cfg.eval_only or self.it >= cfg.max_iters:
                return False
            if self.bar is None and self.d.master and sys.stdout.isatty():  # the steps until the next log line
                n = min(cfg.log_interval - self.it % cfg.log_interval, cfg.max_iters - self.it)
                first = cfg.compile and self.it == self.it_start
                self.bar = tqdm(total=n, desc="compiling, step" if first else "step", unit="step", leave=False)
            self.step()
            if self.bar is not None:
                self.bar.update()
            log_due = self.it % cfg.log_interval == 0 or self.it % cfg.eval_interval == 0 or self.it >= cfg.max_iters
            stopping = self.stop_agreed(stop, log_due)
            if log_due or stopping:
                if self.bar is not None:
                    self.bar.close()
                    self.bar = None
                self.log_train()
            if stopping:
                self.checkpoint((checkpoint.LATEST,))
                if self.d.master:
                    print(f"stopped by signal at iter {self.it}; checkpoint saved, resume with --init_from=resume")
                return True

    def stop_agreed(self, stop, log_due):
        """Whether to stop after this step: a signal seen by any rank. One process looks at every step; DDP ranks
        agree at log steps only (all at the same iteration), where the loss's host sync happens anyway: an
        all-reduce and .item() every step would stop the CPU from queueing work ahead of the GPU."""
        if self.d.ddp and not log_due:
            return False
        return self.d.any(stop.requested)

    def close(self):
        if self.log is not None:
            self.log.close()
        if self.lock is not None:
            self.lock.release()
        if self.d.ddp and dist.is_initialized():
            dist.destroy_process_group()


def train(cfg, mcfg, raw=None, stop=None):
    """Run training; returns a summary dict (best/final val loss, iterations, wall time; eval_tasks' results)."""
    trainer = Trainer(cfg, mcfg, raw)
    try:
        summary = trainer.run(stop or Stop())
    finally:
        trainer.close()
    if cfg.eval_tasks and trainer.d.master and not summary.get("interrupted") and (trainer.out_dir / "best.pt").exists():
        import evaluation  # lm-evaluation-harness is imported only when asked for

        summary["eval"] = evaluation.evaluate(evaluation.EvalConfig(
            out_dir=str(trainer.out_dir), tasks=cfg.eval_tasks, device=trainer.d.device, dtype=trainer.cfg.dtype))
        print(evaluation.summary(summary["eval"]))
    return summary


def main(argv=None):
    try:
        with Stop() as stop:
            train(*load_config(sys.argv[1:] if argv is None else argv), stop=stop)
    except (ConfigError, DataError, FileNotFoundError, ValueError, ImportError, checkpoint.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except FloatingPointError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
