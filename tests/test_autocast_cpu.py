"""The documented CPU autocast policy (rnn_ext.functional.autocast_dtype).

Inside torch.autocast("cpu", dtype=torch.bfloat16), float32 rnn_ext layers and
cells take float32 input (and float32 states), run in bfloat16 and return
bfloat16 outputs and final states. Gradients flow back to the float32
parameters and input in float32. Outside autocast a dtype mismatch is still
torch.nn's ValueError.
"""
import pytest
import torch

import rnn_ext
from rnn_ext.functional import autocast_dtype

BF16 = torch.bfloat16
T, B, I, H = 6, 3, 5, 8

LAYERS = [
    ("LSTM", {}),
    ("LSTM", {"num_layers": 2, "bidirectional": True, "proj_size": 4, "batch_first": True}),
    ("GRU", {}),
    ("GRU", {"num_layers": 2, "bidirectional": True}),
    ("RNN", {}),
    ("RNN", {"nonlinearity": "relu", "bias": False, "batch_first": True}),
]
CELLS = ["LSTMCell", "GRUCell", "RNNCell"]

# one bf16 rounding of inputs/weights plus bf16 accumulation over a few steps
ATOL, RTOL = 5e-2, 5e-2


def _ids(p):
    return f"{p[0]}-" + "-".join(f"{k}={v}" for k, v in p[1].items()) if isinstance(p, tuple) else str(p)


def _states(out):
    """Flatten the (output, h_n) / (output, (h_n, c_n)) structure."""
    y, s = out
    return [y, *(s if isinstance(s, tuple) else (s,))]


def _cell_outs(out):
    return list(out) if isinstance(out, tuple) else [out]


def _input(shape):
    g = torch.Generator().manual_seed(3)
    return torch.randn(*shape, generator=g)


def test_autocast_dtype_policy():
    assert autocast_dtype("cpu") is None
    with torch.autocast("cpu", dtype=BF16):
        assert autocast_dtype("cpu") is BF16
        assert autocast_dtype("meta") is None
    with torch.autocast("cpu", dtype=torch.float16):
        assert autocast_dtype("cpu") is torch.float16
    with torch.autocast("cpu", dtype=BF16, enabled=False):
        assert autocast_dtype("cpu") is None


@pytest.mark.parametrize("cfg", LAYERS, ids=_ids)
def test_layer_bf16_outputs_close_to_fp32(cfg):
    name, kw = cfg
    torch.manual_seed(0)
    m = getattr(rnn_ext, name)(I, H, **kw)
    x = _input((B, T, I) if kw.get("batch_first") else (T, B, I))
    ref = _states(m(x))
    with torch.autocast("cpu", dtype=BF16):
        out = _states(m(x))
    assert len(out) == len(ref)
    for o, r in zip(out, ref):
        assert o.dtype == BF16
        assert o.shape == r.shape
        torch.testing.assert_close(o.float(), r, atol=ATOL, rtol=RTOL)
    # the parameters themselves were not cast in place
    assert all(p.dtype == torch.float32 for p in m.parameters())


@pytest.mark.parametrize("cfg", LAYERS, ids=_ids)
def test_layer_backward_under_autocast(cfg):
    name, kw = cfg
    torch.manual_seed(0)
    m = getattr(rnn_ext, name)(I, H, **kw)
    x = _input((B, T, I) if kw.get("batch_first") else (T, B, I)).requires_grad_()
    w = torch.linspace(-1, 1, 7)

    def loss_of(outs):
        return sum((o.float() * w[i]).sum() + (o.float() ** 2).sum() for i, o in enumerate(outs))

    ref_grads = torch.autograd.grad(loss_of(_states(m(x))), [x, *m.parameters()])
    with torch.autocast("cpu", dtype=BF16):
        outs = _states(m(x))
    loss_of(outs).backward()
    assert x.grad is not None and x.grad.dtype == torch.float32
    for p, rg in zip(m.parameters(), ref_grads[1:]):
        assert p.grad is not None and p.grad.dtype == torch.float32
        assert p.grad.abs().sum() > 0
        # bf16 gradients: loose but meaningful agreement with the fp32 ones
        torch.testing.assert_close(p.grad, rg, atol=0.15 * rg.abs().max().item() + 1e-2, rtol=0.1)
    torch.testing.assert_close(x.grad, ref_grads[0], atol=0.15 * ref_grads[0].abs().max().item() + 1e-2, rtol=0.1)


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_layer_accepts_float32_hx(name):
    torch.manual_seed(0)
    m = getattr(rnn_ext, name)(I, H, num_layers=2)
    x = _input((T, B, I))
    h0 = torch.randn(2, B, H)
    hx = (h0, torch.randn(2, B, H)) if name == "LSTM" else h0
    ref = _states(m(x, hx))
    with torch.autocast("cpu", dtype=BF16):
        out = _states(m(x, hx))
    for o, r in zip(out, ref):
        assert o.dtype == BF16
        torch.testing.assert_close(o.float(), r, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("batched", [True, False])
def test_cell_bf16_outputs_and_backward(name, batched):
    torch.manual_seed(0)
    cell = getattr(rnn_ext, name)(I, H)
    x = _input((B, I) if batched else (I,)).requires_grad_()
    hs = torch.randn(B, H) if batched else torch.randn(H)
    hx = (hs, torch.randn_like(hs)) if name == "LSTMCell" else hs
    ref = _cell_outs(cell(x, hx))
    with torch.autocast("cpu", dtype=BF16):
        out = _cell_outs(cell(x, hx))
        out_nohx = _cell_outs(cell(x))
    for o, r in zip(out, ref):
        assert o.dtype == BF16 and o.shape == r.shape
        torch.testing.assert_close(o.float(), r, atol=ATOL, rtol=RTOL)
    assert all(o.dtype == BF16 for o in out_nohx)
    sum((o.float() ** 2).sum() for o in out).backward()
    assert x.grad.dtype == torch.float32 and x.grad.abs().sum() > 0
    for p in cell.parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32 and p.grad.abs().sum() > 0


def test_cell_loop_under_autocast_feeds_bf16_state_back():
    """A typical decoder loop: the bf16 state from step t is step t+1's hx."""
    torch.manual_seed(0)
    cell = rnn_ext.LSTMCell(I, H)
    xs = _input((T, B, I))
    state = None
    ref_state = None
    for t in range(T):
        ref_state = cell(xs[t], ref_state)
    with torch.autocast("cpu", dtype=BF16):
        for t in range(T):
            state = cell(xs[t], state)
    assert state[0].dtype == BF16 and state[1].dtype == BF16
    torch.testing.assert_close(state[0].float(), ref_state[0], atol=ATOL, rtol=RTOL)


def test_autocast_disabled_region_runs_fp32():
    m = rnn_ext.GRU(I, H)
    x = _input((T, B, I))
    with torch.autocast("cpu", dtype=BF16):
        with torch.autocast("cpu", enabled=False):
            y, h = m(x)
    assert y.dtype == torch.float32 and h.dtype == torch.float32
    torch.testing.assert_close(y, m(x)[0])


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("in_dtype", [torch.float64, BF16])
def test_dtype_mismatch_outside_autocast_raises_value_error(name, in_dtype):
    m = getattr(rnn_ext, name)(I, H)
    ref = getattr(torch.nn, name)(I, H)
    x = _input((T, B, I)).to(in_dtype)
    with pytest.raises(ValueError) as ours:
        m(x)
    with pytest.raises(ValueError) as theirs:
        ref(x)
    assert str(ours.value) == str(theirs.value)
    assert "does not match weight dtype" in str(ours.value)


@pytest.mark.parametrize("name", CELLS)
def test_cell_dtype_mismatch_outside_autocast_raises(name):
    cell = getattr(rnn_ext, name)(I, H)
    with pytest.raises(RuntimeError, match="dtype"):
        cell(_input((B, I)).double())
