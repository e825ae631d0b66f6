"""Smoke tests for examples/: each script runs with --quick in a subprocess,
exits 0, prints its `metric:` line and saves a PNG. Together well under 2 min."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

CASES = [
    # (script, extra args, metric the output must report, extra regex the output must match)
    ("hello.py", ["--impl", "rnn_ext"], "accuracy", r"final: hihell -> ihello"),
    ("hello.py", ["--impl", "torch"], "accuracy", r"final: hihell -> ihello"),
    ("hello.py", ["--exercise", "12-1"], "max_achievable_accuracy", r"metric: max_achievable_accuracy=0\.6667"),
    ("names.py", [], "test_accuracy", None),
    ("charlm.py", [], "val_perplexity", r"--- sample"),
    ("seq2seq.py", [], "exact_match", None),
    ("handwritten_cells.py", [], "max_abs_diff", r"all hand-written cells match"),
]


def _run(script: str, args: list[str], out_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["MPLBACKEND"] = "Agg"
    cmd = [sys.executable, str(EXAMPLES / script), "--quick", "--out", str(out_dir), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("script,args,metric,pattern", CASES,
                         ids=[f"{c[0]}{''.join(c[1])}" for c in CASES])
def test_example_quick(script, args, metric, pattern, tmp_path):
    proc = _run(script, args, tmp_path)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert re.search(rf"^metric: {metric}=[-+0-9.e]+$", proc.stdout, re.M), proc.stdout[-3000:]
    assert re.search(r"^time: train=[0-9.]+s$", proc.stdout, re.M) or script == "handwritten_cells.py"
    if pattern:
        assert re.search(pattern, proc.stdout, re.M), proc.stdout[-3000:]
    pngs = list(tmp_path.glob("*.png"))
    assert pngs and all(p.stat().st_size > 1000 for p in pngs), pngs
