"""torch.library.opcheck on every rnn_ext op.

Checks the schema, the autograd registration, the fake (meta) kernels and
AOTAutograd tracing with dynamic shapes, on sample inputs that cover
bias / no bias, projection, packed / dense, reverse, need_grad and inputs
that require grad and inputs that don't. The backward ops are fed by running
the matching forward op with need_grad=True.
"""
from __future__ import annotations

import pytest
import torch

import rnn_ext  # noqa: F401  (registers the ops, their fake and autograd kernels)

ops = torch.ops.rnn_ext
TEST_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")

T, B, I, H, P = 3, 2, 3, 2, 1
PACKED_SIZES = [2, 2, 1]  # sums to 5 rows


def _randn(*shape, dtype, device):
    return torch.randn(*shape, dtype=dtype, device=device)


def _common(device, dtype, packed, gates, h_out, bias):
    x = _randn(sum(PACKED_SIZES), I, dtype=dtype, device=device) if packed else _randn(T, B, I, dtype=dtype,
                                                                                       device=device)
    batch_sizes = torch.tensor(PACKED_SIZES) if packed else None  # int64, on CPU
    h0 = _randn(B, h_out, dtype=dtype, device=device)
    w_ih = _randn(gates * H, I, dtype=dtype, device=device) * 0.5
    w_hh = _randn(gates * H, h_out, dtype=dtype, device=device) * 0.5
    b_ih = _randn(gates * H, dtype=dtype, device=device) if bias else None
    b_hh = _randn(gates * H, dtype=dtype, device=device) if bias else None
    return x, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh


def _require_grad(args):
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            a.requires_grad_()
    return args


def lstm_forward_args(device, *, bias=True, proj=False, packed=False, reverse=False, need_grad=True,
                      requires_grad=True, dtype=torch.float64):
    h_out = P if proj else H
    x, bs, h0, w_ih, w_hh, b_ih, b_hh = _common(device, dtype, packed, 4, h_out, bias)
    c0 = _randn(B, H, dtype=dtype, device=device)
    w_hr = _randn(P, H, dtype=dtype, device=device) if proj else None
    args = (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, bs, reverse, need_grad)
    return _require_grad(args) if requires_grad else args


def gru_forward_args(device, *, bias=True, packed=False, reverse=False, need_grad=True, requires_grad=True,
                     dtype=torch.float64):
    x, bs, h0, w_ih, w_hh, b_ih, b_hh = _common(device, dtype, packed, 3, H, bias)
    args = (x, h0, w_ih, w_hh, b_ih, b_hh, bs, reverse, need_grad)
    return _require_grad(args) if requires_grad else args


def rnn_forward_args(device, *, bias=True, packed=False, reverse=False, relu=False, requires_grad=True,
                     dtype=torch.float64):
    x, bs, h0, w_ih, w_hh, b_ih, b_hh = _common(device, dtype, packed, 1, H, bias)
    args = (x, h0, w_ih, w_hh, b_ih, b_hh, bs, relu, reverse)
    return _require_grad(args) if requires_grad else args


def lstm_backward_args(device, *, requires_grad=False, **kw):
    fwd = lstm_forward_args(device, need_grad=True, requires_grad=False, **kw)
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, bs, reverse, _ = fwd
    y, h_n, c_n, ws = ops.lstm_forward(*fwd)
    assert ws.shape[0] == x.shape[0] * (1 if bs is not None else x.shape[1])
    gy, gh, gc = torch.randn_like(y), torch.randn_like(h_n), torch.randn_like(c_n)
    args = (gy, gh, gc, x, h0, c0, w_ih, w_hh, w_hr, bs, reverse, y, ws)
    return _require_grad(args) if requires_grad else args


def gru_backward_args(device, *, requires_grad=False, **kw):
    fwd = gru_forward_args(device, need_grad=True, requires_grad=False, **kw)
    x, h0, w_ih, w_hh, b_ih, b_hh, bs, reverse, _ = fwd
    y, h_n, ws = ops.gru_forward(*fwd)
    args = (torch.randn_like(y), torch.randn_like(h_n), x, h0, w_ih, w_hh, bs, reverse, y, ws)
    return _require_grad(args) if requires_grad else args


def rnn_backward_args(device, *, requires_grad=False, **kw):
    fwd = rnn_forward_args(device, requires_grad=False, **kw)
    x, h0, w_ih, w_hh, b_ih, b_hh, bs, relu, reverse = fwd
    y, h_n = ops.rnn_forward(*fwd)
    args = (torch.randn_like(y), torch.randn_like(h_n), x, h0, w_ih, w_hh, bs, relu, reverse, y)
    return _require_grad(args) if requires_grad else args


# Samples chosen so that every option appears on and off, and each with
# inputs that require grad and inputs that don't (pairwise, not the full product).
LSTM_FWD = [
    dict(),
    dict(requires_grad=False),
    dict(need_grad=False, requires_grad=False),
    dict(bias=False, proj=True),
    dict(proj=True, packed=True, reverse=True),
    dict(packed=True, need_grad=False, requires_grad=False),
    dict(bias=False, packed=True, requires_grad=False),
    dict(reverse=True, proj=True, need_grad=False, requires_grad=False),
    dict(dtype=torch.float32, packed=True),
]
GRU_FWD = [
    dict(),
    dict(requires_grad=False),
    dict(need_grad=False, requires_grad=False),
    dict(bias=False, reverse=True),
    dict(packed=True, reverse=True),
    dict(packed=True, bias=False, need_grad=False, requires_grad=False),
    dict(dtype=torch.float32, packed=True),
]
RNN_FWD = [
    dict(),
    dict(requires_grad=False),
    dict(relu=True, bias=False),
    dict(relu=True, packed=True, reverse=True),
    dict(packed=True, requires_grad=False, relu=True),
    dict(bias=False, reverse=True, requires_grad=False),
    dict(dtype=torch.float32, packed=True),
]
LSTM_BWD = [
    dict(),
    dict(requires_grad=True),
    dict(bias=False, proj=True, requires_grad=True),
    dict(proj=True, packed=True, reverse=True),
    dict(packed=True, requires_grad=True),
    dict(dtype=torch.float32, reverse=True),
]
GRU_BWD = [
    dict(),
    dict(requires_grad=True, bias=False),
    dict(packed=True, reverse=True),
    dict(packed=True, requires_grad=True),
    dict(dtype=torch.float32, reverse=True),
]
RNN_BWD = [
    dict(),
    dict(requires_grad=True, relu=True),
    dict(packed=True, reverse=True, relu=True),
    dict(packed=True, requires_grad=True, bias=False),
    dict(dtype=torch.float32, reverse=True),
]


def _ids(samples):
    out = []
    for s in samples:
        parts = [f"{k}={v}" if not isinstance(v, torch.dtype) else str(v).replace("torch.", "") for k, v in s.items()]
        out.append("-".join(parts) or "default")
    return out


def _opcheck(op, args):
    results = torch.library.opcheck(op, args, test_utils=TEST_UTILS)
    assert set(results) == set(TEST_UTILS)
    assert all(v == "SUCCESS" for v in results.values()), results


def _opcheck_backward(op, args):
    """The *_backward ops are deliberately not differentiable (double backward goes through the
    forward op and the reference recompute). With inputs that require grad they must still have an
    autograd registration, and differentiating them must raise a clear error, not return a silently
    partial graph. AOT dispatch differentiates every op, so it runs only without requires_grad."""
    needs_grad = any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)
    if not needs_grad:
        return _opcheck(op, args)
    utils = tuple(u for u in TEST_UTILS if u != "test_aot_dispatch_dynamic")
    results = torch.library.opcheck(op, args, test_utils=utils)
    assert all(v == "SUCCESS" for v in results.values()), results
    outs = op(*args)
    diff = [o for o in outs if o.requires_grad]
    assert diff, "outputs should be attached to the raising autograd node"
    with pytest.raises(RuntimeError, match="is not differentiable"):
        torch.autograd.grad(sum(o.sum() for o in diff), [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad])


@pytest.mark.parametrize("sample", LSTM_FWD, ids=_ids(LSTM_FWD))
def test_lstm_forward(device, sample):
    _opcheck(ops.lstm_forward.default, lstm_forward_args(device, **sample))


@pytest.mark.parametrize("sample", GRU_FWD, ids=_ids(GRU_FWD))
def test_gru_forward(device, sample):
    _opcheck(ops.gru_forward.default, gru_forward_args(device, **sample))


@pytest.mark.parametrize("sample", RNN_FWD, ids=_ids(RNN_FWD))
def test_rnn_forward(device, sample):
    _opcheck(ops.rnn_forward.default, rnn_forward_args(device, **sample))


@pytest.mark.parametrize("sample", LSTM_BWD, ids=_ids(LSTM_BWD))
def test_lstm_backward(device, sample):
    _opcheck_backward(ops.lstm_backward.default, lstm_backward_args(device, **sample))


@pytest.mark.parametrize("sample", GRU_BWD, ids=_ids(GRU_BWD))
def test_gru_backward(device, sample):
    _opcheck_backward(ops.gru_backward.default, gru_backward_args(device, **sample))


@pytest.mark.parametrize("sample", RNN_BWD, ids=_ids(RNN_BWD))
def test_rnn_backward(device, sample):
    _opcheck_backward(ops.rnn_backward.default, rnn_backward_args(device, **sample))


MASKS = [[False, True, True], [True, False, True], [True, True, False], [True, False, False],
         [False, False, False]]


@pytest.mark.parametrize("mask", MASKS, ids=lambda m: "".join("x" if w else "-" for w in m))
@pytest.mark.parametrize("case", ["lstm", "lstm-proj-packed", "gru", "gru-packed", "rnn", "rnn-packed"])
def test_backward_output_mask(device, case, mask):
    """output_mask (input, states, weights): skipped outputs are empty, each its own tensor (the
    schema's outputs alias nothing), the rest as with every gradient wanted; fake kernels agree."""
    kind, *opts = case.split("-")
    kw = dict(packed="packed" in opts, **({"proj": True} if "proj" in opts else {}))
    op, args = {"lstm": (ops.lstm_backward.default, lstm_backward_args),
                "gru": (ops.gru_backward.default, gru_backward_args),
                "rnn": (ops.rnn_backward.default, rnn_backward_args)}[kind]
    args = list(args(device, **kw))
    _opcheck(op, (*args, mask))
    full, masked = op(*args), op(*args, mask)
    groups = {"lstm": [0, 1, 1, 2, 2, 2, 2, 2], "gru": [0, 1, 2, 2, 2, 2], "rnn": [0, 1, 2, 2, 2, 2]}[kind]
    for i, (f, m, g) in enumerate(zip(full, masked, groups)):
        if mask[g]:
            assert torch.equal(f, m), i
        else:
            assert m.numel() == 0, i
    ptrs = [m.untyped_storage().data_ptr() for m in masked if m.untyped_storage().nbytes()]
    assert len(ptrs) == len(set(ptrs))
    assert len({id(m) for m in masked}) == len(masked)


# ----------------------------------------------------------------- contract details the samples rely on
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_workspace_shapes_follow_need_grad(device, packed):
    """need_grad=False writes no workspace (0 rows); need_grad=True one row per input row, in the
    accumulation dtype, and the fake kernels agree (checked by opcheck above)."""
    rows = sum(PACKED_SIZES) if packed else T * B
    for dtype, acc in ((torch.float64, torch.float64), (torch.float32, torch.float32)):
        for need in (True, False):
            *_, ws = ops.lstm_forward(*lstm_forward_args(device, packed=packed, need_grad=need, requires_grad=False,
                                                         dtype=dtype))
            assert ws.shape == ((rows if need else 0), 5 * H) and ws.dtype == acc
            *_, ws = ops.gru_forward(*gru_forward_args(device, packed=packed, need_grad=need, requires_grad=False,
                                                       dtype=dtype))
            assert ws.shape == ((rows if need else 0), 4 * H) and ws.dtype == acc


def test_backward_without_workspace_is_a_clear_error(device):
    """Differentiating an op call that ran with need_grad=False raises a clear error, not garbage."""
    args = list(lstm_forward_args(device, need_grad=False, requires_grad=True))
    y, h, c, ws = ops.lstm_forward(*args)
    assert ws.shape[0] == 0
    with pytest.raises(RuntimeError, match="need_grad"):
        (y.sum() + h.sum() + c.sum()).backward()
    args = list(gru_forward_args(device, need_grad=False, requires_grad=True))
    y, h, ws = ops.gru_forward(*args)
    with pytest.raises(RuntimeError, match="need_grad"):
        (y.sum() + h.sum()).backward()


def test_layer_wrappers_request_workspace_only_when_needed(device):
    """_ops.*_layer set need_grad from requires_grad: under no_grad nothing is saved."""
    args = lstm_forward_args(device, requires_grad=True)
    with torch.no_grad():
        y, h, c = rnn_ext._ops.lstm_layer(*args[:9], reverse=args[9])
    assert not y.requires_grad
    y, h, c = rnn_ext._ops.lstm_layer(*args[:9], reverse=args[9])
    assert y.requires_grad
    (y.sum() + h.sum() + c.sum()).backward()
    assert all(a.grad is not None for a in args[:7] if isinstance(a, torch.Tensor) and a.requires_grad)
