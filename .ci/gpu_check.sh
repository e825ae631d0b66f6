#!/usr/bin/env bash
# The GPU check (`make gpu-check`), shaped for a short lease on a GPU machine
# that has torch but no network: builds for this GPU's architecture only, then
# runs in priority order, each stage under a share of one overall deadline so
# that a slow stage cannot eat the ones after it:
#   1. the CUDA tests (pytest -k cuda; in parallel when pytest-xdist is there) on the
#      default path choice (the persistent kernels at small batch, else the GEMM path)
#   2. the quick comparison with cuDNN on the default choice
#   3. the whole gpu grid, inference and training, on the default choice (float32 as TF32 on
#      both sides, torch's default for cuDNN's RNNs, which rnn_ext follows), and whether the
#      GEMM path's calls are host- or GPU-bound (bench/host_overhead.py)
#   4. compute-sanitizer memcheck and racecheck over the persistent kernels' tests
#   5. a sweep of the persistent kernels' hidden units per block and of their launch as one
#      thread-block cluster (bench/units_sweep.py; the cluster launch's tests run in 1 and 4),
#      what a step's synchronisation costs on this GPU (bench/step_probe.cu), and the grid's
#      float32 points in full float32 on both sides (--full-float32)
#   6. the CUDA tests again with RNN_EXT_CUDA_PATH=gemm (the GEMM path everywhere)
#   7. the quick comparison on the GEMM path
# (The GEMM path's kernels have changed least, so they come last.)
# Logs and results go to a work folder; at the end they are packed into
# $OUT/gpu-check.tgz with $OUT/summary.md beside it (OUT defaults to gpu-out/),
# and the summary is printed last. Exit status: 1 if the build or a test stage
# failed or the sanitizer reported errors, else 0. Nothing is installed.
#
# Packages the machine lacks can come as wheels in .whl/ (git-ignored):
#   pip download --no-deps -d .whl expecttest
# Variables: GPU_CHECK_DEADLINE (seconds for everything, default 540),
# RNN_EXT_CUDA_ARCHS (default: this GPU's), PY (default python3), PYTEST_ARGS,
# GPU_CHECK_SKIP (stage names to skip, e.g. "tests-gemm bench-gemm" when a short
# lease should go to the other stages; the summary lists what was skipped).
set -u -o pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1
START=$(date +%s)
DEADLINE=$((START + ${GPU_CHECK_DEADLINE:-540}))
SUMMARY="$WORK/summary.md"
FAILED=0

elapsed() { echo $(($(date +%s) - START)); }
# Seconds a stage may take: its cap, or what is left before the deadline minus a reserve for packing up.
budget() { local left=$((DEADLINE - $(date +%s) - 15)); ((left < $1)) && echo $((left > 0 ? left : 0)) || echo "$1"; }
note() { echo "$*" | tee -a "$SUMMARY"; }
finish() {
  note ""
  note "total: $(elapsed) s"
  tar -czf "$OUT/gpu-check.tgz" --exclude=./site -C "$WORK" . 2>/dev/null
  cp "$SUMMARY" "$OUT/summary.md"
  echo "===================== summary ($OUT/summary.md, logs in $OUT/gpu-check.tgz)"
  cat "$SUMMARY"
  exit "$FAILED"
}
# stage NAME CAP COMMAND...: runs COMMAND under `timeout`, logs to WORK/NAME.log, notes status and time.
stage() {
  local name=$1 cap=$2 t0 rc secs
  shift 2
  if [[ " ${GPU_CHECK_SKIP:-} " == *" $name "* ]]; then note "- $name: skipped (GPU_CHECK_SKIP)"; return 99; fi
  secs=$(budget "$cap")
  if ((secs < 20)); then note "- $name: skipped, the deadline is near"; return 99; fi
  t0=$(date +%s)
  timeout --kill-after=10 "$secs" "$@" >"$WORK/$name.log" 2>&1
  rc=$?
  local status="ok"
  ((rc == 124 || rc == 137)) && status="TIMED OUT after $secs s"
  ((rc != 0 && rc != 124 && rc != 137)) && status="FAILED (rc $rc)"
  note "- $name: $status, $(($(date +%s) - t0)) s"
  return "$rc"
}

note "# rnn_ext GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
note ""
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.total --format=csv,noheader 2>&1 || true; } |
  sed 's/^/gpu: /' | tee -a "$SUMMARY"
if ! "$PY" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  note "no CUDA device visible to $PY's torch: nothing to check"
  FAILED=1
  finish
fi
"$PY" - <<'PY' | tee -a "$SUMMARY"
import torch
p = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
      f"{p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs")
PY
# Wheels carried in .whl/ (packages the machine lacks, e.g. expecttest for
# tests/test_module_db.py): installed into a scratch folder, not the system.
if compgen -G ".whl/*.whl" >/dev/null; then
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" .whl/*.whl >"$WORK/wheels.log" 2>&1; then
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    note "wheels from .whl/: $(cd .whl && ls *.whl | tr '\n' ' ')"
  else
    note "wheels from .whl/: install failed (see wheels.log)"
  fi
fi
ARCH=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
export RNN_EXT_CUDA_ARCHS=${RNN_EXT_CUDA_ARCHS:-$ARCH}
note ""
note "stages (RNN_EXT_CUDA_ARCHS=$RNN_EXT_CUDA_ARCHS):"

# The fused CPU kernels compile unoptimised (RNN_EXT_QUICK_CPU_BUILD): optimised, that one
# file took over 420 s on an H200 machine's core; this check times only the CUDA kernels.
if ! stage build 300 env FORCE_CUDA=1 RNN_EXT_QUICK_CPU_BUILD=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$PY" setup.py -q build_ext --inplace; then
  tail -40 "$WORK/build.log" | tee -a "$SUMMARY"
  FAILED=1
  finish
fi

XDIST=""
"$PY" -c "import xdist" 2>/dev/null && XDIST="-n 8"
# Tests: a junit file each, and the tail of pytest's report in the summary.
tests() {
  local name=$1 cap=$2
  shift 2
  stage "$name" "$cap" env "$@" "$PY" -m pytest -q -p no:cacheprovider $XDIST -k cuda --junitxml="$WORK/$name.xml" \
    ${PYTEST_ARGS:-} tests
  local rc=$?
  ((rc != 0 && rc != 99)) && FAILED=1
  grep -E "^(FAILED|ERROR)" "$WORK/$name.log" | head -20 | tee -a "$SUMMARY"
  tail -1 "$WORK/$name.log" | sed 's/^/  /' | tee -a "$SUMMARY"
}
bench() {
  local name=$1 cap=$2 grid=$3
  shift 3
  stage "$name" "$cap" env "$@" "$PY" -m bench --grid $grid --out "$WORK/$name"
  if [ -f "$WORK/$name/results.md" ]; then cat "$WORK/$name/results.md" >>"$SUMMARY"
  else tail -3 "$WORK/$name.log" | sed 's/^/  /' | tee -a "$SUMMARY"; fi
}

# Why a persistent kernel was not launched, if one was not (RNN_EXT_CUDA_PATH_LOG=1), counted per reason.
declines() {
  grep -h "persistent kernel not launched" "$WORK/$1.log" 2>/dev/null | sort | uniq -c | sort -rn | head -8 | sed 's/^/  /' |
    tee -a "$SUMMARY"
}

tests tests-default 240 -u RNN_EXT_CUDA_PATH RNN_EXT_CUDA_PATH_LOG=1
bench bench-default 90 gpu-quick -u RNN_EXT_CUDA_PATH RNN_EXT_CUDA_PATH_LOG=1
declines bench-default
# The whole gpu grid (B = 1 to 256), inference and training, on the default path choice, 1 s a point.
bench bench-default-grid 150 "gpu --budget 1" -u RNN_EXT_CUDA_PATH
# Host- or GPU-bound: wall, host-issue and GPU kernel time per call, cuDNN and both rnn_ext paths.
stage host-overhead 40 "$PY" -m bench.host_overhead --out "$WORK/host-overhead.md"
[ -f "$WORK/host-overhead.md" ] && cat "$WORK/host-overhead.md" >>"$SUMMARY"
if command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    # The profiler is blind under the sanitizer (CUPTI is taken): the tests then cannot see
    # which kernels ran, so the decline reasons are logged and counted instead.
    stage "sanitizer-$tool" 110 env RNN_EXT_CUDA_PATH_LOG=1 compute-sanitizer --tool "$tool" --error-exitcode 3 \
      --target-processes all "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda_persistent.py \
      -k "7x3x5x20 and (float32 or bfloat16 or (tf32 and GRU))"
    rc=$?
    ((rc != 0 && rc != 99)) && FAILED=1  # 3: the sanitizer found errors; else a test failed or timed out
    grep -E "ERROR SUMMARY|passed|failed" "$WORK/sanitizer-$tool.log" | tail -3 | sed 's/^/  /' | tee -a "$SUMMARY"
    declines "sanitizer-$tool"
  done
fi
# Hidden units per block of the persistent kernels (RNN_EXT_PERSISTENT_UNITS; 1, the default 4
# and 8: the sweep of 2 to 32 on 2026-12-04 chose 4) and the cluster launch
# (RNN_EXT_PERSISTENT_CLUSTER=1), timed beside cuDNN.
stage units-sweep 150 "$PY" -m bench.units_sweep --units 1,8 --out "$WORK/units-sweep.md"
[ -f "$WORK/units-sweep.md" ] && cat "$WORK/units-sweep.md" >>"$SUMMARY"
# What a step's synchronisation costs on this GPU (grid.sync, a counter barrier, the h_t exchange, clusters).
stage step-probe 45 "$PY" -m bench.step_probe --out "$WORK/step-probe.md"
[ -f "$WORK/step-probe.md" ] && cat "$WORK/step-probe.md" >>"$SUMMARY"
# The grid's float32 points with torch.backends.cudnn.allow_tf32 off: cuDNN and rnn_ext in full float32.
bench bench-full-float32 60 "gpu --budget 1 --dtypes float32 --full-float32" -u RNN_EXT_CUDA_PATH
tests tests-gemm 180 RNN_EXT_CUDA_PATH=gemm
bench bench-gemm 60 gpu-quick RNN_EXT_CUDA_PATH=gemm
finish
