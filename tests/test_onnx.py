"""ONNX: torch.onnx.export takes rnn_ext's modules as it takes torch.nn's.

Under torch.onnx.export the modules run torch.nn's forward with their own
weights (rnn_ext.convert.torch_forward), so both exporters (dynamo=True, which
traces with torch.export, and the TorchScript-based dynamo=False) emit ONNX's
LSTM/GRU/RNN operators, or the cells' Gemm and gate math, as for torch.nn.
Checked here by running the exported model in onnxruntime against the module.
"""
import warnings

import pytest
import torch
from torch import nn

import rnn_ext

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # the dynamo=True exporter's translations

MODULES = {
    "LSTM-2layer-batch_first": lambda: rnn_ext.LSTM(3, 5, num_layers=2, batch_first=True),
    "LSTM-bidirectional": lambda: rnn_ext.LSTM(3, 5, bidirectional=True),
    "GRU-2layer-bidirectional": lambda: rnn_ext.GRU(3, 5, num_layers=2, bidirectional=True),
    "RNN-relu-no-bias": lambda: rnn_ext.RNN(3, 5, nonlinearity="relu", bias=False),
    "LSTMCell": lambda: rnn_ext.LSTMCell(3, 5),
    "GRUCell": lambda: rnn_ext.GRUCell(3, 5),
    "RNNCell": lambda: rnn_ext.RNNCell(3, 5),
}
EXPORTERS = [pytest.param(True, id="dynamo"), pytest.param(False, id="torchscript")]


def _inputs(module):
    g = torch.Generator().manual_seed(1)
    if isinstance(module, nn.RNNCellBase):
        x, h = torch.randn(4, 3, generator=g), torch.randn(4, 5, generator=g)
        return (x, (h, torch.randn(4, 5, generator=g)) if isinstance(module, rnn_ext.LSTMCell) else h)
    layers = module.num_layers * (2 if module.bidirectional else 1)
    x = torch.randn(*((4, 6) if module.batch_first else (6, 4)), 3, generator=g)  # B=4, T=6
    h = torch.randn(layers, 4, 5, generator=g)
    return (x, (h, torch.randn(layers, 4, 5, generator=g)) if isinstance(module, rnn_ext.LSTM) else h)


def _flat(outputs):
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [t for o in outputs for t in _flat(o)]


def _export(module, args, path, dynamo):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation warning
        torch.onnx.export(module, args, str(path), dynamo=dynamo, verbose=False)
    return onnx.load(str(path))


def _run(path, args):
    session = ort.InferenceSession(str(path))
    feeds = [t.numpy() for t in _flat(args)]
    return session.run(None, {i.name: v for i, v in zip(session.get_inputs(), feeds)})


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("name", MODULES)
def test_export_runs_in_onnxruntime_like_the_module(name, dynamo, tmp_path):
    torch.manual_seed(0)
    module = MODULES[name]().eval()
    args = _inputs(module)
    model = _export(module, args, tmp_path / "ext.onnx", dynamo)
    expected = [t.detach().numpy() for t in _flat(module(*args))]
    got = _run(tmp_path / "ext.onnx", args)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        assert abs(g - e).max() <= 1e-5 * max(1.0, abs(e).max())

    # the same ONNX operators as the torch.nn module with the same weights
    twin = rnn_ext.convert(MODULES[name](), to="torch").eval()
    twin.load_state_dict(module.state_dict())
    reference = _export(twin, args, tmp_path / "nn.onnx", dynamo)
    ops = sorted(n.op_type for n in model.graph.node)
    assert ops == sorted(n.op_type for n in reference.graph.node)
    assert {"LSTM", "GRU", "RNN", "Gemm", "MatMul"} & set(ops)  # a real recurrence, not a constant


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_export_reads_parametrized_weights(dynamo, tmp_path):
    module = rnn_ext.GRU(3, 5).eval()
    nn.utils.parametrizations.weight_norm(module, "weight_hh_l0")
    with torch.no_grad():
        module.parametrizations.weight_hh_l0.original0.mul_(3.0)  # the norm: not what weight_hh_l0 held
    args = _inputs(module)
    _export(module, args, tmp_path / "m.onnx", dynamo)
    expected = [t.detach().numpy() for t in _flat(module(*args))]
    for g, e in zip(_run(tmp_path / "m.onnx", args), expected):
        assert abs(g - e).max() <= 1e-5


def test_projection_lstm_fails_as_torch_nn_does(tmp_path):
    # ONNX's LSTM has no projection; torch's TorchScript exporter refuses it, for both.
    args = (torch.randn(6, 4, 3),)
    errors = []
    for module in (rnn_ext.LSTM(3, 5, proj_size=2), nn.LSTM(3, 5, proj_size=2)):
        with pytest.raises(Exception) as info:
            _export(module.eval(), args, tmp_path / "m.onnx", dynamo=False)
        errors.append((type(info.value), str(info.value).split("[Caused by")[0]))
    assert errors[0] == errors[1]
    assert "projections" in errors[0][1]


def test_outside_export_the_modules_run_rnn_ext_ops():
    module = rnn_ext.LSTM(3, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (torch.randn(6, 4, 3),))
    kinds = {n.kind() for n in traced.inlined_graph.nodes()}
    assert "rnn_ext::lstm_forward" in kinds and "aten::lstm" not in kinds
