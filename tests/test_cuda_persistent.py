"""The single-launch CUDA kernels (csrc/cuda/persistent_forward.cu, persistent_backward.cu),
forced through RNN_EXT_CUDA_PATH=persistent (RNN_EXT_CUDA_PATH=gemm forces the other path; by
default they run at small batch, test_default_path_by_batch): outputs, final states and every gradient against
torch.nn in float64; the profiler shows that both kernels ran; two runs agree bitwise; a
forward on one path and its backward on the other agree with both on one path (the workspace
layout is shared); shapes they do not serve fall back to the GEMM path. GPU only: every test
here carries the cuda mark."""
import contextlib

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnn_ext
from cudnn_settings import cudnn_flags
from test_cpu_paths import make_pair

pytestmark = pytest.mark.cuda

CELLS = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]


@contextlib.contextmanager
def tf32_allowed():
    """torch.backends.cudnn.allow_tf32 on inside (torch's default, which tests/conftest.py turns
    off for every test), restored after: nn.LSTM's cuDNN and rnn_ext then run float32 as TF32."""
    with cudnn_flags(allow_tf32=True):
        yield


def tf32_in_effect():
    """rnn_ext's rule (csrc/matmul.h, float32_as_tf32), as nn.LSTM's: cuDNN's setting where
    nn.LSTM would run on cuDNN, else torch's matmul setting."""
    if torch.backends.cudnn.enabled and torch.backends.cudnn.is_available():
        return torch.backends.cudnn.allow_tf32
    return torch.backends.cuda.matmul.allow_tf32
# (T, B, I, H): the default least four units per block (one with RNN_EXT_PERSISTENT_UNITS=1,
# test_units_per_block_knob_matches_nn) and a partial batch pass; four units per block,
# three batch passes and a last block with fewer units (299 = 74 * 4 + 3);
# two whole passes whose h_{t-1} rows are whole 16-byte pieces in every dtype (the
# kernel's 16-byte staging loads: the first shape takes them in float32 only, the
# second never)
SHAPES = [(7, 3, 5, 20), (5, 19, 16, 299), (6, 16, 8, 64)]


def persistent_ran(fn, kernel="persistent_forward"):
    """Whether a CUDA kernel whose name contains `kernel` ran in fn (default: either forward
    kernel, persistent_forward_kernel or the tensor-core persistent_forward_mma_kernel).
    None where the profiler records no CUDA kernel at all: under compute-sanitizer, which
    holds CUPTI (gpu_check's sanitizer stages see the launches through RNN_EXT_CUDA_PATH_LOG)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kernels = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    if not kernels:
        return None
    return any(kernel in name for name in kernels)


def check_ran(fn, kernel="persistent_forward", expected=True):
    """Asserts that a kernel named like `kernel` ran in fn (or did not, expected=False),
    unless the profiler is blind (see persistent_ran)."""
    ran = persistent_ran(fn, kernel)
    assert ran is None or ran == expected, f"{kernel}: ran={ran}, expected {expected}"


def run(module, x, hx):
    """Output, final states and the gradients of x, hx and the parameters for a fixed random loss."""
    out, h = module(x, hx)
    states = list(h) if isinstance(h, tuple) else [h]
    gen = torch.Generator().manual_seed(2)
    loss = sum((t.double() * torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.device)).sum()
               for t in (out, *states))
    leaves = list(hx) if isinstance(hx, tuple) else [hx]
    grads = torch.autograd.grad(loss, [x, *leaves, *module.parameters()])
    return [t.detach().double().cpu() for t in (out, *states, *grads)]


def runs_on_both_paths(monkeypatch, ext, ref, leaves, dtype):
    """run() of the float64 `ref` on the CPU, then of the CUDA module `ext` on the GEMM path and
    on the persistent path (RNN_EXT_CUDA_PATH left at persistent); leaves(device, dtype) gives
    fresh inputs for each."""
    want = run(ref, *leaves("cpu", torch.float64))
    monkeypatch.setenv("RNN_EXT_CUDA_PATH", "gemm")
    gemm = run(ext, *leaves("cuda", dtype))
    monkeypatch.setenv("RNN_EXT_CUDA_PATH", "persistent")
    return want, gemm, run(ext, *leaves("cuda", dtype))


def max_errors(got, want):
    return [((g - w).abs().max() / w.abs().max().clamp_min(1e-30)).item() for g, w in zip(got, want)]


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("cell", CELLS)
def test_persistent_forward_matches_nn(monkeypatch, cell, dtype, shape, bidirectional):
    check_matches_nn(monkeypatch, cell, dtype, shape, bidirectional)


# (T, B, I, H, proj_size): small; H = 299 over three batch passes with a partial last block
PROJ_SHAPES = [(7, 3, 5, 20, 8), (5, 19, 16, 299, 100)]


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("shape", PROJ_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_projection_persistent_matches_nn(monkeypatch, dtype, shape, bidirectional):
    """LSTM with projection on the persistent path, folded into W_hh (csrc/recurrence.cpp: p_t =
    o_t * tanh(c_t) as the state, W_hh W_hr as its W_hh, h0's term in the first step's input
    projection): both persistent kernels run (half types on sm_80+ on the tensor cores), and
    outputs, final states and every gradient are within float32's 1e-5 of float64 nn.LSTM, or in
    half types twice the GEMM path's error plus two units of their precision; two runs agree
    bitwise. The same host code runs the fold on the CPU's fused kernels,
    checked there against float64 (tests/test_cpu_paths.py)."""
    T, B, I, H, P = shape
    torch.manual_seed(0)
    D = 2 if bidirectional else 1
    ext = rnn_ext.LSTM(I, H, proj_size=P, bidirectional=bidirectional)
    ref = torch.nn.LSTM(I, H, proj_size=P, bidirectional=bidirectional)
    ref.load_state_dict(ext.state_dict())
    ref = ref.double()
    x, hx = torch.randn(T, B, I), (torch.randn(D, B, P), torch.randn(D, B, H))

    def leaves(dev, dt):
        return x.to(dev, dt).requires_grad_(), tuple(t.to(dev, dt).requires_grad_() for t in hx)

    want, gemm, got = runs_on_both_paths(monkeypatch, ext.to("cuda", dtype), ref, leaves, dtype)
    check_ran(lambda: ext(*leaves("cuda", dtype)))
    check_ran(lambda: run(ext, *leaves("cuda", dtype)), "persistent_backward")
    if dtype != torch.float32:  # the tensor-core kernels (both fit at these shapes)
        tensor_cores = torch.cuda.get_device_capability()[0] >= 8
        check_ran(lambda: ext(*leaves("cuda", dtype)), "persistent_forward_mma_kernel", tensor_cores)
        check_ran(lambda: run(ext, *leaves("cuda", dtype)), "persistent_backward_mma_kernel", tensor_cores)
    assert all(torch.equal(a, b) for a, b in zip(got, run(ext, *leaves("cuda", dtype)))), "two runs differ"
    errors, gemm_errors = max_errors(got, want), max_errors(gemm, want)
    if dtype == torch.float32:
        assert max(errors) <= 1e-5, errors
    else:
        # The fold rounds W_hh W_hr to the storage type, where the GEMM path rounds each step's
        # products: a CPU emulation of both in bfloat16 at (7, 3, 5, 20, 8) over 200 seeds put the
        # fold at up to 2.35x the GEMM path's error on tensors of 24-160 elements (typically
        # 1.2-1.7x), so twice that error plus two units of the storage type's precision.
        slack = 2 * torch.finfo(dtype).eps
        for i, (e, g) in enumerate(zip(errors, gemm_errors)):
            assert e <= 2 * g + slack, (i, e, g)


def test_projection_default_path(monkeypatch):
    """Without RNN_EXT_CUDA_PATH the fold runs where the persistent kernels are chosen (B <= 8
    float32 here), the per-step GEMM path above (B = 64)."""
    torch.manual_seed(0)
    ext = rnn_ext.LSTM(16, 64, proj_size=24).cuda()
    monkeypatch.delenv("RNN_EXT_CUDA_PATH", raising=False)
    for batch, persistent in ((4, True), (64, False)):
        x = torch.randn(5, batch, 16, device="cuda")
        check_ran(lambda: ext(x), expected=persistent)
        xg = x.clone().requires_grad_()
        check_ran(lambda: ext(xg)[0].sum().backward(), "persistent_backward", persistent)


def units_per_block(H, p):
    """The launcher's units per block (persistent_common.cuh): ceil(H / multiprocessors), at
    least 4 (or H)."""
    return max(-(-H // p.multi_processor_count), min(4, H))


def staged_rows(H, B, fixed, per_row):
    """Rows a float32 LSTM kernel stages at a time on this GPU (the launcher's arithmetic):
    U = units_per_block(H) units per block, `fixed(U)` bytes besides the staged
    rows, per_row bytes each, a multiple of 8, at most the batch rounded up to 8."""
    p = torch.cuda.get_device_properties(0)
    U = units_per_block(H, p)
    room = (p.shared_memory_per_block_optin - fixed(U)) // per_row // 8 * 8
    return min(room, -(-B // 8) * 8), p.name


def test_forward_batch_staged_in_parts(monkeypatch):
    """A batch whose h_{t-1} rows do not all fit beside W_hh's rows: the forward stages them
    in parts (T=3, B=40, H=1024 float32 LSTM; on H100/H200: 8 units, 128 KB of W_hh per
    block, 24 rows at a time). The backward does not fit there (W_hh^T's share leaves room
    for fewer than 8 rows of gate gradients): the GEMM path runs it."""
    T, B, I, H = 3, 40, 8, 1024
    staged, name = staged_rows(H, B, lambda U: 4 * U * H * 4, H * 4)
    if not 8 <= staged < B:
        pytest.skip(f"{name}: the forward stages {staged} rows of h_(t-1) at a time, not a part of the batch")
    check_matches_nn(monkeypatch, "LSTM", torch.float32, (T, B, I, H), False, expect_backward=False)


def test_backward_batch_staged_in_parts(monkeypatch):
    """A batch whose gate-gradient rows do not all fit beside W_hh^T's rows: the backward
    stages them in parts (T=3, B=40, H=512 float32 LSTM; on H100/H200 24 rows at a time, on
    A100 8), while the forward stages the whole batch."""
    T, B, I, H = 3, 40, 8, 512
    state = lambda U: 2 * (-(-B * U * 4 // 16) * 16)  # noqa: E731  dL/dh and dL/dc, 16-byte aligned
    staged, name = staged_rows(H, B, lambda U: U * 4 * H * 4 + state(U), 4 * H * 4)
    if not 8 <= staged < B:
        pytest.skip(f"{name}: the backward stages {staged} rows of gate gradients at a time, not a part")
    check_matches_nn(monkeypatch, "LSTM", torch.float32, (T, B, I, H), False)


def ru(n, m):
    return -(-n // m) * m


def mma_ld(K, elem):
    """Elements between the rows of a tensor-core kernel's operands (MmaSmem.ld): K padded to
    16, plus 16 bytes."""
    return ru(K, 16) + 16 // elem


def mma_fixed(rows, K, elem=2):
    """Bytes of a tensor-core kernel's product (persistent_common.cuh, MmaSmem.fixed()): A's
    rows padded to 16 and mma_ld apart, and the partial tiles of the K splits (K steps of 16;
    TF32, elem 4: of 8)."""
    rows_p, kp = ru(rows, 16), ru(K, 16)
    m_tiles = rows_p // 16
    splits = 1 if m_tiles >= 8 else min(8 // m_tiles, kp // (8 if elem == 4 else 16))
    return ru(rows_p * mma_ld(K, elem) * elem, 128) + ru(splits * m_tiles * 256 * 4, 128)


def mma_staged(H, B, fixed, K, elem=2):
    """Rows a tensor-core kernel stages at a time on this GPU (16 per pass; rows mma_ld
    apart), or a reason to skip."""
    if torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("the tensor-core kernels need sm_80")
    p = torch.cuda.get_device_properties(0)
    U = units_per_block(H, p)
    room = (p.shared_memory_per_block_optin - fixed(U)) // (mma_ld(K, elem) * elem) // 16 * 16
    return min(room, ru(B, 16)), U, p


def test_tensor_core_batch_staged_in_parts(monkeypatch):
    """The tensor-core forward with h_{t-1} staged in parts: bfloat16 LSTM, T=3, B=80, H=1024
    (H100/H200: 64 rows at a time; A100: 16). A persistent backward runs where the scalar
    one's gate-gradient rows fit (the tensor-core backward needs more: its rows pad to 16;
    here the scalar one runs)."""
    T, B, I, H = 3, 80, 8, 1024
    staged, U, p = mma_staged(H, B, lambda U: mma_fixed(4 * U, H), H)
    if not 16 <= staged < B:
        pytest.skip(f"{p.name}: the tensor-core forward stages {staged} rows at a time, not a part of the batch")
    backward_room = (p.shared_memory_per_block_optin - U * 4 * H * 2 - 2 * ru(B * U * 4, 16)) // (4 * H * 2) // 8 * 8
    check_matches_nn(monkeypatch, "LSTM", torch.bfloat16, (T, B, I, H), False, expect_backward=backward_room >= 8,
                     check_tensor_cores=False)


def test_tensor_core_backward_staged_in_parts(monkeypatch):
    """The tensor-core backward with gate-gradient rows staged in parts: bfloat16 GRU, T=3,
    B=80, H=1024 (H100/H200: 16 rows at a time, 5 parts; there the tensor-core forward stages
    its h_{t-1} rows in parts too, 64 at a time)."""
    T, B, I, H = 3, 80, 8, 1024
    G = 3 * H
    staged, _, p = mma_staged(H, B, lambda U: mma_fixed(U, G) + 2 * ru(B * U * 4, 128), G)
    if not 16 <= staged < B:
        pytest.skip(f"{p.name}: the tensor-core backward stages {staged} rows at a time, not a part of the batch")
    check_matches_nn(monkeypatch, "GRU", torch.bfloat16, (T, B, I, H), False)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("cell", CELLS)
def test_tf32_persistent_matches_nn(monkeypatch, cell, shape, bidirectional):
    """float32 with TF32 allowed (tf32_allowed): the tensor-core kernels run float32 as TF32
    (sm_80+), within TF32's error of float64 torch.nn; with it off (every other float32 test
    here) they do not run."""
    check_matches_nn(monkeypatch, cell, torch.float32, shape, bidirectional, tf32=True)


def test_tf32_batch_staged_in_parts(monkeypatch):
    """The TF32 forward with h_(t-1) staged in parts: float32 LSTM, T=3, B=40, H=1024 (on
    H100/H200 16 rows at a time; W_hh's share takes 128 KB a block). Its backward does not fit
    on the tensor cores (W_hh^T's rows pad to 16) nor, with 8 gate-gradient rows, in the
    scalar kernel: the GEMM path runs it."""
    T, B, I, H = 3, 40, 8, 1024
    staged, _, p = mma_staged(H, B, lambda U: mma_fixed(4 * U, H, 4), H, 4)
    if not 16 <= staged < B:
        pytest.skip(f"{p.name}: the TF32 forward stages {staged} rows at a time, not a part of the batch")
    check_matches_nn(monkeypatch, "LSTM", torch.float32, (T, B, I, H), False, expect_backward=False, tf32=True)


def test_tf32_follows_nn_lstms_setting(monkeypatch):
    """float32 runs as TF32 exactly where nn.LSTM's would: by cuDNN's RNN setting
    (torch.backends.cudnn.allow_tf32) while cuDNN is enabled, whatever torch's matmul setting
    says; by the matmul setting (torch.set_float32_matmul_precision) with cuDNN disabled. Seen
    on both paths: the tensor-core forward runs on the forced persistent path, and the GEMM
    path's cuBLAS products (called by rnn_ext with its own math mode) change bits, within TF32's
    error of full float32. (rnn_ext reads the setting as cuDNN's RNN code does, so the newer
    torch.backends.cudnn.rnn.fp32_precision too; not tested here: mixing it with allow_tf32
    makes torch raise.)"""
    if torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("TF32 needs sm_80")
    torch.manual_seed(0)
    ext = rnn_ext.GRU(256, 256).cuda()
    x = torch.randn(5, 4, 256, device="cuda")
    big_x = torch.randn(5, 40, 256, device="cuda")  # B=40: the GEMM path by default

    def tf32_seen():
        monkeypatch.setenv("RNN_EXT_CUDA_PATH", "persistent")
        mma = persistent_ran(lambda: ext(x), "persistent_forward_mma_kernel")
        monkeypatch.setenv("RNN_EXT_CUDA_PATH", "gemm")
        out = ext(big_x)[0]
        err = (out - full).abs().max().item() / full.abs().max().item()
        assert err <= 1e-2, err
        gemm = not torch.equal(out, full)
        assert mma is None or mma == gemm, (mma, gemm)
        return gemm

    old_matmul = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        monkeypatch.setenv("RNN_EXT_CUDA_PATH", "gemm")
        full = ext(big_x)[0]  # cuDNN's TF32 off (tests/conftest.py), matmul's off
        assert not tf32_seen()
        torch.set_float32_matmul_precision("high")
        assert not tf32_seen(), "followed the matmul setting while cuDNN is enabled"
        torch.set_float32_matmul_precision("highest")
        with tf32_allowed():
            assert tf32_seen(), "did not follow torch.backends.cudnn.allow_tf32"
        with cudnn_flags(enabled=False, allow_tf32=True):
            assert not tf32_seen(), "followed cuDNN's setting while cuDNN is disabled"
            torch.set_float32_matmul_precision("high")
            assert tf32_seen(), "did not follow the matmul setting while cuDNN is disabled"
    finally:
        torch.set_float32_matmul_precision(old_matmul)


def check_tf32_errors(cell, got, want, gemm_errors):
    """TF32 results (output, final states, then gradients; float64 tensors) against float64.
    TF32 keeps 10 mantissa bits (unit roundoff 2^-11 = 4.9e-4). The GEMM path's cuBLAS may run
    small products without TF32, so its error (gemm_errors) is no floor: each tensor within the
    larger of twice that error and 1e-2 of its largest element (a wrong tile or a misplaced row
    is off by order 1). For RNN_RELU `want` must come from MaskedReluRNN (relu' where the TF32
    run's output is positive: rounding moves some pre-activations across 0, where relu' jumps,
    and against plain torch.nn a CPU emulation found gradients off by up to 0.45 of their
    largest element on up to 45% of a bias gradient's elements; with the TF32 run's mask,
    at most 7.8e-4 over 60 seeds x 3 shapes). tests/test_tf32_emulation.py checks the rule
    against that emulation (tests/tf32_emulation.py)."""
    for i, (e, g) in enumerate(zip(max_errors(got, want), gemm_errors)):
        assert e <= max(2 * g, 1e-2), (i, e, g)


class MaskedReluRNN(torch.nn.Module):
    """The float64 RNN_RELU `ref` (one layer, either direction count) with relu replaced by
    the mask of where `out` (another run's output, (T, B, D*H)) is positive: the same
    function where both runs agree on relu's side, and that run's relu' everywhere."""

    def __init__(self, ref, out):
        super().__init__()
        self.ref, self.mask = ref, (out > 0).double()

    def forward(self, x, h0):
        T, H = x.shape[0], self.ref.hidden_size
        outs, last = [], []
        for d in range(2 if self.ref.bidirectional else 1):
            sfx = "_reverse" if d else ""
            w_ih, w_hh = getattr(self.ref, "weight_ih_l0" + sfx), getattr(self.ref, "weight_hh_l0" + sfx)
            bias = getattr(self.ref, "bias_ih_l0" + sfx) + getattr(self.ref, "bias_hh_l0" + sfx)
            h, ys = h0[d], [None] * T
            for t in reversed(range(T)) if d else range(T):
                h = self.mask[t, :, d * H:(d + 1) * H] * (x[t] @ w_ih.t() + h @ w_hh.t() + bias)
                ys[t] = h
            outs.append(torch.stack(ys))
            last.append(h)
        return torch.cat(outs, 2), torch.stack(last)


def tf32_backward_fits(cell, B, H):
    """Whether the TF32 tensor-core backward fits on this GPU at (B, H), by the launcher's
    arithmetic with 1 KB to spare for the kernel's static shared memory: W_hh^T's U rows of
    G = NG*H, the partial tiles, dL/dh and aux (B x U float each) and 16 gate-gradient rows."""
    G = {"LSTM": 4, "GRU": 3}.get(cell, 1) * H
    p = torch.cuda.get_device_properties(0)
    U = units_per_block(H, p)
    fixed = mma_fixed(U, G, 4) + 2 * ru(B * U * 4, 128)
    return p.shared_memory_per_block_optin - 1024 - fixed >= 16 * mma_ld(G, 4) * 4


def check_matches_nn(monkeypatch, cell, dtype, shape, bidirectional, expect_backward=True, check_tensor_cores=True,
                     tf32=False, cluster=False):
    """Parity with float64 torch.nn on the persistent path; expect_backward: whether a
    persistent backward kernel runs; check_tensor_cores: that half types on sm_80+ (and
    float32 with tf32) ran the tensor-core kernels (both fit at the small shapes); tf32:
    float32 with TF32 allowed (tf32_allowed: the GEMM path's products and the forced
    persistent kernels then use TF32); cluster: RNN_EXT_PERSISTENT_CLUSTER=1 is set, so on
    sm_90+ the kernels ran as one thread-block cluster (the *_cluster_kernel names)."""
    if tf32:
        with tf32_allowed():
            return check_matches_nn(monkeypatch, cell, dtype, shape, bidirectional, expect_backward,
                                    check_tensor_cores, cluster=cluster)
    T, B, I, H = shape
    torch.manual_seed(0)
    ext, ref = make_pair(cell, I, H, 1, bidirectional, True, dtype=torch.float32)
    ref = ref.double()
    D = 2 if bidirectional else 1
    x = torch.randn(T, B, I)
    hx = (torch.randn(D, B, H), torch.randn(D, B, H)) if cell == "LSTM" else torch.randn(D, B, H)

    def leaves(dev, dt):
        h = tuple(t.to(dev, dt).requires_grad_() for t in hx) if isinstance(hx, tuple) else \
            hx.to(dev, dt).requires_grad_()
        return x.to(dev, dt).requires_grad_(), h

    want, gemm, got = runs_on_both_paths(monkeypatch, ext.to("cuda", dtype), ref, leaves, dtype)
    check_ran(lambda: ext(*leaves("cuda", dtype)))
    tf32 = dtype == torch.float32 and tf32_in_effect()
    # tensor cores for half types, and for float32 where TF32 is allowed (and only there)
    tensor_cores = (dtype != torch.float32 or tf32) and torch.cuda.get_device_capability()[0] >= 8
    launched = "_cluster_kernel" if cluster and torch.cuda.get_device_capability()[0] >= 9 else "_kernel"
    check_ran(lambda: ext(*leaves("cuda", dtype)), "persistent_forward_mma" + launched, tensor_cores)
    check_ran(lambda: run(ext, *leaves("cuda", dtype)), "persistent_backward", expect_backward)
    if launched != "_kernel":  # the forward and the backward as clusters, not on the grid
        check_ran(lambda: ext(*leaves("cuda", dtype)), "_cluster_kernel")
        check_ran(lambda: ext(*leaves("cuda", dtype)), "forward_kernel", False)
        check_ran(lambda: run(ext, *leaves("cuda", dtype)), "backward_kernel", False)
    # (TF32 on a GPU with less shared memory a block than sm_80's, e.g. 99 KB on sm_86/89: the
    # tensor-core backward may not fit and the scalar one run; not asserted there)
    backward_fits = not tf32 or tf32_backward_fits(cell, B, H)
    if check_tensor_cores and expect_backward and backward_fits:
        check_ran(lambda: run(ext, *leaves("cuda", dtype)), "persistent_backward_mma" + launched, tensor_cores)
    again = run(ext, *leaves("cuda", dtype))
    assert all(torch.equal(a, b) for a, b in zip(got, again)), "two runs differ"
    errors, gemm_errors = max_errors(got, want), max_errors(gemm, want)
    if tf32:
        if cell == "RNN_RELU":  # relu' as this run has it; the GEMM path's error is no measure then
            want = run(MaskedReluRNN(ref, got[0]), *leaves("cpu", torch.float64))
            gemm_errors = [0.0] * len(want)
        check_tf32_errors(cell, got, want, gemm_errors)
    elif dtype == torch.float32:
        assert max(errors) <= 1e-5, errors
    elif cell == "RNN_RELU":
        # relu' jumps at 0: in half precision a few pre-activations within rounding of 0
        # take the other side, differently on each path, and each flip moves a gradient
        # tensor by up to ~0.1 of its largest element (H200, float16, the GEMM path
        # alone: 0.2 on one tensor, 6e-4 on its neighbour). So the worst tensor of each.
        assert errors[0] <= 2 * gemm_errors[0] + 1e-3, (errors[0], gemm_errors[0])
        assert max(errors) <= 2 * max(gemm_errors) + 1e-3, (errors, gemm_errors)
    else:  # float32 sums and cell state: no worse than twice the GEMM path's error
        for i, (e, g) in enumerate(zip(errors, gemm_errors)):
            assert e <= 2 * g + 1e-3, (i, e, g)


def test_packed_and_double_fall_back(monkeypatch):
    """Packed sequences and float64 are not served by the persistent kernel: the GEMM path runs
    them, with the same results as without the variable."""
    torch.manual_seed(0)
    ext = rnn_ext.LSTM(6, 40).cuda()
    x = torch.randn(5, 3, 6, device="cuda")
    packed = pack_padded_sequence(x, torch.tensor([5, 3, 2]), enforce_sorted=False)
    monkeypatch.setenv("RNN_EXT_CUDA_PATH", "gemm")
    plain = ext(packed)[0].data
    monkeypatch.setenv("RNN_EXT_CUDA_PATH", "persistent")
    check_ran(lambda: ext(packed), expected=False)
    assert torch.equal(ext(packed)[0].data, plain)
    ext.double()
    check_ran(lambda: ext(x.double()), expected=False)
    ext.float()
    check_ran(lambda: ext(x))


@pytest.mark.parametrize("cell", CELLS + ["LSTM_PROJ"])
def test_forward_and_backward_on_different_paths(monkeypatch, cell):
    """The variable is read per op call: a forward on one path with its backward on the other
    gives the gradients of both on one path (float32, to 1e-5 of the largest). LSTM_PROJ: LSTM
    with proj_size=100, folded on the persistent path, per step on the GEMM path."""
    T, B, I, H = 5, 19, 16, 299
    torch.manual_seed(0)
    if cell == "LSTM_PROJ":
        ext = rnn_ext.LSTM(I, H, proj_size=100)
    else:
        ext, _ = make_pair(cell, I, H, 1, False, True, dtype=torch.float32)
    ext = ext.cuda()
    x = torch.randn(T, B, I, device="cuda")

    def grads(forward_path, backward_path):
        monkeypatch.setenv("RNN_EXT_CUDA_PATH", forward_path)
        xg = x.clone().requires_grad_()
        out, _ = ext(xg)
        monkeypatch.setenv("RNN_EXT_CUDA_PATH", backward_path)
        loss = (out * torch.linspace(-1, 1, out.numel(), device="cuda").view_as(out)).sum()
        return [g.double().cpu() for g in torch.autograd.grad(loss, [xg, *ext.parameters()])]

    both_gemm = grads("gemm", "gemm")
    for paths in (("persistent", "gemm"), ("gemm", "persistent"), ("persistent", "persistent")):
        errors = max_errors(grads(*paths), both_gemm)
        assert max(errors) <= 1e-5, (paths, errors)


@pytest.mark.parametrize("batch", [1, 8])
def test_tf32_default_path_keeps_the_scalar_kernel(monkeypatch, batch):
    """With TF32 allowed (torch's default) the default choice runs float32 at B <= 8 on the
    scalar persistent kernels (float32 FMAs), as measured (README): the TF32 tensor-core kernels
    run only with RNN_EXT_CUDA_PATH=persistent (test_tf32_persistent_matches_nn) until they have
    been timed. (The input product before the recurrence follows the TF32 setting.)"""
    torch.manual_seed(0)
    ext = rnn_ext.LSTM(16, 64).cuda()
    x = torch.randn(5, batch, 16, device="cuda")
    monkeypatch.delenv("RNN_EXT_CUDA_PATH", raising=False)
    with tf32_allowed():
        check_ran(lambda: ext(x), "persistent_forward_kernel")
        check_ran(lambda: ext(x), "persistent_forward_mma_kernel", False)
        xg = x.clone().requires_grad_()
        check_ran(lambda: ext(xg)[0].sum().backward(), "persistent_backward_kernel")
        xg = x.clone().requires_grad_()
        check_ran(lambda: ext(xg)[0].sum().backward(), "persistent_backward_mma_kernel", False)


@pytest.mark.parametrize("dtype, batch, persistent", [
    (torch.float32, 1, True), (torch.float32, 8, True), (torch.float32, 9, False), (torch.float32, 64, False),
    (torch.bfloat16, 32, True), (torch.bfloat16, 33, False), (torch.float16, 16, True),
    ("tf32", 8, True), ("tf32", 9, False)])
def test_default_path_by_batch(monkeypatch, dtype, batch, persistent):
    """Without RNN_EXT_CUDA_PATH (or with auto) the persistent kernels run at B <= 8 (float32
    too with TF32 allowed, "tf32"), and at B <= 32 for half types; the GEMM path above.
    Forward and backward choose alike."""
    if dtype == "tf32":
        with tf32_allowed():
            return test_default_path_by_batch(monkeypatch, torch.float32, batch, persistent)
    torch.manual_seed(0)
    ext = rnn_ext.LSTM(16, 64).to("cuda", dtype)
    x = torch.randn(5, batch, 16, device="cuda", dtype=dtype)
    for value in (None, "auto"):
        if value is None:
            monkeypatch.delenv("RNN_EXT_CUDA_PATH", raising=False)
        else:
            monkeypatch.setenv("RNN_EXT_CUDA_PATH", value)
        check_ran(lambda: ext(x), expected=persistent)
        xg = x.clone().requires_grad_()
        check_ran(lambda: ext(xg)[0].float().sum().backward(), "persistent_backward", persistent)


def test_bad_path_value_raises(monkeypatch):
    ext = rnn_ext.GRU(4, 8).cuda()
    monkeypatch.setenv("RNN_EXT_CUDA_PATH", "fast")
    with pytest.raises(RuntimeError, match="RNN_EXT_CUDA_PATH must be gemm, persistent or auto, got 'fast'"):
        ext(torch.randn(3, 2, 4, device="cuda"))


@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[2]], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("units", [1, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cell", CELLS)
def test_units_per_block_knob_matches_nn(monkeypatch, cell, dtype, units, shape):
    """RNN_EXT_PERSISTENT_UNITS=N (at least N hidden units per block instead of the default 4:
    N=1 gives one unit per block at H=20, N=8 three blocks, the last with 4 units) keeps parity
    with torch.nn, and both persistent kernels still run."""
    monkeypatch.setenv("RNN_EXT_PERSISTENT_UNITS", str(units))
    check_matches_nn(monkeypatch, cell, dtype, shape, False)


@pytest.mark.parametrize("variable,value,allowed", [
    *[("RNN_EXT_PERSISTENT_UNITS", v, "an integer from 1 to 32") for v in ("0", "33", "eight", "8x")],
    *[("RNN_EXT_PERSISTENT_CLUSTER", v, "0 or 1") for v in ("2", "yes", "on")],
])
def test_bad_persistent_knob_raises(monkeypatch, variable, value, allowed):
    """The persistent launch's tuning variables (read at each launch) refuse values they do not know."""
    ext = rnn_ext.GRU(4, 8).cuda()
    monkeypatch.setenv("RNN_EXT_CUDA_PATH", "persistent")
    monkeypatch.setenv(variable, value)
    with pytest.raises(RuntimeError, match=f"{variable} must be {allowed}, got '{value}'"):
        ext(torch.randn(3, 2, 4, device="cuda"))


# (T, B, I, H): above 32 batch rows the tensor-core forward takes the whole staged batch in one
# pass (persistent_common.cuh, pass_tiles): 3 and 4 tiles of 16 rows, the last partial at B=45;
# 10 blocks of 4 units, and 75 with a last block of 3 (299 = 74 * 4 + 3)
WHOLE_BATCH_SHAPES = [(5, 45, 16, 40), (4, 64, 8, 299)]


@pytest.mark.parametrize("shape", WHOLE_BATCH_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("cell", CELLS)
def test_tensor_core_whole_batch_pass_matches_nn(monkeypatch, cell, dtype, shape):
    """The tensor-core forward's one pass over a whole batch of more than 32 rows (its products
    spread over the warps together, the partial tiles summed per split): parity with float64
    torch.nn, repeatability, and the tensor-core kernels ran (check_matches_nn)."""
    check_matches_nn(monkeypatch, cell, dtype, shape, False)


# (T, B, I, H): one cluster of ceil(H / U) blocks of U = ceil(H / 16) hidden units: 10 blocks of
# 2, 16 of 6 (the grid launch takes 24 blocks of 4 there), 16 of 13 (200 = 15 * 13 + 5: the last
# block fewer), and 16 of 16 over 48 steps (a barrier that let a block run ahead would show over
# many steps); one and two batch passes of the tensor-core kernels, one to three of the scalar ones
CLUSTER_SHAPES = [(7, 3, 5, 20), (6, 16, 8, 96), (5, 19, 16, 200), (48, 2, 8, 256)]


@pytest.mark.parametrize("shape", CLUSTER_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("cell", CELLS)
def test_cluster_launch_matches_nn(monkeypatch, cell, dtype, shape):
    """RNN_EXT_PERSISTENT_CLUSTER=1: on sm_90+ both persistent kernels run as one thread-block
    cluster, with the cluster's barrier between steps instead of the grid's; parity with
    float64 torch.nn and repeatability as on the grid launch (before sm_90 the grid kernels
    run). In float32 the scalar kernels sum each unit in one warp whatever the units per
    block, so the cluster and grid launches agree bitwise."""
    monkeypatch.setenv("RNN_EXT_PERSISTENT_CLUSTER", "1")
    check_matches_nn(monkeypatch, cell, dtype, shape, False, cluster=True)
    if dtype == torch.float32:
        T, B, I, H = shape
        torch.manual_seed(0)
        ext, _ = make_pair(cell, I, H, 1, False, True, dtype=torch.float32)
        ext = ext.cuda()

        def leaves():
            gen = torch.Generator().manual_seed(1)
            x = torch.randn(T, B, I, generator=gen).cuda().requires_grad_()
            h = [torch.randn(1, B, H, generator=gen).cuda().requires_grad_() for _ in range(2 if cell == "LSTM" else 1)]
            return x, tuple(h) if cell == "LSTM" else h[0]

        monkeypatch.setenv("RNN_EXT_CUDA_PATH", "persistent")
        cluster = run(ext, *leaves())
        monkeypatch.setenv("RNN_EXT_PERSISTENT_CLUSTER", "0")
        grid = run(ext, *leaves())
        assert all(torch.equal(a, b) for a, b in zip(cluster, grid)), "cluster and grid launches differ"

