"""Complex modules: torch.nn runs complex LSTM/GRU/RNN and cells on its native
path; rnn_ext runs them on the reference layers (rnn_ext/reference.py). Outputs
and every gradient match torch.nn in complex128; relu RNNs fail as in torch.nn."""
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnn_ext

DTYPE = torch.complex128
LAYERS = [
    ("LSTM", {}),
    ("LSTM", {"num_layers": 2, "bidirectional": True, "proj_size": 2, "batch_first": True}),
    ("GRU", {"num_layers": 2, "bidirectional": True}),
    ("RNN", {"bias": False}),
]
CELLS = ["LSTMCell", "GRUCell", "RNNCell"]


def _pair(name, *args, **kw):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "complex modules are a new feature"
        ref = getattr(nn, name)(*args, **kw).to(DTYPE)
        ext = getattr(rnn_ext, name)(*args, **kw).to(DTYPE)
    ext.load_state_dict(ref.state_dict())
    return ref, ext


def _flat(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, PackedSequence):
        return [out.data]
    return [t for o in out for t in _flat(o)]


def _loss(outs):
    # real and imaginary parts weighted differently, so both reach every gradient
    return sum((o.real * 0.7 - o.imag * 1.3).sum() for o in outs)


def _check(ref, ext, make_input):
    xr, xe = make_input(), make_input()
    outs_r, outs_e = _flat(ref(xr)), _flat(ext(xe))
    for a, b in zip(outs_e, outs_r, strict=True):
        assert a.dtype == DTYPE
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    leaf_r = [xr.data if hasattr(xr, "batch_sizes") else xr, *ref.parameters()]
    leaf_e = [xe.data if hasattr(xe, "batch_sizes") else xe, *ext.parameters()]
    for a, b in zip(torch.autograd.grad(_loss(outs_e), leaf_e), torch.autograd.grad(_loss(outs_r), leaf_r),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,kw", LAYERS, ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values())))
def test_complex_layers_match_torch_nn(name, kw):
    ref, ext = _pair(name, 3, 4, **kw)
    _check(ref, ext, lambda: torch.randn(5, 2, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
           .requires_grad_())


def test_complex_packed_sequence_matches_torch_nn():
    ref, ext = _pair("GRU", 3, 4, bidirectional=True)

    def packed():
        # (torch cannot differentiate packing complex tensors: the packed rows are the leaf)
        x = torch.randn(5, 3, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(2))
        p = pack_padded_sequence(x, [5, 4, 2])
        return PackedSequence(p.data.requires_grad_(), p.batch_sizes, p.sorted_indices, p.unsorted_indices)

    _check(ref, ext, packed)


@pytest.mark.parametrize("name", CELLS)
def test_complex_cells_match_torch_nn(name):
    ref, ext = _pair(name, 3, 4)
    _check(ref, ext, lambda: torch.randn(2, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(3))
           .requires_grad_())


@pytest.mark.parametrize("name", ["RNN", "RNNCell"])
def test_complex_relu_fails_as_in_torch_nn(name):
    ref, ext = _pair(name, 3, 4, nonlinearity="relu")
    x = torch.randn(5, 2, 3, dtype=DTYPE) if name == "RNN" else torch.randn(2, 3, dtype=DTYPE)
    with pytest.raises(NotImplementedError) as want:
        ref(x)
    with pytest.raises(NotImplementedError, match=str(want.value)):
        ext(x)


@pytest.mark.parametrize("name", ["GRU", "LSTMCell"])
def test_complex_under_cpu_autocast_stays_complex(name):
    """torch.autocast leaves complex tensors alone; so does rnn_ext's autocast policy."""
    ref, ext = _pair(name, 3, 4)
    x = torch.randn(5, 2, 3, dtype=DTYPE) if name == "GRU" else torch.randn(2, 3, dtype=DTYPE)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs_r, outs_e = _flat(ref(x)), _flat(ext(x))
    for a, b in zip(outs_e, outs_r, strict=True):
        assert a.dtype == b.dtype == DTYPE
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
