"""TorchScript: torch.jit.trace records rnn_ext's ops; torch.jit.script refuses clearly.

torch.nn's recurrent modules can be traced and scripted (both deprecated by
PyTorch in favour of torch.compile and torch.export). rnn_ext's trace: the
graph holds torch.ops.rnn_ext.* nodes, gives the eager module's outputs and
gradients on inputs of other shapes, and survives torch.jit.save/load (the
loading process imports rnn_ext first, as for torch.export). Scripting would
need rnn_ext's Python autograd inside TorchScript: it raises an error that
names the alternatives instead of TorchScript's first unsupported line.
"""
import io
import warnings

import pytest
import torch
from torch import nn

import rnn_ext

LAYERS = {
    "LSTM": lambda: rnn_ext.LSTM(3, 5, num_layers=2, batch_first=True),
    "LSTM-proj-bidir": lambda: rnn_ext.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2),
    "GRU": lambda: rnn_ext.GRU(3, 5, num_layers=2, bidirectional=True, batch_first=True),
    "RNN-relu": lambda: rnn_ext.RNN(3, 5, nonlinearity="relu", bias=False),
}
CELLS = {
    "LSTMCell": lambda: rnn_ext.LSTMCell(3, 5),
    "GRUCell": lambda: rnn_ext.GRUCell(3, 5),
    "RNNCell": lambda: rnn_ext.RNNCell(3, 5, nonlinearity="tanh"),
}
MODULES = {**LAYERS, **CELLS}


def _input(name, batch, steps, seed):
    g = torch.Generator().manual_seed(seed)
    if name in CELLS:
        return torch.randn(batch, 3, generator=g, dtype=torch.float64)
    return torch.randn(batch, steps, 3, generator=g, dtype=torch.float64)  # (T, B) or (B, T): both 3-D


def _flat(out):
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in _flat(o)]


def _trace(module, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation and TracerWarnings, as for torch.nn's modules
        return torch.jit.trace(module, (x,))  # check_trace on: a second run must record the same graph


def _loss(outs):
    return sum((o * torch.linspace(0.5, 1.5, o.numel(), dtype=o.dtype).view_as(o)).sum() for o in outs)


@pytest.mark.parametrize("name", list(MODULES))
def test_trace_records_the_ops_and_matches_eager(name):
    module = MODULES[name]().double()
    traced = _trace(module, _input(name, 2, 4, seed=1))
    kinds = {node.kind() for node in traced.inlined_graph.nodes()}
    assert any(k.startswith("rnn_ext::") for k in kinds), kinds
    assert "prim::PythonOp" not in kinds  # not an opaque autograd.Function, which torch.jit.save refuses
    # another batch size and length than the trace saw: outputs and every gradient as eager
    x = _input(name, 3, 6, seed=2)
    xe, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
    eager, got = _flat(module(xe)), _flat(traced(xt))
    for o, r in zip(got, eager):
        torch.testing.assert_close(o, r, rtol=0, atol=1e-13)
    params = list(module.parameters())
    ge = torch.autograd.grad(_loss(eager), [xe, *params])
    gt = torch.autograd.grad(_loss(got), [xt, *params])
    for a, b in zip(gt, ge):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["LSTM-proj-bidir", "GRUCell"])
def test_traced_module_saves_and_loads(name):
    module = MODULES[name]().double()
    traced = _trace(module, _input(name, 2, 4, seed=1))
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    x = _input(name, 3, 5, seed=3)
    for o, r in zip(_flat(loaded(x)), _flat(module(x))):
        torch.testing.assert_close(o, r, rtol=0, atol=1e-13)
    # the loaded module's own parameters (copies) get the eager module's gradients
    got = torch.autograd.grad(_loss(_flat(loaded(x))), [p for _, p in loaded.named_parameters()])
    want = torch.autograd.grad(_loss(_flat(module(x))), [p for _, p in module.named_parameters()])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_trace_made_without_grad_still_trains():
    # need_grad is a constant in the trace: made under no_grad, the trace must
    # still keep what backward reads when it later runs with grad enabled.
    module = LAYERS["GRU"]().double()
    with torch.no_grad():
        traced = _trace(module, _input("GRU", 2, 4, seed=1))
    x = _input("GRU", 2, 4, seed=4)
    grads = torch.autograd.grad(_loss(_flat(traced(x))), list(module.parameters()))
    want = torch.autograd.grad(_loss(_flat(module(x))), list(module.parameters()))
    for a, b in zip(grads, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_trace_of_a_frozen_model_says_why_it_cannot_train():
    # Nothing required grad when the trace was made: it runs without the backward workspace
    # (inference memory); unfrozen later, its backward names the cause instead of failing obscurely.
    module = LAYERS["LSTM"]().double().requires_grad_(False)
    traced = _trace(module, _input("LSTM", 2, 4, seed=1))
    module.requires_grad_(True)
    out = traced(_input("LSTM", 2, 4, seed=2))[0]
    with pytest.raises(RuntimeError, match="torch.jit.trace made while nothing required grad"):
        out.sum().backward()


@pytest.mark.parametrize("name", list(MODULES))
def test_script_refuses_with_the_alternatives(name):
    module = MODULES[name]()
    model = nn.Sequential(nn.Identity(), module)  # also when nested in a model
    for target in (module, model):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(RuntimeError, match=r"torch\.jit\.script.*torch\.compile.*torch\.jit\.trace.*"
                                                   r"convert\(model, to='torch'\)"):
                torch.jit.script(target)
    assert model[1] is module  # scripting did not swap the module out of the model


def test_script_after_converting_back_to_torch_nn():
    model = nn.Sequential(rnn_ext.GRU(3, 5, batch_first=True)).double()
    x = _input("GRU", 2, 4, seed=5)
    want = model(x)
    model = rnn_ext.convert(model, to="torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(model)
    for o, r in zip(_flat(scripted(x)), _flat(want)):
        torch.testing.assert_close(o, r)
