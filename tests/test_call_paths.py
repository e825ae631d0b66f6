"""The ways a layer call reaches the kernels (rnn_ext/_ops.py::_apply).

Calls with nothing to differentiate skip the autograd layers; a plain eager call
that needs a graph goes through the C++ autograd node (csrc/eager_autograd.cpp);
forward AD and torch.func transforms go through the Python autograd.Function.
All must give the same numbers, and the fast path must never be taken when a
tangent or a graph is wanted.
"""
import pytest
import torch
import torch.autograd.forward_ad as fwAD

import rnn_ext
from rnn_ext import _ops


def _function_path(monkeypatch):
    """Make _apply use the Python autograd.Function where it would use the C++ node."""
    apply = _ops._apply
    monkeypatch.setattr(_ops, "_apply", lambda function, op, need, *args, eager_op=None: apply(function, op, need, *args))


def _results(call, wanted, subset):
    """For one layer: the output and final states; the first-order gradients of `wanted` without
    create_graph (the kernels' backward) for a loss on everything, on h_n alone and, over `subset`
    only, on everything; then with create_graph, the gradients and their own gradients (double
    backward through the reference recompute)."""
    def loss_of(out, states, only_h_n=False):
        h_n = states[0] if isinstance(states, tuple) else states
        if only_h_n:
            return h_n.pow(2).sum()
        states = states if isinstance(states, tuple) else (states,)
        return (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).pow(2).sum() + sum(s.sum() for s in states)

    out, states = call()
    got = [out, *(states if isinstance(states, tuple) else (states,))]
    got += torch.autograd.grad(loss_of(out, states), wanted)
    got += torch.autograd.grad(loss_of(*call(), only_h_n=True), wanted, allow_unused=True, materialize_grads=True)
    got += torch.autograd.grad(loss_of(*call()), subset)
    first = torch.autograd.grad(loss_of(*call()), wanted, create_graph=True)
    second = torch.autograd.grad(sum((g * g).sum() for g in first), wanted, allow_unused=True, materialize_grads=True)
    return got + list(first) + list(second)


CASES = [("LSTM", {}), ("LSTM", {"proj_size": 3, "bidirectional": True}), ("LSTM", {"bias": False}),
         ("GRU", {"bidirectional": True}), ("GRU", {"bias": False}), ("RNN", {"nonlinearity": "relu"}),
         ("RNN", {"bias": False, "bidirectional": True})]


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("grads", ["all", "input-only", "weights-only", "states-only"])
@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{'-'.join(k) or 'default'}" for n, k in CASES])
def test_cpp_node_matches_function(monkeypatch, name, kw, grads, packed):
    """The C++ node saves and computes what the Function does: the same bits for the output, the
    final states, every first-order gradient (whichever inputs require grad, a loss on h_n alone,
    gradients of a subset of them: the backward op's output_mask) and the double backward
    through the reference recompute."""
    torch.manual_seed(0)
    m = getattr(rnn_ext, name)(5, 7, num_layers=2, **kw).double()
    D = 2 if kw.get("bidirectional") else 1
    x = torch.randn(6, 3, 5, dtype=torch.double)
    h0 = torch.randn(2 * D, 3, kw.get("proj_size") or 7, dtype=torch.double)
    c0 = torch.randn(2 * D, 3, 7, dtype=torch.double)
    x.requires_grad_(grads in ("all", "input-only"))
    h0.requires_grad_(grads in ("all", "states-only"))
    c0.requires_grad_(grads in ("all", "states-only"))
    m.requires_grad_(grads in ("all", "weights-only"))
    wanted = [t for t in (x, h0, *((c0,) if name == "LSTM" else ()), *m.parameters()) if t.requires_grad]
    hx = (h0, c0) if name == "LSTM" else h0

    def call():  # (a packed input packs anew: each call's graph is freed after its gradients)
        out, states = m(torch.nn.utils.rnn.pack_padded_sequence(x, [6, 4, 2]) if packed else x, hx)
        return (out.data if packed else out), states

    nodes = {"C++": ("CppFunction",), "Function": tuple(f"_{name.capitalize()}FunctionBackward" for name in
                                                        ("lstm", "gru", "rnn"))}
    results = {}
    for path in ("C++", "Function"):
        if path == "Function":
            _function_path(monkeypatch)
        out, _ = call()
        grad_fn = out.grad_fn if D == 1 else out.grad_fn.next_functions[0][0]  # (bidirectional: under the cat)
        assert type(grad_fn).__name__ in nodes[path]
        results[path] = _results(call, wanted, wanted[-1:])
    assert len(results["C++"]) == len(results["Function"])
    for i, (a, b) in enumerate(zip(results["C++"], results["Function"])):
        assert torch.equal(a, b), i


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cell_training_call_uses_the_cpp_node(monkeypatch, name):
    torch.manual_seed(0)
    cell = getattr(rnn_ext, name)(4, 6).double()
    x = torch.randn(3, 4, dtype=torch.double, requires_grad=True)
    out = cell(x)
    h = out[0] if isinstance(out, tuple) else out
    assert type(h.grad_fn).__name__ == "CppFunction"
    ours = torch.autograd.grad(h.sum(), [x, *cell.parameters()])
    _function_path(monkeypatch)
    out = cell(x)
    h = out[0] if isinstance(out, tuple) else out
    assert type(h.grad_fn).__name__ != "CppFunction"
    for a, b in zip(ours, torch.autograd.grad(h.sum(), [x, *cell.parameters()])):
        assert torch.equal(a, b)


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


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_cpp_node_under_compiled_autograd(name):
    """Compiled autograd traces the node's backward (it refuses nodes that mark outputs
    non-differentiable, which is why the eager ops return no workspace)."""
    compiled_autograd = pytest.importorskip("torch._dynamo.compiled_autograd")
    if not hasattr(compiled_autograd, "_enable"):
        pytest.skip("this torch has no compiled_autograd._enable")
    torch.manual_seed(0)
    m = getattr(rnn_ext, name)(3, 4, bidirectional=True).double()
    x = torch.randn(5, 2, 3, dtype=torch.double, requires_grad=True)
    y, _ = m(x)
    expected = torch.autograd.grad(y.sum(), [x, *m.parameters()])
    with compiled_autograd._enable(torch.compile(backend="eager")):
        y, _ = m(x)
        (y.sum()).backward()
    assert torch.equal(x.grad, expected[0])
    for p, e in zip(m.parameters(), expected[1:]):
        assert torch.equal(p.grad, e)
