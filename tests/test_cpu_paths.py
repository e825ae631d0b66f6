"""The two CPU code paths and the instruction-set variants of the fused one.

float32/float64 layers run the fused whole-sequence kernel (csrc/cpu/fused_cpu.cpp),
LSTM projection too where it is folded into W_hh (unpacked: the forward at H <= 2 * proj_size
and B >= 8, or with RNN_EXT_CPU_PATH=fused both directions at any size; csrc/recurrence.cpp); RNN_EXT_CPU_PATH=stepwise selects
the per-step path (GEMM + pointwise kernel per step) that half types and other projections use.
Every other test file runs the default, so the stepwise path is checked here
against torch.nn in float64, and the fused kernel's AVX2 and 16-byte baseline
builds (RNN_EXT_CPU_ISA, which can only narrow the CPU's own) in subprocesses.
"""
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnn_ext
import test_gradcheck

REPO = Path(__file__).resolve().parent.parent
CELLS = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]


def make_pair(cell, I, H, layers, bidirectional, bias, dtype=torch.float64):
    kw = dict(num_layers=layers, bidirectional=bidirectional, bias=bias)
    if cell.startswith("RNN"):
        kw["nonlinearity"] = cell.split("_")[1].lower()
        ext, ref = rnn_ext.RNN(I, H, **kw), nn.RNN(I, H, **kw)
    else:
        ext, ref = getattr(rnn_ext, cell)(I, H, **kw), getattr(nn, cell)(I, H, **kw)
    ref.load_state_dict(ext.state_dict())
    return ext.to(dtype), ref.to(dtype)


def outputs_and_grads(module, x, hx, lengths=None):
    """Output, final states and the gradients of x, hx and every parameter for a fixed random loss."""
    leaves = [x] + (list(hx) if isinstance(hx, tuple) else [hx])
    inp = pack_padded_sequence(x, lengths, enforce_sorted=False) if lengths is not None else x
    out, h = module(inp, hx)
    y = out.data if lengths is not None else out
    states = list(h) if isinstance(h, tuple) else [h]
    gen = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)).sum() for t in [y, *states])
    grads = torch.autograd.grad(loss, leaves + list(module.parameters()))
    return [y, *states, *grads]


def random_inputs(cell, T, B, I, H, D, layers, dtype=torch.float64):
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(D * layers, B, H, dtype=dtype, requires_grad=True)
    hx = (h0, torch.randn(D * layers, B, H, dtype=dtype, requires_grad=True)) if cell == "LSTM" else h0
    return x, hx


def assert_close_all(got, want, rtol):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        scale = w.abs().max().item() or 1.0
        assert (g - w).abs().max().item() <= rtol * scale


def check_float64_parity(ext, ref, x, hx, packed):
    """Outputs, final states and every gradient within 1e-10 of torch.nn's (float64), for x as
    it is or packed with random lengths (the first full)."""
    T, B = x.shape[:2]
    lengths = torch.randint(1, T + 1, (B,)) if packed else None
    if packed:
        lengths[0] = T
    assert_close_all(outputs_and_grads(ext, x, hx, lengths), outputs_and_grads(ref, x, hx, lengths), 1e-10)


@pytest.mark.parametrize("path", ["fused", "stepwise"])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("H,B", [(1, 1), (7, 5), (33, 13), (130, 3)])
@pytest.mark.parametrize("packed", [False, True])
def test_path_matches_nn_float64(monkeypatch, path, cell, H, B, packed):
    monkeypatch.setenv("RNN_EXT_CPU_PATH", path)
    T, I, layers = 6, 4, 2
    for bidirectional, bias in [(False, True), (True, False)]:
        ext, ref = make_pair(cell, I, H, layers, bidirectional, bias)
        x, hx = random_inputs(cell, T, B, I, H, 2 if bidirectional else 1, layers)
        check_float64_parity(ext, ref, x, hx, packed)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("path", ["auto", "fused"])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B", [1, 5, 8, 20])
def test_one_step_matches_nn_float64(monkeypatch, path, cell, B, packed):
    """A sequence of one step (as a cell call is) takes the stepwise path by default (the forward
    of more than 8 rows the fused kernel), with its one-step products (csrc/recurrence.cpp:
    use_fused, weight_grads; B=20 crosses to the fused weight-gradient kernel but on Intel CPUs), and the fused
    kernels when forced: all as torch.nn."""
    monkeypatch.setenv("RNN_EXT_CPU_PATH", path)
    for bidirectional, bias in [(False, True), (True, False)]:
        ext, ref = make_pair(cell, 6, 9, 2, bidirectional, bias)
        x, hx = random_inputs(cell, 1, B, 6, 9, 2 if bidirectional else 1, 2)
        check_float64_parity(ext, ref, x, hx, packed=packed)  # packed: batch_sizes [B]


def _forward_products(fn) -> int:
    """The ATen matrix products a call runs (the fused kernels run theirs inside)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with torch.no_grad():
            fn()
    return sum(e.count for e in prof.key_averages() if e.key in ("aten::mm", "mkldnn::_linear_pointwise"))


def _all_products(fn) -> int:
    """The ATen matrix products of a call with gradients, forward and backward."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm", "aten::bmm",
                                                                  "mkldnn::_linear_pointwise"))


@pytest.mark.parametrize("cell", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cells_path_choice(monkeypatch, cell):
    """A cell's step of up to 8 rows runs as RNN_EXT_CPU_PATH=stepwise does, bit for bit, with
    its products straight from the weights (no ATen product, forward or backward); of more rows
    the forward runs the fused kernel, bit for bit as with RNN_EXT_CPU_PATH=fused, where
    stepwise runs two ATen products (x's and h's) (csrc/recurrence.cpp: use_fused, direct_step)."""
    torch.manual_seed(0)
    m = getattr(rnn_ext, cell)(16, 32)

    def run(x):
        out = m(x)
        outs = list(out) if isinstance(out, tuple) else [out]
        grads = torch.autograd.grad(sum((o * (i + 1)).sum() for i, o in enumerate(outs)), [x, *m.parameters()])
        return [*outs, *grads]

    def on(path, fn, *args):
        monkeypatch.setenv("RNN_EXT_CPU_PATH", path)
        return fn(*args)

    for rows in (1, 3, 8):
        x = torch.randn(rows, 16, dtype=torch.float64, requires_grad=True)
        m.double()
        default, stepwise, fused = (on(p, run, x) for p in ("auto", "stepwise", "fused"))
        assert all(torch.equal(a, b) for a, b in zip(default, stepwise))
        assert all(torch.allclose(a, b, rtol=1e-12, atol=1e-12) for a, b in zip(default, fused))
        m.float()
        x = x.detach().float().requires_grad_()
        assert on("auto", _forward_products, lambda: m(x)) == 0
        assert on("auto", _all_products, lambda: run(x)) == 0
    rows = torch.randn(9, 16)
    with torch.no_grad():
        default, fused = (on(p, m, rows) for p in ("auto", "fused"))
    default, fused = (list(o) if isinstance(o, tuple) else [o] for o in (default, fused))
    assert all(torch.equal(a, b) for a, b in zip(default, fused))
    assert on("stepwise", _forward_products, lambda: m(rows)) == 2


@pytest.mark.parametrize("opts", test_gradcheck.OPTS, ids=test_gradcheck.OPT_IDS)
@pytest.mark.parametrize("case", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_gradcheck_stepwise_path(monkeypatch, case, opts):
    """First-order gradcheck of the stepwise kernels (the second order does not use them)."""
    monkeypatch.setenv("RNN_EXT_CPU_PATH", "stepwise")
    if case == "lstm":
        args = test_gradcheck.lstm_case("cpu", proj=False, **opts)
    elif case == "gru":
        args = test_gradcheck.gru_case("cpu", **opts)
    else:
        args = test_gradcheck.rnn_case("cpu", relu=case == "rnn_relu", **opts)
    test_gradcheck._check(*args, second_order=False)


def make_proj_pair(I, H, P, layers, bidirectional, bias, dtype=torch.float64):
    kw = dict(num_layers=layers, bidirectional=bidirectional, bias=bias, proj_size=P)
    ext, ref = rnn_ext.LSTM(I, H, **kw), nn.LSTM(I, H, **kw)
    ref.load_state_dict(ext.state_dict())
    return ext.to(dtype), ref.to(dtype)


def proj_inputs(T, B, I, H, P, D, layers, dtype=torch.float64):
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    return x, (torch.randn(D * layers, B, P, dtype=dtype, requires_grad=True),
               torch.randn(D * layers, B, H, dtype=dtype, requires_grad=True))


# H, proj_size: the forward folded by default (H <= 2 P, at B >= 8), only with
# RNN_EXT_CPU_PATH=fused, and H = P + 1
@pytest.mark.parametrize("path", ["auto", "fused", "stepwise"])
@pytest.mark.parametrize("H,P", [(8, 4), (10, 3), (34, 33)])
@pytest.mark.parametrize("T,B", [(1, 3), (6, 1), (6, 9)])
@pytest.mark.parametrize("packed", [False, True])
def test_projection_paths_match_nn_float64(monkeypatch, path, H, P, T, B, packed):
    """LSTM with projection on each CPU path, including the fold into the fused kernel
    (p_t = o_t * tanh(c_t) as the state, W_hh W_hr as its W_hh, h0's term in the first step's
    input projection): outputs, final states and every gradient against nn.LSTM in float64,
    both directions, with and without bias, two layers; and the forward alone (no grad).
    Packed input always takes the per-step path."""
    monkeypatch.setenv("RNN_EXT_CPU_PATH", path)
    I, layers = 4, 2
    for bidirectional, bias in [(False, True), (True, False)]:
        ext, ref = make_proj_pair(I, H, P, layers, bidirectional, bias)
        x, hx = proj_inputs(T, B, I, H, P, 2 if bidirectional else 1, layers)
        check_float64_parity(ext, ref, x, hx, packed)
        with torch.no_grad():
            got, want = ext(x, hx), ref(x, hx)
        assert_close_all([got[0], *got[1]], [want[0], *want[1]], 1e-10)


def test_projection_fold_runs_a_different_computation(monkeypatch):
    """The fold is taken by default for the forward at H <= 2 * proj_size and B >= 8: its
    float32 results are not the per-step path's bits, yet within 1e-5 of them and of float64
    nn.LSTM; at H > 2 * proj_size or B < 8 the default is the per-step path, bit for bit."""
    T, I = 12, 16

    def run(B, H, P, path):
        monkeypatch.setenv("RNN_EXT_CPU_PATH", path)
        torch.manual_seed(1)
        ext, ref = make_proj_pair(I, H, P, 1, True, True, dtype=torch.float32)
        x, hx = proj_inputs(T, B, I, H, P, 2, 1, dtype=torch.float32)
        got = outputs_and_grads(ext, x, hx)
        want = outputs_and_grads(ref.double(), x.detach().double().requires_grad_(),
                                 tuple(h.detach().double().requires_grad_() for h in hx))
        return got, want

    folded, want = run(8, 64, 32, "auto")
    stepwise, _ = run(8, 64, 32, "stepwise")
    assert not all(torch.equal(a, b) for a, b in zip(folded, stepwise))
    assert_close_all([t.double() for t in folded], want, 1e-5)
    assert_close_all([t.double() for t in stepwise], want, 1e-5)
    for B, H, P in ((8, 64, 16), (7, 64, 32)):
        default, _ = run(B, H, P, "auto")
        stepwise, _ = run(B, H, P, "stepwise")
        assert all(torch.equal(a, b) for a, b in zip(default, stepwise)), (B, H, P)


@pytest.mark.parametrize("opts", test_gradcheck.OPTS, ids=test_gradcheck.OPT_IDS)
def test_gradcheck_folded_projection(monkeypatch, opts):
    """First- and second-order gradcheck of LSTM projection with RNN_EXT_CPU_PATH=fused (folded
    where unpacked; test_gradcheck runs the default choice)."""
    monkeypatch.setenv("RNN_EXT_CPU_PATH", "fused")
    test_gradcheck._check(*test_gradcheck.lstm_case("cpu", proj=True, **opts))


def test_cpu_path_variable_rejects_unknown_values(monkeypatch):
    monkeypatch.setenv("RNN_EXT_CPU_PATH", "fast")
    with pytest.raises(RuntimeError, match="RNN_EXT_CPU_PATH must be fused, stepwise or auto, got 'fast'"):
        rnn_ext.LSTM(3, 4)(torch.randn(2, 1, 3))


# (T, B, I, H, bidirectional, packed)
THREAD_SHAPES = {
    # big enough that forward and backward use two threads (fused_cpu.cpp: team_size)
    "two-thread-backward": (20, 48, 32, 200, False, False),
    # backward recurrence on one thread, the weight gradients summed on the other meanwhile
    # (fused::backward_and_weight_grads), over 9 chunks of rows, in both directions, with
    # sequences of different lengths
    "overlapped-weight-grads": (150, 4, 24, 72, True, True),
    # two threads, and x_t W_ih^T over three panel slices (64 + 64 + 22 columns): a block of
    # the next step taken early has none, some or all of them done (fused_cpu.cpp: forward_thread)
    "two-thread-three-slices": (20, 48, 150, 200, False, False),
}


@pytest.mark.parametrize("shape", list(THREAD_SHAPES), ids=list(THREAD_SHAPES))
@pytest.mark.parametrize("cell", CELLS)
def test_fused_float32_accuracy_and_thread_count_invariance(cell, shape):
    """float32 within 1e-5 of float64 torch.nn, and what the fused kernels compute (outputs,
    final states, the gradients of h0, c0, the weights and the biases) bitwise the same on 1 and
    2 threads: each element is one dot product summed in a fixed order. The gradient of x comes
    from a oneDNN or MKL GEMM (csrc/matmul.cpp), whose sums may split differently by thread
    count, so it is compared to rounding only."""
    T, B, I, H, bidirectional, packed = THREAD_SHAPES[shape]
    D = 2 if bidirectional else 1
    ext, ref = make_pair(cell, I, H, 1, bidirectional, True, dtype=torch.float32)
    ref = ref.double()
    x, hx = random_inputs(cell, T, B, I, H, D, 1, dtype=torch.float32)
    lengths = torch.tensor([T, T - 37, T, T - 90][:B]) if packed else None
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = outputs_and_grads(ext, x, hx, lengths)
        torch.set_num_threads(1)
        one = outputs_and_grads(ext, x, hx, lengths)
    finally:
        torch.set_num_threads(old)
    n_states = 2 if cell == "LSTM" else 1
    # y, h_n (c_n) | dx | dh0 (dc0) | dW_ih, dW_hh, db_ih, db_hh per direction
    assert len(one) == 2 + 2 * n_states + 4 * D
    kernel_made = [i for i in range(len(one)) if i != 1 + n_states]
    for i, (a, b) in enumerate(zip(one, two)):
        if i in kernel_made:
            assert torch.equal(a, b), i
        else:
            assert (a - b).abs().max() <= 1e-5 * b.abs().max(), i
    xd = x.detach().double().requires_grad_()
    hxd = tuple(h.detach().double().requires_grad_() for h in hx) if isinstance(hx, tuple) else \
        hx.detach().double().requires_grad_()
    want = outputs_and_grads(ref, xd, hxd, lengths)
    assert_close_all([t.double() for t in two], want, 1e-5)


@pytest.mark.parametrize("shape", ["two-thread-backward", "two-thread-three-slices"])
@pytest.mark.parametrize("cell", CELLS)
def test_blocks_taken_by_other_threads_change_no_bits(monkeypatch, cell, shape):
    """The fused kernels hand each block of hidden units to whichever thread is free (the step
    queues in csrc/cpu/fused_cpu.cpp), and a forward thread that runs out of blocks starts on
    the input product of its first block of the next step; with a slow core that happens only
    now and then. With RNN_EXT_CPU_OTHERS_FIRST=1 every thread starts each step on another
    thread's blocks, so blocks change threads at every step, forward and backward, and the
    forward takes a block of the next step early with 0, 1, ... of its input-product slices
    done: what the kernels compute must stay bitwise what one thread computes. Sequences of
    different lengths, both directions."""
    T, B, I, H, _, _ = THREAD_SHAPES[shape]
    ext, _ = make_pair(cell, I, H, 1, True, True, dtype=torch.float32)
    x, hx = random_inputs(cell, T, B, I, H, 2, 1, dtype=torch.float32)
    lengths = torch.randint(1, T + 1, (B,), generator=torch.Generator().manual_seed(3))
    lengths[0] = T
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = outputs_and_grads(ext, x, hx, lengths)
        torch.set_num_threads(2)
        monkeypatch.setenv("RNN_EXT_CPU_OTHERS_FIRST", "1")
        moved = outputs_and_grads(ext, x, hx, lengths)
    finally:
        torch.set_num_threads(old)
    n_states = 2 if cell == "LSTM" else 1
    for i, (a, b) in enumerate(zip(one, moved)):
        if i == 1 + n_states:  # dx: a oneDNN/MKL GEMM, split by thread count
            assert (a - b).abs().max() <= 1e-5 * b.abs().max(), i
        else:
            assert torch.equal(a, b), i


def _mkl_full_speed() -> Optional[bool]:
    """As csrc/matmul.cpp's mkl_full_speed (Intel, or AMD before Zen 5: CPU family < 26), read
    from /proc/cpuinfo; None where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            first_cpu = f.read().split("\n\n")[0]
    except OSError:
        return None
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first_cpu.splitlines() if ":" in line)}
    vendor, family = fields.get("vendor_id", ""), fields.get("cpu family", "")
    if vendor == "GenuineIntel":
        return True
    return vendor == "AuthenticAMD" and family.isdigit() and int(family) < 26


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("gemm", ["default", "blas"])
def test_float32_gemm_routes_match_nn(monkeypatch, cell, gemm):
    """The large float32 products (X W_ih^T, dX) go through oneDNN's matmul when torch has it
    (csrc/matmul.cpp), or through at::mm with RNN_EXT_CPU_GEMM=blas: both within 1e-5 of
    float64 torch.nn; the profiler shows which route ran. Where MKL runs at full speed (Intel,
    AMD before Zen 5) dX = dG W_ih of these 24 rows stays with at::mm (MKL takes W_ih as stored;
    oneDNN would need it transposed first)."""
    monkeypatch.setenv("RNN_EXT_CPU_GEMM", gemm)
    T, B, I, H = 8, 3, 512, 512  # 24 rows: more than the few that at::mm takes (matmul.cpp, onednn_for)
    ext, ref = make_pair(cell, I, H, 1, False, True, dtype=torch.float32)
    ref = ref.double()
    x, hx = random_inputs(cell, T, B, I, H, 1, 1, dtype=torch.float32)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        got = outputs_and_grads(ext, x, hx)
    onednn_calls = sum(e.count for e in prof.key_averages() if e.key == "mkldnn::_linear_pointwise")
    if gemm == "blas" or not torch.backends.mkldnn.is_available():
        assert onednn_calls == 0
    else:  # X W_ih^T (B < 4, and GRU always), and dX but where MKL runs at full speed
        full = _mkl_full_speed()
        assert onednn_calls in ((1, 2) if full is None else (1,) if full else (2,))
    xd = x.detach().double().requires_grad_()
    hxd = tuple(h.detach().double().requires_grad_() for h in hx) if isinstance(hx, tuple) else \
        hx.detach().double().requires_grad_()
    assert_close_all([t.double() for t in got], outputs_and_grads(ref, xd, hxd), 1e-5)


_ISA_SCRIPT = r"""
import sys, torch
sys.path.insert(0, {tests!r})
from test_cpu_paths import CELLS, make_pair, outputs_and_grads, random_inputs, assert_close_all
torch.manual_seed(0)
for cell in CELLS:
    for H, B in [(5, 3), (37, 9)]:
        for dtype, tol in [(torch.float64, 1e-10), (torch.float32, 1e-5)]:
            ext, ref = make_pair(cell, 4, H, 1, True, True, dtype=dtype)
            ref = ref.double()
            x, hx = random_inputs(cell, 5, B, 4, H, 2, 1, dtype=dtype)
            lengths = torch.tensor([5] + [1 + i % 5 for i in range(B - 1)])
            got = outputs_and_grads(ext, x, hx, lengths)
            xd = x.detach().double().requires_grad_()
            hxd = tuple(h.detach().double().requires_grad_() for h in hx) if isinstance(hx, tuple) else \
                hx.detach().double().requires_grad_()
            assert_close_all([t.double() for t in got], outputs_and_grads(ref, xd, hxd, lengths), tol)
print("ok")
"""


@pytest.mark.parametrize("isa", ["avx2", "generic"])
def test_fused_isa_variants_match_nn(isa):
    env = dict(os.environ, RNN_EXT_CPU_ISA=isa, PYTHONPATH=str(REPO))
    script = _ISA_SCRIPT.format(tests=str(REPO / "tests"))
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stdout + res.stderr


@pytest.mark.parametrize("cell", CELLS)
def test_big_buffers_huge_page_path_matches_nn(cell):
    """Buffers of 4 MB or more (the workspace, gate gradients, transposed inputs) come from
    their own 2 MB-aligned mappings (csrc/big_buffers.cpp): a layer big enough to use them
    still matches float64 torch.nn, and the workspace the forward op returns is such a mapping."""
    T, B, I, H = 64, 32, 64, 512  # LSTM workspace 21 MB, RNN gate gradients 4.2 MB
    ext, ref = make_pair(cell, I, H, 1, False, True, dtype=torch.float32)
    ref = ref.double()
    x, hx = random_inputs(cell, T, B, I, H, 1, 1, dtype=torch.float32)
    got = outputs_and_grads(ext, x, hx)
    xd = x.detach().double().requires_grad_()
    hxd = tuple(h.detach().double().requires_grad_() for h in hx) if isinstance(hx, tuple) else \
        hx.detach().double().requires_grad_()
    assert_close_all([t.double() for t in got], outputs_and_grads(ref, xd, hxd), 1e-5)
    if cell in ("LSTM", "GRU") and sys.platform.startswith("linux"):
        w = [p.detach() for p in ext.parameters()]
        h0 = hx[0][0] if isinstance(hx, tuple) else hx[0]
        if cell == "LSTM":
            outs = torch.ops.rnn_ext.lstm_forward(x.detach(), h0, hx[1][0], w[0], w[1], w[2], w[3], None, None,
                                                  False, True)
        else:
            outs = torch.ops.rnn_ext.gru_forward(x.detach(), h0, w[0], w[1], w[2], w[3], None, False, True)
        ws = outs[-1]
        assert ws.numel() * ws.element_size() >= 4 << 20
        assert ws.data_ptr() % (2 << 20) == 0


def test_big_buffers_reused_across_calls():
    """A freed big buffer's mapping is kept and handed to the next call that needs that size
    (csrc/big_buffers.cpp), and the stale data in it does not leak into the results: the
    second call's outputs equal the first's bitwise, and both match torch.nn."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the mappings are Linux-only")
    T, B, I, H = 40, 36, 24, 520  # workspace (T*B, 5H) float32: 14.9 MB, a size no other test uses
    ext, ref = make_pair("LSTM", I, H, 1, False, True, dtype=torch.float32)
    w = [p.detach() for p in ext.parameters()]
    x, (h0, c0) = random_inputs("LSTM", T, B, I, H, 1, 1, dtype=torch.float32)

    def forward(inp):
        return torch.ops.rnn_ext.lstm_forward(inp, h0[0], c0[0], w[0], w[1], w[2], w[3], None, None, False, True)

    first = forward(x)
    first_ptr = first[-1].data_ptr()
    y_first = first[0].detach().clone()
    del first
    forward(torch.randn_like(x) * 3)  # leaves other values in the reused workspace
    second = forward(x)
    assert second[-1].data_ptr() == first_ptr
    assert torch.equal(second[0], y_first)
    with torch.no_grad():
        y_ref, _ = ref(x, (h0, c0))
    torch.testing.assert_close(second[0], y_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", ["auto", "fused", "stepwise"])
@pytest.mark.parametrize("cell", CELLS + ["LSTM_PROJ"])
@pytest.mark.parametrize("T", [1, 5])
def test_only_wanted_gradients_match_nn_float64(monkeypatch, path, cell, T):
    """The backward ops skip the gradients nobody asked for (output_mask: dX's product when the
    input needs none, the last step's product into h0, the weight gradients of a frozen layer);
    the ones asked for stay torch.nn's, on every path, dense and packed."""
    monkeypatch.setenv("RNN_EXT_CPU_PATH", path)
    B, I, H = 4, 3, 6
    if cell == "LSTM_PROJ":
        ext, ref = make_proj_pair(I, H, 2, 1, False, True)
        x, hx = proj_inputs(T, B, I, H, 2, 1, 1)
    else:
        ext, ref = make_pair(cell, I, H, 1, False, True)
        x, hx = random_inputs(cell, T, B, I, H, 1, 1)
    states = list(hx) if isinstance(hx, tuple) else [hx]
    for want_x, want_h, want_w in [(False, True, True), (True, False, True), (True, True, False),
                                   (False, False, True), (True, False, False)]:
        for packed in (False, True):
            grads = []
            for m in (ext, ref):
                xi = x.detach().requires_grad_(want_x)
                si = [s.detach().requires_grad_(want_h) for s in states]
                for p in m.parameters():
                    p.requires_grad_(want_w)
                inp = pack_padded_sequence(xi, [T] + [max(1, T - 2)] * (B - 1)) if packed else xi
                out, h = m(inp, tuple(si) if len(si) > 1 else si[0])
                y = out.data if packed else out
                finals = list(h) if isinstance(h, tuple) else [h]
                leaves = [t for t, w in [(xi, want_x), *[(s, want_h) for s in si]] if w]
                leaves += list(m.parameters()) if want_w else []
                gen = torch.Generator().manual_seed(2)
                loss = sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in [y, *finals])
                grads.append(torch.autograd.grad(loss, leaves))
            assert len(grads[0]) == len(grads[1]) > 0
            assert_close_all(list(grads[0]), list(grads[1]), 1e-10)


@pytest.mark.parametrize("T", [1, 5])
@pytest.mark.parametrize("B", [1, 4, 9])
def test_ops_take_an_input_of_no_features(B, T):
    """I = 0 (the ops called directly; the modules' nn checks refuse input_size=0 first): the
    recurrence alone, as the reference layers compute it, forward and backward, float64 (the
    fused forward's in-kernel input product crashed on it from B = 4)."""
    from rnn_ext import _ops, reference
    x = torch.randn(T, B, 0, dtype=torch.float64, requires_grad=True)
    for name, G, states in [("lstm", 24, 2), ("gru", 18, 1), ("rnn", 6, 1)]:
        hx = [torch.randn(B, 6, dtype=torch.float64, requires_grad=True) for _ in range(states)]
        w = [torch.randn(G, 0, dtype=torch.float64, requires_grad=True),
             torch.randn(G, 6, dtype=torch.float64, requires_grad=True),
             torch.randn(G, dtype=torch.float64, requires_grad=True),
             torch.randn(G, dtype=torch.float64, requires_grad=True)]
        got = getattr(_ops, f"{name}_layer")(x, *hx, *w)
        want = getattr(reference, f"{name}_layer")(x, *hx, *w)
        leaves = [*hx, *w[1:]]
        g_got = torch.autograd.grad(sum(o.sum() for o in got), leaves)
        g_want = torch.autograd.grad(sum(o.sum() for o in want), leaves)
        assert_close_all([*got, *g_got], [*want, *g_want], 1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows,I,H", [(5, 200, 254), (2, 203, 61), (8, 203, 61)])
@pytest.mark.parametrize("cell", ["LSTMCell", "GRUCell", "RNNCell"])
def test_one_step_products_do_not_depend_on_threads(cell, rows, I, H, dtype):
    """The direct one-step products (csrc/cpu/small_products.cpp) split their outputs across
    threads at these sizes; every output keeps its code path and sum order, so the bits match.
    Sizes with tails: H=254 and I=203 leave products with a K tail (float32 vectors of 8) and
    scalar columns; 5 rows are a group of 4 and a group of 1."""
    torch.manual_seed(0)
    m = getattr(rnn_ext, cell)(I, H, dtype=dtype)
    x = torch.randn(rows, I, dtype=dtype, requires_grad=True)

    def run():
        out = m(x)
        outs = list(out) if isinstance(out, tuple) else [out]
        grads = torch.autograd.grad(sum((o * (i + 1)).sum() for i, o in enumerate(outs)), [x, *m.parameters()])
        return [*outs, *grads]

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run()
        for n in (2, 3):
            torch.set_num_threads(n)
            assert all(torch.equal(a, b) for a, b in zip(one, run()))
    finally:
        torch.set_num_threads(threads)
    ref = getattr(torch.nn, cell)(I, H, dtype=dtype)
    ref.load_state_dict(m.state_dict())
    expected = ref(x)
    expected = list(expected) if isinstance(expected, tuple) else [expected]
    for got, want in zip(one, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("B", [1, 5, 9])
def test_one_step_projection_matches_nn_float64(B):
    """LSTM with proj_size over one step: up to 8 rows the projection's product is direct too."""
    torch.manual_seed(0)
    for bidirectional in (False, True):
        ext = rnn_ext.LSTM(7, 10, proj_size=4, num_layers=2, bidirectional=bidirectional).double()
        ref = nn.LSTM(7, 10, proj_size=4, num_layers=2, bidirectional=bidirectional).double()
        ref.load_state_dict(ext.state_dict())
        x, hx = random_inputs("LSTM", 1, B, 7, 4, 2 if bidirectional else 1, 2)
        hx = (hx[0], torch.randn(hx[0].shape[0], B, 10, dtype=torch.float64, requires_grad=True))
        check_float64_parity(ext, ref, x, hx, packed=False)


@pytest.mark.parametrize("cell", ["LSTMCell", "GRUCell", "RNNCell"])
def test_one_step_with_column_major_weights_matches_nn_float64(cell):
    """Weights that are not row-major take BLAS at one step instead of the direct products."""
    torch.manual_seed(0)
    ext, ref = getattr(rnn_ext, cell)(6, 9).double(), getattr(nn, cell)(6, 9).double()
    ref.load_state_dict(ext.state_dict())
    for name in ("weight_ih", "weight_hh"):
        setattr(ext, name, nn.Parameter(getattr(ext, name).detach().t().contiguous().t()))
    assert not ext.weight_ih.is_contiguous() and torch.equal(ext.weight_ih, ref.weight_ih)
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    results = []
    for m in (ext, ref):
        out = m(x)
        outs = list(out) if isinstance(out, tuple) else [out]
        grads = torch.autograd.grad(sum((o * (i + 1)).sum() for i, o in enumerate(outs)), [x, *m.parameters()])
        results.append([*outs, *grads])
    assert_close_all(results[0], results[1], 1e-10)
