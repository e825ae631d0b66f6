"""In-place changes to what the modules return, as torch.nn allows them.

- A layer's output can be modified in place (out.relu_(), out += residual): the op returns a
  tensor of its own, not a view. Backward afterwards raises autograd's "modified by an inplace
  operation" error, as nn.LSTM's oneDNN (CPU float32) and cuDNN paths do: the output is saved
  for backward (it holds every h_{t-1}). (One direction, float32/float64: a bidirectional
  output is a concatenated copy, a CPU half-precision one a cast, and backward runs.) torch.nn's native CPU path (GRU, RNN, float64 LSTM)
  saves per-step copies instead and lets that backward run.
- Final states (h_n, c_n) and the cells' h', c' are not saved: in-place changes followed by
  backward give torch.nn's gradients.
"""
import pytest
import torch

import rnn_ext

DT = torch.float64


def _pair(name, *args, **kw):
    torch.manual_seed(0)
    ref = getattr(torch.nn, name)(*args, **kw).to(DT)
    ext = getattr(rnn_ext, name)(*args, **kw).to(DT)
    ext.load_state_dict(ref.state_dict())
    return ref, ext


def _states(h):
    return list(h) if isinstance(h, tuple) else [h]


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_output_modified_in_place(name, batch_first):
    ref, ext = _pair(name, 4, 5, batch_first=batch_first)
    x = torch.randn(3, 6, 4, dtype=DT)
    out_r, out_e = ref(x)[0], ext(x)[0]
    if not batch_first:
        assert not out_e._is_view()
    out_r.mul_(-1).relu_()
    out_e.mul_(-1).relu_()  # grad mode on, weights require grad: autograd tracks the change
    torch.testing.assert_close(out_e, out_r)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out_e.sum().backward()


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_final_states_modified_in_place_then_backward(name):
    ref, ext = _pair(name, 4, 5, num_layers=2, bidirectional=True)
    x = torch.randn(6, 3, 4, dtype=DT)
    grads = []
    for m in (ref, ext):
        out, h = m(x)
        states = _states(h)
        for s in states:
            s.mul_(1.5).tanh_()
        loss = out.sum() + sum((s * s).sum() for s in states)
        grads.append(torch.autograd.grad(loss, list(m.parameters())))
    for a, b in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell"])
def test_cell_outputs_modified_in_place_then_backward(name):
    ref, ext = _pair(name, 4, 5)
    x = torch.randn(3, 4, dtype=DT)
    grads = []
    for m in (ref, ext):
        outs = _states(m(x, None))
        outs[0].clamp_(-0.1, 0.1)  # (clamp's backward reads no tensor of its own)
        if len(outs) > 1:
            outs[1].mul_(-2.0)
        grads.append(torch.autograd.grad(sum((o * o).sum() for o in outs), list(m.parameters())))
    for a, b in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
