"""Hostile inputs never crash the process.

Every hostile case runs in a SUBPROCESS (this file executed as a script with
``--run-cases START``): it prints ``BEGIN i name`` before and ``CASE i name status
detail`` after each case. The parent detects a crash (signal / abort / non-zero exit)
from the return code and the missing ``CASE`` line, records the case as crashed and
restarts the script after it, so one crash neither hides nor aborts the other cases.

Case kinds:
- ``nn``:    run the same code with torch.nn and with rnn_ext; torch.nn's outcome is the
             reference: same exception type, or outputs equal (NaN/inf patterns exactly,
             finite values within tolerance).
- ``raise``: must raise a Python RuntimeError / ValueError / TypeError (raw ops fed
             inconsistent shapes, bad batch_sizes, a workspace from need_grad=False, ...).
- ``ok``:    must complete; the case itself returns an error string on a wrong result.

Non-contiguous and expanded inputs/hx are additionally checked in-process against
torch.nn below (the modules make them contiguous before reaching C++).
"""
import os
import signal
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_sequence

import rnn_ext

# torch.nn on CUDA as an exact oracle: no cuDNN (TF32, no eval-mode backward)
pytestmark = pytest.mark.usefixtures("nn_without_cudnn")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS = torch.ops.rnn_ext
ALLOWED = (RuntimeError, ValueError, TypeError)
LAYERS = ("LSTM", "GRU", "RNN")
CELLS = ("LSTMCell", "GRUCell", "RNNCell")

CASES = []  # (name, kind, fn)


def case(name, kind):
    def deco(fn):
        CASES.append((name, kind, fn))
        return fn
    return deco


# ============================================================ helpers
def _flat(obj):
    if obj is None:
        return []
    if isinstance(obj, PackedSequence):
        return [obj.data, obj.batch_sizes]
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _flat(o)]
    return []


def _compare(ref, new, atol=1e-5, rtol=1e-4):
    """'' when equal: same structure/shapes/dtypes, identical NaN and inf patterns, close values."""
    fr, fn_ = _flat(ref), _flat(new)
    if len(fr) != len(fn_):
        return f"{len(fr)} output tensors from nn, {len(fn_)} from rnn_ext"
    for i, (a, b) in enumerate(zip(fr, fn_)):
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"output {i}: nn {tuple(a.shape)} {a.dtype}, rnn_ext {tuple(b.shape)} {b.dtype}"
        a, b = a.detach(), b.detach()
        if not a.is_floating_point():
            if not torch.equal(a, b):
                return f"output {i} differs"
            continue
        if not torch.equal(torch.isnan(a), torch.isnan(b)):
            return f"output {i}: NaN pattern differs (nn {int(a.isnan().sum())} NaNs, rnn_ext {int(b.isnan().sum())})"
        if not torch.equal(torch.isposinf(a), torch.isposinf(b)) or not torch.equal(torch.isneginf(a), torch.isneginf(b)):
            return f"output {i}: inf pattern differs"
        fin = torch.isfinite(a)
        if fin.any() and not torch.allclose(a[fin].double(), b[fin].double(), atol=atol, rtol=rtol):
            return f"output {i}: max abs diff {(a[fin].double() - b[fin].double()).abs().max().item():.3g}"
    return ""


class _Lib:
    def __init__(self, mod):
        for n in LAYERS + CELLS:
            setattr(self, n, getattr(mod, n))


NN, EXT = _Lib(nn), _Lib(rnn_ext)


def _hx(name, *shape, cell_shape=None, dtype=torch.float32):
    """A random hidden state for `name` (a tuple for LSTM/LSTMCell)."""
    h = torch.randn(*shape).to(dtype)
    if name.startswith("LSTM"):
        return (h, torch.randn(*(cell_shape or shape)).to(dtype))
    return h


def _lstm_raw(T=3, B=2, I=4, H=5, proj=0, packed=False, need_grad=True, dtype=torch.float32):
    """Valid raw-op arguments for rnn_ext::lstm_forward (and its outputs)."""
    g = torch.Generator().manual_seed(7)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    hout = proj or H
    a = dict(input=r(T * B, I) if packed else r(T, B, I), h0=r(B, hout), c0=r(B, H), w_ih=r(4 * H, I),
             w_hh=r(4 * H, hout), b_ih=r(4 * H), b_hh=r(4 * H), w_hr=r(proj, H) if proj else None,
             batch_sizes=torch.full((T,), B, dtype=torch.long) if packed else None, reverse=False, need_grad=need_grad)
    return a


def _lstm_fwd(a):
    return OPS.lstm_forward(a["input"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], a["w_hr"],
                            a["batch_sizes"], a["reverse"], a["need_grad"])


def _lstm_bwd_args(**over):
    a = _lstm_raw()
    y, h, c, ws = _lstm_fwd(a)
    b = dict(grad_output=torch.randn_like(y), grad_h_n=torch.randn_like(h), grad_c_n=torch.randn_like(c),
             input=a["input"], h0=a["h0"], c0=a["c0"], w_ih=a["w_ih"], w_hh=a["w_hh"], w_hr=None,
             batch_sizes=None, reverse=False, output=y, workspace=ws)
    b.update(over)
    return b


def _lstm_bwd(b):
    return OPS.lstm_backward(b["grad_output"], b["grad_h_n"], b["grad_c_n"], b["input"], b["h0"], b["c0"], b["w_ih"],
                             b["w_hh"], b["w_hr"], b["batch_sizes"], b["reverse"], b["output"], b["workspace"])


def _gru_raw(T=3, B=2, I=4, H=5, need_grad=True, gates=3):
    g = torch.Generator().manual_seed(8)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(input=r(T, B, I), h0=r(B, H), w_ih=r(gates * H, I), w_hh=r(gates * H, H), b_ih=r(gates * H),
                b_hh=r(gates * H), batch_sizes=None, reverse=False, need_grad=need_grad)


def _gru_fwd(a):
    return OPS.gru_forward(a["input"], a["h0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], a["batch_sizes"],
                           a["reverse"], a["need_grad"])


def _rnn_fwd(a):
    return OPS.rnn_forward(a["input"], a["h0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], a["batch_sizes"], False,
                           a["reverse"])


def _gru_bwd_args(**over):
    a = _gru_raw()
    y, h, ws = _gru_fwd(a)
    b = dict(grad_output=torch.randn_like(y), grad_h_n=torch.randn_like(h), input=a["input"], h0=a["h0"],
             w_ih=a["w_ih"], w_hh=a["w_hh"], batch_sizes=None, reverse=False, output=y, workspace=ws)
    b.update(over)
    return b


def _gru_bwd(b):
    return OPS.gru_backward(b["grad_output"], b["grad_h_n"], b["input"], b["h0"], b["w_ih"], b["w_hh"],
                            b["batch_sizes"], b["reverse"], b["output"], b["workspace"])


def _rnn_bwd_args(**over):
    a = _gru_raw(gates=1)
    y, h = _rnn_fwd(a)
    b = dict(grad_output=torch.randn_like(y), grad_h_n=torch.randn_like(h), input=a["input"], h0=a["h0"],
             w_ih=a["w_ih"], w_hh=a["w_hh"], batch_sizes=None, reverse=False, output=y)
    b.update(over)
    return b


def _rnn_bwd(b):
    return OPS.rnn_backward(b["grad_output"], b["grad_h_n"], b["input"], b["h0"], b["w_ih"], b["w_hh"],
                            b["batch_sizes"], False, b["reverse"], b["output"])


# ============================================================ module-level cases (compared with torch.nn)
for _n in LAYERS:
    def _mk(n):
        lstm = n == "LSTM"

        # ---- dtypes of the input
        for dt in (torch.int64, torch.int32, torch.bool, torch.complex64, torch.float16, torch.float64):
            case(f"{n}-input-{dt}", "nn")(lambda L, dt=dt: getattr(L, n)(3, 4)(torch.ones(5, 2, 3).to(dt)))
        case(f"{n}-float64-module-float32-input", "nn")(
            lambda L: getattr(L, n)(3, 4).double()(torch.randn(5, 2, 3)))
        # ---- dtypes of hx
        for dt in (torch.int64, torch.float64, torch.complex64, torch.float16):
            case(f"{n}-hx-{dt}", "raise")(lambda L=EXT, dt=dt: getattr(L, n)(3, 4)(
                torch.randn(5, 2, 3), _hx(n, 1, 2, 4, dtype=dt)))
        if lstm:
            case("LSTM-h-f32-c-f64", "raise")(lambda L=EXT: L.LSTM(3, 4)(
                torch.randn(5, 2, 3), (torch.randn(1, 2, 4), torch.randn(1, 2, 4, dtype=torch.float64))))
            case("LSTM-h-f32-c-int", "raise")(lambda L=EXT: L.LSTM(3, 4)(
                torch.randn(5, 2, 3), (torch.randn(1, 2, 4), torch.ones(1, 2, 4, dtype=torch.long))))
        # ---- hx shapes
        for label, shape in [("layers", (3, 2, 4)), ("batch", (1, 3, 4)), ("hidden", (1, 2, 6)), ("rank2", (2, 4)),
                             ("rank4", (1, 1, 2, 4)), ("rank1", (4,)), ("empty", (0, 2, 4)), ("batch0", (1, 0, 4))]:
            case(f"{n}-hx-shape-{label}", "nn")(lambda L, shape=shape: getattr(L, n)(3, 4)(
                torch.randn(5, 2, 3), _hx(n, *shape)))
        case(f"{n}-hx-0d", "nn")(lambda L: getattr(L, n)(3, 4)(
            torch.randn(5, 2, 3), (torch.tensor(1.0), torch.tensor(1.0)) if lstm else torch.tensor(1.0)))
        case(f"{n}-hx-unbatched-3d", "nn")(lambda L: getattr(L, n)(3, 4)(torch.randn(5, 3), _hx(n, 1, 1, 4)))
        case(f"{n}-hx-None-tuple", "nn")(lambda L: getattr(L, n)(3, 4)(torch.randn(5, 2, 3), (None, None)))
        case(f"{n}-hx-string", "nn")(lambda L: getattr(L, n)(3, 4)(torch.randn(5, 2, 3), "hx"))
        if lstm:
            case("LSTM-hx-c-shape", "nn")(lambda L: L.LSTM(3, 4)(
                torch.randn(5, 2, 3), (torch.randn(1, 2, 4), torch.randn(1, 2, 5))))
            case("LSTM-hx-three-states", "nn")(lambda L: L.LSTM(3, 4)(
                torch.randn(5, 2, 3), tuple(torch.randn(1, 2, 4) for _ in range(3))))
            for label, val in [("nan", float("nan")), ("inf", float("inf")), ("-inf", float("-inf"))]:
                def c0_val(L, val=val):
                    m = L.LSTM(3, 4, 2)
                    h, c = _hx("LSTM", 2, 3, 4)
                    c[1, 0, 3] = val
                    return m(torch.randn(6, 3, 3), (h, c))
                case(f"LSTM-c0-{label}", "nn")(c0_val)
            for dt in (torch.float32, torch.float64):
                def h_and_c_inf(L, dt=dt):
                    # inf in h drives gates to +-inf, so f = sigmoid(-inf) = 0 meets c = inf: 0 * inf = NaN
                    m = L.LSTM(3, 4).to(dt)
                    h = torch.randn(1, 1, 4, dtype=dt)
                    h[0, 0, 1] = float("inf")
                    return m(torch.randn(3, 1, 3, dtype=dt), (h, torch.full((1, 1, 4), float("inf"), dtype=dt)))
                case(f"LSTM-h-and-c-inf-{dt}", "nn")(h_and_c_inf)
            case("LSTM-hx-one-state", "nn")(lambda L: L.LSTM(3, 4)(torch.randn(5, 2, 3), (torch.randn(1, 2, 4),)))
            case("LSTM-proj-hx-shapes", "nn")(lambda L: L.LSTM(3, 4, proj_size=2)(
                torch.randn(5, 2, 3), (torch.randn(1, 2, 4), torch.randn(1, 2, 2))))
        # ---- input shapes
        for label, shape in [("4d", (5, 2, 1, 3)), ("1d", (3,)), ("features", (5, 2, 7)), ("features0", (5, 2, 0)),
                             ("T0", (0, 2, 3)), ("T0-unbatched", (0, 3)), ("B0", (5, 0, 3))]:
            case(f"{n}-input-shape-{label}", "nn")(lambda L, shape=shape: getattr(L, n)(3, 4, 2, bidirectional=True)(
                torch.randn(*shape)))
        case(f"{n}-batch_first-T0", "nn")(lambda L: getattr(L, n)(3, 4, batch_first=True)(torch.randn(2, 0, 3)))
        case(f"{n}-batch_first-B0", "nn")(lambda L: getattr(L, n)(3, 4, batch_first=True)(torch.randn(0, 5, 3)))
        case(f"{n}-B0-with-hx", "nn")(lambda L: getattr(L, n)(3, 4)(torch.randn(5, 0, 3), _hx(n, 1, 0, 4)))

        def b0_backward(L):
            m = getattr(L, n)(3, 4, 2)
            x = torch.randn(5, 0, 3, requires_grad=True)
            out = m(x)[0]
            out.sum().backward()
            return out, x.grad, [p.grad for p in m.parameters()]
        case(f"{n}-B0-backward", "nn")(b0_backward)

        # ---- NaN / inf propagation
        for label, val in [("nan", float("nan")), ("inf", float("inf")), ("-inf", float("-inf"))]:
            def in_val(L, val=val):
                m = getattr(L, n)(3, 4, 2, bidirectional=True)
                x = torch.randn(6, 3, 3)
                x[2, 1, 0] = val
                return m(x)
            case(f"{n}-input-{label}", "nn")(in_val)

            def hx_val(L, val=val):
                m = getattr(L, n)(3, 4, 2)
                hx = _hx(n, 2, 3, 4)
                (hx[0] if lstm else hx)[0, 1, 2] = val
                return m(torch.randn(6, 3, 3), hx)
            case(f"{n}-hx-{label}", "nn")(hx_val)

        def hx_inf_f64(L):
            m = getattr(L, n)(3, 4).double()
            hx = _hx(n, 1, 1, 4, dtype=torch.float64)
            (hx[0] if lstm else hx)[0, 0, 2] = float("inf")
            return m(torch.randn(3, 1, 3, dtype=torch.float64), hx)
        case(f"{n}-hx-inf-float64", "nn")(hx_inf_f64)

        def nan_weight(L):
            m = getattr(L, n)(3, 4, 2)
            with torch.no_grad():
                m.weight_hh_l0[1, 2] = float("nan")
            return m(torch.randn(6, 3, 3))
        case(f"{n}-weight-nan", "nn")(nan_weight)

        def nan_packed(L):
            m = getattr(L, n)(3, 4, 1, bidirectional=True)
            seqs = [torch.randn(k, 3) for k in (2, 5, 3)]
            seqs[2][1, 0] = float("nan")
            return m(pack_sequence(seqs, enforce_sorted=False))
        case(f"{n}-packed-nan", "nn")(nan_packed)

        def nan_backward(L):
            m = getattr(L, n)(3, 4, 1)
            x = torch.randn(6, 3, 3, requires_grad=True)
            with torch.no_grad():
                x[4, 0, 1] = float("nan")
            m(x)[0].sum().backward()
            return x.grad
        case(f"{n}-nan-backward", "nn")(nan_backward)

        # ---- non-contiguous / expanded, including packed data and weights (results vs nn)
        def noncontig_all(L):
            m = getattr(L, n)(3, 4, 2, bidirectional=True)
            x = torch.randn(2, 6, 3).transpose(0, 1)                      # (6, 2, 3) non-contiguous
            hx = _hx(n, 2, 4, 4)
            hx = tuple(h.transpose(0, 1) for h in hx) if lstm else hx.transpose(0, 1)  # (4, 2, 4)
            return m(x, hx)
        case(f"{n}-noncontiguous-input-hx", "nn")(noncontig_all)

        def expanded_all(L):
            m = getattr(L, n)(3, 4, 1)
            x = torch.randn(1, 1, 3).expand(6, 2, 3)
            h = torch.randn(1, 1, 4).expand(1, 2, 4)
            return m(x, (h, torch.randn(4).expand(1, 2, 4)) if lstm else h)
        case(f"{n}-expanded-input-hx", "nn")(expanded_all)

        def packed_noncontig(L):
            m = getattr(L, n)(3, 4, 1)
            p = pack_sequence([torch.randn(4, 3), torch.randn(2, 3)])
            data = torch.randn(p.data.shape[0], 6)[:, ::2]
            return m(PackedSequence(data, p.batch_sizes))
        case(f"{n}-packed-noncontiguous-data", "nn")(packed_noncontig)

        for pname in ("bias_ih_l0", "bias_hh_l0", "weight_ih_l0", "weight_hh_l0"):
            def strided_param(L, pname=pname):
                m = getattr(L, n)(3, 4, 1)
                p = getattr(m, pname).detach() * 1.5
                if p.dim() == 1:
                    strided = torch.stack([p, torch.randn_like(p)], 1)[:, 0]   # stride 2
                else:
                    strided = p.t().contiguous().t()                          # column-major
                assert not strided.is_contiguous()
                return torch.func.functional_call(m, {pname: strided}, (torch.randn(5, 2, 3),))
            case(f"{n}-noncontiguous-{pname}", "nn")(strided_param)

        def expanded_bias(L):
            m = getattr(L, n)(3, 4, 1)
            g = m.bias_ih_l0.numel()
            return torch.func.functional_call(m, {"bias_ih_l0": torch.tensor(0.3).expand(g)}, (torch.randn(5, 2, 3),))
        case(f"{n}-expanded-bias", "nn")(expanded_bias)

        # ---- packed sequences with inconsistent pieces
        def packed_bad_batch_sizes(L, bs):
            m = getattr(L, n)(3, 4)
            total = max(int(sum(bs)), 1)
            return m(PackedSequence(torch.randn(total, 3), torch.tensor(bs, dtype=torch.long)))
        for label, bs in [("increasing", [1, 2]), ("zero", [2, 0]), ("negative", [2, -1])]:
            case(f"{n}-packed-batch_sizes-{label}", "raise")(lambda L=EXT, bs=bs: packed_bad_batch_sizes(L, bs))

        def packed_rows_mismatch(L=EXT):
            m = getattr(L, n)(3, 4)
            return m(PackedSequence(torch.randn(7, 3), torch.tensor([3, 2, 1])))
        case(f"{n}-packed-rows-mismatch", "raise")(packed_rows_mismatch)

        def packed_float_batch_sizes(L=EXT):
            return getattr(L, n)(3, 4)(PackedSequence(torch.randn(6, 3), torch.tensor([3.0, 2.0, 1.0])))
        case(f"{n}-packed-float-batch_sizes", "raise")(packed_float_batch_sizes)

        def packed_3d_data(L=EXT):
            return getattr(L, n)(3, 4)(PackedSequence(torch.randn(6, 1, 3), torch.tensor([3, 2, 1])))
        case(f"{n}-packed-3d-data", "raise")(packed_3d_data)

    _mk(_n)

for _n in CELLS:
    def _mkc(n):
        lstm = n == "LSTMCell"
        for dt in (torch.int64, torch.complex64, torch.float64, torch.float16):
            case(f"{n}-input-{dt}", "raise")(lambda L=EXT, dt=dt: getattr(L, n)(3, 4)(torch.ones(2, 3).to(dt)))
            case(f"{n}-hx-{dt}", "raise")(lambda L=EXT, dt=dt: getattr(L, n)(3, 4)(torch.randn(2, 3), _hx(n, 2, 4, dtype=dt)))
        for label, xs, hs in [("hx-batch", (2, 3), (3, 4)), ("hx-hidden", (2, 3), (2, 5)), ("hx-3d", (2, 3), (1, 2, 4)),
                              ("input-3d", (1, 2, 3), None), ("input-features", (2, 5), None), ("input-0d", (), None),
                              ("unbatched-input-batched-hx", (3,), (2, 4)), ("batched-input-unbatched-hx", (2, 3), (4,))]:
            case(f"{n}-{label}", "nn")(lambda L, xs=xs, hs=hs: getattr(L, n)(3, 4)(
                torch.randn(*xs), None if hs is None else _hx(n, *hs)))
        case(f"{n}-B0", "nn")(lambda L: getattr(L, n)(3, 4)(torch.randn(0, 3)))
        case(f"{n}-hidden0", "nn")(lambda L: getattr(L, n)(3, 0)(torch.randn(2, 3)))
        case(f"{n}-hidden0-with-hx", "nn")(lambda L: getattr(L, n)(3, 0)(torch.randn(2, 3), _hx(n, 2, 0)))

        def hidden0_backward(L):
            m = getattr(L, n)(3, 0)
            x = torch.randn(2, 3, requires_grad=True)
            out = m(x)
            sum(o.sum() for o in _flat(out)).backward()
            return out, x.grad
        case(f"{n}-hidden0-backward", "nn")(hidden0_backward)
        case(f"{n}-input0", "nn")(lambda L: getattr(L, n)(0, 4)(torch.randn(2, 0)))
        for label, val in [("nan", float("nan")), ("inf", float("inf"))]:
            def cell_val(L, val=val):
                m = getattr(L, n)(3, 4)
                x = torch.randn(3, 3)
                x[1, 2] = val
                return m(x, _hx(n, 3, 4))
            case(f"{n}-input-{label}", "nn")(cell_val)

        def cell_noncontig(L):
            m = getattr(L, n)(3, 4)
            x = torch.randn(3, 6)[:, ::2]
            hx = _hx(n, 4, 2)
            hx = tuple(h.t() for h in hx) if lstm else hx.t()
            return m(x, hx)
        case(f"{n}-noncontiguous-input-hx", "nn")(cell_noncontig)
        case(f"{n}-expanded-input-hx", "nn")(lambda L: getattr(L, n)(3, 4)(
            torch.randn(3).expand(5, 3), (torch.randn(4).expand(5, 4), torch.randn(4).expand(5, 4)) if lstm
            else torch.randn(4).expand(5, 4)))

        def cell_strided_bias(L):
            m = getattr(L, n)(3, 4)
            b = m.bias_ih.detach()
            return torch.func.functional_call(m, {"bias_ih": torch.stack([b, -b], 1)[:, 0]}, (torch.randn(2, 3),))
        case(f"{n}-noncontiguous-bias", "nn")(cell_strided_bias)
        if lstm:
            # torch.nn: TypeError "lstm_cell(): argument 'hx' (position 2) must be tuple of Tensors, not Tensor"
            case("LSTMCell-hx-single-tensor", "nn")(lambda L: L.LSTMCell(3, 4)(torch.randn(3), torch.randn(2, 4)))
            case("LSTMCell-hx-one-state", "nn")(lambda L: L.LSTMCell(3, 4)(torch.randn(2, 3), (torch.randn(2, 4),)))
            case("LSTMCell-hx-c-shape", "nn")(lambda L: L.LSTMCell(3, 4)(
                torch.randn(2, 3), (torch.randn(2, 4), torch.randn(2, 5))))
    _mkc(_n)


# ============================================================ raw ops: torch.ops.rnn_ext.*
def _raw_forward_cases():
    bad = {
        "input-2d-no-batch_sizes": dict(input=torch.randn(6, 4)),
        "input-4d": dict(input=torch.randn(3, 2, 1, 4)),
        "input-1d": dict(input=torch.randn(4)),
        "input-features": dict(input=torch.randn(3, 2, 7)),
        "input-batch": dict(input=torch.randn(3, 5, 4)),
        "input-T0": dict(input=torch.randn(0, 2, 4)),
        "input-int": dict(input=torch.ones(3, 2, 4, dtype=torch.long)),
        "input-complex": dict(input=torch.randn(3, 2, 4, dtype=torch.complex64)),
        "input-float64": dict(input=torch.randn(3, 2, 4, dtype=torch.float64)),
        "input-meta": dict(input=torch.randn(3, 2, 4, device="meta")),
        "w_ih-cols": dict(w_ih=torch.randn(20, 3)),
        "w_ih-rows": dict(w_ih=torch.randn(19, 4)),
        "w_ih-1d": dict(w_ih=torch.randn(20)),
        "w_hh-rows": dict(w_hh=torch.randn(19, 5)),
        "w_hh-cols": dict(w_hh=torch.randn(20, 9)),
        "w_hh-empty": dict(w_hh=torch.randn(0, 5)),
        "w_hh-3d": dict(w_hh=torch.randn(20, 5, 1)),
        "b_ih-len": dict(b_ih=torch.randn(7)),
        "b_hh-2d": dict(b_hh=torch.randn(20, 1)),
        "b_ih-int": dict(b_ih=torch.ones(20, dtype=torch.long)),
        "h0-batch": dict(h0=torch.randn(3, 5)),
        "h0-hidden": dict(h0=torch.randn(2, 6)),
        "h0-1d": dict(h0=torch.randn(5)),
        "h0-3d": dict(h0=torch.randn(1, 2, 5)),
        "h0-float64": dict(h0=torch.randn(2, 5, dtype=torch.float64)),
        "c0-batch": dict(c0=torch.randn(1, 5)),
        "c0-hidden": dict(c0=torch.randn(2, 4)),
        "c0-int": dict(c0=torch.ones(2, 5, dtype=torch.long)),
        "w_hr-spurious": dict(w_hr=torch.randn(3, 5)),
        "w_hr-too-wide": dict(w_hr=torch.randn(6, 5)),
        "batch_sizes-with-3d-input": dict(batch_sizes=torch.tensor([2, 2, 2])),
    }
    for label, over in bad.items():
        def fn(L=EXT, over=over):
            a = _lstm_raw()
            a.update(over)
            return _lstm_fwd(a)
        case(f"raw-lstm_forward-{label}", "raise")(fn)

    packed_bad = {
        "non-monotonic": [1, 2, 2, 1],
        "sum-mismatch-small": [2, 2, 1],
        "sum-mismatch-large": [2, 2, 2, 2],
        "negative": [2, -2, 2, 2, 2],
        "zero": [2, 2, 0, 2],
        "first-not-B": [1, 1, 1, 1, 1, 1],
        "first-above-B": [3, 3],
        "huge": [2, 2, 2, 1 << 40],
        "empty": [],
    }
    for label, bs in packed_bad.items():
        def fn(L=EXT, bs=bs):
            a = _lstm_raw(T=3, B=2, packed=True)   # 6 rows
            a["batch_sizes"] = torch.tensor(bs, dtype=torch.long)
            return _lstm_fwd(a)
        case(f"raw-lstm_forward-batch_sizes-{label}", "raise")(fn)
        for opname in ("gru", "rnn"):
            def fn2(L=EXT, bs=bs, opname=opname):
                a = _gru_raw(gates=3 if opname == "gru" else 1)
                a["input"] = a["input"].reshape(6, 4)
                a["batch_sizes"] = torch.tensor(bs, dtype=torch.long)
                return (_gru_fwd if opname == "gru" else _rnn_fwd)(a)
            case(f"raw-{opname}_forward-batch_sizes-{label}", "raise")(fn2)
    for label, bs in [("int32", torch.tensor([2, 2, 2], dtype=torch.int32)), ("float", torch.tensor([2.0, 2.0, 2.0])),
                      ("2d", torch.tensor([[2, 2, 2]])), ("meta", torch.empty(3, dtype=torch.long, device="meta"))]:
        def fn(L=EXT, bs=bs):
            a = _lstm_raw(T=3, B=2, packed=True)
            a["batch_sizes"] = bs
            return _lstm_fwd(a)
        case(f"raw-lstm_forward-batch_sizes-{label}", "raise")(fn)

    def noncontig_batch_sizes(L=EXT):
        a = _lstm_raw(T=3, B=2, packed=True)
        a["batch_sizes"] = torch.tensor([2, 9, 2, 9, 1, 9])[::2]   # valid values [2, 2, 1], stride 2
        a["input"] = a["input"][:5]
        out = _lstm_fwd(a)
        a["batch_sizes"] = a["batch_sizes"].contiguous()
        ref = _lstm_fwd(a)
        return "" if torch.equal(out[0], ref[0]) else "non-contiguous batch_sizes changed the result"
    case("raw-lstm_forward-batch_sizes-noncontiguous-correct", "ok")(noncontig_batch_sizes)

    for opname, mk, fwd in (("gru", lambda: _gru_raw(), _gru_fwd), ("rnn", lambda: _gru_raw(gates=1), _rnn_fwd)):
        gates = 3 if opname == "gru" else 1
        for label, over in {"input-2d": dict(input=torch.randn(6, 4)), "input-features": dict(input=torch.randn(3, 2, 7)),
                            "w_hh-rows": dict(w_hh=torch.randn(gates * 5 + 1, 5)),
                            "w_hh-cols": dict(w_hh=torch.randn(gates * 5, 6)),
                            "w_ih-cols": dict(w_ih=torch.randn(gates * 5, 3)),
                            "b_hh-len": dict(b_hh=torch.randn(2)), "h0-batch": dict(h0=torch.randn(4, 5)),
                            "h0-hidden": dict(h0=torch.randn(2, 4)), "h0-1d": dict(h0=torch.randn(5)),
                            "input-int": dict(input=torch.ones(3, 2, 4, dtype=torch.int32)),
                            "input-T0": dict(input=torch.randn(0, 2, 4)),
                            "input-float64": dict(input=torch.randn(3, 2, 4, dtype=torch.float64))}.items():
            def fn(L=EXT, over=over, mk=mk, fwd=fwd):
                a = mk()
                a.update(over)
                return fwd(a)
            case(f"raw-{opname}_forward-{label}", "raise")(fn)

    # wrong argument kinds: Python-level TypeErrors from the dispatcher
    case("raw-lstm_forward-None-input", "raise")(lambda L=EXT: OPS.lstm_forward(
        None, torch.randn(2, 5), torch.randn(2, 5), torch.randn(20, 4), torch.randn(20, 5), None, None, None, None,
        False, True))
    case("raw-lstm_forward-missing-args", "raise")(lambda L=EXT: OPS.lstm_forward(torch.randn(3, 2, 4)))
    case("raw-gru_forward-list-input", "raise")(lambda L=EXT: OPS.gru_forward(
        [1.0], torch.randn(2, 5), torch.randn(15, 4), torch.randn(15, 5), None, None, None, False, True))

    # non-contiguous biases in the raw op: valid input, must give the contiguous result
    for label, make in [("strided", lambda b: torch.stack([b, torch.randn_like(b)], 1)[:, 0]),
                        ("expanded", lambda b: b[:1].expand(b.shape[0]))]:
        def fn(L=EXT, make=make, label=label):
            a = _lstm_raw(need_grad=False)
            nc = make(a["b_ih"])
            a["b_ih"] = nc
            out = _lstm_fwd(a)[0]
            a["b_ih"] = nc.contiguous()
            ref = _lstm_fwd(a)[0]
            diff = (out - ref).abs().max().item()
            return "" if diff == 0 else f"{label} b_ih gives a different result (max diff {diff:.3g})"
        case(f"raw-lstm_forward-{label}-bias-correct", "ok")(fn)

        def fn_gru(L=EXT, make=make, label=label):
            a = _gru_raw(need_grad=False)
            nc = make(a["b_hh"])
            a["b_hh"] = nc
            out = _gru_fwd(a)[0]
            a["b_hh"] = nc.contiguous()
            ref = _gru_fwd(a)[0]
            diff = (out - ref).abs().max().item()
            return "" if diff == 0 else f"{label} b_hh gives a different result (max diff {diff:.3g})"
        case(f"raw-gru_forward-{label}-bias-correct", "ok")(fn_gru)

    # valid edge sizes on the raw ops: must work
    def raw_b0(L=EXT):
        a = _lstm_raw(B=0)
        y, h, c, ws = _lstm_fwd(a)
        ok = y.shape == (3, 0, 5) and h.shape == (0, 5) and ws.shape[0] == 0
        return "" if ok else f"shapes {y.shape} {h.shape} {ws.shape}"
    case("raw-lstm_forward-B0", "ok")(raw_b0)

    def raw_h0(L=EXT):
        a = _lstm_raw(H=0)
        y, h, c, ws = _lstm_fwd(a)
        return "" if y.shape == (3, 2, 0) else f"shape {y.shape}"
    case("raw-lstm_forward-hidden0", "ok")(raw_h0)


def _raw_backward_cases():
    # LSTM backward: each override makes the arguments inconsistent with the forward
    r = torch.randn
    lstm_bad = {
        "workspace-from-need_grad-False": lambda: dict(workspace=_lstm_fwd(_lstm_raw(need_grad=False))[3]),
        "workspace-float64": lambda: dict(workspace=_lstm_fwd(_lstm_raw())[3].double()),
        "workspace-cols": lambda: dict(workspace=r(6, 24)),
        "workspace-rows": lambda: dict(workspace=r(5, 25)),
        "workspace-1d": lambda: dict(workspace=r(150)),
        "grad_output-fewer-steps": lambda: dict(grad_output=r(1, 2, 5)),
        "grad_output-more-steps": lambda: dict(grad_output=r(4, 2, 5)),
        "grad_output-features": lambda: dict(grad_output=r(3, 2, 3)),
        "grad_output-float64": lambda: dict(grad_output=r(3, 2, 5, dtype=torch.float64)),
        "grad_h_n-shape": lambda: dict(grad_h_n=r(2, 4)),
        "grad_c_n-shape": lambda: dict(grad_c_n=r(1, 5)),
        "output-fewer-steps": lambda: dict(output=r(1, 2, 5)),
        "output-features": lambda: dict(output=r(3, 2, 3)),
        "input-fewer-steps": lambda: dict(input=r(1, 2, 4)),
        "input-features": lambda: dict(input=r(3, 2, 7)),
        "input-int": lambda: dict(input=torch.ones(3, 2, 4, dtype=torch.long)),
        "h0-hidden": lambda: dict(h0=r(2, 3)),
        "h0-batch": lambda: dict(h0=r(1, 5)),
        "c0-batch": lambda: dict(c0=r(1, 5)),
        "c0-hidden": lambda: dict(c0=r(2, 2)),
        "c0-1d": lambda: dict(c0=r(5)),
        "w_ih-cols": lambda: dict(w_ih=r(20, 7)),
        "w_ih-rows": lambda: dict(w_ih=r(8, 4)),
        "w_hh-cols": lambda: dict(w_hh=r(20, 9)),
        "w_hh-rows": lambda: dict(w_hh=r(16, 5)),
        "w_hr-spurious": lambda: dict(w_hr=r(3, 5)),
        "batch_sizes-spurious": lambda: dict(batch_sizes=torch.tensor([2, 2, 2])),
    }
    for label, over in lstm_bad.items():
        case(f"raw-lstm_backward-{label}", "raise")(lambda L=EXT, over=over: _lstm_bwd(_lstm_bwd_args(**over())))

    def long_sequence_short_grad(L=EXT):
        # a grad_output with 1 step for a 4000-step forward: reading it as 4000 steps runs far out of bounds
        T, B, I, H = 4000, 16, 4, 64
        x, h0, c0 = torch.randn(T, B, I), torch.randn(B, H), torch.randn(B, H)
        w_ih, w_hh = torch.randn(4 * H, I) * 0.1, torch.randn(4 * H, H) * 0.1
        y, h, c, ws = OPS.lstm_forward(x, h0, c0, w_ih, w_hh, None, None, None, None, False, True)
        return OPS.lstm_backward(torch.randn(1, B, H), torch.randn(B, H), torch.randn(B, H), x, h0, c0, w_ih, w_hh,
                                 None, None, False, y, ws)
    case("raw-lstm_backward-grad_output-one-step-of-4000", "raise")(long_sequence_short_grad)

    def packed_bs_changed(L=EXT):
        a = _lstm_raw(T=3, B=2, packed=True)
        y, h, c, ws = _lstm_fwd(a)
        return OPS.lstm_backward(torch.randn_like(y), torch.randn_like(h), torch.randn_like(c), a["input"], a["h0"],
                                 a["c0"], a["w_ih"], a["w_hh"], None, torch.tensor([2, 2, 1]), False, y, ws)
    case("raw-lstm_backward-batch_sizes-changed", "raise")(packed_bs_changed)

    gru_bad = {
        "workspace-from-need_grad-False": lambda: dict(workspace=_gru_fwd(_gru_raw(need_grad=False))[2]),
        "workspace-cols": lambda: dict(workspace=r(6, 19)),
        "grad_output-fewer-steps": lambda: dict(grad_output=r(1, 2, 5)),
        "grad_output-features": lambda: dict(grad_output=r(3, 2, 3)),
        "grad_h_n-shape": lambda: dict(grad_h_n=r(2, 4)),
        "output-fewer-steps": lambda: dict(output=r(1, 2, 5)),
        "input-features": lambda: dict(input=r(3, 2, 7)),
        "h0-hidden": lambda: dict(h0=r(2, 3)),
        "h0-batch": lambda: dict(h0=r(1, 5)),
        "w_ih-cols": lambda: dict(w_ih=r(15, 7)),
        "w_hh-cols": lambda: dict(w_hh=r(15, 9)),
        "w_hh-rows": lambda: dict(w_hh=r(12, 5)),
    }
    for label, over in gru_bad.items():
        case(f"raw-gru_backward-{label}", "raise")(lambda L=EXT, over=over: _gru_bwd(_gru_bwd_args(**over())))

    rnn_bad = {
        "grad_output-fewer-steps": lambda: dict(grad_output=r(1, 2, 5)),
        "grad_output-features": lambda: dict(grad_output=r(3, 2, 3)),
        "grad_h_n-shape": lambda: dict(grad_h_n=r(2, 4)),
        "output-fewer-steps": lambda: dict(output=r(1, 2, 5)),
        "input-features": lambda: dict(input=r(3, 2, 7)),
        "h0-hidden": lambda: dict(h0=r(2, 3)),
        "w_ih-cols": lambda: dict(w_ih=r(5, 7)),
        "w_hh-cols": lambda: dict(w_hh=r(5, 9)),
        "w_hh-rows": lambda: dict(w_hh=r(4, 5)),
    }
    for label, over in rnn_bad.items():
        case(f"raw-rnn_backward-{label}", "raise")(lambda L=EXT, over=over: _rnn_bwd(_rnn_bwd_args(**over())))


_raw_forward_cases()
_raw_backward_cases()

_names = [c[0] for c in CASES]
assert len(_names) == len(set(_names)), "duplicate hostile case names"


# ============================================================ the subprocess side
def _outcome(fn, L):
    torch.manual_seed(0)
    try:
        return "ok", fn(L)
    except Exception as e:  # noqa: BLE001
        return "raised", e


def _one_line(text):
    return " ".join(str(text).split())[:300]


def _execute(kind, fn):
    """(status, detail): status 'pass' or 'fail'."""
    if kind == "raise":
        st, val = _outcome(fn, EXT)
        if st == "ok":
            return "fail", "no exception raised"
        if not isinstance(val, ALLOWED):
            return "fail", f"raised {type(val).__name__} (want RuntimeError/ValueError/TypeError): {_one_line(val)}"
        return "pass", f"{type(val).__name__}: {_one_line(val)}"
    if kind == "ok":
        st, val = _outcome(fn, EXT)
        if st == "raised":
            return "fail", f"raised {type(val).__name__}: {_one_line(val)}"
        return ("fail", val) if val else ("pass", "correct")
    # kind == "nn"
    st_ref, ref = _outcome(fn, NN)
    st_new, new = _outcome(fn, EXT)
    if st_ref == "raised":
        if st_new != "raised":
            return "fail", f"torch.nn raised {type(ref).__name__}: {_one_line(ref)}; rnn_ext raised nothing"
        if type(new) is not type(ref):
            return "fail", (f"torch.nn raised {type(ref).__name__}: {_one_line(ref)}; "
                            f"rnn_ext raised {type(new).__name__}: {_one_line(new)}")
        return "pass", f"both {type(new).__name__}"
    if st_new == "raised":
        return "fail", f"torch.nn succeeded; rnn_ext raised {type(new).__name__}: {_one_line(new)}"
    err = _compare(ref, new)
    return ("fail", err) if err else ("pass", "same as torch.nn")


def _run_cases(start):
    import warnings

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    for i in range(start, len(CASES)):
        name, kind, fn = CASES[i]
        print(f"BEGIN\t{i}\t{name}", flush=True)
        status, detail = _execute(kind, fn)
        print(f"CASE\t{i}\t{name}\t{status}\t{_one_line(detail)}", flush=True)
    print(f"DONE\t{len(CASES)}", flush=True)


# ============================================================ the pytest side
def _run_all_in_subprocesses():
    """{name: (status, detail)} for every case; crashed cases get status 'crash'."""
    results, start, runs = {}, 0, 0
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    while start < len(CASES) and runs < 40:
        runs += 1
        try:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--run-cases", str(start)], cwd=REPO,
                                  env=env, capture_output=True, text=True, timeout=240)
            out, rc = proc.stdout, proc.returncode
            err = proc.stderr
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            rc, err = "timeout", ""
        last_begin = None
        for line in out.splitlines():
            parts = line.split("\t")
            if parts[0] == "BEGIN":
                last_begin = int(parts[1])
            elif parts[0] == "CASE":
                results[parts[2]] = (parts[3], parts[4] if len(parts) > 4 else "")
                last_begin = None
        if rc == 0 and "DONE" in out:
            break
        if last_begin is None:  # died outside any case (import error, ...)
            raise AssertionError(f"hostile-case subprocess failed (rc={rc}) outside a case:\n{err[-3000:]}")
        how = f"killed by {signal.Signals(-rc).name}" if isinstance(rc, int) and rc < 0 else f"exit status {rc}"
        results[CASES[last_begin][0]] = ("crash", f"the process died in this case ({how})")
        start = last_begin + 1
    return results


@pytest.fixture(scope="module")
def hostile_results():
    return _run_all_in_subprocesses()


def test_hostile_case_count(hostile_results, capsys):
    with capsys.disabled():
        n_fail = sum(1 for s, _ in hostile_results.values() if s != "pass")
        n_crash = sum(1 for s, _ in hostile_results.values() if s == "crash")
        print(f"\n[test_hostile] {len(CASES)} hostile cases run in subprocesses: "
              f"{len(CASES) - n_fail} pass, {n_fail} fail ({n_crash} crashed the process)")
    assert len(CASES) > 300
    assert set(hostile_results) == {c[0] for c in CASES}, "some cases printed no result line"


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_hostile_case(hostile_results, name):
    status, detail = hostile_results[name]
    assert status == "pass", f"{name}: {status}: {detail}"


def test_crash_is_detected(tmp_path):
    """The harness itself: a case that aborts the interpreter is reported as a crash."""
    script = tmp_path / "abort.py"
    script.write_text("import os\nprint('BEGIN\\t0\\tx', flush=True)\nos.abort()\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "CASE" not in proc.stdout


@pytest.mark.parametrize("dev", [pytest.param("cuda", marks=pytest.mark.cuda)])
def test_device_batch_sizes_raise_not_crash(dev):
    """batch_sizes on the GPU (only CPU batch_sizes are valid): a Python error, in a subprocess."""
    code = (
        "import torch, rnn_ext\n"
        "x = torch.randn(6, 4, device='cuda'); h = torch.randn(2, 5, device='cuda')\n"
        "w_ih = torch.randn(20, 4, device='cuda'); w_hh = torch.randn(20, 5, device='cuda')\n"
        "bs = torch.tensor([2, 2, 2], device='cuda')\n"
        "for call in (lambda: torch.ops.rnn_ext.lstm_forward(x, h, h, w_ih, w_hh, None, None, None, bs, False, True),\n"
        "             lambda: torch.ops.rnn_ext.gru_forward(x, h, w_ih[:15], w_hh[:15], None, None, bs, False, True),\n"
        "             lambda: torch.ops.rnn_ext.rnn_forward(x, h, w_ih[:5], w_hh[:5], None, None, bs, False, False)):\n"
        "    try:\n"
        "        call(); print('NO-EXCEPTION')\n"
        "    except RuntimeError as e:\n"
        "        print('RAISED', 'CPU' in str(e))\n"
        "print('DONE')\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["RAISED", "True"] * 3 + ["DONE"], proc.stdout


# ============================================================ in-process: non-contiguous / expanded vs nn
def _pair(name, *args, **kwargs):
    torch.manual_seed(0)
    ref = getattr(nn, name)(*args, **kwargs)
    torch.manual_seed(0)
    new = getattr(rnn_ext, name)(*args, **kwargs)
    return ref, new


def _variants(name, T, B, I, H, layers, device):
    """(label, input, hx) triples: contiguous, transposed, strided, expanded (stride 0).
    Made on `device`: a copy there (.to) would be contiguous again."""
    lstm = name == "LSTM"

    def rand(*shape):
        return torch.randn(*shape, device=device)
    base = rand(T, B, I)
    hbase = _hx(name, layers, B, H)
    hbase = tuple(h.to(device) for h in hbase) if lstm else hbase.to(device)

    def mkhx(f):
        return tuple(f(h) for h in hbase) if lstm else f(hbase)
    yield "contiguous", base, hbase
    yield "transposed", rand(B, T, I).transpose(0, 1), mkhx(lambda h: h.transpose(0, 1).contiguous().transpose(0, 1))
    yield "strided", rand(T, B, 2 * I)[..., ::2], mkhx(lambda h: torch.cat([h, h], -1)[..., ::2])
    yield "expanded", rand(1, B, I).expand(T, B, I), mkhx(lambda h: h[:, :1].expand(layers, B, H))
    yield "expanded-batch", rand(T, 1, I).expand(T, B, I), mkhx(lambda h: h[:1].expand(layers, B, H))


@pytest.mark.parametrize("name", LAYERS)
def test_noncontiguous_and_expanded_match_nn(device, name):
    T, B, I, H, layers = 6, 3, 4, 5, 2
    for label, x, hx in _variants(name, T, B, I, H, layers, device):
        ref, new = _pair(name, I, H, 1, bidirectional=True)
        ref, new = ref.to(device), new.to(device)
        assert label == "contiguous" or not x.is_contiguous()
        if label != "contiguous":
            assert not (hx[0] if name == "LSTM" else hx).is_contiguous()
        xr, xn = x.detach().requires_grad_(), x.detach().requires_grad_()
        out_ref, out_new = ref(xr, hx), new(xn, hx)
        err = _compare(out_ref, out_new)
        assert not err, f"{label}: {err}"
        w = torch.randn(out_ref[0].shape, device=device)
        gr = torch.autograd.grad((out_ref[0] * w).sum(), [xr] + list(ref.parameters()))
        gn = torch.autograd.grad((out_new[0] * w).sum(), [xn] + list(new.parameters()))
        for a, b in zip(gr, gn):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", LAYERS)
def test_noncontiguous_batch_first_matches_nn(device, name):
    ref, new = _pair(name, 4, 5, 2, batch_first=True)
    ref, new = ref.to(device), new.to(device)
    x = torch.randn(6, 3, 4, device=device).transpose(0, 1)  # (3, 6, 4) batch-first, non-contiguous
    assert not x.is_contiguous()
    err = _compare(ref(x), new(x))
    assert not err, err


@pytest.mark.parametrize("name", CELLS)
def test_cells_noncontiguous_and_expanded_match_nn(device, name):
    ref, new = _pair(name, 4, 5)
    ref, new = ref.to(device), new.to(device)
    lstm = name == "LSTMCell"
    cases = [
        (torch.randn(4, 3, device=device).t(), torch.randn(5, 3, device=device).t()),
        (torch.randn(4, device=device).expand(3, 4), torch.randn(5, device=device).expand(3, 5)),
        (torch.randn(3, 8, device=device)[:, ::2], torch.randn(3, 10, device=device)[:, 1::2]),
    ]
    for x, h in cases:
        assert not x.is_contiguous() and not h.is_contiguous()
        hx = (h, h.flip(0)) if lstm else h
        err = _compare(ref(x, hx), new(x, hx))
        assert not err, err


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--run-cases":
    _run_cases(int(sys.argv[2]))
