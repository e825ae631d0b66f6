"""The benchmark tool runs end to end: `python -m bench --grid smoke` writes a CSV
with one row per (cell, mode), positive times, the markdown report and the plot.

One thread: the test checks the tool, not speed, and on a busy shared machine
OpenMP threads waiting for each other can make each tiny call take 100+ ms."""
import csv
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

EXPECTED_COLUMNS = {
    "cell", "mode", "T", "B", "I", "H", "dtype", "device", "threads", "baseline", "base_ms", "ext_ms", "speedup",
    "ext_us_per_step", "ext_gflops", "peak_gflops", "ext_pct_peak", "base_saved_mb", "ext_saved_mb",
    "max_rel_err", "status",
}


def test_bench_smoke(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--grid", "smoke", "--out", str(tmp_path), "--threads", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    with open(tmp_path / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert EXPECTED_COLUMNS <= set(reader.fieldnames)
        rows = list(reader)
    assert sorted((r["cell"], r["mode"]) for r in rows) == sorted(
        (c, m) for c in ("lstm", "gru", "rnn") for m in ("inference", "training"))
    for r in rows:
        assert r["status"] == "ok", r
        assert r["device"] == "cpu" and r["dtype"] == "float32"
        for key in ("base_ms", "ext_ms", "speedup", "ext_us_per_step", "ext_gflops", "peak_gflops"):
            assert float(r[key]) > 0, (key, r)
        assert float(r["max_rel_err"]) < 1e-4, r  # same weights, fp32: outputs and gradients agree
        if r["mode"] == "training":
            assert float(r["base_saved_mb"]) > 0 and float(r["ext_saved_mb"]) > 0, r

    assert (tmp_path / "speedup.png").stat().st_size > 0
    md = (tmp_path / "results.md").read_text()
    assert "geometric mean speedup" in md and "torch:" in md
    assert "| lstm | training |" in proc.stdout


def test_bench_keep_heap_is_recorded(tmp_path):
    """--keep-heap sets glibc's heap options (on glibc) and says so in the header of the results."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--grid", "smoke", "--cells", "rnn", "--modes", "inference",
         "--out", str(tmp_path), "--threads", "1", "--keep-heap"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "- heap: kept: glibc M_TRIM_THRESHOLD" in (tmp_path / "results.md").read_text()


def test_bench_dtypes_filter(tmp_path):
    """--dtypes keeps the grid's points of those dtypes; a filter that leaves none is an error
    that says so (the smoke grid is float32 only)."""
    base = [sys.executable, "-m", "bench", "--grid", "smoke", "--cells", "rnn", "--modes", "inference",
            "--threads", "1"]
    proc = subprocess.run(base + ["--out", str(tmp_path / "f32"), "--dtypes", "float32"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(tmp_path / "f32" / "results.csv", newline="") as f:
        assert [r["dtype"] for r in csv.DictReader(f)] == ["float32"]
    proc = subprocess.run(base + ["--out", str(tmp_path / "none"), "--dtypes", "bfloat16"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "grid smoke has no point in bfloat16" in proc.stderr, proc.stderr
    assert not (tmp_path / "none").exists()


def test_host_overhead_smoke(tmp_path):
    """bench/host_overhead.py (host- or GPU-bound, a GPU probe) runs end to end on its CPU check
    point: a row per (mode, variant), positive times, host time within the wall time."""
    out = tmp_path / "host.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.host_overhead", "--device", "cpu", "--repeats", "3", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in out.read_text().splitlines()
            if line.startswith("| lstm")]
    assert sorted((r[1], r[4]) for r in rows) == sorted(
        (m, v) for m in ("inference", "training") for v in ("torch.nn", "rnn_ext gemm", "rnn_ext auto"))
    for r in rows:
        wall, host = float(r[5]), float(r[6])
        assert 0 < host <= wall * 1.01, r


def test_units_sweep_smoke(tmp_path):
    """bench/units_sweep.py (a GPU tuning sweep) runs end to end on its CPU check point: a row per
    (cell, mode, variant; the point is float32, so TF32 is one; the cluster launch another),
    positive times, and every variant's results equal to the default's."""
    out = tmp_path / "sweep.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.units_sweep", "--device", "cpu", "--tiny", "--units", "2,8",
         "--budget", "0.01", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| ") and "---" not in line]
    rows = [[c.strip() for c in r] for r in rows if r[0].strip() != "cell"]
    variants = ("torch.nn", "default", "N=2", "N=8", "GEMM path", "TF32", "cluster")
    assert sorted((r[0], r[1], r[4]) for r in rows) == sorted(
        (c, m, v) for c in ("lstm", "gru", "rnn") for m in ("inference", "training") for v in variants)
    for r in rows:
        assert float(r[5]) > 0, r
        if r[4] != "torch.nn":
            assert float(r[8]) == 0.0, r  # on the CPU the variable changes nothing


def test_report_flags_noisy_points():
    """A point whose timing spread (IQR) is over a quarter of its median on either side is marked
    in the table and listed in the summary; a steady one is not."""
    sys.path.insert(0, str(REPO))
    from bench import report

    def row(base, base_iqr, ext, ext_iqr, T=1000):
        return {"cell": "lstm", "mode": "inference", "T": T, "B": 4, "I": 32, "H": 64, "dtype": "float32",
                "device": "cpu", "baseline": "nn.LSTM (oneDNN)", "status": "ok", "speedup": base / ext,
                "base_ms": base, "base_q25_ms": base - base_iqr / 2, "base_q75_ms": base + base_iqr / 2,
                "ext_ms": ext, "ext_q25_ms": ext - ext_iqr / 2, "ext_q75_ms": ext + ext_iqr / 2,
                "ext_us_per_step": 1.0, "ext_gflops": 1.0, "ext_pct_peak": 1.0, "base_saved_mb": None,
                "ext_saved_mb": None, "max_rel_err": 0.0}

    outlier, steady, ext_side = row(6.15, 3.40, 2.52, 0.32), row(2.41, 0.15, 2.59, 0.13, T=999), \
        row(2.0, 0.1, 1.0, 0.3, T=998)
    assert report.noisy(outlier) and report.noisy(ext_side) and not report.noisy(steady)
    table = report.markdown_table([outlier, steady]).splitlines()
    assert "**2.44x** (noisy)" in table[2] and "(noisy)" not in table[3]
    [line] = [x for x in report.summary_lines([outlier, steady, ext_side]) if "noisy points" in x]
    assert "2 of 3" in line and "T1000" in line and "T998" in line and "T999" not in line


def test_gemm_peak_takes_the_faster_library():
    """On the CPU in float32 the GEMM peak is the faster of torch.mm and oneDNN's matmul (the
    product rnn_ext's CPU path uses; MKL's sgemm reaches about half its rate on AMD CPUs), and
    says which; elsewhere it is torch.mm's. The oneDNN product computes the same matrix."""
    sys.path.insert(0, str(REPO))
    import torch
    from bench import timing

    g, src = timing.gemm_peak("cpu", torch.float32, 0.01)
    assert g > 0 and src in ("torch.mm", "oneDNN matmul")
    g64, src64 = timing.gemm_peak("cpu", torch.float64, 0.01)
    assert g64 > 0 and src64 == "torch.mm"
    a, b = torch.randn(64, 48), torch.randn(48, 32)
    fn = timing._onednn_mm(a, b)
    if torch.backends.mkldnn.is_available():
        assert fn is not None
        torch.testing.assert_close(fn(), a @ b)
    assert timing._onednn_mm(a.double(), b.double()) is None


def test_step_probe_builds():
    """bench/step_probe.cu (a GPU probe of the per-step synchronisation costs) compiles for sm_90
    and sm_80 (its cluster probe is sm_90 code only); skipped without nvcc."""
    sys.path.insert(0, str(REPO))
    from bench import step_probe

    if step_probe.find_nvcc() is None:
        import pytest
        pytest.skip("no nvcc")
    for arch in ("90", "80"):
        proc = subprocess.run([sys.executable, "-m", "bench.step_probe", "--compile-only", "--arch", arch],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and f"built for sm_{arch}" in proc.stdout, proc.stdout + proc.stderr
