"""torch.export of models built on rnn_ext layers.

The fused kernels appear in the exported graph as opaque custom ops
(torch.ops.rnn_ext.*), traced through their fake kernels. An exported program
can be saved and loaded; the process that loads it must have imported rnn_ext
first, since loading resolves the op names against the registered ops.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.export import Dim

import rnn_ext

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LSTM_OP = torch.ops.rnn_ext.lstm_forward.default
GRU_OP = torch.ops.rnn_ext.gru_forward.default
RNN_OP = torch.ops.rnn_ext.rnn_forward.default


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = rnn_ext.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True, proj_size=2)
        self.gru = rnn_ext.GRU(4, 5, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        y, (h, c) = self.lstm(x)
        y, hg = self.gru(y)
        return self.head(y), h, c, hg


def _model():
    torch.manual_seed(0)
    return Net().eval()


def _x(b=2, t=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, 3, generator=g)


def _targets(ep):
    return [n.target for n in ep.graph.nodes if n.op == "call_function"]


def _assert_same(outs, refs, **tol):
    assert len(outs) == len(refs)
    for o, r in zip(outs, refs):
        assert o.shape == r.shape
        torch.testing.assert_close(o, r, **tol)


@pytest.fixture(scope="module")
def exported():
    m = _model()
    return m, torch.export.export(m, (_x(),))


def test_graph_contains_rnn_ext_ops(exported):
    _, ep = exported
    targets = _targets(ep)
    assert targets.count(LSTM_OP) == 4  # 2 layers x 2 directions, one fused op each
    assert targets.count(GRU_OP) == 1
    # the recurrence was not decomposed into aten ops
    assert torch.ops.aten.lstm.input not in targets and torch.ops.aten.gru.input not in targets
    pointwise = {torch.ops.aten.sigmoid.default, torch.ops.aten.tanh.default, torch.ops.aten.mm.default,
                 torch.ops.aten.matmul.default}
    assert not pointwise & set(targets)
    reverse_flags = sorted(n.args[9] for n in ep.graph.nodes if n.op == "call_function" and n.target is LSTM_OP)
    assert reverse_flags == [False, False, True, True]


def test_rnn_op_in_graph():
    class R(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnn_ext.RNN(3, 4, nonlinearity="relu")

        def forward(self, x):
            return self.rnn(x)

    torch.manual_seed(0)
    m = R()
    x = torch.randn(5, 2, 3)
    ep = torch.export.export(m, (x,))
    nodes = [n for n in ep.graph.nodes if n.op == "call_function" and n.target is RNN_OP]
    assert len(nodes) == 1 and nodes[0].args[7] is True  # relu flag baked in
    _assert_same(ep.module()(x), m(x))


def test_exported_module_matches_eager(exported):
    m, ep = exported
    gm = ep.module()
    for seed in (1, 2):
        x = _x(seed=seed)
        with torch.no_grad():
            _assert_same(gm(x), m(x), rtol=1e-6, atol=1e-6)


def test_exported_module_rejects_other_shapes(exported):
    _, ep = exported
    with pytest.raises(Exception):  # static export: batch 2, length 5 only
        ep.module()(_x(b=3))


def test_exported_module_gradients_match(exported):
    m, ep = exported
    gm = ep.module()
    x = _x().requires_grad_()
    ref = torch.autograd.grad(sum(o.square().sum() for o in m(x)), [x, *m.parameters()])
    x2 = x.detach().clone().requires_grad_()
    params = dict(gm.named_parameters())
    names = [n for n, _ in m.named_parameters()]
    assert set(params) == set(names)
    got = torch.autograd.grad(sum(o.square().sum() for o in gm(x2)), [x2, *(params[n] for n in names)])
    _assert_same(got, ref, rtol=1e-5, atol=1e-6)


def test_dynamic_batch_and_length():
    m = _model()
    ep = torch.export.export(
        m, (_x(),), dynamic_shapes={"x": {0: Dim("batch", max=64), 1: Dim("seq", max=256)}})
    gm = ep.module()
    for b, t in ((3, 7), (1, 2), (4, 5)):
        x = _x(b=b, t=t, seed=b + t)
        with torch.no_grad():
            _assert_same(gm(x), m(x), rtol=1e-6, atol=1e-6)


def test_save_load_round_trip(exported, tmp_path):
    m, ep = exported
    path = tmp_path / "net.pt2"
    torch.export.save(ep, path)
    assert path.stat().st_size > 0
    # torch.export.load resolves "rnn_ext::lstm_forward" by name: rnn_ext must be
    # imported in the loading process (here it is, via the import at the top).
    loaded = torch.export.load(path)
    assert _targets(loaded).count(LSTM_OP) == 4 and _targets(loaded).count(GRU_OP) == 1
    x = _x(seed=7)
    with torch.no_grad():
        _assert_same(loaded.module()(x), m(x), rtol=1e-6, atol=1e-6)


def test_load_in_fresh_process(exported, tmp_path):
    """A new interpreter cannot load the program before importing rnn_ext, and can after."""
    m, ep = exported
    path = tmp_path / "net.pt2"
    torch.export.save(ep, path)
    x = _x(seed=9)
    torch.save(x, tmp_path / "x.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        try:  # without rnn_ext imported, the op names cannot be resolved
            torch.export.load({str(path)!r})
        except Exception:
            pass
        else:
            sys.exit("loaded without rnn_ext imported")
        assert "rnn_ext" not in sys.modules
        import rnn_ext  # registers torch.ops.rnn_ext.*
        ep = torch.export.load({str(path)!r})
        x = torch.load({str(tmp_path / 'x.pt')!r})
        with torch.no_grad():
            outs = ep.module()(x)
        torch.save([o.clone() for o in outs], {str(tmp_path / 'out.pt')!r})
    """)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    outs = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        _assert_same(outs, m(x), rtol=1e-6, atol=1e-6)
