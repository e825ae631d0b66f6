"""64-bit index math in the kernels and the recurrence driver.

Three layers of checks:

1. STATIC GUARD (always runs, no memory needed): the C++/CUDA sources that do
   pointer and index arithmetic (csrc/cpu/cells_cpu.cpp, csrc/cuda/cells_cuda.cu,
   csrc/common/cell_steps.h, csrc/recurrence.cpp) declare no 32-bit (or
   narrower) integer variables except a reviewed allowlist (gate loops bounded
   by 4, the float32 exponent bit trick, the CUDA block size, ...); every
   size/stride field of the step structs is int64_t; the CUDA grid-stride loop
   widens blockIdx/blockDim/gridDim to int64 before multiplying. This is a
   source-text guard, not a proof: a new `int` index fails it and must either
   become int64_t or be added to the allowlist with a reason.
2. CPU, opt-in (RNN_EXT_INT64_CPU=1, ~2.3 GB RAM, ~10 s single-threaded): an
   LSTM with proj_size=1 and input_size=1 whose input-gate buffer x_gates
   (N x 4H float32) is larger than 2^31 BYTES, so the driver's per-step row
   pointers cross 2^31 bytes while every other buffer stays small. Outputs of
   a few batch rows are compared with torch.nn run on just those rows.
   (Crossing 2^31 ELEMENTS inside one CPU step kernel needs > 8 GB and is not
   attempted.)
3. CUDA (cuda mark; needs > 40 GB of GPU memory): bfloat16 LSTM, GRU and RNN
   forward where ONE time step's gate buffer has more than 2^31 elements
   (B * gates * H > 2^31), so the kernels' element indices r*G + col (and for
   RNN the grid-stride index itself) exceed int32. Every row is checked against
   rnn_ext runs on batch chunks below the limit, and sampled rows (including the
   last ones, past index 2^31) against torch.nn in float32.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

import rnn_ext

REPO = Path(__file__).resolve().parent.parent
SOURCES = ["csrc/cpu/cells_cpu.cpp", "csrc/cpu/fast_math.h", "csrc/cpu/fused_cpu.cpp", "csrc/cpu/fused_cpu.h",
           "csrc/cpu/small_products.cpp", "csrc/cpu/small_products.h",
           "csrc/cuda/cells_cuda.cu", "csrc/cuda/persistent_forward.cu", "csrc/cuda/persistent_backward.cu",
           "csrc/cuda/persistent_common.cuh", "csrc/cuda/scalar_math.cuh", "csrc/common/cell_steps.h",
           "csrc/recurrence.cpp"]

# 32-bit or narrower integer types that must not hold sizes, offsets or indices.
NARROW = re.compile(r"\b(int|unsigned|short|int32_t|uint32_t|int16_t|uint16_t|int8_t|uint8_t)\b")

# Reviewed uses of narrow integer types: (file suffix, regex on the comment-free line, reason).
ALLOWLIST = [
    ("fast_math.h", r"^int32_t bits;$", "float32 bit pattern for exp()'s 2^n (|n| <= 128), not an index"),
    ("fast_math.h", r"\bstd::memcpy\(&\w+, &\w+, (4|sizeof\(\w+\))\)", "bit cast of the int32 exponent"),
    ("cells_cpu.cpp", r"^uint16_t bits;$", "the 16 bits of one bfloat16 (Bf16)"),
    ("cells_cpu.cpp", r"^uint32_t u;$", "a float32's bit pattern (Bf16's conversion)"),
    ("cells_cpu.cpp", r"\buint16_t\{0x7FC0\} : static_cast<uint16_t>\(\(u \+ \(\(u >> 16\) & 1u\) \+ 0x7FFFu\) >> 16\)",
     "float32 bits rounded to bfloat16's"),
    ("cells_cpu.cpp", r"^const uint32_t u = static_cast<uint32_t>\(bits\) << 16;$", "bfloat16 bits widened to float32's"),
    ("cells_cuda.cu", r"\bfor \(int k = 0; k < [45]; \+\+k\)", "loop over the 4 LSTM gates"),
    ("cells_cuda.cu", r"\bconstexpr int kThreads = \d+;", "threads per block"),
    ("cells_cuda.cu", r"static_cast<int>\(dtype\)", "enum value in an error message"),
    ("cells_cuda.cu", r"static_cast<unsigned>\(blocks\)", "grid size, clamped to kMaxBlocks before the launch"),
    ("cell_steps.h", r"\benum class (DType|SequenceCell) : int\b", "enum storage"),
    ("fused_cpu.h", r"\benum class Cell : int\b", "enum storage"),
    ("fused_cpu.h", r"\bint threads[;)]", "a thread count (OpenMP's int)"),
    ("fused_cpu.cpp", r"\bint (tid|nt|t|n|team|max_threads|team_size|threads)\b", "OpenMP thread ids and counts"),
    ("fused_cpu.cpp", r"\(const (Forward|Backward|WeightGrad)&, int, int[,)]", "OpenMP thread id and count"),
    ("fused_cpu.cpp", r"\bOverlap&, int, void\*\)", "OpenMP thread id"),
    ("fused_cpu.cpp", r"static_cast<int>\(std::max<int64_t>\(1, std::min<int64_t>\(\{threads,", "thread count, <= threads"),
    ("fused_cpu.cpp", r"return static_cast<int>\(std::max<int64_t>\(1, n\)\);", "thread count, <= max_threads"),
    ("recurrence.cpp", r"\bint fused_threads\(\)", "thread count (at::get_num_threads)"),
    ("persistent_common.cuh", r"^constexpr unsigned kFullMask = 0xffffffffu;$", "warp lane mask"),
    ("persistent_common.cuh", r"__ldcg\(reinterpret_cast<const unsigned short\*>\(p\)\)", "the 16 bits of one half/bfloat16"),
    ("persistent_common.cuh", r"^int (device = 0, sms = 0, smem_optin = 0, cooperative = 0, major = 0|per_sm = 0);$",
     "device attributes and occupancy, as the CUDA runtime returns them"),
    ("persistent_common.cuh", r"static_cast<int>\((smem|smem_max|threads)\)", "shared bytes (<= the opt-in limit) and threads (<= 1024) for the runtime API"),
    ("persistent_common.cuh", r"static_cast<unsigned>\(L\.ld\)", "WMMA's ldm (unsigned): K rounded up to 16, plus 8"),
    ("persistent_common.cuh", r"dim3\(static_cast<unsigned>\(blocks\)\), dim3\(static_cast<unsigned>\(threads\)\)",
     "launch shape: blocks <= multiprocessors, threads <= 1024"),
    ("persistent_common.cuh", r"clusterDim\.x = static_cast<unsigned>\(blocks\);", "cluster size: blocks <= 16"),
    ("persistent_common.cuh", r"dim3\(static_cast<unsigned>\((blocks|threads)\)\)",
     "cluster launch shape: blocks <= 16, threads <= 1024"),
    ("persistent_common.cuh", r"^int clusters = 0;$", "cudaOccupancyMaxActiveClusters's count"),
    ("persistent_common.cuh", r"^unsigned dynamic_bytes;$", "the %dynamic_smem_size register (< 232 KB), widened before use"),
]


def strip_comments_and_strings(src: str) -> str:
    """Remove // and /* */ comments and the contents of string/char literals, keeping line numbers."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * src.count("\n", i, j))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            out.append(c + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def narrow_int_violations(name: str, src: str, allowlist=ALLOWLIST) -> list[str]:
    """Lines using a narrow integer type (or an int-deduced auto) that no allowlist entry covers."""
    bad = []
    rules = [re.compile(rx) for suffix, rx, _ in allowlist if name.endswith(suffix)]
    for lineno, line in enumerate(strip_comments_and_strings(src).splitlines(), 1):
        code = " ".join(line.split())
        hits = NARROW.findall(code)
        # `auto i = 0` deduces int
        hits += re.findall(r"\bauto\s+\w+\s*=\s*-?\d+\s*[;,]", code)
        if not hits:
            continue
        covered = code
        for rule in rules:
            covered = rule.sub(" ", covered)
        if NARROW.search(covered) or re.search(r"\bauto\s+\w+\s*=\s*-?\d+\s*[;,]", covered):
            bad.append(f"{name}:{lineno}: {code}")
    return bad


def struct_size_field_violations(src: str) -> list[str]:
    """Fields rows/hidden/*_stride of the step structs that are not int64_t."""
    code = strip_comments_and_strings(src)
    bad = []
    for m in re.finditer(r"(?m)(?:^|(?<=[;{]))\s*([\w:]+)\s+((?:\w+\s*,\s*)*\w+)\s*;", code):
        typ, names = m.group(1), [s.strip() for s in m.group(2).split(",")]
        if typ in ("return", "delete", "goto"):
            continue
        if any(nm in ("rows", "hidden") or nm.endswith("_stride") for nm in names) and typ != "int64_t":
            bad.append(f"{typ} {', '.join(names)}")
    return bad


def cuda_index_violations(src: str) -> list[str]:
    """blockIdx / blockDim / gridDim products that are not widened to int64 first."""
    bad = []
    for lineno, line in enumerate(strip_comments_and_strings(src).splitlines(), 1):
        code = " ".join(line.split())
        for m in re.finditer(r"\b(blockIdx|gridDim)\.[xyz]", code):
            before = code[:m.start()]
            # either cast itself, or multiplied by an already widened factor
            if not (before.endswith("static_cast<int64_t>(") or re.search(r"static_cast<int64_t>\(\w+\.[xyz]\)\s*\*\s*$", before)):
                bad.append(f"{lineno}: {code}")
    return bad


def _read(rel):
    path = REPO / rel
    if not path.exists():
        pytest.skip(f"{rel} not in this checkout")
    return path.read_text()


# ============================================================ 1. static guard
@pytest.mark.parametrize("rel", SOURCES)
def test_static_guard_no_32bit_index_variables(rel):
    bad = narrow_int_violations(rel, _read(rel))
    assert not bad, ("32-bit integer declarations in index code (use int64_t, or add a reviewed "
                     "entry to ALLOWLIST in tests/test_int64.py):\n" + "\n".join(bad))


def test_static_guard_step_struct_sizes_are_int64():
    src = _read("csrc/common/cell_steps.h")
    assert not struct_size_field_violations(src), struct_size_field_violations(src)
    code = strip_comments_and_strings(src)
    # the six step structs all carry rows/hidden as int64_t
    assert len(re.findall(r"\bint64_t\s+rows\s*,\s*hidden\s*;", code)) >= 6
    assert re.search(r"\bint64_t\s+h_out_stride\s*;", code) and re.search(r"\bint64_t\s+c_prev_stride\s*;", code)


def test_static_guard_cuda_grid_index_is_int64():
    src = _read("csrc/cuda/cells_cuda.cu")
    bad = cuda_index_violations(src)
    assert not bad, "CUDA thread indices computed in 32 bits:\n" + "\n".join(bad)
    code = " ".join(strip_comments_and_strings(src).split())
    assert re.search(r"for \(int64_t \w+ = static_cast<int64_t>\(blockIdx\.x\) \* blockDim\.x \+ threadIdx\.x;", code)
    # the grid is clamped so the unsigned launch dimension cannot wrap
    m = re.search(r"constexpr int64_t kMaxBlocks = ([\d\s*]+);", code)
    assert m, "kMaxBlocks not found"
    assert 0 < eval(m.group(1)) < 2**31  # noqa: S307  (digits and * only)
    assert re.search(r"if \(blocks > kMaxBlocks\) blocks = kMaxBlocks;", code)


def test_static_guard_rejects_32bit_indices():
    """The guard itself catches the patterns it is meant to catch (so it can fail)."""
    bad_src = """
    // int in a comment is fine: int x;
    __global__ void k(Step s) {
      int idx = blockIdx.x * blockDim.x + threadIdx.x;   /* int */
      for (int r = 0; r < s.rows; ++r) { auto j = 0; }
      const char* msg = "int is fine inside a string";
    }
    struct Bad { int rows, hidden; int h_out_stride; };
    """
    found = narrow_int_violations("cells_cuda.cu", bad_src)
    assert len(found) == 3, found  # idx, r (+ auto j on the same line), struct fields
    assert any("int idx" in f for f in found) and any("int r" in f for f in found)
    assert len(struct_size_field_violations(bad_src)) == 2
    assert len(cuda_index_violations(bad_src)) == 1
    good_src = "for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n;" \
               " idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {}\nfor (int k = 0; k < 4; ++k) {}"
    assert narrow_int_violations("cells_cuda.cu", good_src) == []
    assert cuda_index_violations(good_src) == []


# ============================================================ 2. CPU: row offsets past 2^31 bytes
def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("RNN_EXT_INT64_CPU") != "1",
                    reason="opt-in: RNN_EXT_INT64_CPU=1 (about 2.3 GB RAM, ~10 s single-threaded)")
def test_cpu_lstm_row_offsets_beyond_2pow31_bytes():
    if _mem_available() < 6 * 2**30:
        pytest.skip("needs ~6 GB of available RAM")
    H, B = 256, 64
    T = 2**31 // (4 * H * 4) // B + 8  # x_gates (T*B, 4H) float32 > 2^31 bytes
    assert T * B * 4 * H * 4 > 2**31
    torch.manual_seed(0)
    ext = rnn_ext.LSTM(1, H, proj_size=1)
    x = torch.randn(T, B, 1)
    with torch.no_grad():
        y, (h, c) = ext(x)
        rows = [0, 1, B // 2, B - 2, B - 1]
        ref = torch.nn.LSTM(1, H, proj_size=1)
        ref.load_state_dict(ext.state_dict())
        yr, (hr, cr) = ref(x[:, rows])
    assert torch.isfinite(y).all()
    # the last steps (row offsets > 2^31 bytes) as well as the first ones
    torch.testing.assert_close(y[:, rows], yr, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(h[:, rows], hr, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(c[:, rows], cr, rtol=1e-4, atol=1e-5)
    assert y[-1].abs().sum() > 0


# ============================================================ 3. CUDA: > 2^31 elements per step
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


@pytest.mark.cuda
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_cuda_bf16_step_with_more_than_2pow31_gate_elements(kind):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    total = torch.cuda.get_device_properties(0).total_memory
    if total <= 40 * 2**30:
        pytest.skip(f"needs > 40 GB of GPU memory, have {total / 2**30:.0f} GiB")
    torch.cuda.empty_cache()
    H, I, T = 1024, 8, 2
    G = GATES[kind] * H
    B = 2**31 // G + 64  # one step: B*G > 2^31 elements (r*G + col overflows int32 for the last rows)
    assert B * G > 2**31
    # rough peak: x_gates, h_gates, y, states and their copies (bf16), c_state (f32)
    need = 2 * (T * B * G + B * G + T * B * H + 4 * B * H) + 4 * 2 * B * H + (2 << 30)
    free, _ = torch.cuda.mem_get_info()
    if free < need:
        pytest.skip(f"needs ~{need / 2**30:.0f} GiB free GPU memory, have {free / 2**30:.0f} GiB")
    dev, dt = "cuda", torch.bfloat16
    torch.manual_seed(0)
    ext = getattr(rnn_ext, kind)(I, H).to(dev, dt)
    with torch.no_grad():
        ext.weight_ih_l0.uniform_(-0.5, 0.5)  # rows of x must give clearly different gates
        x = torch.randn(T, B, I, device=dev, dtype=dt)
        out = ext(x)
        y = out[0]
        hn = out[1][0] if kind == "LSTM" else out[1]
        torch.cuda.synchronize()
        assert y.shape == (T, B, H)
        assert torch.isfinite(y).all()
        # every row: the same op on batch chunks whose buffers stay below 2^31 elements
        chunk = (2**31 // G) // 4
        max_err = 0.0
        for s in range(0, B, chunk):
            oc = ext(x[:, s:s + chunk])
            yc = oc[0]
            hc = oc[1][0] if kind == "LSTM" else oc[1]
            max_err = max(max_err, (yc.float() - y[:, s:s + chunk].float()).abs().max().item(),
                          (hc.float() - hn[:, s:s + chunk].float()).abs().max().item())
            del oc, yc, hc
        assert max_err <= 2e-2, f"full-batch vs chunked outputs differ by {max_err}"
        # sampled rows, including the last ones (element index past 2^31), against torch.nn in float32
        first_big = 2**31 // G  # rows from here on have r*G > 2^31
        sel = torch.cat([torch.arange(0, 4), torch.arange(B // 2, B // 2 + 4),
                         torch.arange(first_big - 2, B)]).to(dev)
        ref = getattr(torch.nn, kind)(I, H).to(dev)
        ref.load_state_dict({k: v.float() for k, v in ext.state_dict().items()})
        yr, _ = ref(x[:, sel].float())
        ys = y[:, sel].float()
        err = (ys - yr).abs().max().item()
        assert err <= 5e-2, f"rows past the 2^31 element index differ from torch.nn by {err}"
        # the check discriminates rows: a row shift gives a far larger error
        shifted = (ys.roll(1, dims=1) - yr).abs().max().item()
        assert shifted > 4 * max(err, 1e-2), (err, shifted)
    del out, y, hn, x, ext
    torch.cuda.empty_cache()
