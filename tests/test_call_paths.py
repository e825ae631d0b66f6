"""The two ways a layer call reaches the kernels (rnn_ext/_ops.py::_apply).

Calls with nothing to differentiate skip the autograd layers; every other call
goes through the autograd.Function. Both must give the same numbers, and the
fast path must never be taken when a tangent or a graph is wanted.
"""
import pytest
import torch
import torch.autograd.forward_ad as fwAD

import rnn_ext


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_no_grad_call_matches_grad_call(name):
    torch.manual_seed(0)
    m = getattr(rnn_ext, name)(5, 7, num_layers=2, bidirectional=True).double()
    x = torch.randn(6, 3, 5, dtype=torch.double)
    y_grad, _ = m(x)
    assert y_grad.grad_fn is not None
    with torch.no_grad():
        y_fast, _ = m(x)
    assert y_fast.grad_fn is None
    assert torch.equal(y_grad.detach(), y_fast)
    with torch.inference_mode():
        y_inf, _ = m(x)
    assert torch.equal(y_inf, y_fast)
    m.requires_grad_(False)  # frozen model, grad mode on: also the fast path, no graph
    y_frozen, _ = m(x)
    assert y_frozen.grad_fn is None and torch.equal(y_frozen, y_fast)


def test_input_requiring_grad_builds_a_graph_on_a_frozen_model():
    m = rnn_ext.GRU(4, 3).requires_grad_(False)
    x = torch.randn(5, 2, 4, requires_grad=True)
    y, _ = m(x)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_forward_ad_is_not_silently_dropped():
    # dual tensors do not require grad; the call must still reach the Function
    # (whose jvp gives the tangent) instead of returning a tangent-less result
    m = rnn_ext.GRU(3, 4).double()
    x = torch.randn(5, 2, 3, dtype=torch.double)
    with fwAD.dual_level():
        y, _ = m(fwAD.make_dual(x, torch.randn_like(x)))
        assert fwAD.unpack_dual(y).tangent is not None
