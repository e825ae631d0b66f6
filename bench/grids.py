"""Benchmark grids: the shapes, dtypes and cells to run, and how long to time each point.

Shapes are (T, B, I, H): sequence length, batch, input size, hidden size, for one
layer, one direction (DESIGN.md §4). The timing budget is per grid point and
covers both sides (torch.nn and rnn_ext) together.
"""
from __future__ import annotations

from dataclasses import dataclass

CELLS = ("lstm", "gru", "rnn")
# The single-step modules (nn.LSTMCell, nn.GRUCell, nn.RNNCell): one call is one step (T = 1).
STEP_CELLS = ("lstm_cell", "gru_cell", "rnn_cell")
MODES = ("inference", "training")


@dataclass(frozen=True)
class Point:
    T: int
    B: int
    I: int  # noqa: E741  (the usual name for the input size)
    H: int
    dtype: str = "float32"  # a torch dtype name

    @property
    def label(self) -> str:
        return f"T{self.T} B{self.B} I{self.I} H{self.H} {_SHORT.get(self.dtype, self.dtype)}"


_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float64": "fp64"}


@dataclass(frozen=True)
class Grid:
    name: str
    points: tuple[Point, ...]
    cells: tuple[str, ...]
    device: str            # default device
    budget_s: float        # timing time per point, both sides together (at least min_rounds are always run)
    round_s: float         # CPU: blocked_autorange min_run_time per side per round; GPU: target length of one timed block
    min_rounds: int = 3    # alternating rounds (one measurement of each side per round)
    max_rounds: int = 50
    peak_s: float = 1.0    # time spent measuring the GEMM peak (per dtype)
    n_inputs: int = 3      # pre-generated random inputs, rotated between calls


def _p(T, B, I, H, dtype="float32"):  # noqa: E741
    return Point(T, B, I, H, dtype)


_CPU_SHAPES = ((100, 32, 256, 256), (100, 1, 128, 128), (50, 64, 512, 512), (200, 8, 64, 128), (1000, 4, 32, 64))
_GPU_SHAPES = ((100, 64, 512, 512), (1024, 16, 768, 768), (1000, 1, 256, 256), (100, 256, 1024, 1024))

GRIDS: dict[str, Grid] = {
    # One tiny shape, few repeats: checks the tool end to end (tests/test_bench_smoke.py).
    "smoke": Grid("smoke", (_p(8, 2, 8, 16),), CELLS, "cpu",
                  budget_s=0.05, round_s=0.01, min_rounds=3, max_rounds=5, peak_s=0.05, n_inputs=2),
    # `make bench`: the first two cpu-grid shapes, LSTM and GRU; a few minutes on 2 cores.
    "quick": Grid("quick", tuple(_p(*s) for s in _CPU_SHAPES[:2]), ("lstm", "gru"), "cpu",
                  budget_s=8.0, round_s=0.4, peak_s=1.0),
    # `make bench-full`: the cpu grid of DESIGN.md §4.
    "cpu": Grid("cpu", tuple(_p(*s) for s in _CPU_SHAPES), CELLS, "cpu",
                budget_s=20.0, round_s=1.0, peak_s=2.0),
    # The cpu grid's shapes in bfloat16, and its first two in float16 (torch.nn's float16 CPU LSTM
    # takes seconds a training call there): the half-precision CPU layers (float32 kernels inside).
    "cpu-half": Grid("cpu-half", tuple(_p(*s, "bfloat16") for s in _CPU_SHAPES)
                     + tuple(_p(*s, "float16") for s in _CPU_SHAPES[:2]), CELLS, "cpu",
                     budget_s=8.0, round_s=0.4, peak_s=1.0),
    # The cell modules, one step a call (T = 1): a call's fixed costs against torch.nn's
    # ATen ops, from a batch of one (overhead) to 64 rows (the products).
    "cpu-cells": Grid("cpu-cells", tuple(_p(1, b, 256, 256) for b in (1, 8, 64)), STEP_CELLS, "cpu",
                      budget_s=6.0, round_s=0.3, peak_s=1.0),
    # The gpu grid of DESIGN.md §4, each shape in fp32 and bf16.
    "gpu": Grid("gpu", tuple(_p(*s, dt) for s in _GPU_SHAPES for dt in ("float32", "bfloat16")), CELLS, "cuda",
                budget_s=3.0, round_s=0.02, min_rounds=5, max_rounds=200, peak_s=1.0),
    # `make gpu-check`: fastrnns default in fp32 and the FlashRNN-like shape in bf16.
    "gpu-quick": Grid("gpu-quick", (_p(*_GPU_SHAPES[0], "float32"), _p(*_GPU_SHAPES[1], "bfloat16")),
                      ("lstm", "gru"), "cuda",
                      budget_s=2.0, round_s=0.02, min_rounds=5, max_rounds=200, peak_s=1.0),
}


def gates(cell: str, H: int) -> int:
    """Rows of W_ih / W_hh: 4H (LSTM: i, f, g, o), 3H (GRU: r, z, n), H (Elman RNN)."""
    return {"lstm": 4, "gru": 3, "rnn": 1}[cell.removesuffix("_cell")] * H


def flops(cell: str, mode: str, p: Point) -> float:
    """Matrix-multiply FLOPs of one call, for one layer and one direction.

    Forward: every step multiplies [x_t, h_{t-1}] (B x (I+H)) by the stacked gate
    weights ((I+H) x G), so a forward pass is 2*T*B*(I+H)*G FLOPs with G = 4H
    (LSTM), 3H (GRU) or H (RNN). The pointwise gate math is not counted.
    Training (forward + backward): backward does two GEMMs of the same size per
    step (input/state gradients and weight gradients), so ≈ 3x forward.
    """
    fwd = 2.0 * p.T * p.B * (p.I + p.H) * gates(cell, p.H)
    return 3.0 * fwd if mode == "training" else fwd
