"""torch.compile(fullgraph=True) over rnn_ext layers and cells.

rnn_ext modules subclass nn.RNNBase but not nn.LSTM/GRU/RNN, so Dynamo traces
them (the fused kernels are opaque custom ops with fake kernels) with no graph
break, where torch.nn's own recurrent modules are refused under fullgraph=True.

Compiles are slow on small CPUs: the models are tiny and each backend compiles
the same model once.
"""
import pytest
import torch
import torch._dynamo
import torch._dynamo.testing
from torch import nn

import rnn_ext

B, T, I, H = 2, 3, 3, 4


class Net(nn.Module):
    """LSTM (2 layers, bidirectional, batch_first) -> GRU -> RNN(relu) -> LSTMCell/GRUCell loop."""

    def __init__(self):
        super().__init__()
        self.lstm = rnn_ext.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True)
        self.gru = rnn_ext.GRU(2 * H, H)
        self.rnn = rnn_ext.RNN(H, H, nonlinearity="relu")
        self.lstm_cell = rnn_ext.LSTMCell(H, H)
        self.gru_cell = rnn_ext.GRUCell(H, H)

    def forward(self, x):  # x: (B, T, I)
        self.lstm.flatten_parameters()  # a common idiom in user forwards; must not break the graph
        y, (h, c) = self.lstm(x)
        y, hg = self.gru(y.transpose(0, 1))
        y, hr = self.rnn(y, hg)
        state = None
        hgc = None
        for t in range(y.shape[0]):
            state = self.lstm_cell(y[t], state)
            hgc = self.gru_cell(state[0], hgc)
        return y, h, c, hg, hr, state[0], state[1], hgc


def _net():
    torch.manual_seed(0)
    return Net()


def _x(seed, device="cpu", requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, I, generator=g).to(device).requires_grad_(requires_grad)


def _loss(outs):
    w = torch.linspace(-1, 1, len(outs))
    return sum(w[i].item() * o.sum() + o.square().sum() for i, o in enumerate(outs))


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_explain_no_graph_breaks():
    explanation = torch._dynamo.explain(_net())(_x(1))
    assert explanation.graph_count >= 1
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert not explanation.break_reasons
    # every fused op call is in the captured graph: LSTM 2 layers x 2 directions + T cell steps,
    # GRU 1 layer + T cell steps, RNN 1 layer
    targets = [str(n.target) for g in explanation.graphs for n in g.graph.nodes if n.op == "call_function"]
    assert targets.count("rnn_ext.lstm_forward") == 4 + T
    assert targets.count("rnn_ext.gru_forward") == 1 + T
    assert targets.count("rnn_ext.rnn_forward") == 1


def test_fullgraph_single_compile_across_calls():
    counter = torch._dynamo.testing.CompileCounter()
    model = _net()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    for seed in (1, 2, 3):
        x = _x(seed)
        for a, b in zip(compiled(x), model(x)):
            torch.testing.assert_close(a, b)
    assert counter.frame_count == 1  # no recompiles, no graph breaks
    assert counter.op_count > 10


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_matches_eager_outputs_and_grads(backend):
    model = _net()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    params = list(model.parameters())
    for seed in (1, 2):  # second call: new input values, same compiled graph
        x = _x(seed, requires_grad=True)
        ref = model(x)
        ref_grads = torch.autograd.grad(_loss(ref), [x, *params])
        x2 = x.detach().clone().requires_grad_()
        out = compiled(x2)
        grads = torch.autograd.grad(_loss(out), [x2, *params])
        assert len(out) == len(ref)
        for a, b in zip(out, ref):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        for a, b in zip(grads, ref_grads):
            assert b.abs().sum() > 0
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_nn_lstm_refused_under_fullgraph():
    """The contrast: torch.nn.LSTM cannot be compiled with fullgraph=True."""
    x = _x(1)
    ours = torch.compile(rnn_ext.LSTM(I, H, batch_first=True), backend="eager", fullgraph=True)
    assert ours(x)[0].shape == (B, T, H)
    with pytest.raises(torch._dynamo.exc.Unsupported, match="(?i)LSTM"):
        torch.compile(nn.LSTM(I, H, batch_first=True), backend="eager", fullgraph=True)(x)


def test_flatten_parameters_in_forward_compiles():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = rnn_ext.GRU(I, H, num_layers=2, batch_first=True)

        def forward(self, x):
            self.gru.flatten_parameters()
            return self.gru(x)[0]

    torch.manual_seed(0)
    m = M()
    explanation = torch._dynamo.explain(m)(_x(1))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    x = _x(2)
    torch.testing.assert_close(compiled(x), m(x))


@pytest.mark.cuda
def test_cuda_reduce_overhead_matches_eager():
    """mode="reduce-overhead": CUDA graphs replay the fused kernels on new inputs."""
    from torch._dynamo.utils import counters

    counters.clear()
    torch.manual_seed(0)
    model = Net().cuda().eval()
    compiled = torch.compile(model, mode="reduce-overhead", fullgraph=True)
    with torch.no_grad():
        for seed in range(1, 6):  # warm-up, record, then replays
            x = _x(seed, "cuda")
            out = [o.clone() for o in compiled(x)]  # cudagraph outputs are overwritten by the next replay
            ref = model(x)
            for a, b in zip(out, ref):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the graph really ran as a CUDA graph: inductor did not fall back to plain launches
    assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])


@pytest.mark.cuda
def test_cuda_reduce_overhead_training_step_matches_eager():
    torch.manual_seed(0)
    model = Net().cuda()
    compiled = torch.compile(model, mode="reduce-overhead", fullgraph=True)
    params = list(model.parameters())
    for seed in range(1, 5):
        x = _x(seed, "cuda", requires_grad=True)
        ref_grads = torch.autograd.grad(_loss(model(x)), [x, *params])
        x2 = x.detach().clone().requires_grad_()
        grads = torch.autograd.grad(_loss(compiled(x2)), [x2, *params])
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
