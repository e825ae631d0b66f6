"""FlopCounterMode sees rnn_ext's ops (rnn_ext/flops.py): a forward counts the products torch.nn
counts on its native path (float64 on the CPU, where it runs aten.mm/addmm per step; its oneDNN
float32 LSTM counts 0), and a backward counts twice its forward where every input and weight
gradient is wanted, less the products skipped for those that are not (the backward ops'
output_mask)."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils.flop_counter import FlopCounterMode

import rnn_ext

MODULES = [
    ("LSTM", {}),
    ("LSTM", {"proj_size": 3, "num_layers": 2, "bidirectional": True}),
    ("GRU", {"num_layers": 2, "batch_first": True}),
    ("RNN", {"nonlinearity": "relu"}),
    ("LSTMCell", {}),
    ("GRUCell", {}),
    ("RNNCell", {}),
]


def _count(fn):
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _data(out):
    return out.data if hasattr(out, "batch_sizes") else out


@pytest.mark.parametrize("name,kw", MODULES, ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values())))
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_flops_forward_as_torch_nn_backward_twice(name, kw, packed):
    if packed and "Cell" in name:
        pytest.skip("cells take no PackedSequence")
    counts = []
    for mod in (torch.nn, rnn_ext):
        torch.manual_seed(0)
        m = getattr(mod, name)(4, 5, **kw).double()
        shape = (3, 4) if "Cell" in name else (3, 6, 4) if kw.get("batch_first") else (6, 3, 4)
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        if packed:
            x = pack_padded_sequence(x, [6, 4, 1], batch_first=kw.get("batch_first", False))
        # (a cell's state gradient is its whole recurrent product: wanted here)
        h = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
        args = (x, (h, h)) if name == "LSTMCell" else (x, h) if "Cell" in name else (x,)
        forward = _count(lambda: m(*args))
        training = _count(lambda: _data(_first(m(*args))).sum().backward())
        counts.append((forward, training))
    (nn_forward, _), (ext_forward, ext_training) = counts
    assert ext_forward == nn_forward > 0
    assert ext_training == 3 * ext_forward


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"])
def test_flops_backward_skips_unwanted_gradients(name):
    """Input without requires_grad: no dX product (2*rows*G*I); frozen weights: no weight-gradient
    products (the forward's count); a cell call without hx: no product into h0 (2*B*G*H)."""
    torch.manual_seed(0)
    m = getattr(rnn_ext, name)(4, 5).double()
    shape = (3, 4) if "Cell" in name else (6, 3, 4)
    rows = 3 if "Cell" in name else 18
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[name.removesuffix("Cell")] * 5
    input_side = 2 * rows * G * 4
    state_side = 2 * 3 * G * 5 if "Cell" in name else 0  # one step: h0's product is all of it
    x = torch.randn(shape, dtype=torch.float64)
    forward = _count(lambda: m(x))
    assert _count(lambda: _first(m(x)).sum().backward()) == 3 * forward - input_side - state_side
    x.requires_grad_(True)
    for p in m.parameters():
        p.requires_grad_(False)
    assert _count(lambda: _first(m(x)).sum().backward()) == 2 * forward - state_side
