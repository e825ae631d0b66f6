"""Sweep of the persistent kernels' hidden units per block (RNN_EXT_PERSISTENT_UNITS), on a GPU.

Each block of a persistent kernel owns U hidden units: ceil(H / multiprocessors), so that every
multiprocessor runs a block, but at least 4 by default (RNN_EXT_PERSISTENT_UNITS=N sets that
least to N; N=1 gives plain ceil(H / multiprocessors)). All blocks meet at each step's grid
barrier; fewer, fuller blocks make that barrier cheaper and each block's share of the product
larger. This times
the persistent path (RNN_EXT_CUDA_PATH=persistent) at each U beside torch.nn (cuDNN), all
alternating in one process, and prints a markdown table: per-call median ms, speedup over
torch.nn, whether a persistent kernel ran (else the GEMM path did), and the largest difference
from the default U's results (output, and in training every gradient), relative to the largest
value. Two more variants give the default path choice its crossovers: "GEMM path"
(RNN_EXT_CUDA_PATH=gemm) and, at float32 points, "TF32" (the default U with TF32 allowed: the
tensor-core kernels in TF32), and "cluster" (RNN_EXT_PERSISTENT_CLUSTER=1: the kernels launched as
one thread-block cluster of up to 16 blocks with the cluster's hardware barrier between steps, sm_90+,
H up to 16 x 32 units; the "persistent ran" column then says "cluster" where the cluster kernels ran).
torch.nn and the GEMM path run under torch's TF32 setting for
cuDNN's RNNs (torch.backends.cudnn.allow_tf32, which rnn_ext follows: on by default); the
units-per-block variants at float32 points with it off, so on the scalar kernels in full
float32 as the default choice runs them at B <= 8.

    python -m bench.units_sweep [--units 1,2,8,16,32] [--points 1000x1x256x256xfloat32,...]
                                [--budget 0.5] [--out FILE]

`--device cpu --tiny` runs the script on one small point on the CPU, where the variable does
nothing: a check of the script itself (tests/test_bench_smoke.py).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from .grids import Point
from .report import write_lines
from .timing import measure_pair
from .workloads import _call, make_inputs, make_pair, max_rel_err, step_fn

# The gpu grid's persistent points, smaller H and larger B where the default least of 4 units
# per block takes fewer blocks than ceil(H / multiprocessors) would, and the grid's B=64 bfloat16
# point, where the tensor-core forward takes the whole batch in one pass and the default path
# choice runs the GEMM path (T x B x I x H x dtype).
POINTS = ("1000x1x256x256xfloat32", "1000x1x256x256xbfloat16", "1024x16x768x768xbfloat16",
          "1000x8x256x256xfloat32", "1000x8x128x128xfloat32", "1000x4x64x64xfloat32",
          "1000x32x256x256xbfloat16", "100x64x512x512xbfloat16")


def parse_point(text):
    """'TxBxIxHxdtype' -> Point."""
    T, B, I, H, dtype = text.split("x")
    return Point(int(T), int(B), int(I), int(H), dtype)
TINY = (Point(6, 2, 5, 7, "float32"),)
ENV = "RNN_EXT_PERSISTENT_UNITS"
CLUSTER_ENV = "RNN_EXT_PERSISTENT_CLUSTER"
TF32_DEFAULT = torch.backends.cudnn.allow_tf32


def _with_settings(units, fn, path="persistent", tf32=TF32_DEFAULT, cluster=False):
    """fn, run with RNN_EXT_PERSISTENT_UNITS set to `units` (None: unset, the default U),
    RNN_EXT_CUDA_PATH=path, torch.backends.cudnn.allow_tf32 = tf32 and
    RNN_EXT_PERSISTENT_CLUSTER=1 if cluster."""
    def call():
        if units is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = str(units)
        os.environ[CLUSTER_ENV] = "1" if cluster else "0"
        os.environ["RNN_EXT_CUDA_PATH"] = path
        torch.backends.cudnn.allow_tf32 = tf32
        return fn()
    return call


def _run_profiled(fn, device):
    """fn's result, and whether a kernel named like persistent_* ran in it: "cluster" where
    one launched as a cluster did (*_cluster_kernel), else True or False (None on the CPU, or
    if the profiler saw no kernel)."""
    if device != "cuda":
        return fn(), None
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        out = fn()
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    if not names:
        return out, None
    if any("persistent" in n and "_cluster_kernel" in n for n in names):
        return out, "cluster"
    return out, any("persistent" in n for n in names)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", default="1,2,8,16,32", help="comma-separated N values besides the default")
    ap.add_argument("--points", default=",".join(POINTS), help="comma-separated TxBxIxHxdtype points")
    ap.add_argument("--cells", default="lstm,gru,rnn")
    ap.add_argument("--modes", default="inference,training")
    ap.add_argument("--budget", type=float, default=0.5, help="seconds of timing per point")
    ap.add_argument("--out", type=Path, help="also write the table here")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--tiny", action="store_true", help="one small point instead of the sweep's three")
    args = ap.parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    units = [None] + [int(u) for u in args.units.split(",")]
    label = {u: "default" if u is None else f"N={u}" for u in units}
    where = "the CPU (a check of the script)"
    if device == "cuda":
        p0 = torch.cuda.get_device_properties(0)
        where = f"{p0.name}, {p0.multi_processor_count} SMs, cuDNN {torch.backends.cudnn.version()}"
    lines = [f"# Persistent kernels, units per block: {where}, torch {torch.__version__}", "",
             "| cell | mode | T, B, I=H | dtype | variant | ms | speedup vs torch.nn | persistent ran | max rel diff |",
             "|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for p in TINY if args.tiny else [parse_point(t) for t in args.points.split(",")]:
        for cell in args.cells.split(","):
            for mode in args.modes.split(","):
                training = mode == "training"
                base, ext = make_pair(cell, p, device)
                inputs = make_inputs(cell, p, device, 3, training)
                # name -> how the variant wraps a call: units per block, CUDA path, TF32
                # at float32 points the U variants with TF32 off: the scalar kernels, full float32
                u_tf32 = False if p.dtype == "float32" else TF32_DEFAULT
                variants = {label[u]: dict(units=u, tf32=u_tf32) for u in units}
                variants["GEMM path"] = dict(units=None, path="gemm")
                if p.dtype == "float32":
                    variants["TF32"] = dict(units=None, tf32=True)
                variants["cluster"] = dict(units=None, tf32=u_tf32, cluster=True)
                fns = {"torch.nn": _with_settings(None, step_fn(base, inputs, training))}
                fns.update({name: _with_settings(fn=step_fn(ext, inputs, training), **v) for name, v in variants.items()})
                for fn in fns.values():  # warm-up
                    fn(), fn()
                want = _with_settings(fn=lambda: _call(ext, inputs[0], training), **variants["default"])()
                checks = {}
                for name, v in variants.items():
                    got, ran = _run_profiled(_with_settings(fn=lambda: _call(ext, inputs[0], training), **v), device)
                    checks[name] = (ran, max_rel_err(want, got))
                stats = measure_pair(fns, device, budget_s=args.budget, round_s=0.02, min_rounds=5, max_rounds=200)
                base_ms = stats["torch.nn"].median * 1e3
                for name, st in stats.items():
                    ran, diff = checks.get(name, ("", float("nan")))
                    row = (f"| {cell} | {mode} | {p.T}, {p.B}, {p.H} | {p.dtype} | {name} | {st.median * 1e3:.3f} | "
                           f"{base_ms / (st.median * 1e3):.2f}x | {ran} | {diff:.1e} |")
                    lines.append(row)
                    print(row, flush=True)
    os.environ.pop(ENV, None)
    os.environ.pop(CLUSTER_ENV, None)
    os.environ.pop("RNN_EXT_CUDA_PATH", None)
    torch.backends.cudnn.allow_tf32 = TF32_DEFAULT
    write_lines(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
