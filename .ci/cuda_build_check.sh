#!/usr/bin/env bash
# CUDA compile-and-link check for a machine WITHOUT a GPU: installs the CUDA
# build of torch (2.14.1, CUDA 13.0) in its own virtualenv, builds rnn_ext with
# FORCE_CUDA=1 into a scratch copy, and checks that every op has a CUDA kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=$(command -v nvcc || true)
if [ -z "$NVCC" ]; then echo "cuda-build-check: nvcc not found, skipping"; exit 0; fi
# nvcc may be a wrapper script that execs the real toolkit's nvcc
REAL=$(grep -oE '/[^ "]*/bin/nvcc' "$NVCC" 2>/dev/null | head -1 || true)
[ -n "$REAL" ] || REAL=$(readlink -f "$NVCC")
export CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$REAL")")}
VENV=${CUDA_VENV:-.venv-cuda}
VENV=$(mkdir -p "$VENV" && cd "$VENV" && pwd)  # absolute: the build runs elsewhere
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch; assert torch.version.cuda" 2>/dev/null; then
  # An unavailable CUDA torch is an environment problem, not a build failure: skip loudly.
  if ! { python3 -m venv "$VENV" && "$VENV/bin/python" -m pip install -q --upgrade pip &&
         "$VENV/bin/python" -m pip install -q torch==2.14.1 ninja setuptools wheel; }; then
    echo "cuda-build-check: SKIPPED, could not install torch==2.14.1 (CUDA build)"; exit 0
  fi
fi
SP=$("$VENV/bin/python" -c "import site; print(site.getsitepackages()[0])")
export CPATH="$SP/nvidia/cu13/include:$SP/nvidia/cudnn/include${CPATH:+:$CPATH}"
SCRATCH=$(mktemp -d)
cp -r setup.py pyproject.toml csrc rnn_ext "$SCRATCH"/
rm -f "$SCRATCH"/rnn_ext/*.so
echo "cuda-build-check: CUDA_HOME=$CUDA_HOME, building in $SCRATCH"
(cd "$SCRATCH" && FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-2} "$VENV/bin/python" setup.py -q build_ext --inplace)
(cd "$SCRATCH" && "$VENV/bin/python" - <<'PY'
import torch, rnn_ext
ops = ["lstm_forward", "lstm_backward", "gru_forward", "gru_backward", "rnn_forward", "rnn_backward"]
missing = [o for o in ops if not getattr(torch.ops.rnn_ext, o).default.has_kernel_for_dispatch_key("CUDA")]
assert not missing, f"ops without CUDA kernels: {missing}"
print(f"cuda-build-check: OK, torch {torch.__version__}, CUDA kernels registered for {len(ops)} ops")
PY
)
rm -rf "$SCRATCH"
