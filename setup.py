"""Build script for rnn_ext: one extension, rnn_ext._C.

The C++ CPU sources are always built. The CUDA sources are added when torch
is a CUDA build and nvcc is found, or when FORCE_CUDA=1 (which works on a
machine without a GPU).

Environment knobs:
  FORCE_CUDA=1            build the CUDA sources even without a visible GPU
  RNN_EXT_CUDA_ARCHS      CUDA architectures, e.g. "8.0;9.0+PTX" (default)
  NVCC_THREADS            nvcc --threads (default 4)
  MAX_JOBS                parallel compile jobs (torch's default otherwise)
  DEBUG=1                 -O0 -g instead of -O3
  RNN_EXT_QUICK_CPU_BUILD=1  the fused CPU kernels unoptimised (18 s to compile instead
                          of 4 minutes): for a GPU check on a short lease, never for CPU use
"""
import glob
import os
import shutil

from setuptools import setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _find_nvcc():
    if CUDA_HOME and os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc")):
        return os.path.join(CUDA_HOME, "bin", "nvcc")
    return shutil.which("nvcc")


def build_config():
    force_cuda = os.environ.get("FORCE_CUDA", "0") == "1"
    torch_has_cuda = torch.version.cuda is not None
    nvcc = _find_nvcc()
    build_cuda = torch_has_cuda and nvcc is not None and (force_cuda or CUDA_HOME is not None)
    if force_cuda and not build_cuda:
        raise RuntimeError(
            "FORCE_CUDA=1 needs a CUDA build of torch and nvcc "
            f"(torch.version.cuda={torch.version.cuda}, nvcc={nvcc}, CUDA_HOME={CUDA_HOME})"
        )
    archs = os.environ.get("RNN_EXT_CUDA_ARCHS", "8.0;9.0+PTX")
    return {
        "torch": torch.__version__,
        "torch.version.cuda": torch.version.cuda,
        "FORCE_CUDA": force_cuda,
        "CUDA_HOME": CUDA_HOME,
        "nvcc": nvcc,
        "build_cuda": build_cuda,
        "cuda_archs": archs if build_cuda else None,
        "debug": os.environ.get("DEBUG", "0") == "1",
        "nvcc_threads": os.environ.get("NVCC_THREADS", "4"),
        "max_jobs": os.environ.get("MAX_JOBS"),
        "quick_cpu_build": os.environ.get("RNN_EXT_QUICK_CPU_BUILD", "0") == "1",
    }


def get_extensions():
    cfg = build_config()
    print("rnn_ext build configuration:")
    for key, value in cfg.items():
        print(f"  {key:20s} = {value}")

    opt = ["-O0", "-g"] if cfg["debug"] else ["-O3"]
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    # -fno-trapping-math: no FP-exception semantics to keep, lets the pointwise loops vectorise;
    # -ffp-contract=fast: a*b+c becomes one FMA (ISO C++ mode turns that off);
    # -falign-loops=64: code placement, found by measurement, not understood. With the forward's
    # 64 KB chunks (fused_cpu.cpp) and without it, LSTM inference at T=100 B=1 I=H=128, 2 threads,
    # ran 0.226-0.232 ms against 0.183-0.199 for the build before (alternated processes, AMD Zen 5
    # VM); with it 0.183-0.198, results bitwise the same. Time B=1 again after editing the kernels.
    extra = {"cxx": opt + ["-fopenmp", "-fno-trapping-math", "-ffp-contract=fast", "-falign-loops=64"]}
    define_macros = [("RNN_EXT_QUICK_CPU_BUILD", None)] if cfg["quick_cpu_build"] else []
    ext_cls = CppExtension
    if cfg["build_cuda"]:
        # torch reads the architecture list from TORCH_CUDA_ARCH_LIST.
        os.environ["TORCH_CUDA_ARCH_LIST"] = cfg["cuda_archs"]
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")) + glob.glob(os.path.join("csrc", "cuda", "*.cpp")))
        extra["nvcc"] = opt + ["--threads", cfg["nvcc_threads"], "--expt-relaxed-constexpr"]
        define_macros.append(("RNN_EXT_WITH_CUDA", None))
        ext_cls = CUDAExtension
    return [
        ext_cls(
            "rnn_ext._C",
            sources,
            include_dirs=[os.path.join(ROOT, "csrc")],
            extra_compile_args=extra,
            extra_link_args=["-fopenmp"],
            define_macros=define_macros,
        )
    ]


# Metadata lives in pyproject.toml; this file only describes the extension.
setup(
    ext_modules=get_extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
