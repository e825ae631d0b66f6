"""Tables and files: the markdown table, results.csv and results.md (header, table, summary)."""
from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

from .env import header_lines
from .grids import Point
from .runner import COLUMNS


def _ok(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] == "ok"]


def _label(r: dict) -> str:
    return Point(r["T"], r["B"], r["I"], r["H"], r["dtype"]).label


def _f(x, fmt: str) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _ms(r: dict, side: str) -> str:
    """Median and IQR of one side, e.g. '12.3 (0.4)'."""
    med, q25, q75 = r[f"{side}_ms"], r[f"{side}_q25_ms"], r[f"{side}_q75_ms"]
    if med is None:
        return "–"
    digits = 3 if med < 1 else 2 if med < 10 else 1
    return f"{med:.{digits}f} ({q75 - q25:.{digits}f})"


# A side whose interquartile range exceeds this fraction of its median was disturbed while it
# was timed (other processes, clock changes): its point's speedup is uncertain. One such nn.LSTM
# median (6.15 ms, IQR 3.40, against 1.75-1.90 ms measured alone) once made a 0.93x point read 2.44x.
NOISY_IQR = 0.25


def noisy(r: dict) -> bool:
    """Whether either side's timing spread makes this point's speedup uncertain (see NOISY_IQR)."""
    return any(r[f"{side}_ms"] and (r[f"{side}_q75_ms"] - r[f"{side}_q25_ms"]) > NOISY_IQR * r[f"{side}_ms"]
               for side in ("base", "ext"))


def _pair(a, b, fmt=".1f") -> str:
    return "–" if a is None and b is None else f"{_f(a, fmt)} / {_f(b, fmt)}"


def markdown_table(rows: list[dict]) -> str:
    gpu = any(r["device"] == "cuda" for r in rows)
    head = ["cell", "mode", "T", "B", "I", "H", "dtype", "baseline", "nn ms (IQR)", "rnn_ext ms (IQR)", "speedup",
            "µs/step", "GFLOP/s", "% peak", "saved MB nn / ext"] + (["peak MB nn / ext"] if gpu else []) + \
        ["max rel err"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        if r["status"] != "ok":
            cells = [r["cell"], r["mode"], r["T"], r["B"], r["I"], r["H"], r["dtype"], r["baseline"],
                     r["status"].replace("|", "/")] + [""] * (len(head) - 9)
        else:
            mem = [_pair(r["base_saved_mb"], r["ext_saved_mb"], ".2f")] + \
                ([_pair(r["base_peak_mem_mb"], r["ext_peak_mem_mb"])] if gpu else [])
            cells = [r["cell"], r["mode"], r["T"], r["B"], r["I"], r["H"], r["dtype"], r["baseline"],
                     _ms(r, "base"), _ms(r, "ext"), f"**{r['speedup']:.2f}x**" + (" (noisy)" if noisy(r) else ""),
                     _f(r["ext_us_per_step"], ".1f"),
                     _f(r["ext_gflops"], ".1f"), _f(r["ext_pct_peak"], ".1f"), *mem, _f(r["max_rel_err"], ".1e")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def summary_lines(rows: list[dict]) -> list[str]:
    """Geometric-mean speedup per cell and mode (and dtype where several), the minimum, failures."""
    ok = _ok(rows)
    out = []
    dtypes = sorted({r["dtype"] for r in ok})
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in ok:
        key = (r["cell"], r["mode"]) + ((r["dtype"],) if len(dtypes) > 1 else ())
        groups[key].append(r["speedup"])
    for key, xs in groups.items():
        out.append(f"- geometric mean speedup, {' '.join(key)}: **{_geomean(xs):.2f}x** over {len(xs)} point(s)"
                   f" (min {min(xs):.2f}x)")
    if ok:
        worst = min(ok, key=lambda r: r["speedup"])
        out.append(f"- min speedup: **{worst['speedup']:.2f}x** ({worst['cell']} {worst['mode']} {_label(worst)})")
        slower = [r for r in ok if r["speedup"] < 1.0]
        out.append(f"- points where rnn_ext is slower than torch.nn: {len(slower)} of {len(ok)}")
        shaky = [r for r in ok if noisy(r)]
        if shaky:
            out.append(f"- noisy points (an interquartile range over {NOISY_IQR:.0%} of its median; speedup uncertain,"
                       f" measure again before quoting): {len(shaky)} of {len(ok)}: "
                       + ", ".join(f"{r['cell']} {r['mode']} {_label(r)} {r['speedup']:.2f}x" for r in shaky))
    warned = [r for r in rows if r.get("warnings")]
    if warned:
        out.append(f"- points that raised warnings: {len(warned)} (see the warnings column of results.csv): "
                   + "; ".join(dict.fromkeys(r["warnings"] for r in warned))[:500])
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        out.append(f"- points that failed: {len(failed)} (see the status column)")
    return out


def write_lines(lines: list[str], path: Path | None) -> None:
    """A probe's table (bench.units_sweep, bench.host_overhead) to path, its folder made first;
    nothing without a path."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else f"{r[k]:.6g}" if isinstance(r[k], float) else r[k])
                        for k in COLUMNS})


def write_markdown(env: dict, peaks: dict[str, tuple[float, str]], rows: list[dict], path: Path,
                   elapsed_s: float) -> str:
    mem_note = ("saved MB: unique storages saved for backward by one training forward, parameters and inputs"
                " excluded (torch.autograd.graph.saved_tensors_hooks)")
    if env["device"] == "cuda":
        mem_note += ("; peak MB: torch.cuda.max_memory_allocated during one call, above what was allocated"
                     " before it")
    text = "\n".join([
        f"# rnn_ext benchmark: grid {env['grid']} on {env['device']}",
        "",
        *header_lines(env),
        *[f"- GEMM peak ({dt}): {g:.1f} GFLOP/s ({src}: the fastest block of a square product in this run)"
          for dt, (g, src) in peaks.items()],
        f"- wall time of the run: {elapsed_s:.0f} s",
        "",
        "Times are per call: median over timed blocks, interquartile range in parentheses; both sides measured"
        " side by side, alternating. speedup = nn / rnn_ext. GFLOP/s and % peak are rnn_ext's"
        " (FLOPs = 2·T·B·(I+H)·G forward, G = 4H LSTM, 3H GRU, H RNN; training = 3x forward)."
        f" max rel err = max|nn − rnn_ext| / max|nn| over the output (and every gradient in training). {mem_note}.",
        "",
        markdown_table(rows),
        "",
        "## Summary",
        "",
        *summary_lines(rows),
        "",
    ])
    path.write_text(text)
    return text
