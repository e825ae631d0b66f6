"""The persistent tensor-core forward's shared-memory plan (csrc/cuda/persistent_common.cuh): host and
kernel agree on where h_{t-1} starts and on when one pass takes the whole batch, for every shape,
dtype, cell and units-per-block choice on three shared-memory sizes (tests/persistent_smem_check.cu,
host code built with nvcc and run on the CPU; skipped without nvcc)."""
import os
import subprocess

import pytest

from bench import step_probe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_and_run(tmp_path, include_dir):
    nvcc = step_probe.find_nvcc()
    if nvcc is None:
        pytest.skip("no nvcc")
    exe = tmp_path / "persistent_smem_check"
    src = os.path.join(REPO, "tests", "persistent_smem_check.cu")
    subprocess.run([nvcc, "-std=c++17", "-O1", "--expt-relaxed-constexpr", f"-I{include_dir}", src, "-o", str(exe)],
                   check=True, timeout=300)
    return subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)


def test_host_and_kernel_agree_on_the_shared_memory(tmp_path):
    proc = build_and_run(tmp_path, os.path.join(REPO, "csrc"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 failures" in proc.stdout and "whole-batch passes" in proc.stdout, proc.stdout


def test_the_check_sees_a_kernel_that_takes_the_pass_without_room(tmp_path):
    """Not blind: a kernel that took the whole-batch pass wherever the batch is staged (not where
    its launch has the pass's larger partial tiles too) fails it."""
    (tmp_path / "cuda").mkdir()
    for name in os.listdir(os.path.join(REPO, "csrc")):  # csrc's folders, cuda/ with one header replaced
        src = os.path.join(REPO, "csrc", name)
        if os.path.isdir(src) and name != "cuda":
            os.symlink(src, tmp_path / name)
    for name in os.listdir(os.path.join(REPO, "csrc", "cuda")):
        os.symlink(os.path.join(REPO, "csrc", "cuda", name), tmp_path / "cuda" / name)
    header = tmp_path / "cuda" / "persistent_common.cuh"
    text = header.read_text()
    wrong = text.replace("return B > kWholeBatchFrom && dynamic_bytes >= whole_batch_bytes(L, B, elem);",
                         "return B > kWholeBatchFrom && dynamic_bytes - L.fixed() >= round_up(B, kTile) * L.ld * elem;")
    assert wrong != text
    header.unlink()
    header.write_text(wrong)
    proc = build_and_run(tmp_path, str(tmp_path))
    assert proc.returncode == 1 and "FAIL" in proc.stdout, proc.stdout + proc.stderr
