"""speedup.png: grouped bars of rnn_ext's speedup over torch.nn, one panel per mode."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter  # noqa: E402

from .grids import CELLS, MODES, STEP_CELLS, Point  # noqa: E402

_TICKS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 5, 10, 20, 50, 100]
_COLORS = {"lstm": "#1f77b4", "gru": "#ff7f0e", "rnn": "#2ca02c"}


def speedup_png(rows: list[dict], path: Path, title: str) -> None:
    ok = [r for r in rows if r["status"] == "ok"]
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)] or list(MODES)
    cells = [c for c in CELLS + STEP_CELLS if any(r["cell"] == c for r in rows)]
    points = list(dict.fromkeys(Point(r["T"], r["B"], r["I"], r["H"], r["dtype"]) for r in rows))
    fig, axes = plt.subplots(len(modes), 1, figsize=(max(6.0, 1.1 * len(points) * len(cells) + 2), 3.6 * len(modes)),
                             squeeze=False)
    width = 0.8 / max(1, len(cells))
    for ax, mode in zip(axes[:, 0], modes):
        all_ys: list[float] = []
        for j, cell in enumerate(cells):
            xs, ys = [], []
            for i, p in enumerate(points):
                for r in ok:
                    if r["mode"] == mode and r["cell"] == cell and \
                            Point(r["T"], r["B"], r["I"], r["H"], r["dtype"]) == p:
                        xs.append(i + (j - (len(cells) - 1) / 2) * width)
                        ys.append(r["speedup"])
            # bars grow from the 1x line: up where rnn_ext is faster, down where slower
            bars = ax.bar(xs, [y - 1.0 for y in ys], width, bottom=1.0, label=cell.upper(), color=_COLORS.get(cell))
            ax.bar_label(bars, labels=[f"{y:.2f}" for y in ys], fontsize=7, padding=1)
            all_ys.extend(ys)
        ax.axhline(1.0, color="black", linewidth=1, linestyle="--")
        ax.set_yscale("log")
        lo, hi = min(all_ys + [1.0]) / 1.3, max(all_ys + [1.0]) * 1.3
        ax.set_ylim(lo, hi)
        ax.yaxis.set_major_locator(FixedLocator([t for t in _TICKS if lo <= t <= hi]))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.grid(axis="y", alpha=0.3)
        ax.set_xticks(range(len(points)))
        ax.set_xticklabels([f"T{p.T} B{p.B}\nI{p.I} H{p.H}\n{p.dtype}" for p in points], fontsize=8)
        ax.set_ylabel("speedup over torch.nn")
        ax.set_title(mode)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
