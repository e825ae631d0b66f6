"""Small helpers shared by the examples: arguments, implementation choice,
seeding, progress bars, timing and loss plots.

Every example takes the same core flags:

    --cell {rnn,lstm,gru}     which recurrent cell to use
    --impl {rnn_ext,torch}    rnn_ext's fused kernels, or torch.nn's modules
    --device cpu|cuda         where to train (default cpu)
    --seed N                  seeds Python, NumPy and torch
    --out DIR                 where PNGs go (default examples/out/)
    --quick                   a few-second smoke run for CI
    --threads N               torch.set_num_threads (default 1, see below)

`--threads` defaults to 1: these models are small (matrices of 64-256 rows),
and on a shared 2-core machine a second OpenMP thread mostly waits at
barriers; we measured 10x slowdowns with 2 threads under load.

`--impl` only swaps the module classes: rnn_ext.LSTM/GRU/RNN/...Cell take
exactly torch.nn's arguments, hold the same parameters and initialise them
identically under a seed, so the rest of each script is plain PyTorch.

Each script prints machine-readable lines that the tests look for:

    metric: <name>=<value>
    time: train=<seconds>s
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
import torch

EXAMPLES_DIR = Path(__file__).resolve().parent
# `python examples/x.py` from a source checkout: find rnn_ext next to examples/
# (appended, so an installed rnn_ext or PYTHONPATH wins).
if str(EXAMPLES_DIR.parent) not in sys.path:
    sys.path.append(str(EXAMPLES_DIR.parent))
DATA_DIR = EXAMPLES_DIR / "data"
DEFAULT_OUT = EXAMPLES_DIR / "out"
CELLS = ("rnn", "lstm", "gru")
IMPLS = ("rnn_ext", "torch")

_LAYER = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
_CELL = {"rnn": "RNNCell", "lstm": "LSTMCell", "gru": "GRUCell"}


# ---------------------------------------------------------------- arguments
def make_parser(description: str, *, cell: str = "gru", seed: int = 0,
                extra_cells: Sequence[str] = ()) -> argparse.ArgumentParser:
    """An ArgumentParser with the flags every example shares; add your own to it."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--cell", choices=CELLS + tuple(extra_cells), default=cell, help="recurrent cell")
    p.add_argument("--impl", choices=IMPLS, default="rnn_ext",
                   help="rnn_ext (fused kernels) or torch (torch.nn modules)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--seed", type=int, default=seed, help="random seed")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for the PNGs")
    p.add_argument("--quick", action="store_true", help="tiny run for CI (a few seconds)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads; 0 keeps torch's default (one per core)")
    return p


def setup(args: argparse.Namespace) -> torch.device:
    """Apply --seed/--threads, check --device, print a one-line summary; returns the device."""
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch.cuda.is_available() is False on this machine")
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"cell={args.cell} impl={args.impl} device={device} seed={args.seed} "
          f"threads={torch.get_num_threads()}{' quick' if args.quick else ''}")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ------------------------------------------------------- implementation choice
def nn_namespace(impl: str):
    """The module that provides LSTM/GRU/RNN/...Cell: `rnn_ext` or `torch.nn`."""
    if impl == "rnn_ext":
        import rnn_ext
        return rnn_ext
    if impl == "torch":
        return torch.nn
    raise ValueError(f"unknown impl {impl!r}; choose from {IMPLS}")


def recurrent_layer(cell: str, impl: str) -> type:
    """rnn_ext.GRU or torch.nn.GRU (etc.) for --cell/--impl."""
    return getattr(nn_namespace(impl), _LAYER[cell])


def recurrent_cell(cell: str, impl: str) -> type:
    """rnn_ext.GRUCell or torch.nn.GRUCell (etc.) for --cell/--impl."""
    return getattr(nn_namespace(impl), _CELL[cell])


# ----------------------------------------------------------- progress, timing
def progress(iterable: Optional[Iterable] = None, **kwargs):
    """A tqdm progress bar on stderr (kept sparse when stderr is not a terminal)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 0.2 if sys.stderr.isatty() else 2.0)
    kwargs.setdefault("disable", os.environ.get("EXAMPLES_NO_TQDM") == "1")
    return tqdm(iterable, **kwargs)


def say(msg: str) -> None:
    """print() that does not tear an active tqdm bar."""
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        tqdm.write(msg, file=sys.stdout)
    else:
        print(msg)
    sys.stdout.flush()


class Timer:
    """`with Timer() as t: ...` then t.seconds; synchronises CUDA at both ends."""

    def __init__(self, device: Optional[torch.device] = None):
        self.device = device
        self.seconds = 0.0

    def _sync(self):
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self):
        self._sync()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self._sync()
        self.seconds = time.perf_counter() - self._t0
        return False


def report(metrics: Mapping[str, float], seconds: Optional[float] = None) -> None:
    """Print the `metric:` and `time:` lines the README and the tests rely on."""
    for name, value in metrics.items():
        print(f"metric: {name}={value:.4f}" if isinstance(value, float) else f"metric: {name}={value}")
    if seconds is not None:
        print(f"time: train={seconds:.1f}s")
    sys.stdout.flush()


# --------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def out_path(args: argparse.Namespace, script: str, what: str) -> Path:
    """examples/out/<script>_<cell>_<impl>_<what>.png"""
    return Path(args.out) / f"{script}_{args.cell}_{args.impl}_{what}.png"


def plot_curves(path: Path, curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
                title: str, xlabel: str = "epoch", ylabel: str = "loss", logy: bool = False) -> Path:
    """Save one line per entry of `curves` (label -> (xs, ys)) to `path`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for label, (xs, ys) in curves.items():
        ax.plot(list(xs), list(ys), label=label, marker="." if len(xs) <= 60 else None)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"saved {path}")
    return path


def plot_confusion(path: Path, matrix: np.ndarray, labels: Sequence[str], *, title: str) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: prediction)."""
    plt = _pyplot()
    m = matrix.astype(float)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if matrix[i, j]:
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"saved {path}")
    return path
