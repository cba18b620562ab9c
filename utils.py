"""Runtime helpers shared by train.py, sample.py and bench/: devices, precision, run metadata, safe writes."""

import contextlib
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import torch

# dense bf16 tensor-core peaks (FLOP/s) for MFU; matched against torch.cuda.get_device_name()
PEAK_FLOPS = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H200": 989e12, "H100": 989e12, "GH200": 989e12,
              "B200": 2250e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12, "L40": 181e12, "A6000": 155e12,
              "A10G": 125e12, "L4": 121e12, "RTX 4090": 165e12, "RTX 3090": 71e12}  # the first name contained wins
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device="auto"):
    """'auto' -> cuda if available, else mps (Apple GPUs), else cpu; a named device that is not there is an error."""
    mps = torch.backends.mps.is_available()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available: use --device=cpu")
    if device.startswith("mps") and not mps:
        raise ValueError(f"device={device!r} but MPS (an Apple GPU with a macOS build of torch) is not available: "
                         "use --device=cpu")
    return device


def cpu_flags():
    """The CPU's feature flags from /proc/cpuinfo (x86 'flags', ARM 'Features'); empty where there is none."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def fast_bf16(device):
    """Whether bf16 matmuls run natively: a CUDA GPU of compute capability >= 8.0 (Ampere on), or a CPU with
    AVX512-BF16, AMX or ARM BF16. Elsewhere bf16 is emulated (measured 36x slower than fp32 on an AVX2-only EPYC);
    torch.cuda.is_bf16_supported() counts emulation too (True on a V100 or T4), so it is not asked."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_capability(device)[0] >= 8
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_dtype(dtype, device):
    """'auto' -> bfloat16 where it is native (fast_bf16), else float16 on CUDA and float32 on a CPU; float16 on MPS,
    the half type every Apple GPU runs natively (bfloat16 needs macOS 14)."""
    if dtype == "auto" and device.startswith("mps"):
        return "float16"
    if dtype == "auto":
        return "bfloat16" if fast_bf16(device) else "float16" if device.startswith("cuda") else "float32"
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: choose one of auto, {', '.join(DTYPES)}")
    return dtype


def first_line(e, limit=200):
    """The first line of an exception's message, at most limit characters: for one-line errors."""
    return (str(e).strip().splitlines() or [""])[0][:limit]


def autocast(device, dtype):
    """Mixed-precision context: autocast for bf16/fp16, nothing for fp32."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=DTYPES[dtype])  # cuda, mps or cpu


def setup_runtime(device, seed=None, tf32=True):
    """Fast, reproducible defaults: TF32 matmuls on CUDA (tf32=False: exact fp32), flushed denormals on CPU (they
    slowed matmuls 15x here)."""
    if seed is not None:
        torch.manual_seed(seed)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    else:
        torch.set_flush_denormal(True)


def peak_flops(device, world_size=1):
    """Known bf16 peak FLOP/s of the device times world size, or None (CPU, unknown GPU)."""
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    peak = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
    return None if peak is None else peak * world_size


def device_name(device):
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    isa = torch.backends.cpu.get_cpu_capability() + (", bf16" if fast_bf16(device) else "")
    return f"{model} ({os.cpu_count()} cores, {torch.get_num_threads()} threads, {isa})"


def git_commit():
    """HEAD commit of the repo, with '-dirty' when the tree has changes; None outside git."""
    here = Path(__file__).resolve().parent
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=here, capture_output=True, text=True, timeout=10)  # noqa: E731
        sha = run("rev-parse", "HEAD").stdout.strip()
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return (sha + ("-dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions():
    out = {"python": sys.version.split()[0], "torch": torch.__version__}
    for mod in ("numpy", "tiktoken"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    if torch.cuda.is_available():
        out["cuda"] = torch.version.cuda
    return out


def atomic_write_text(text, path):
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class DirLocked(ValueError):
    """Another live process holds the run directory (a one-line user error)."""


class DirLock:
    """An exclusive lock on a run directory (out_dir/.lock, flock): a second train.py on the same out_dir is refused
    with the holder's pid and command; the lock of a killed process is released by the kernel, so a stale .lock file
    is simply taken over."""

    def __init__(self, out_dir):
        import fcntl
        path = Path(out_dir) / ".lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise DirLocked(f"out_dir {out_dir} is in use by a live run ({holder}): wait for it, stop it, or choose "
                            "another --out_dir") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()} on {socket.gethostname()}: {' '.join(sys.argv)[:200]}")
        self.file.flush()

    def release(self):
        if not self.file.closed:
            self.file.close()  # closing the descriptor drops the flock


def duration(seconds):
    """'1h02m', '4m05s', '12s'."""
    s = int(round(max(0.0, seconds)))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
