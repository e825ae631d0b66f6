"""Side-by-side timing of two callables, and the GEMM peak.

Both sides are timed in alternating rounds (A B, then B A, ...) in one
process, so drift and noise from other processes hit both alike. A round
measures each side once:
- CPU: `torch.utils.benchmark.Timer.blocked_autorange(min_run_time=round_s)`,
  with the Timer's thread count set to torch's current one (its default is 1).
- CUDA: one block of `number` back-to-back calls between two CUDA events,
  then a synchronisation; `number` is chosen after warm-up so a block lasts
  about round_s.
Rounds continue until `min_rounds` are done and `budget_s` has passed (or
`max_rounds`). All per-call times of a side are pooled; we report the median,
the interquartile range and min/max.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils import benchmark


@dataclass
class Stats:
    """Per-call times in seconds."""
    median: float
    q25: float
    q75: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, times: list[float]) -> "Stats":
        ts = sorted(times)
        if len(ts) >= 2:
            q25, _, q75 = statistics.quantiles(ts, n=4, method="inclusive")
        else:
            q25 = q75 = ts[0]
        return cls(statistics.median(ts), q25, q75, ts[0], ts[-1], len(ts))

    @property
    def iqr(self) -> float:
        return self.q75 - self.q25


def _cpu_timer(fn: Callable[[], object]) -> benchmark.Timer:
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())


def _cuda_block(fn: Callable[[], object], number: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(number):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / number


def measure_pair(fns: dict[str, Callable[[], object]], device: str, *, budget_s: float, round_s: float,
                 min_rounds: int, max_rounds: int) -> dict[str, Stats]:
    """Time each callable in `fns` (already warmed up), alternating between them."""
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    if device == "cuda":
        torch.cuda.synchronize()
        number = {k: max(1, math.ceil(round_s / _cuda_block(fns[k], 1))) for k in names}
        one_round = {k: (lambda k=k: times[k].append(_cuda_block(fns[k], number[k]))) for k in names}
    else:
        timers = {k: _cpu_timer(fns[k]) for k in names}
        one_round = {k: (lambda k=k: times[k].extend(timers[k].blocked_autorange(min_run_time=round_s).times))
                     for k in names}
    start = time.perf_counter()
    for r in range(max_rounds):
        if r >= min_rounds and time.perf_counter() - start >= budget_s:
            break
        for k in (names if r % 2 == 0 else reversed(names)):
            one_round[k]()
    return {k: Stats.of(v) for k, v in times.items()}


def _onednn_mm(a: torch.Tensor, b: torch.Tensor) -> Callable[[], object] | None:
    """a @ b through oneDNN's matmul (torch's mkldnn::_linear_pointwise op, the
    product rnn_ext's CPU float32 path uses), or None where torch lacks it."""
    if a.device.type != "cpu" or a.dtype != torch.float32 or not torch.backends.mkldnn.is_available():
        return None
    try:
        op = torch.ops.mkldnn._linear_pointwise
        bt = b.t().contiguous()
        op(a, bt, None, "none", [], "")
    except (AttributeError, RuntimeError):
        return None
    return lambda: op(a, bt, None, "none", [], "")


def gemm_peak(device: str, dtype: torch.dtype, seconds: float) -> tuple[float, str]:
    """GFLOP/s of a square matmul (n=2048 on CPU, 8192 on GPU) in `dtype`: the
    fastest timed block, and which library reached it.

    A peak is the best the machine reaches, so this takes the fastest block rather than the
    median: on a shared machine the median of a short probe understates it (and then a kernel
    seems to run above 100% of "peak"). On the CPU in float32 it takes the faster of torch.mm
    (MKL's sgemm, which on AMD CPUs reaches about half the rate) and oneDNN's matmul, each timed
    for `seconds`: the peak is the best GEMM torch offers on the device, not one library's.
    """
    n = 8192 if device == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    fns = {"torch.mm": lambda: torch.mm(a, b)}
    dnn = _onednn_mm(a, b)
    if dnn is not None:
        fns["oneDNN matmul"] = dnn
    best = {}
    for name, fn in fns.items():
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
            number = max(1, math.ceil(0.02 / _cuda_block(fn, 1)))
            ts, start = [], time.perf_counter()
            while len(ts) < 5 or time.perf_counter() - start < seconds:
                ts.append(_cuda_block(fn, number))
            t = min(ts)
        else:
            t = min(_cpu_timer(fn).blocked_autorange(min_run_time=seconds).times)
        best[name] = 2.0 * n ** 3 / t / 1e9
    name = max(best, key=best.__getitem__)
    return best[name], name
