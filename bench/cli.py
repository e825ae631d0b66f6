"""`python -m bench`: parse arguments, run the grid, write the outputs."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from . import env as envmod
from . import plot, report, timing
from .grids import CELLS, GRIDS, MODES, STEP_CELLS
from .runner import run_point

RESULTS = Path(__file__).resolve().parent / "results"


def _list(allowed):
    def parse(text: str) -> list[str]:
        items = [t.strip().lower() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}; got {text!r}")
        return items
    return parse


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=(
        "Time torch.nn LSTM/GRU/RNN against rnn_ext side by side and write results.csv, results.md, speedup.png."))
    ap.add_argument("--grid", choices=list(GRIDS), default="quick",
                    help="shapes to run: " + "; ".join(f"{g.name}: {len(g.points)} shape(s), {','.join(g.cells)}"
                                                       for g in GRIDS.values()))
    ap.add_argument("--cells", type=_list(CELLS + STEP_CELLS),
                    help="comma-separated subset of lstm,gru,rnn,lstm_cell,gru_cell,rnn_cell (default: the grid's)")
    ap.add_argument("--modes", type=_list(MODES), default=list(MODES), help="inference,training (default: both)")
    ap.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda for gpu grids, cpu otherwise")
    ap.add_argument("--out", type=Path, help="output folder (default: bench/results/<grid>-<device>)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads(N) (default: torch's default)")
    ap.add_argument("--budget", type=float, help="seconds of timing per grid point (default: the grid's)")
    ap.add_argument("--dtypes", type=_list(("float32", "bfloat16", "float16", "float64")),
                    help="comma-separated subset of the grid's dtypes, e.g. float32 (default: all of them)")
    ap.add_argument("--full-float32", action="store_true",
                    help="torch.backends.cudnn.allow_tf32 = False: cuDNN and rnn_ext (which follows nn.LSTM's "
                         "setting) both run float32 in full precision (default: torch's default, TF32 on sm_80+ "
                         "for cuDNN and for rnn_ext's cuBLAS products)")
    ap.add_argument("--keep-heap", action="store_true",
                    help="glibc: keep freed memory in the heap for both sides (no trimming; blocks up to 32 MB "
                         "from the heap), so that page faults of fresh memory drop out of the comparison "
                         "(default: glibc's defaults, what a user gets)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    grid = GRIDS[args.grid]
    if args.budget is not None:
        grid = dataclasses.replace(grid, budget_s=args.budget)
    if args.dtypes:
        points = tuple(p for p in grid.points if p.dtype in args.dtypes)
        if not points:
            print(f"bench: grid {grid.name} has no point in {','.join(args.dtypes)}", file=sys.stderr)
            return 2
        grid = dataclasses.replace(grid, points=points)
    if args.full_float32:
        torch.backends.cudnn.allow_tf32 = False
    device = args.device or grid.device
    cells = args.cells or list(grid.cells)
    out = args.out or RESULTS / f"{grid.name}-{device}"
    if args.threads:
        torch.set_num_threads(args.threads)
    if device == "cuda":
        if not torch.cuda.is_available():
            print("bench: --device cuda but torch sees no CUDA device", file=sys.stderr)
            return 2
        if not envmod.cuda_kernels_registered():
            print("bench: rnn_ext was built without CUDA kernels; rebuild with "
                  "`FORCE_CUDA=1 python setup.py build_ext --inplace` (make gpu-check does)", file=sys.stderr)
            return 2
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    heap = envmod.keep_heap() if args.keep_heap else "glibc defaults"
    env = envmod.collect(grid.name, device)
    env["heap"] = heap
    print(f"# rnn_ext benchmark: grid {grid.name} on {device}")
    print("\n".join(envmod.header_lines(env)))
    dtypes = list(dict.fromkeys(p.dtype for p in grid.points))
    peak_of = {dt: timing.gemm_peak(device, getattr(torch, dt), grid.peak_s) for dt in dtypes}
    peaks = {dt: g for dt, (g, _) in peak_of.items()}
    for dt, (g, src) in peak_of.items():
        print(f"- GEMM peak ({dt}): {g:.1f} GFLOP/s ({src})")
    sys.stdout.flush()

    todo = [(p, c, m) for p in grid.points for c in cells for m in args.modes]
    rows = []
    bar = tqdm(todo, desc=f"bench {grid.name}", unit="pt", file=sys.stderr, dynamic_ncols=True)
    for p, cell, mode in bar:
        bar.set_postfix_str(f"{cell} {mode} {p.label}")
        row = run_point(cell, mode, p, device, grid, peaks[p.dtype])
        if row["status"] != "ok":
            tqdm.write(f"{cell} {mode} {p.label}: {row['status']}", file=sys.stderr)
        rows.append(row)
    bar.close()

    elapsed = time.perf_counter() - start
    env["load average at the end"] = envmod.load_average()
    report.write_csv(rows, out / "results.csv")
    report.write_markdown(env, peak_of, rows, out / "results.md", elapsed)
    peak_from = {dt: src for dt, (_, src) in peak_of.items()}
    (out / "env.json").write_text(json.dumps({**env, "gemm_peak_gflops": peaks, "gemm_peak_from": peak_from},
                                             indent=2, default=str) + "\n")
    plot.speedup_png(rows, out / "speedup.png", f"rnn_ext vs torch.nn: grid {grid.name}, {device}, "
                     f"{env['threads']} threads, torch {env['torch']}")
    print()
    print(report.markdown_table(rows))
    print()
    print("\n".join(report.summary_lines(rows)))
    print(f"\nwrote {out}/results.csv, results.md, env.json, speedup.png ({elapsed:.0f} s)")
    return 0 if all(r["status"] == "ok" for r in rows) else 1
