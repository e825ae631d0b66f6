"""Precision, determinism, devices, CUDA graphs and autocast.

Low precision: rnn_ext and torch.nn run in the same low dtype on the same
(pre-rounded) weights, inputs and cotangents; both are compared with a float64
torch.nn run on those same rounded values, so the only error measured is the
arithmetic's. rnn_ext's relative error (per output and per gradient) must be at
most 2x torch.nn's own error in that dtype (cuDNN on CUDA, ATen/oneDNN on CPU)
plus one unit roundoff of the dtype, the margin for a tiny problem on which
torch.nn can be exact by luck.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnn_ext
from rnn_ext import _ops
from rnn_ext.functional import autocast_dtype

DT = torch.float64
# unit roundoff (half an ulp at 1.0)
UNIT = {torch.float32: 2.0 ** -24, torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}

LAYERS = {
    "LSTM": (nn.LSTM, rnn_ext.LSTM, {}),
    "LSTM_PROJ": (nn.LSTM, rnn_ext.LSTM, {"proj_size": 4}),
    "GRU": (nn.GRU, rnn_ext.GRU, {}),
    "RNN_TANH": (nn.RNN, rnn_ext.RNN, {"nonlinearity": "tanh"}),
    "RNN_RELU": (nn.RNN, rnn_ext.RNN, {"nonlinearity": "relu"}),
}
CELLS = {
    "LSTMCell": (nn.LSTMCell, rnn_ext.LSTMCell, {}),
    "GRUCell": (nn.GRUCell, rnn_ext.GRUCell, {}),
    "RNNCell": (nn.RNNCell, rnn_ext.RNNCell, {}),
}

T, B, I, H = 8, 4, 16, 16


# ----------------------------------------------------------------- helpers
def _flat(out):
    res = []
    for o in out if isinstance(out, tuple) else (out,):
        if isinstance(o, PackedSequence):
            res.append(o.data)
        elif isinstance(o, tuple):
            res.extend(o)
        else:
            res.append(o)
    return res


def _rounded(t, dtype):
    return t.to(dtype).to(DT)


def make_problem(name, dtype, *, num_layers=2, bidirectional=True, seed=0):
    """A float64 torch.nn module and inputs whose values are exactly representable in `dtype`."""
    ref_cls, _, extra = LAYERS[name]
    torch.manual_seed(seed)
    ref = ref_cls(I, H, num_layers=num_layers, bidirectional=bidirectional, dtype=DT, **extra)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(_rounded(p, dtype))
    x = _rounded(torch.randn(T, B, I, dtype=DT), dtype)
    D = 2 if bidirectional else 1
    h_out = extra.get("proj_size", 0) or H
    h0 = _rounded(torch.randn(num_layers * D, B, h_out, dtype=DT), dtype)
    hx = (h0, _rounded(torch.randn(num_layers * D, B, H, dtype=DT), dtype)) if name.startswith("LSTM") else h0
    return ref, x, hx


def fwd_bwd(module, x, hx, dtype, device, cots=None, seed=1):
    """Outputs and grads (input, states, parameters), as float64 CPU tensors; cots are made once
    (rounded to `dtype`) and reused so every run sees the same cotangents."""
    module = module.to(device=device, dtype=dtype)
    xi = x.detach().to(device=device, dtype=dtype).requires_grad_()
    if isinstance(hx, tuple):
        hxi = tuple(h.detach().to(device=device, dtype=dtype).requires_grad_() for h in hx)
        leaves = [xi, *hxi]
    else:
        hxi = hx.detach().to(device=device, dtype=dtype).requires_grad_()
        leaves = [xi, hxi]
    outs = _flat(module(xi, hxi))
    if cots is None:
        gen = torch.Generator().manual_seed(seed)
        cots = [_rounded(torch.randn(o.shape, dtype=DT, generator=gen), dtype) for o in outs]
    loss = sum((o * c.to(device=device, dtype=dtype)).sum() for o, c in zip(outs, cots))
    params = list(module.parameters())
    grads = torch.autograd.grad(loss, leaves + params)
    for o in outs:
        assert o.dtype == dtype and o.device.type == torch.device(device).type
    return [o.detach().to("cpu", DT) for o in outs] + [g.to("cpu", DT) for g in grads], cots


def rel_errors(got, want):
    return [float((g - w).norm() / w.norm().clamp_min(1e-30)) for g, w in zip(got, want)]


def ext_twin(name, ref):
    _, ext_cls, extra = LAYERS[name]
    ext = ext_cls(ref.input_size, ref.hidden_size, num_layers=ref.num_layers, bidirectional=ref.bidirectional,
                  dtype=DT, **extra)
    ext.load_state_dict(ref.state_dict())
    return ext


def compare_low_precision(name, dtype, device, nn_device=None, fixed_bound=None):
    """rnn_ext's error in `dtype` on `device` vs torch.nn's own error in `dtype` on `nn_device`."""
    ref, x, hx = make_problem(name, dtype)
    want, cots = fwd_bwd(copy.deepcopy(ref), x, hx, DT, "cpu")
    got, _ = fwd_bwd(ext_twin(name, ref), x, hx, dtype, device, cots)
    ext_err = rel_errors(got, want)
    try:
        base, _ = fwd_bwd(copy.deepcopy(ref), x, hx, dtype, nn_device or device, cots)
        nn_err = rel_errors(base, want)
    except RuntimeError:  # torch.nn has no kernel for this dtype here
        assert fixed_bound is not None
        nn_err = None
    for k, e in enumerate(ext_err):
        bound = 2 * nn_err[k] + UNIT[dtype] if nn_err is not None else fixed_bound
        assert e <= bound, (
            f"{name} {dtype} on {device}: tensor {k} (0..{len(ext_err) - 1}: outputs, then grads of input, states, "
            f"params) relative error {e:.3g} > bound {bound:.3g}; rnn_ext errors {ext_err}, torch.nn errors {nn_err}")
    assert max(ext_err) > 0  # the run really was in low precision
    return ext_err, nn_err


# ----------------------------------------------------------------- CPU low precision
@pytest.mark.parametrize("name", list(LAYERS))
def test_float32_cpu_close_to_float64(name):
    ext_err, nn_err = compare_low_precision(name, torch.float32, "cpu")
    assert max(ext_err) < 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_half_types_cpu_within_2x_of_torch_nn(name, dtype):
    # Without a torch.nn kernel in this dtype the fixed bound applies: 16 unit roundoffs in relative
    # L2 norm over T=8 steps and two layers (errors grow about linearly with the depth of the graph).
    compare_low_precision(name, dtype, "cpu", fixed_bound=16 * UNIT[dtype])


@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_half_types_cpu_layers_run_in_float32(name, dtype, packed):
    """On the CPU the half-precision layers run the float32 kernels on their values rounded up
    (exact) and round the results once (rnn_ext/functional.py): outputs and every gradient equal,
    bitwise, to a float32 module's on the same values, rounded to the dtype."""
    _, ext_cls, kw = LAYERS[name]
    torch.manual_seed(0)
    half = ext_cls(5, 6, num_layers=2, bidirectional=True, **kw).to(dtype)
    full = copy.deepcopy(half).float()
    D = 2 * 2
    x = torch.randn(7, 3, 5).to(dtype)
    h_out = kw.get("proj_size", 6)
    hx = [torch.randn(D, 3, h_out).to(dtype)] + ([torch.randn(D, 3, 6).to(dtype)] if name.startswith("LSTM") else [])
    results = []
    for module, dt in ((half, dtype), (full, torch.float32)):
        xs = x.to(dt).requires_grad_()
        states = [h.to(dt).requires_grad_() for h in hx]
        inp = pack_padded_sequence(xs, [7, 5, 2]) if packed else xs
        out, h = module(inp, tuple(states) if len(states) == 2 else states[0])
        outs = [out.data if packed else out, *(h if isinstance(h, tuple) else (h,))]
        gen = torch.Generator().manual_seed(1)
        cotangents = [torch.randn(o.shape, generator=gen).to(dtype).to(dt) for o in outs]
        grads = torch.autograd.grad(outs, [xs, *states, *module.parameters()], cotangents)
        results.append([t.to(dtype) for t in (*outs, *grads)])
    for a, b in zip(*results, strict=True):
        assert a.dtype == dtype
        assert torch.equal(a, b)


@pytest.mark.parametrize("state", [0, 1])
@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN_TANH"])
def test_half_types_cpu_layers_check_state_dtypes(name, state):
    """The float32 detour keeps the ops' check of the initial states' dtype (a float32 state
    given to a bfloat16 layer is an error, not a silent cast)."""
    _, ext_cls, kw = LAYERS[name]
    ext = ext_cls(3, 4, **kw).bfloat16()
    n_states = 2 if name == "LSTM" else 1
    if state >= n_states:
        pytest.skip("one state")
    states = [torch.zeros(1, 2, 4).bfloat16() for _ in range(n_states)]
    states[state] = states[state].float()
    op = {"LSTM": "lstm_forward", "GRU": "gru_forward"}.get(name, "rnn_forward")
    label = ("h0", "c0")[state]
    with pytest.raises(RuntimeError, match=f"rnn_ext::{op}: {label} has dtype Float but input has dtype BFloat16"):
        ext(torch.randn(5, 2, 3).bfloat16(), tuple(states) if n_states == 2 else states[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("name", list(CELLS))
def test_cells_low_precision(device, name, dtype):
    ref_cls, ext_cls, _ = CELLS[name]
    torch.manual_seed(0)
    ref = ref_cls(I, H, dtype=DT)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(_rounded(p, dtype))
    ext = ext_cls(I, H, dtype=DT)
    ext.load_state_dict(ref.state_dict())
    x = _rounded(torch.randn(B, I, dtype=DT), dtype)
    h = _rounded(torch.randn(B, H, dtype=DT), dtype)
    hx = (h, _rounded(torch.randn(B, H, dtype=DT), dtype)) if name == "LSTMCell" else h

    def run(mod, dt, dev):
        mod = copy.deepcopy(mod).to(device=dev, dtype=dt)
        xi = x.detach().to(dev, dt).requires_grad_()
        hxi = tuple(t.to(dev, dt) for t in hx) if isinstance(hx, tuple) else hx.to(dev, dt)
        out = _flat(mod(xi, hxi))
        (gx,) = torch.autograd.grad(sum(o.float().sum() for o in out), xi)
        for o in out:
            assert o.dtype == dt
        return [o.detach().to("cpu", DT) for o in out] + [gx.to("cpu", DT)]

    want = run(ref, DT, "cpu")
    ext_err = rel_errors(run(ext, dtype, device), want)
    nn_err = rel_errors(run(ref, dtype, device if device == "cpu" else "cuda"), want)
    for e, n in zip(ext_err, nn_err):
        assert e <= 2 * n + UNIT[dtype], (ext_err, nn_err)


# ----------------------------------------------------------------- determinism
def _det_sizes(device):
    return (6, 3, 5, 8) if device == "cpu" else (32, 64, 64, 128)


@pytest.mark.parametrize("name", ["LSTM", "LSTM_PROJ", "GRU", "RNN_RELU"])
def test_deterministic_forward_backward(device, name):
    """Two forward+backward runs give bitwise-equal outputs and gradients (also packed)."""
    t, b, i, h = _det_sizes(device)
    _, ext_cls, extra = LAYERS[name]
    mod = ext_cls(i, h, num_layers=2, bidirectional=True, **extra).to(device)
    x = torch.randn(t, b, i, device=device)
    lengths = torch.randint(1, t + 1, (b,))
    lengths[0] = t
    results = []
    for _ in range(2):
        for packed in (False, True):
            mod.zero_grad(set_to_none=True)
            xi = x.clone().requires_grad_()
            inp = pack_padded_sequence(xi, lengths, enforce_sorted=False) if packed else xi
            outs = _flat(mod(inp))
            gen = torch.Generator().manual_seed(3)
            loss = sum((o * torch.randn(o.shape, generator=gen).to(device)).sum() for o in outs)
            loss.backward()
            results.append([o.detach() for o in outs] + [xi.grad] + [p.grad for p in mod.parameters()])
    for a, b_ in zip(results[0] + results[1], results[2] + results[3]):
        assert torch.equal(a, b_)


# ----------------------------------------------------------------- CUDA
cuda = pytest.mark.cuda


@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_half_types_cuda_within_2x_of_cudnn(name, dtype):
    # If this cuDNN has no RNN kernel for the dtype (bf16 needs cuDNN >= 9.13), use the fixed
    # bound of the CPU test: 16 unit roundoffs in relative L2 norm.
    compare_low_precision(name, dtype, "cuda", fixed_bound=16 * UNIT[dtype])


@cuda
@pytest.mark.parametrize("name", list(LAYERS))
def test_float32_cuda_close_to_float64(name):
    ext_err, _ = compare_low_precision(name, torch.float32, "cuda")
    assert max(ext_err) < 1e-5


@cuda
@pytest.mark.parametrize("name", list(LAYERS))
def test_cpu_cuda_parity_float64(name):
    ref, x, hx = make_problem(name, DT)
    ext = ext_twin(name, ref)
    on_cpu, cots = fwd_bwd(copy.deepcopy(ext), x, hx, DT, "cpu")
    on_cuda, _ = fwd_bwd(copy.deepcopy(ext), x, hx, DT, "cuda", cots)
    for a, b in zip(on_cuda, on_cpu):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@cuda
def test_cpu_cuda_parity_float64_packed():
    torch.manual_seed(0)
    ext = rnn_ext.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=3, dtype=DT)
    x = torch.randn(T, B, I, dtype=DT)
    lengths = torch.tensor([3, 8, 1, 5])
    res = []
    for dev in ("cpu", "cuda"):
        mod = copy.deepcopy(ext).to(dev)
        xi = x.detach().to(dev).requires_grad_()
        out, (h, c) = mod(pack_padded_sequence(xi, lengths, enforce_sorted=False))
        (out.data.sum() + h.pow(2).sum() + c.sum()).backward()
        res.append([out.data.detach().cpu(), h.detach().cpu(), c.detach().cpu(), xi.grad.cpu()]
                   + [p.grad.cpu() for p in mod.parameters()])
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@cuda
def test_gradcheck_float64_cuda():
    dev = "cuda"
    x = torch.randn(5, 3, dtype=DT, device=dev, requires_grad=True)
    h0 = torch.randn(2, 1, dtype=DT, device=dev, requires_grad=True)
    c0 = torch.randn(2, 2, dtype=DT, device=dev, requires_grad=True)
    w_ih = torch.randn(8, 3, dtype=DT, device=dev, requires_grad=True)
    w_hh = torch.randn(8, 1, dtype=DT, device=dev, requires_grad=True)
    b_ih = torch.randn(8, dtype=DT, device=dev, requires_grad=True)
    b_hh = torch.randn(8, dtype=DT, device=dev, requires_grad=True)
    w_hr = torch.randn(1, 2, dtype=DT, device=dev, requires_grad=True)
    bs = torch.tensor([2, 2, 1])

    def f(*ts):
        return _ops.lstm_layer(*ts, batch_sizes=bs, reverse=True)

    assert torch.autograd.gradcheck(f, (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr), eps=1e-6, atol=1e-7)

    xg = torch.randn(3, 2, 3, dtype=DT, device=dev, requires_grad=True)
    hg = torch.randn(2, 2, dtype=DT, device=dev, requires_grad=True)
    wi = torch.randn(6, 3, dtype=DT, device=dev, requires_grad=True)
    wh = torch.randn(6, 2, dtype=DT, device=dev, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *ts: _ops.gru_layer(*ts), (xg, hg, wi, wh), eps=1e-6, atol=1e-7)
    wi1 = torch.randn(2, 3, dtype=DT, device=dev, requires_grad=True)
    wh1 = torch.randn(2, 2, dtype=DT, device=dev, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *ts: _ops.rnn_layer(*ts, relu=True), (xg, hg, wi1, wh1), eps=1e-6,
                                    atol=1e-7)


@cuda
def test_last_cuda_device_index():
    idx = torch.cuda.device_count() - 1
    dev = f"cuda:{idx}"
    torch.manual_seed(0)
    ref = nn.GRU(I, H, num_layers=2, bidirectional=True, dtype=DT)
    ext = rnn_ext.GRU(I, H, num_layers=2, bidirectional=True, dtype=DT)
    ext.load_state_dict(ref.state_dict())
    ext.to(dev)
    x = torch.randn(T, B, I, dtype=DT)
    with torch.cuda.device(0):  # current device may differ from the tensors' device
        xi = x.to(dev).requires_grad_()
        out, h = ext(xi)
        (out.sum() + h.sum()).backward()
    assert out.device == torch.device(dev) and h.device == torch.device(dev)
    assert xi.grad.device == torch.device(dev)
    assert all(p.grad.device == torch.device(dev) for p in ext.parameters())
    xr = x.clone().requires_grad_()
    out_r, h_r = ref(xr)
    (out_r.sum() + h_r.sum()).backward()
    torch.testing.assert_close(out.detach().cpu(), out_r.detach(), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(xi.grad.cpu(), xr.grad, rtol=1e-7, atol=1e-9)
    for p, q in zip(ext.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad.cpu(), q.grad, rtol=1e-7, atol=1e-9)


@cuda
@pytest.mark.parametrize("name", ["LSTM", "LSTM_PROJ", "GRU", "RNN_TANH"])
def test_cuda_graph_capture_forward(name, monkeypatch):
    """Replays of a captured forward equal eager calls bitwise. On the GEMM path: the
    persistent kernels (the default at small batch) are not launched under capture, so there
    a captured call and an eager one run different kernels (README, CUDA paths)."""
    monkeypatch.setenv("RNN_EXT_CUDA_PATH", "gemm")
    _, ext_cls, extra = LAYERS[name]
    torch.manual_seed(0)
    mod = ext_cls(I, H, num_layers=2, bidirectional=True, **extra).cuda()
    static_x = torch.randn(T, B, I, device="cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.no_grad():
        for _ in range(2):  # warm-up outside capture
            mod(static_x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(g):
        static_out = _flat(mod(static_x))
    for _ in range(2):
        new_x = torch.randn(T, B, I, device="cuda")
        static_x.copy_(new_x)
        g.replay()
        torch.cuda.synchronize()
        with torch.no_grad():
            eager = _flat(mod(new_x))
        for a, b in zip(static_out, eager):
            assert torch.equal(a, b)


@cuda
@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN_RELU"])
def test_cuda_graph_capture_forward_backward(name):
    """Whole-step capture (forward, loss, backward) as in the torch.cuda.graph docs."""
    _, ext_cls, extra = LAYERS[name]
    torch.manual_seed(0)
    mod = ext_cls(I, H, num_layers=2, bidirectional=True, **extra).cuda()
    static_x = torch.randn(T, B, I, device="cuda", requires_grad=True)
    cot = torch.randn(T, B, 2 * H, device="cuda")

    def step():
        out = mod(static_x)[0]
        (out * cot).sum().backward()
        return out

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            mod.zero_grad(set_to_none=True)
            static_x.grad = None
            step()
    torch.cuda.current_stream().wait_stream(s)
    mod.zero_grad(set_to_none=True)
    static_x.grad = None
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        static_out = step()
    new_x = torch.randn(T, B, I, device="cuda")
    with torch.no_grad():
        static_x.copy_(new_x)
    g.replay()
    torch.cuda.synchronize()
    captured = [static_out.detach().clone(), static_x.grad.clone()] + [p.grad.clone() for p in mod.parameters()]

    eager_mod = copy.deepcopy(mod)
    eager_mod.zero_grad(set_to_none=True)
    xe = new_x.clone().requires_grad_()
    out = eager_mod(xe)[0]
    (out * cot).sum().backward()
    eager = [out.detach(), xe.grad] + [p.grad for p in eager_mod.parameters()]
    for a, b in zip(captured, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- autocast policy
def _autocast_case(mod_cls, kw, device, dtype, *, cell=False, packed=False):
    torch.manual_seed(0)
    mod = mod_cls(I, H, **kw).to(device)
    assert all(p.dtype == torch.float32 for p in mod.parameters())
    if cell:
        x = torch.randn(B, I, device=device)
    else:
        x = torch.randn(T, B, I, device=device)
    x.requires_grad_()
    inp = pack_padded_sequence(x, torch.tensor([T, 3, 2, 1])) if packed else x
    with torch.autocast(device, dtype=dtype):
        assert autocast_dtype(device) == dtype
        out = _flat(mod(inp))
    assert autocast_dtype(device) is None
    for o in out:
        assert o.dtype == dtype, f"{mod_cls.__name__}: output dtype {o.dtype}, expected {dtype} under autocast"
    # gradients reach the float32 parameters and input, in float32
    sum(o.float().sum() for o in out).backward()
    assert x.grad.dtype == torch.float32 and x.grad.abs().sum() > 0
    for p in mod.parameters():
        assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
    # same result as running the module explicitly in `dtype`
    low = copy.deepcopy(mod).to(dtype)
    with torch.no_grad():
        explicit = low(pack_padded_sequence(x.detach().to(dtype), torch.tensor([T, 3, 2, 1])) if packed
                       else x.detach().to(dtype))
    for a, b in zip(out, _flat(explicit)):
        assert torch.equal(a.detach(), b)
    # and close to the float32 result
    with torch.no_grad():
        full = _flat(mod(inp))
    for a, b in zip(out, full):
        assert b.dtype == torch.float32
        torch.testing.assert_close(a.detach().float(), b, rtol=0.05, atol=0.05)


AUTOCAST_LAYERS = [
    (rnn_ext.LSTM, dict(num_layers=2, bidirectional=True)),
    (rnn_ext.LSTM, dict(proj_size=4)),
    (rnn_ext.GRU, dict(num_layers=2)),
    (rnn_ext.RNN, dict(nonlinearity="relu", bidirectional=True)),
]
AUTOCAST_LAYER_IDS = ["lstm", "lstm_proj", "gru", "rnn_relu"]
AUTOCAST_CELLS = [rnn_ext.LSTMCell, rnn_ext.GRUCell, rnn_ext.RNNCell]


def test_autocast_dtype_off():
    assert autocast_dtype("cpu") is None
    assert autocast_dtype("meta") is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert autocast_dtype("cpu") == torch.bfloat16
        with torch.autocast("cpu", enabled=False):
            assert autocast_dtype("cpu") is None


@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("cls,kw", AUTOCAST_LAYERS, ids=AUTOCAST_LAYER_IDS)
def test_autocast_cpu_bf16_layers(cls, kw, packed):
    _autocast_case(cls, kw, "cpu", torch.bfloat16, packed=packed)


@pytest.mark.parametrize("cls", AUTOCAST_CELLS, ids=lambda c: c.__name__)
def test_autocast_cpu_bf16_cells(cls):
    _autocast_case(cls, {}, "cpu", torch.bfloat16, cell=True)


def test_autocast_cpu_bf16_given_hx():
    torch.manual_seed(0)
    mod = rnn_ext.LSTM(I, H, num_layers=2)
    x = torch.randn(T, B, I)
    hx = (torch.randn(2, B, H), torch.randn(2, B, H))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h, c) = mod(x, hx)
    assert out.dtype == h.dtype == c.dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h1 = rnn_ext.GRUCell(I, H)(torch.randn(B, I), torch.randn(B, H))
    assert h1.dtype == torch.bfloat16


@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("cls,kw", AUTOCAST_LAYERS, ids=AUTOCAST_LAYER_IDS)
def test_autocast_cuda_layers(cls, kw, dtype):
    _autocast_case(cls, kw, "cuda", dtype)
    _autocast_case(cls, kw, "cuda", dtype, packed=True)


@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("cls", AUTOCAST_CELLS, ids=lambda c: c.__name__)
def test_autocast_cuda_cells(cls, dtype):
    _autocast_case(cls, {}, "cuda", dtype, cell=True)
