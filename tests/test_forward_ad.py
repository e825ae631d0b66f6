"""Forward-mode AD (torch.autograd.forward_ad): tangents match torch.nn's.

The ops' jvp differentiates the reference layer (rnn_ext/reference.py) with
two reverse passes, so it is checked here against torch.nn in float64, for
tangents on the input, the initial states and every parameter, and with
gradcheck's forward-AD check. (vmap, and so torch.func.jacfwd, is not
supported: the Functions have no vmap rule.)
"""
import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnn_ext

CASES = [
    ("LSTM", {}),
    ("GRU", {"bidirectional": True}),
    ("RNN", {"nonlinearity": "relu", "num_layers": 2}),
    ("LSTM", {"proj_size": 3, "bidirectional": True}),
]


def _tangents_of(module, x, hx, t_x, t_hx, t_params, packed_lengths):
    params = dict(module.named_parameters())
    with fwAD.dual_level():
        duals = {k: fwAD.make_dual(p.detach(), t_params[k]) for k, p in params.items()}
        hd = tuple(fwAD.make_dual(h, t) for h, t in zip(hx, t_hx))
        if packed_lengths is None:
            inp = fwAD.make_dual(x, t_x)
        else:  # pack_padded_sequence has no forward AD: pack primal and tangent apart
            px = pack_padded_sequence(x, packed_lengths, enforce_sorted=False)
            pt = pack_padded_sequence(t_x, packed_lengths, enforce_sorted=False)
            inp = PackedSequence(fwAD.make_dual(px.data, pt.data), px.batch_sizes, px.sorted_indices,
                                 px.unsorted_indices)
        out, h = torch.func.functional_call(module, duals, (inp, hd if len(hd) == 2 else hd[0]))
        y = out.data if packed_lengths is not None else out
        hs = h if isinstance(h, tuple) else (h,)
        return [fwAD.unpack_dual(t).tangent.clone() for t in (y, *hs)]


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("name,kw", CASES)
def test_forward_ad_matches_nn(name, kw, packed):
    torch.manual_seed(0)
    ext = getattr(rnn_ext, name)(3, 4, **kw).double()
    ref = getattr(nn, name)(3, 4, **kw).double()
    ref.load_state_dict(ext.state_dict())
    T, B = 5, 3
    D = 2 if kw.get("bidirectional") else 1
    L = kw.get("num_layers", 1)
    h_out = kw.get("proj_size", 0) or 4
    x = torch.randn(T, B, 3, dtype=torch.double)
    hx = [torch.randn(D * L, B, h_out, dtype=torch.double)]
    if name == "LSTM":
        hx.append(torch.randn(D * L, B, 4, dtype=torch.double))
    t_x = torch.randn_like(x)
    t_hx = [torch.randn_like(h) for h in hx]
    t_params = {k: torch.randn_like(p) for k, p in ext.named_parameters()}
    lengths = torch.tensor([5, 2, 4]) if packed else None
    got = _tangents_of(ext, x, hx, t_x, t_hx, t_params, lengths)
    want = _tangents_of(ref, x, hx, t_x, t_hx, t_params, lengths)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_gradcheck_forward_ad(name):
    torch.manual_seed(0)
    m = getattr(rnn_ext, name)(3, 4).double()
    x = torch.randn(4, 2, 3, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(1, 2, 4, dtype=torch.double, requires_grad=True)
    w = m.weight_hh_l0.detach().clone().requires_grad_()

    def fn(x, h0, w):
        params = dict(m.named_parameters())
        params["weight_hh_l0"] = w
        hx = (h0, h0 * 0.5) if name == "LSTM" else h0
        return torch.func.functional_call(m, params, (x, hx))[0]

    assert torch.autograd.gradcheck(fn, (x, h0, w), check_forward_ad=True, check_backward_ad=True)
