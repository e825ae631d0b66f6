"""Parity of rnn_ext's modules with torch.nn in float64: outputs and every gradient.

Each case runs the torch.nn module on CPU in float64 (the oracle) and the
rnn_ext module with the same weights (copied with load_state_dict) on the
`device` under test, then compares the outputs and the gradients of the input,
h0, c0 and every parameter for the same random cotangents. On CUDA the rnn_ext
module is moved with .to("cuda") and the results are compared with the CPU
oracle.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import rnn_ext

DT = torch.float64
TOL = dict(rtol=1e-7, atol=1e-9)

# name -> (torch.nn class, rnn_ext class, extra constructor kwargs)
LAYERS = {
    "LSTM": (nn.LSTM, rnn_ext.LSTM, {}),
    "GRU": (nn.GRU, rnn_ext.GRU, {}),
    "RNN_TANH": (nn.RNN, rnn_ext.RNN, {"nonlinearity": "tanh"}),
    "RNN_RELU": (nn.RNN, rnn_ext.RNN, {"nonlinearity": "relu"}),
}
# (mode, proj_size): proj_size only exists for LSTM
LAYER_CASES = [("LSTM", 0), ("LSTM", 2), ("GRU", 0), ("RNN_TANH", 0), ("RNN_RELU", 0)]
LAYER_IDS = ["lstm", "lstm_proj", "gru", "rnn_tanh", "rnn_relu"]

CELLS = {
    "LSTMCell": (nn.LSTMCell, rnn_ext.LSTMCell, {}),
    "GRUCell": (nn.GRUCell, rnn_ext.GRUCell, {}),
    "RNNCell_tanh": (nn.RNNCell, rnn_ext.RNNCell, {"nonlinearity": "tanh"}),
    "RNNCell_relu": (nn.RNNCell, rnn_ext.RNNCell, {"nonlinearity": "relu"}),
}

T, B, I, H, P = 4, 3, 5, 4, 2  # seq, batch, input, hidden, proj


# ----------------------------------------------------------------- helpers
def make_layers(mode, device, *args, **kwargs):
    """A torch.nn module (CPU, float64) and an rnn_ext twin with its weights, on `device`."""
    ref_cls, ext_cls, extra = LAYERS[mode]
    kwargs = {**extra, **kwargs}
    ref = ref_cls(*args, dtype=DT, **kwargs)
    torch.manual_seed(1234)  # different init, so load_state_dict must do the work
    ext = ext_cls(*args, dtype=DT, **kwargs)
    ext.load_state_dict(ref.state_dict())
    return ref, ext.to(device)


def make_cells(name, device, *args, **kwargs):
    ref_cls, ext_cls, extra = CELLS[name]
    kwargs = {**extra, **kwargs}
    ref = ref_cls(*args, dtype=DT, **kwargs)
    torch.manual_seed(1234)
    ext = ext_cls(*args, dtype=DT, **kwargs)
    ext.load_state_dict(ref.state_dict())
    return ref, ext.to(device)


def make_hx(mode, lead, batch, h_out, hidden, unbatched=False):
    """Random initial state(s): (lead, batch, *) or (lead, *) when unbatched; None for lead=None."""
    shape = (lead,) if unbatched else (lead, batch)
    h = torch.randn(*shape, h_out, dtype=DT)
    if mode in ("LSTM", "LSTMCell"):
        return (h, torch.randn(*shape, hidden, dtype=DT))
    return h


def _flat_outputs(out):
    """(output, h_n) or (output, (h_n, c_n)) -> list of tensors (PackedSequence -> data)."""
    tensors = []
    for o in out if isinstance(out, tuple) else (out,):
        if isinstance(o, PackedSequence):
            tensors.append(o.data)
        elif isinstance(o, tuple):
            tensors.extend(o)
        else:
            tensors.append(o)
    return tensors


def _to_leaf(t, device):
    return t.detach().to(device).requires_grad_()


def run(module, device, x, hx=None, *, lengths=None, enforce_sorted=True, batch_first=False, cot_seed=7):
    """Forward + backward of `module` on `device` with fixed random cotangents.

    x and hx are CPU tensors; they are moved to `device` as leaves. With
    `lengths`, x is padded and gets packed (on `device`) before the call.
    Returns (raw output, [outputs on CPU], [grads on CPU]) where grads are those
    of x, the state tensor(s) and module.parameters(), in that order.
    """
    leaves = [_to_leaf(x, device)]
    inp = leaves[0]
    if lengths is not None:
        inp = pack_padded_sequence(inp, lengths, batch_first=batch_first, enforce_sorted=enforce_sorted)
    if hx is not None:
        if isinstance(hx, tuple):
            hx_in = tuple(_to_leaf(h, device) for h in hx)
            leaves.extend(hx_in)
        else:
            hx_in = _to_leaf(hx, device)
            leaves.append(hx_in)
        out = module(inp, hx_in)
    else:
        out = module(inp)
    outs = _flat_outputs(out)
    for o in outs:
        assert o.device.type == torch.device(device).type
        assert o.dtype == DT
    gen = torch.Generator().manual_seed(cot_seed)
    cots = [torch.randn(o.shape, dtype=DT, generator=gen).to(device) for o in outs]
    loss = sum((o * c).sum() for o, c in zip(outs, cots))
    params = list(module.parameters())
    wrt = leaves + params
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    grads = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt)]
    return out, [o.detach().cpu() for o in outs], [g.detach().cpu() for g in grads]


def assert_all_close(got, want, what):
    assert len(got) == len(want), what
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"{what}[{k}]: shape {tuple(g.shape)} != {tuple(w.shape)}"
        torch.testing.assert_close(g, w, **TOL, msg=lambda m: f"{what}[{k}]: {m}")


def check_parity(ref, ext, device, x, hx=None, **kw):
    ref_out, ref_outs, ref_grads = run(ref, "cpu", x, hx, **kw)
    ext_out, ext_outs, ext_grads = run(ext, device, x, hx, **kw)
    assert_all_close(ext_outs, ref_outs, "outputs")
    assert_all_close(ext_grads, ref_grads, "grads")
    # the gradients are not trivially zero (the comparison would be vacuous)
    assert any(g.abs().sum() > 0 for g in ref_grads)
    return ref_out, ext_out


# ----------------------------------------------------------------- dense input, the main grid
@pytest.mark.parametrize("given_hx", [True, False], ids=["hx", "no_hx"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tmajor", "bfirst"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("mode,proj", LAYER_CASES, ids=LAYER_IDS)
def test_layer_dense(device, mode, proj, num_layers, bidirectional, bias, batch_first, given_hx):
    kw = dict(num_layers=num_layers, bidirectional=bidirectional, bias=bias, batch_first=batch_first)
    if proj:
        kw["proj_size"] = proj
    ref, ext = make_layers(mode, device, I, H, **kw)
    x = torch.randn(B, T, I, dtype=DT) if batch_first else torch.randn(T, B, I, dtype=DT)
    D = 2 if bidirectional else 1
    hx = make_hx(mode, num_layers * D, B, proj or H, H) if given_hx else None
    ref_out, ext_out = check_parity(ref, ext, device, x, hx)
    assert ext_out[0].shape == ref_out[0].shape


# ----------------------------------------------------------------- unbatched 2-D input
@pytest.mark.parametrize("given_hx", [True, False], ids=["hx", "no_hx"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tmajor", "bfirst"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("mode,proj", LAYER_CASES, ids=LAYER_IDS)
def test_layer_unbatched(device, mode, proj, bidirectional, batch_first, given_hx):
    kw = dict(num_layers=2, bidirectional=bidirectional, batch_first=batch_first)
    if proj:
        kw["proj_size"] = proj
    ref, ext = make_layers(mode, device, I, H, **kw)
    x = torch.randn(T, I, dtype=DT)  # batch_first is ignored for unbatched input
    D = 2 if bidirectional else 1
    hx = make_hx(mode, 2 * D, None, proj or H, H, unbatched=True) if given_hx else None
    ref_out, ext_out = check_parity(ref, ext, device, x, hx)
    assert ext_out[0].shape == (T, D * (proj or H))
    h_n = ext_out[1][0] if mode == "LSTM" else ext_out[1]
    assert h_n.shape == (2 * D, proj or H)


# ----------------------------------------------------------------- PackedSequence input
@pytest.mark.parametrize("given_hx", [True, False], ids=["hx", "no_hx"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("enforce_sorted", [True, False], ids=["sorted", "unsorted"])
@pytest.mark.parametrize("mode,proj", LAYER_CASES, ids=LAYER_IDS)
def test_layer_packed(device, mode, proj, enforce_sorted, bidirectional, given_hx):
    batch_first = not enforce_sorted  # vary the padded layout too
    kw = dict(num_layers=2, bidirectional=bidirectional, batch_first=batch_first)
    if proj:
        kw["proj_size"] = proj
    ref, ext = make_layers(mode, device, I, H, **kw)
    # lengths with ties; unsorted ones when enforce_sorted is False
    lengths = torch.tensor([5, 3, 3, 1]) if enforce_sorted else torch.tensor([3, 1, 5, 3])
    nb, tmax = len(lengths), int(lengths.max())
    x = torch.randn(nb, tmax, I, dtype=DT) if batch_first else torch.randn(tmax, nb, I, dtype=DT)
    D = 2 if bidirectional else 1
    hx = make_hx(mode, 2 * D, nb, proj or H, H) if given_hx else None
    ref_out, ext_out = check_parity(ref, ext, device, x, hx, lengths=lengths, enforce_sorted=enforce_sorted,
                                    batch_first=batch_first)
    out = ext_out[0]
    assert isinstance(out, PackedSequence)
    assert torch.equal(out.batch_sizes, ref_out[0].batch_sizes)
    assert out.batch_sizes.device.type == "cpu"
    if enforce_sorted:
        assert out.sorted_indices is None and out.unsorted_indices is None
    else:
        assert torch.equal(out.sorted_indices.cpu(), ref_out[0].sorted_indices)
        assert torch.equal(out.unsorted_indices.cpu(), ref_out[0].unsorted_indices)
    # padded view agrees too (pad_packed_sequence zero-fills)
    padded, lens = pad_packed_sequence(out, batch_first=batch_first)
    ref_padded, _ = pad_packed_sequence(ref_out[0], batch_first=batch_first)
    torch.testing.assert_close(padded.detach().cpu(), ref_padded.detach(), **TOL)
    assert torch.equal(lens, lengths)


@pytest.mark.parametrize("mode,proj", LAYER_CASES, ids=LAYER_IDS)
def test_packed_final_state_is_last_valid_step(device, mode, proj):
    """h_n (and c_n) of packed input equal those of each sequence run alone."""
    kw = dict(num_layers=2, bidirectional=True)
    if proj:
        kw["proj_size"] = proj
    _, ext = make_layers(mode, device, I, H, **kw)
    hout = proj or H
    lengths = torch.tensor([2, 5, 1, 4])
    nb, tmax = len(lengths), int(lengths.max())
    x = torch.randn(tmax, nb, I, dtype=DT, device=device)
    hx = make_hx(mode, 4, nb, hout, H)
    hx = tuple(h.to(device) for h in hx) if isinstance(hx, tuple) else hx.to(device)
    with torch.no_grad():
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, fin = ext(packed, hx)
        padded, _ = pad_packed_sequence(out)
        fin = fin if isinstance(fin, tuple) else (fin,)
        hxs = hx if isinstance(hx, tuple) else (hx,)
        for b in range(nb):
            n = int(lengths[b])
            one_hx = tuple(h[:, b:b + 1] for h in hxs)
            one_out, one_fin = ext(x[:n, b:b + 1], one_hx if mode == "LSTM" else one_hx[0])
            one_fin = one_fin if isinstance(one_fin, tuple) else (one_fin,)
            for f, g in zip(fin, one_fin):
                torch.testing.assert_close(f[:, b:b + 1], g, **TOL)
            torch.testing.assert_close(padded[:n, b:b + 1], one_out, **TOL)
            assert padded[n:, b].abs().sum() == 0
            # the last layer's forward state is the output at the last valid step,
            # the reverse state is the reverse half of the output at t=0
            torch.testing.assert_close(fin[0][-2, b], padded[n - 1, b, :hout], **TOL)
            torch.testing.assert_close(fin[0][-1, b], padded[0, b, hout:], **TOL)


# ----------------------------------------------------------------- dropout, eval mode
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("mode,proj", LAYER_CASES, ids=LAYER_IDS)
def test_dropout_one_train_mode(device, mode, proj, bidirectional):
    """dropout=1.0 in train mode: deeper layers see zeros, deterministically, as in torch.nn."""
    kw = dict(num_layers=3, bidirectional=bidirectional, dropout=1.0)
    if proj:
        kw["proj_size"] = proj
    ref, ext = make_layers(mode, device, I, H, **kw)
    assert ref.training and ext.training
    x = torch.randn(T, B, I, dtype=DT)
    D = 2 if bidirectional else 1
    hx = make_hx(mode, 3 * D, B, proj or H, H)
    _, ext_out = check_parity(ref, ext, device, x, hx)
    # the last layer's output does not depend on the input at all
    with torch.no_grad():
        out2 = ext(torch.randn(T, B, I, dtype=DT, device=device), tuple(h.to(device) for h in hx)
                   if isinstance(hx, tuple) else hx.to(device))[0]
    torch.testing.assert_close(out2, ext_out[0].detach(), **TOL)


def test_dropout_half_train_mode_same_masks_as_nn():
    """CPU only: torch.nn and rnn_ext both draw between-layer masks with at::dropout
    from the default CPU generator, so under the same seed they agree exactly."""
    for mode, proj in LAYER_CASES:
        kw = dict(num_layers=3, bidirectional=True, dropout=0.5, **({"proj_size": proj} if proj else {}))
        ref, ext = make_layers(mode, "cpu", I, H, **kw)
        x = torch.randn(T, B, I, dtype=DT)
        torch.manual_seed(11)
        _, ref_outs, ref_grads = run(ref, "cpu", x)
        torch.manual_seed(11)
        _, ext_outs, ext_grads = run(ext, "cpu", x)
        assert_all_close(ext_outs, ref_outs, f"{mode} outputs")
        assert_all_close(ext_grads, ref_grads, f"{mode} grads")
        # and dropout really was applied: another seed gives another output
        torch.manual_seed(12)
        with torch.no_grad():
            other = ext(x)[0]
        assert not torch.allclose(other, ext_outs[0])


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("mode,proj", LAYER_CASES, ids=LAYER_IDS)
def test_dropout_eval_mode_and_backward_in_eval(device, mode, proj, bidirectional):
    """In eval mode dropout is off (deterministic, equal to nn.eval()), and backward works."""
    kw = dict(num_layers=2, bidirectional=bidirectional, dropout=0.5)
    if proj:
        kw["proj_size"] = proj
    ref, ext = make_layers(mode, device, I, H, **kw)
    ref.eval()
    ext.eval()
    x = torch.randn(T, B, I, dtype=DT)
    D = 2 if bidirectional else 1
    hx = make_hx(mode, 2 * D, B, proj or H, H)
    _, first = check_parity(ref, ext, device, x, hx)
    _, again = check_parity(ref, ext, device, x, hx)
    assert torch.equal(first[0].detach(), again[0].detach())


# ----------------------------------------------------------------- zero batch
@pytest.mark.parametrize("given_hx", [True, False], ids=["hx", "no_hx"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tmajor", "bfirst"])
@pytest.mark.parametrize("mode,proj", LAYER_CASES, ids=LAYER_IDS)
def test_zero_batch(device, mode, proj, batch_first, given_hx):
    kw = dict(num_layers=2, bidirectional=True, batch_first=batch_first)
    if proj:
        kw["proj_size"] = proj
    ref, ext = make_layers(mode, device, I, H, **kw)
    x = torch.randn(0, T, I, dtype=DT) if batch_first else torch.randn(T, 0, I, dtype=DT)
    hx = make_hx(mode, 4, 0, proj or H, H) if given_hx else None
    ref_out, ref_outs, ref_grads = run(ref, "cpu", x, hx)
    ext_out, ext_outs, ext_grads = run(ext, device, x, hx)
    assert_all_close(ext_outs, ref_outs, "outputs")
    assert_all_close(ext_grads, ref_grads, "grads")
    want = (0, T, 2 * (proj or H)) if batch_first else (T, 0, 2 * (proj or H))
    assert ext_out[0].shape == want
    for g in ext_grads[len(ext_grads) - len(list(ext.parameters())):]:
        assert g.abs().sum() == 0  # no rows, no gradient


# ----------------------------------------------------------------- state_dict
@pytest.mark.parametrize("mode,proj", LAYER_CASES, ids=LAYER_IDS)
def test_state_dict_roundtrip(device, mode, proj):
    kw = dict(num_layers=2, bidirectional=True, **({"proj_size": proj} if proj else {}))
    ref_cls, ext_cls, extra = LAYERS[mode]
    torch.manual_seed(3)
    ref = ref_cls(I, H, dtype=DT, **extra, **kw)
    torch.manual_seed(4)
    ext = ext_cls(I, H, dtype=DT, **extra, **kw).to(device)
    before = {k: v.detach().clone() for k, v in ext.state_dict().items()}
    sd = ref.state_dict()
    assert list(ext.state_dict().keys()) == list(sd.keys())
    assert any(not torch.equal(before[k].cpu(), v) for k, v in sd.items())  # it was different
    result = ext.load_state_dict(sd)
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in ext.state_dict().items():
        assert v.device.type == torch.device(device).type
        assert torch.equal(v.cpu(), sd[k]), k
    x = torch.randn(T, B, I, dtype=DT)
    check_parity(ref, ext, device, x)
    # and back: torch.nn loads rnn_ext's state_dict
    back = ref_cls(I, H, dtype=DT, **extra, **kw)
    back.load_state_dict({k: v.cpu() for k, v in ext.state_dict().items()})
    for (k, a), (k2, b) in zip(back.state_dict().items(), ref.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


@pytest.mark.parametrize("mode,proj", LAYER_CASES, ids=LAYER_IDS)
def test_same_init_under_seed(mode, proj):
    """Same parameters (names, shapes, order, values) as torch.nn under the same seed."""
    kw = dict(num_layers=2, bidirectional=True, **({"proj_size": proj} if proj else {}))
    ref_cls, ext_cls, extra = LAYERS[mode]
    torch.manual_seed(9)
    ref = ref_cls(I, H, **extra, **kw)
    torch.manual_seed(9)
    ext = ext_cls(I, H, **extra, **kw)
    ref_p, ext_p = list(ref.named_parameters()), list(ext.named_parameters())
    assert [n for n, _ in ext_p] == [n for n, _ in ref_p]
    for (n, a), (_, b) in zip(ext_p, ref_p):
        assert torch.equal(a, b), n


# ----------------------------------------------------------------- cells
CELL_NAMES = list(CELLS)


def _cell_hx(name, batch, hidden, batched):
    shape = (batch, hidden) if batched else (hidden,)
    if name == "LSTMCell":
        return (torch.randn(*shape, dtype=DT), torch.randn(*shape, dtype=DT))
    return torch.randn(*shape, dtype=DT)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("given_hx", [True, False], ids=["hx", "no_hx"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("name", CELL_NAMES)
def test_cell(device, name, batched, given_hx, bias):
    ref, ext = make_cells(name, device, I, H, bias=bias)
    x = torch.randn(B, I, dtype=DT) if batched else torch.randn(I, dtype=DT)
    hx = _cell_hx(name, B, H, batched) if given_hx else None
    ref_out, ext_out = check_parity(ref, ext, device, x, hx)
    outs = ext_out if isinstance(ext_out, tuple) else (ext_out,)
    for o in outs:
        assert o.shape == ((B, H) if batched else (H,))


@pytest.mark.parametrize("name", CELL_NAMES)
def test_cell_unrolled_sequence(device, name):
    """Three chained steps: gradients flow through the state across calls."""
    ref, ext = make_cells(name, device, I, H)
    xs = torch.randn(3, B, I, dtype=DT)

    class Unroll(nn.Module):
        def __init__(self, cell):
            super().__init__()
            self.cell = cell

        def forward(self, x, hx):
            for t in range(x.shape[0]):
                hx = self.cell(x[t], hx)
            return hx

    hx = _cell_hx(name, B, H, True)
    check_parity(Unroll(ref), Unroll(ext), device, xs, hx)


@pytest.mark.parametrize("sizes", [(I, 0), (0, H)], ids=["hidden_size0", "input_size0"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("name", CELL_NAMES)
def test_cell_zero_size(device, name, batched, sizes):
    """hidden_size=0 (and input_size=0) cells work as in torch.nn, forward and backward."""
    isz, hsz = sizes
    ref, ext = make_cells(name, device, isz, hsz)
    x = torch.randn(B, isz, dtype=DT) if batched else torch.randn(isz, dtype=DT)
    ref_out, ref_outs, ref_grads = run(ref, "cpu", x)
    ext_out, ext_outs, ext_grads = run(ext, device, x)
    assert_all_close(ext_outs, ref_outs, "outputs")
    assert_all_close(ext_grads, ref_grads, "grads")
    for o in ext_outs:
        assert o.shape == ((B, hsz) if batched else (hsz,))
    assert ext_grads[0].shape == x.shape
    if hsz == 0:
        assert ext_grads[0].abs().sum() == 0
    else:  # the bias still drives the output
        assert ext_outs[0].abs().sum() > 0


# ----------------------------------------------------------------- partial use of the outputs, layouts
PARTIAL = [(m, p, u) for (m, p), i in zip(LAYER_CASES, LAYER_IDS)
           for u in (("output", "h_n", "c_n") if m == "LSTM" else ("output", "h_n"))]


@pytest.mark.parametrize("mode,proj,use", PARTIAL,
                         ids=[f"{i}-{u}" for (m, p), i in zip(LAYER_CASES, LAYER_IDS)
                              for u in (("output", "h_n", "c_n") if m == "LSTM" else ("output", "h_n"))])
def test_grads_when_only_some_outputs_are_used(device, mode, proj, use):
    """Unused outputs get no gradient (None) in backward; the rest must still match."""
    kw = dict(num_layers=2, bidirectional=True, **({"proj_size": proj} if proj else {}))
    ref, ext = make_layers(mode, device, I, H, **kw)
    x = torch.randn(T, B, I, dtype=DT)
    hx = make_hx(mode, 4, B, proj or H, H)
    results = []
    for mod, dev in ((ref, "cpu"), (ext, device)):
        xi = _to_leaf(x, dev)
        hxi = tuple(_to_leaf(h, dev) for h in hx) if isinstance(hx, tuple) else _to_leaf(hx, dev)
        out, fin = mod(xi, hxi)
        fin = fin if isinstance(fin, tuple) else (fin,)
        picked = {"output": out, "h_n": fin[0], "c_n": fin[-1]}[use]
        leaves = [xi, *(hxi if isinstance(hxi, tuple) else (hxi,)), *mod.parameters()]
        grads = torch.autograd.grad(picked.pow(2).sum(), leaves, allow_unused=True)
        results.append([torch.zeros_like(w).cpu() if g is None else g.cpu() for g, w in zip(grads, leaves)])
    assert_all_close(results[1], results[0], f"grads ({use} only)")


@pytest.mark.parametrize("mode,proj", LAYER_CASES, ids=LAYER_IDS)
def test_noncontiguous_input_and_hx(device, mode, proj):
    kw = dict(num_layers=2, bidirectional=True, **({"proj_size": proj} if proj else {}))
    ref, ext = make_layers(mode, device, I, H, **kw)
    x = torch.randn(B, T, I, dtype=DT).transpose(0, 1)  # (T, B, I), not contiguous
    hx = make_hx(mode, 4, B, proj or H, H)
    # (L*D, B, H) views of (B, L*D, H) storage
    hx = tuple(h.transpose(0, 1).contiguous().transpose(0, 1) for h in hx) if isinstance(hx, tuple) else \
        hx.transpose(0, 1).contiguous().transpose(0, 1)
    assert not x.is_contiguous()

    def run_nc(module, dev):
        xi = x.detach().to(dev).requires_grad_()
        hxi = tuple(h.to(dev) for h in hx) if isinstance(hx, tuple) else hx.to(dev)
        assert not xi.is_contiguous()  # .to() preserves the strides
        out, fin = module(xi, hxi)
        fin = fin if isinstance(fin, tuple) else (fin,)
        loss = out.sum() + sum(f.pow(2).sum() for f in fin)
        grads = torch.autograd.grad(loss, [xi, *module.parameters()])
        return [out.detach().cpu(), *(f.detach().cpu() for f in fin), *(g.cpu() for g in grads)]

    assert_all_close(run_nc(ext, device), run_nc(ref, "cpu"), "non-contiguous")
