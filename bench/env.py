"""The environment a result was measured in: versions, device, threads, build."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import torch

import rnn_ext

REPO = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _has_kernel(op: str, key: str) -> bool:
    try:
        return bool(getattr(torch.ops.rnn_ext, op).default.has_kernel_for_dispatch_key(key))
    except (AttributeError, RuntimeError):
        return False


def load_average() -> str:
    """Other processes' load: on a shared machine, the first thing to check when numbers look off."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def cuda_kernels_registered() -> bool:
    return _has_kernel("lstm_forward", "CUDA")


def keep_heap() -> str:
    """glibc only: stop returning freed heap memory to the OS (M_TRIM_THRESHOLD) and serve
    blocks up to 32 MB, glibc's largest setting, from the heap (M_MMAP_THRESHOLD), for the
    whole process, so both sides reuse warm pages instead of faulting fresh ones in. Returns
    what was set, for the header."""
    import ctypes
    import ctypes.util
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    mmap_max = 32 << 20
    if not (libc.mallopt(m_trim_threshold, 2**31 - 1) and libc.mallopt(m_mmap_threshold, mmap_max)):
        raise RuntimeError("--keep-heap: mallopt refused (not glibc?)")
    return "kept: glibc M_TRIM_THRESHOLD=2^31-1, M_MMAP_THRESHOLD=32 MB (--keep-heap)"


def collect(grid: str, device: str) -> dict:
    """Everything a result needs to be read later; `device` is "cpu" or "cuda"."""
    env = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "grid": grid,
        "device": device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "rnn_ext": f"{rnn_ext.__version__} (git {_git()})",
        "rnn_ext CUDA kernels": cuda_kernels_registered(),
        "threads": torch.get_num_threads(),
        "cpu": f"{_cpu_model()}, {os.cpu_count()} logical CPUs",
        "load average (1/5/15 min) at the start": load_average(),
        "oneDNN (mkldnn) enabled": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
    }
    busy = os.getloadavg()[0]
    if busy > max(0.5, 0.1 * (os.cpu_count() or 1)):
        env["warning"] = (f"load average {busy:.1f} on {os.cpu_count()} CPUs before the run: other processes are busy, "
                          "timings will be noisy (use a quiet machine; --threads 1 suffers least from contention)")
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update({
            "gpu": f"{props.name}, {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB",
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "tf32 (matmul / cudnn)": f"{torch.backends.cuda.matmul.allow_tf32} / {torch.backends.cudnn.allow_tf32}",
            # rnn_ext's rule (csrc/matmul.h, float32_as_tf32), nn.LSTM's: cuDNN's setting where cuDNN runs
            "float32 as TF32 in nn.LSTM and rnn_ext": (
                torch.backends.cudnn.allow_tf32 if torch.backends.cudnn.enabled and torch.backends.cudnn.is_available()
                else torch.backends.cuda.matmul.allow_tf32),
        })
    return env


def header_lines(env: dict) -> list[str]:
    return [f"- {k}: {v}" for k, v in env.items()]
