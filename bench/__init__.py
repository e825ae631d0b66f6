"""Benchmark suite for rnn_ext: `python -m bench --grid quick`.

Each grid point times torch.nn (oneDNN / native on CPU, cuDNN on GPU) and the
rnn_ext drop-in with the same weights, side by side in one process, and
writes results.csv, results.md and speedup.png. See `python -m bench --help`.

Modules, one purpose each:
    grids.py      the grids (shapes, dtypes, cells) and their timing budgets
    workloads.py  the module pair, inputs, the timed step, FLOP count, saved-activation bytes
    timing.py     side-by-side alternating timing (torch.utils.benchmark on CPU, CUDA events on GPU), GEMM peak
    env.py        the environment header (versions, device, threads, build)
    runner.py     measures one grid point into one result row
    report.py     markdown table, CSV, results.md with summary
    plot.py       speedup.png
    cli.py        argument parsing and the loop over the grid
    units_sweep.py  a GPU tuning sweep of the persistent kernels' units per block (python -m bench.units_sweep)
"""
