"""Build and run bench/step_probe.cu: what one step of a persistent recurrence pays to
synchronise on this GPU (grid.sync, a counter barrier, grid.sync with the h_t exchange through
L2, thread-block cluster barriers on sm_90+), a markdown table of microseconds per step.

    python -m bench.step_probe [--out FILE] [--arch 90] [--compile-only]

nvcc comes from $CUDA_HOME/bin or PATH. --compile-only builds for --arch (default: this GPU's,
else 90) and runs nothing: a check of the source on a machine without a GPU
(tests/test_bench_smoke.py).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "step_probe.cu"


def find_nvcc() -> str | None:
    home = os.environ.get("CUDA_HOME")
    if home and (Path(home) / "bin" / "nvcc").exists():
        return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def gpu_arch() -> str | None:
    """This GPU's compute capability as '90', or None without one."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return f"{major}{minor}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="also write the table here")
    ap.add_argument("--arch", help="compute capability to build for, e.g. 90 (default: this GPU's)")
    ap.add_argument("--compile-only", action="store_true", help="build, run nothing")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds the probe may run (default 30)")
    args = ap.parse_args(argv)
    nvcc = find_nvcc()
    if nvcc is None:
        print("step_probe: nvcc not found (set CUDA_HOME or PATH)", file=sys.stderr)
        return 2
    arch = args.arch or gpu_arch()
    if arch is None and not args.compile_only:
        print("step_probe: no CUDA device", file=sys.stderr)
        return 2
    arch = arch or "90"
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "step_probe"
        build = subprocess.run([nvcc, "-O3", "-std=c++17", f"-arch=sm_{arch}", str(SOURCE), "-o", str(exe)],
                               capture_output=True, text=True)
        if build.returncode != 0:
            print(f"step_probe: nvcc failed:\n{build.stdout}{build.stderr}", file=sys.stderr)
            return 1
        if args.compile_only:
            print(f"step_probe: built for sm_{arch}")
            return 0
        try:
            run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=args.timeout)
            stdout, stderr, rc = run.stdout, run.stderr, run.returncode
        except subprocess.TimeoutExpired as e:  # keep the rows it printed (a probe that hangs)
            stdout = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            stderr, rc = f"step_probe: timed out after {args.timeout} s\n", 124
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    if args.out and stdout:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(stdout)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
