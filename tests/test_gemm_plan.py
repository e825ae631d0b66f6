"""The CUDA path's products (float32, float16, bfloat16) call cuBLAS directly (csrc/cuda/cublas_gemm.cpp); which
operand goes where, transposed or not, with which leading dimension, comes from
csrc/gemm_plan.h. That header is plain C++, so its plans run here on the CPU:
tests/gemm_plan_check.cpp executes 20000 of them through a reference column-major GEMM held to
cuBLAS's argument rules, against the row-major product read through the strides."""
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def compile_and_run(tmp_path, include_dir):
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    exe = tmp_path / "gemm_plan_check"
    src = os.path.join(REPO, "tests", "gemm_plan_check.cpp")
    subprocess.run([cxx, "-O1", "-std=c++17", f"-I{include_dir}", src, "-o", str(exe)], check=True, timeout=120)
    return subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(sys.platform == "win32", reason="builds with a Unix C++ compiler")
def test_gemm_plans_match_the_row_major_product(tmp_path):
    proc = compile_and_run(tmp_path, os.path.join(REPO, "csrc"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "20000 cases" in proc.stdout, proc.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="builds with a Unix C++ compiler")
def test_gemm_plan_check_catches_a_wrong_leading_dimension(tmp_path):
    """The check is not blind: with the transposed operand's ld taken from the wrong stride it fails."""
    with open(os.path.join(REPO, "csrc", "gemm_plan.h")) as f:
        header = f.read()
    wrong = header.replace("o->ld = cols == 1 ? std::max<int64_t>(1, rows) : s1;",
                           "o->ld = cols == 1 ? std::max<int64_t>(1, rows) : s0;")
    assert wrong != header
    (tmp_path / "gemm_plan.h").write_text(wrong)
    proc = compile_and_run(tmp_path, str(tmp_path))
    assert proc.returncode == 1 and "FAIL" in proc.stdout, proc.stdout + proc.stderr
