"""Measure one grid point (cell, mode, shape, dtype) into one result row."""
from __future__ import annotations

import gc
import warnings
from typing import Optional

import torch

from . import timing, workloads
from .grids import Grid, Point, flops

_NN_NAMES = {"lstm_cell": "LSTMCell", "gru_cell": "GRUCell", "rnn_cell": "RNNCell"}

# CSV columns, in order. Times in ms (median, quartiles, extremes over timed blocks).
COLUMNS = [
    "cell", "mode", "T", "B", "I", "H", "dtype", "device", "threads", "baseline",
    "base_ms", "base_q25_ms", "base_q75_ms", "base_min_ms", "base_max_ms", "base_n",
    "ext_ms", "ext_q25_ms", "ext_q75_ms", "ext_min_ms", "ext_max_ms", "ext_n",
    "speedup", "ext_us_per_step", "gflop", "ext_gflops", "base_gflops", "peak_gflops", "ext_pct_peak",
    "base_saved_mb", "ext_saved_mb", "base_peak_mem_mb", "ext_peak_mem_mb", "max_rel_err", "status", "warnings",
]

_MB = 2.0 ** 20


def _mb(nbytes: Optional[int]) -> Optional[float]:
    return None if nbytes is None else nbytes / _MB


def run_point(cell: str, mode: str, p: Point, device: str, grid: Grid, peak_gflops: float) -> dict:
    """One row; Python and torch (TORCH_WARN) warnings raised meanwhile go to its `warnings` column."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        row = _run_point(cell, mode, p, device, grid, peak_gflops)
    msgs = dict.fromkeys(f"{w.category.__name__}: {str(w.message).splitlines()[0][:200]}" for w in caught)
    row["warnings"] = " | ".join(msgs) or None
    return row


def _run_point(cell: str, mode: str, p: Point, device: str, grid: Grid, peak_gflops: float) -> dict:
    training = mode == "training"
    row = dict.fromkeys(COLUMNS)
    row.update(cell=cell, mode=mode, T=p.T, B=p.B, I=p.I, H=p.H, dtype=p.dtype, device=device,
               threads=torch.get_num_threads(), baseline=f"nn.{_NN_NAMES.get(cell, cell.upper())}", gflop=flops(cell, mode, p) / 1e9,
               peak_gflops=peak_gflops, status="ok")
    base = ext = inputs = None
    try:
        base, ext = workloads.make_pair(cell, p, device)
        base.train(training)
        ext.train(training)
        inputs = workloads.make_inputs(cell, p, device, grid.n_inputs, training)
        if device == "cuda":  # first calls allocate and pick algorithms; the probe then sees the steady state
            for m in (base, ext):
                workloads.step_fn(m, inputs, training)()
        pb = workloads.probe(base, inputs[0], training, device, detect_backend=True)
        pe = workloads.probe(ext, inputs[0], training, device)
        row["baseline"] += f" ({pb.backend})"
        row["max_rel_err"] = workloads.max_rel_err(pb.outputs, pe.outputs)
        row.update(base_saved_mb=_mb(pb.saved_bytes), ext_saved_mb=_mb(pe.saved_bytes),
                   base_peak_mem_mb=_mb(pb.peak_mem_bytes), ext_peak_mem_mb=_mb(pe.peak_mem_bytes))
        del pb, pe

        stats = timing.measure_pair(
            {"base": workloads.step_fn(base, inputs, training), "ext": workloads.step_fn(ext, inputs, training)},
            device, budget_s=grid.budget_s, round_s=grid.round_s,
            min_rounds=grid.min_rounds, max_rounds=grid.max_rounds)
        for side, s in stats.items():
            row.update({f"{side}_ms": s.median * 1e3, f"{side}_q25_ms": s.q25 * 1e3, f"{side}_q75_ms": s.q75 * 1e3,
                        f"{side}_min_ms": s.min * 1e3, f"{side}_max_ms": s.max * 1e3, f"{side}_n": s.n})
        b, e = stats["base"].median, stats["ext"].median
        row["speedup"] = b / e
        row["ext_us_per_step"] = e * 1e6 / p.T
        row["ext_gflops"] = row["gflop"] / e
        row["base_gflops"] = row["gflop"] / b
        row["ext_pct_peak"] = 100.0 * row["ext_gflops"] / peak_gflops if peak_gflops else None
    except Exception as exc:  # one failing point must not lose the rest of the run
        msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        row["status"] = f"error: {type(exc).__name__}: {msg}"
    finally:
        del base, ext, inputs
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return row
