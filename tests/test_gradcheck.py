"""gradcheck / gradgradcheck in float64 on the op-level wrappers and a full module.

gradcheck differentiates through the fused *_backward kernels (first order);
gradgradcheck goes through the differentiable path rnn_ext uses for
create_graph=True. Sizes are tiny: T=3, B=2, I=3, H=2 (packed: batch_sizes
[2, 2, 1], 5 rows).
"""
from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.func import functional_call

import rnn_ext
from rnn_ext import _ops

DT = torch.float64
T, B, I, H, P = 3, 2, 3, 2, 1
PACKED_SIZES = [2, 2, 1]


def _t(*shape, device, scale=1.0):
    return (torch.randn(*shape, dtype=DT) * scale).to(device).requires_grad_()


def _input(device, packed):
    if packed:
        return _t(sum(PACKED_SIZES), I, device=device), torch.tensor(PACKED_SIZES)
    return _t(T, B, I, device=device), None


def lstm_case(device, bias, proj, packed, reverse):
    x, bs = _input(device, packed)
    h_out = P if proj else H
    tensors = [x, _t(B, h_out, device=device), _t(B, H, device=device), _t(4 * H, I, device=device, scale=0.5),
               _t(4 * H, h_out, device=device, scale=0.5)]
    tensors += [_t(4 * H, device=device), _t(4 * H, device=device)] if bias else [None, None]
    tensors += [_t(P, H, device=device)] if proj else [None]

    def fn(*ts):
        return _ops.lstm_layer(*ts, batch_sizes=bs, reverse=reverse)

    return fn, [t for t in tensors if t is not None], tensors


def gru_case(device, bias, packed, reverse):
    x, bs = _input(device, packed)
    tensors = [x, _t(B, H, device=device), _t(3 * H, I, device=device, scale=0.5),
               _t(3 * H, H, device=device, scale=0.5)]
    tensors += [_t(3 * H, device=device), _t(3 * H, device=device)] if bias else [None, None]

    def fn(*ts):
        return _ops.gru_layer(*ts, batch_sizes=bs, reverse=reverse)

    return fn, [t for t in tensors if t is not None], tensors


def rnn_case(device, bias, packed, reverse, relu):
    x, bs = _input(device, packed)
    tensors = [x, _t(B, H, device=device), _t(H, I, device=device, scale=0.5), _t(H, H, device=device, scale=0.5)]
    tensors += [_t(H, device=device), _t(H, device=device)] if bias else [None, None]

    def fn(*ts):
        return _ops.rnn_layer(*ts, batch_sizes=bs, relu=relu, reverse=reverse)

    return fn, [t for t in tensors if t is not None], tensors


def _positional(fn, template):
    """fn over the non-None tensors only (gradcheck wants tensors), None kept in place."""
    present = [i for i, t in enumerate(template) if t is not None]

    def wrapped(*ts):
        full = [None] * len(template)
        for i, t in zip(present, ts):
            full[i] = t
        return fn(*full)

    return wrapped


def _check(fn, inputs, template, *, second_order=True):
    f = _positional(fn, template)
    assert gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)
    if second_order:
        assert gradgradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


# every option appears with every other at least once; reverse x packed fully crossed
OPTS = [
    dict(bias=True, packed=False, reverse=False),
    dict(bias=False, packed=False, reverse=True),
    dict(bias=True, packed=True, reverse=False),
    dict(bias=True, packed=True, reverse=True),
    dict(bias=False, packed=True, reverse=False),
]
OPT_IDS = ["-".join(k for k, v in o.items() if v) or "plain" for o in OPTS]


@pytest.mark.parametrize("proj", [False, True], ids=["noproj", "proj"])
@pytest.mark.parametrize("opts", OPTS, ids=OPT_IDS)
def test_lstm_layer(device, opts, proj):
    _check(*lstm_case(device, proj=proj, **opts))


@pytest.mark.parametrize("opts", OPTS, ids=OPT_IDS)
def test_gru_layer(device, opts):
    _check(*gru_case(device, **opts))


@pytest.mark.parametrize("relu", [False, True], ids=["tanh", "relu"])
@pytest.mark.parametrize("opts", OPTS, ids=OPT_IDS)
def test_rnn_layer(device, opts, relu):
    _check(*rnn_case(device, relu=relu, **opts))


@pytest.mark.parametrize("mode", ["lstm", "lstm_proj", "gru", "rnn"])
def test_only_some_inputs_require_grad(device, mode):
    """needs_input_grad is honoured: only the weights (not x, h0, c0) are differentiated."""
    if mode.startswith("lstm"):
        fn, inputs, template = lstm_case(device, bias=True, proj=mode == "lstm_proj", packed=True, reverse=True)
        n_state = 3
    elif mode == "gru":
        fn, inputs, template = gru_case(device, bias=True, packed=True, reverse=True)
        n_state = 2
    else:
        fn, inputs, template = rnn_case(device, bias=True, packed=True, reverse=True, relu=False)
        n_state = 2
    for t in inputs[:n_state]:
        t.requires_grad_(False)
    _check(fn, inputs, template)
    # and the state-free gradient path matches the full one for the weights
    outs = _positional(fn, template)(*inputs)
    w = [t for t in inputs if t.requires_grad]
    g_some = torch.autograd.grad(sum(o.sum() for o in outs), w)
    for t in inputs[:n_state]:
        t.requires_grad_(True)
    outs = _positional(fn, template)(*inputs)
    # (every input: the C++ node's output_mask follows what this backward computes)
    g_all = torch.autograd.grad(sum(o.sum() for o in outs), [*w, *inputs[:n_state]])[:len(w)]
    for a, b in zip(g_some, g_all):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_first_order_grads_match_reference(device):
    """The fused backward kernels and the pure-PyTorch reference give the same gradients."""
    for fn_ref, case in (
        (rnn_ext.reference.lstm_layer, lstm_case(device, bias=True, proj=True, packed=True, reverse=True)),
        (rnn_ext.reference.gru_layer, gru_case(device, bias=True, packed=True, reverse=True)),
    ):
        fn, inputs, template = case
        cots = None
        grads = []
        for f in (_positional(fn, template), None):
            if f is None:
                bs = torch.tensor(PACKED_SIZES)
                f = _positional(lambda *ts: fn_ref(*ts, batch_sizes=bs, reverse=True), template)
            outs = f(*inputs)
            if cots is None:
                cots = [torch.randn_like(o) for o in outs]
            grads.append(torch.autograd.grad(outs, inputs, cots))
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------- whole modules
MODULES = [
    ("LSTM", dict(num_layers=2, bidirectional=True)),
    ("LSTM", dict(num_layers=2, bidirectional=True, proj_size=1, bias=False)),
    ("GRU", dict(num_layers=2, bidirectional=True)),
    ("RNN", dict(num_layers=2, bidirectional=True, nonlinearity="relu")),
]


@pytest.mark.parametrize("name,kw", MODULES, ids=["lstm", "lstm_proj_nobias", "gru", "rnn_relu"])
def test_module_gradgradcheck(device, name, kw):
    """Double backward through a 2-layer bidirectional module, w.r.t. input, h0 and all parameters."""
    mod = getattr(rnn_ext, name)(I, H, dtype=DT, **kw).to(device)
    names = [n for n, _ in mod.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in mod.parameters()]
    x = _t(T, B, I, device=device)
    h_out = kw.get("proj_size", 0) or H
    h0 = _t(4, B, h_out, device=device)
    c0 = _t(4, B, H, device=device) if name == "LSTM" else None

    def f(x, h0, *ps):
        hx = (h0, c0) if name == "LSTM" else h0
        out, fin = functional_call(mod, dict(zip(names, ps)), (x, hx))
        return (out, *fin) if isinstance(fin, tuple) else (out, fin)

    inputs = (x, h0, *params)
    assert gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)
    assert gradgradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_module_double_backward_matches_nn(device):
    """A gradient penalty (create_graph=True) equals torch.nn's on CPU float64."""
    torch.manual_seed(5)
    ref = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, dtype=DT)
    ext = rnn_ext.LSTM(I, H, num_layers=2, bidirectional=True, dtype=DT)
    ext.load_state_dict(ref.state_dict())
    ext.to(device)
    x = torch.randn(T, B, I, dtype=DT)
    results = []
    for mod, dev in ((ref, "cpu"), (ext, device)):
        xi = x.to(dev).requires_grad_()
        out, _ = mod(xi)
        (gx,) = torch.autograd.grad(out.pow(2).sum(), xi, create_graph=True)
        penalty = gx.pow(2).sum()
        grads = torch.autograd.grad(penalty, [xi, *mod.parameters()])
        results.append([penalty.detach().cpu()] + [g.cpu() for g in grads])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)
