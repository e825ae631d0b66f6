"""Is a CUDA call bound by the host or by the GPU? For torch.nn (cuDNN) and each rnn_ext path.

Per call, median over repeats, each alternating between the variants:
- wall: from the call to the end of its GPU work (synchronised before and after);
- host: from the call until it returns, without waiting for the GPU (the time the CPU
  spends issuing it; when the GPU waits on it, host is close to wall);
- GPU: the sum of the durations of the CUDA kernels it ran, and how many (torch.profiler,
  one call);
- the host calls (ATen ops, CUDA runtime) with the most self time in one profiled call.
A call is host-bound where host ~ wall and GPU < wall: then fewer or cheaper launches per
step (direct cuBLAS calls, fewer ATen ops, CUDA graphs) would help, and faster kernels would
not. The rnn_ext GEMM path takes a cuBLAS product and a pointwise kernel per step.

    python -m bench.host_overhead [--points 100x64x512x512xfloat32,...] [--repeats 15] [--out FILE]

`--device cpu` runs one tiny point on the CPU (no GPU column): a check of the script itself
(tests/test_bench_smoke.py).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from .report import write_lines
from .units_sweep import parse_point
from .workloads import _call, make_inputs, make_pair

# GEMM-path points of the gpu grid (where rnn_ext measured slower than cuDNN) and the #5 target shape
POINTS = ("100x64x512x512xfloat32", "100x64x512x512xbfloat16", "100x256x1024x1024xbfloat16",
          "1024x16x768x768xfloat32")
PATHS = ("gemm", "auto")


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device):
    """(wall, host) seconds of one call."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    t1 = time.perf_counter()
    _sync(device)
    return time.perf_counter() - t0, t1 - t0


def _gpu_kernels(fn):
    """(total seconds, count) of the GPU activities (kernels, copies) of one call, from the profiler."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return sum(e.time_range.elapsed_us() for e in kernels) * 1e-6, len(kernels)


def _top_host_ops(fn, n=4):
    """The n ATen/runtime calls with the most host (self CPU) time in one call, as
    'name self-us x count'; the profiler's own cost inflates each a little."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities) as prof:
        fn()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:n]
    return "; ".join(f"{e.key} {e.self_cpu_time_total:.0f}us x{e.count}" for e in rows)


def _with_path(path, fn):
    def call():
        if path is None:
            os.environ.pop("RNN_EXT_CUDA_PATH", None)
        else:
            os.environ["RNN_EXT_CUDA_PATH"] = path
        return fn()
    return call


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", default=",".join(POINTS), help="comma-separated TxBxIxHxdtype points")
    ap.add_argument("--cells", default="lstm")
    ap.add_argument("--modes", default="inference,training")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", type=Path, help="also write the table here")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = ap.parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    points = [parse_point(t) for t in args.points.split(",")] if device == "cuda" else [parse_point("5x2x4x6xfloat32")]
    where = torch.cuda.get_device_name(0) if device == "cuda" else "the CPU (a check of the script)"
    lines = [f"# Host or GPU bound: {where}, torch {torch.__version__}", "",
             "| cell | mode | T, B, I=H | dtype | variant | wall ms | host ms | GPU kernels ms | kernels | "
             "wall µs/step | host / wall | top host calls (self time, count) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for p in points:
        for cell in args.cells.split(","):
            for mode in args.modes.split(","):
                training = mode == "training"
                base, ext = make_pair(cell, p, device)
                inputs = make_inputs(cell, p, device, 3, training)
                variants = {"torch.nn": _with_path(None, lambda: _call(base, inputs[0], training))}
                for path in PATHS:
                    variants[f"rnn_ext {path}"] = _with_path(path, lambda: _call(ext, inputs[0], training))
                for fn in variants.values():  # warm-up
                    fn(), fn()
                times = {name: [] for name in variants}
                for _ in range(args.repeats):
                    for name, fn in variants.items():
                        times[name].append(_timed(fn, device))
                for name, fn in variants.items():
                    wall = statistics.median(w for w, _ in times[name])
                    host = statistics.median(h for _, h in times[name])
                    gpu, count = _gpu_kernels(fn) if device == "cuda" else (float("nan"), 0)
                    row = (f"| {cell} | {mode} | {p.T}, {p.B}, {p.H} | {p.dtype} | {name} | {wall * 1e3:.3f} | "
                           f"{host * 1e3:.3f} | {gpu * 1e3:.3f} | {count} | {wall / p.T * 1e6:.1f} | "
                           f"{host / wall:.2f} | {_top_host_ops(fn)} |")
                    lines.append(row)
                    print(row, flush=True)
    os.environ.pop("RNN_EXT_CUDA_PATH", None)
    write_lines(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
