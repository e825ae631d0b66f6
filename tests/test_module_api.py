"""Drop-in behaviour of rnn_ext's modules versus torch.nn beyond module_db (NN_API.md §1, 2, 3, 5, 10).

Every comparison runs torch.nn and rnn_ext side by side: constructor validation (type,
message, warnings), attributes, repr, parameters and init, state_dict both ways, the flat
weight lists, forward-time errors, the deliberate PackedSequence improvement, and the
module machinery (pickle, deepcopy, dtype/device moves, meta, replication,
functional_call, parametrizations, weight_norm, hooks, docs).
"""
import copy
import io
import math
import pickle
import pydoc
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_sequence

import rnn_ext

# torch.nn on CUDA as an exact oracle: no cuDNN (TF32, no eval-mode backward)
pytestmark = pytest.mark.usefixtures("nn_without_cudnn")

LAYERS = ("LSTM", "GRU", "RNN")
CELLS = ("LSTMCell", "GRUCell", "RNNCell")
ALL = LAYERS + CELLS


def _pair(name, *args, seed=0, **kwargs):
    torch.manual_seed(seed)
    ref = getattr(nn, name)(*args, **kwargs)
    torch.manual_seed(seed)
    new = getattr(rnn_ext, name)(*args, **kwargs)
    return ref, new


def _outcome(fn):
    """('ok', result, warnings) or (exception type, message, warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fn()
            status = ("ok", result)
        except Exception as e:  # noqa: BLE001
            status = (type(e), str(e))
    return status + ([(w.category, str(w.message)) for w in caught],)


def _flat(obj):
    if isinstance(obj, PackedSequence):
        return [obj.data, obj.batch_sizes] + [t for t in (obj.sorted_indices, obj.unsorted_indices) if t is not None]
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _flat(o)]
    return []


def _assert_same_output(ref_out, new_out, **tol):
    fr, fn_ = _flat(ref_out), _flat(new_out)
    assert len(fr) == len(fn_) > 0
    for a, b in zip(fr, fn_):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(b, a, **(tol or dict(rtol=1e-5, atol=1e-6)))


def _hx(name, *shape, device="cpu"):
    h = torch.randn(*shape, device=device)
    return (h, torch.randn(*shape, device=device)) if name.startswith("LSTM") else h


# ================================================================= 1.2 constructor validation
CTOR_CASES = [
    # (label, class names, args, kwargs)
    ("dropout-str", LAYERS, (2, 3), dict(dropout="0.5")),
    ("dropout-True", LAYERS, (2, 3), dict(dropout=True)),
    ("dropout-False", LAYERS, (2, 3), dict(dropout=False)),
    ("dropout-tensor", LAYERS, (2, 3), dict(dropout=torch.tensor(0.5))),
    ("dropout-negative", LAYERS, (2, 3), dict(dropout=-0.1)),
    ("dropout-above-1", LAYERS, (2, 3), dict(dropout=1.5)),
    ("dropout-None", LAYERS, (2, 3), dict(dropout=None)),
    ("dropout-nan", LAYERS, (2, 3, 2), dict(dropout=float("nan"))),
    ("dropout-warning-1-layer", LAYERS, (2, 3), dict(dropout=0.5)),
    ("dropout-warning-positional", LAYERS, (2, 3, 1, True, False, 0.25), {}),
    ("dropout-int-1", LAYERS, (2, 3, 2), dict(dropout=1)),
    ("dropout-int-0", LAYERS, (2, 3), dict(dropout=0)),
    ("bias-int", LAYERS, (2, 3), dict(bias=1)),
    ("bias-str", LAYERS, (2, 3), dict(bias="True")),
    ("bias-None", LAYERS, (2, 3), dict(bias=None)),
    ("batch_first-int", LAYERS, (2, 3), dict(batch_first=0)),
    ("batch_first-str", LAYERS, (2, 3), dict(batch_first="False")),
    ("input_size-float", LAYERS, (2.0, 3), {}),
    ("input_size-str", LAYERS, ("2", 3), {}),
    ("input_size-bool", LAYERS, (True, 3), {}),
    ("input_size-zero", LAYERS, (0, 3), {}),
    ("input_size-negative", LAYERS, (-2, 3), {}),
    ("hidden_size-float", LAYERS, (2, 3.0), {}),
    ("hidden_size-zero", LAYERS, (2, 0), {}),
    ("hidden_size-negative", LAYERS, (2, -3), {}),
    ("num_layers-zero", LAYERS, (2, 3, 0), {}),
    ("num_layers-negative", LAYERS, (2, 3, -1), {}),
    ("num_layers-float", LAYERS, (2, 3, 2.0), {}),
    ("bidirectional-int", LAYERS, (2, 3), dict(bidirectional=1)),
    ("order-dropout-before-bias", LAYERS, (2.0, 3), dict(bias=1, dropout=7)),
    ("order-bias-before-input_size", LAYERS, (2.0, 3), dict(bias=1)),
    ("order-input-before-hidden", LAYERS, (0, 0), {}),
    ("order-hidden-before-layers", LAYERS, (2, 0, 0), {}),
    ("proj_size-negative", ("LSTM",), (2, 3), dict(proj_size=-1)),
    ("proj_size-equal-hidden", ("LSTM",), (2, 3), dict(proj_size=3)),
    ("proj_size-above-hidden", ("LSTM",), (2, 3), dict(proj_size=5)),
    ("proj_size-ok", ("LSTM",), (2, 3), dict(proj_size=2)),
    ("proj_size-kwarg-0", ("GRU", "RNN"), (2, 3), dict(proj_size=0)),
    ("proj_size-kwarg-2", ("GRU", "RNN"), (2, 3), dict(proj_size=2)),
    ("GRU-proj_size-positional", ("GRU",), (3, 4, 1, True, False, 0.0, False, 2), {}),
    ("nonlinearity-unknown", ("RNN",), (2, 3), dict(nonlinearity="sigmoid")),
    ("nonlinearity-unknown-positional", ("RNN",), (2, 3, 1, "sigmoid"), {}),
    ("nonlinearity-relu-positional", ("RNN",), (2, 3, 1, "relu"), {}),
    ("nonlinearity-relu-positional-all", ("RNN",), (2, 3, 2, "relu", False, True, 0.5, True), {}),
    ("nonlinearity-None", ("RNN",), (2, 3), dict(nonlinearity=None)),
    ("nonlinearity-upper", ("RNN",), (2, 3), dict(nonlinearity="TANH")),
    ("nonlinearity-before-proj", ("RNN",), (2, 3), dict(nonlinearity="x", proj_size=1)),
    ("nonlinearity-before-bias", ("RNN",), (2, 3), dict(nonlinearity="x", bias=1)),
    ("unknown-kwarg", ALL, (2, 3), dict(foo=1)),
    ("too-many-positional", LAYERS, (2, 3, 1, True, False, 0.0, False, 0, None, None, 1, 2), {}),
    ("no-args", ALL, (), {}),
    ("one-arg", ALL, (2,), {}),
    ("dtype-int", LAYERS + CELLS, (2, 3), dict(dtype=torch.int64)),
    ("dtype-float64", LAYERS + CELLS, (2, 3), dict(dtype=torch.float64)),
    ("cell-hidden-zero", CELLS, (3, 0), {}),
    ("cell-input-zero", CELLS, (0, 4), {}),
    ("cell-hidden-negative", CELLS, (3, -4), {}),
    ("cell-bias-int", CELLS, (3, 4), dict(bias=1)),
    ("cell-float-size", CELLS, (3.0, 4), {}),
    ("cell-nonlinearity-bad", ("RNNCell",), (3, 4), dict(nonlinearity="x")),
    ("cell-nonlinearity-positional", ("RNNCell",), (3, 4, True, "relu"), {}),
    ("cell-too-many-positional", ("LSTMCell", "GRUCell"), (3, 4, True, "relu"), {}),
]
CTOR_IDS = [(label, name) for label, names, _, _ in CTOR_CASES for name in names]


@pytest.mark.parametrize("label,name", CTOR_IDS, ids=[f"{n}-{lab}" for lab, n in CTOR_IDS])
def test_constructor_matches_nn(label, name):
    _, _, args, kwargs = next(c for c in CTOR_CASES if c[0] == label)
    torch.manual_seed(0)
    ref = _outcome(lambda: getattr(nn, name)(*args, **kwargs))
    torch.manual_seed(0)
    new = _outcome(lambda: getattr(rnn_ext, name)(*args, **kwargs))
    # warnings: same category and text (e.g. the dropout-with-one-layer UserWarning)
    assert new[2] == ref[2]
    if ref[0] != "ok":
        assert new[0] is ref[0], f"torch.nn raised {ref[0].__name__}({ref[1]!r}); rnn_ext: {new[:2]!r}"
        assert new[1] == ref[1]
        return
    assert new[0] == "ok", f"torch.nn constructs; rnn_ext raised {new[0].__name__}: {new[1]}"
    m_ref, m_new = ref[1], new[1]
    assert repr(m_new) == repr(m_ref)
    for attr in ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional", "proj_size", "nonlinearity"):
        if hasattr(m_ref, attr):
            a, b = getattr(m_ref, attr), getattr(m_new, attr)
            assert type(a) is type(b) and (a == b or (a != a and b != b)), f"{attr}: nn {a!r}, rnn_ext {b!r}"
    assert [(n, p.shape, p.dtype) for n, p in m_ref.named_parameters()] == \
           [(n, p.shape, p.dtype) for n, p in m_new.named_parameters()]


def test_constructor_messages_spot_check():
    """The NN_API §1.2 messages themselves, independently of torch.nn's current wording."""
    with pytest.raises(ValueError, match=r"^dropout should be a number in range \[0, 1\] representing the "
                                         r"probability of an element being zeroed$"):
        rnn_ext.LSTM(2, 3, dropout=True)
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1, but got dropout=0.5 "
                                         "and num_layers=1"):
        rnn_ext.GRU(2, 3, dropout=0.5)
    with pytest.raises(TypeError, match="^bias should be of type bool, got: int$"):
        rnn_ext.RNN(2, 3, bias=1)
    with pytest.raises(TypeError, match="^input_size should be of type int, got: float$"):
        rnn_ext.LSTM(2.0, 3)
    with pytest.raises(ValueError, match="^proj_size has to be smaller than hidden_size$"):
        rnn_ext.LSTM(2, 3, proj_size=3)
    with pytest.raises(ValueError, match="^proj_size argument is only supported for LSTM, not RNN or GRU$"):
        rnn_ext.GRU(2, 3, proj_size=0)
    with pytest.raises(ValueError, match=r"^Unknown nonlinearity 'sigmoid'. Select from 'tanh' or 'relu'.$"):
        rnn_ext.RNN(2, 3, nonlinearity="sigmoid")
    with pytest.raises(TypeError, match="unexpected keyword argument 'foo'"):
        rnn_ext.LSTM(2, 3, foo=1)
    m = rnn_ext.RNN(2, 3, 1, "relu")
    assert m.nonlinearity == "relu" and m.mode == "RNN_RELU" and m.num_layers == 1
    m = rnn_ext.LSTM(2, 3, num_layers=2, dropout=1)
    assert m.dropout == 1.0 and type(m.dropout) is float


# ================================================================= attributes, constants, repr
LAYER_CONFIGS = [
    dict(),
    dict(num_layers=2),
    dict(bias=False),
    dict(batch_first=True),
    dict(num_layers=3, dropout=0.5),
    dict(bidirectional=True),
    dict(num_layers=2, bias=False, batch_first=True, dropout=0.25, bidirectional=True),
    dict(bidirectional=1),
]
LSTM_CONFIGS = [dict(proj_size=2), dict(proj_size=3, num_layers=2, bidirectional=True, batch_first=True, dropout=0.5)]
RNN_CONFIGS = [dict(nonlinearity="relu"), dict(nonlinearity="relu", num_layers=2, bias=False, bidirectional=True)]


def _layer_configs(name):
    return LAYER_CONFIGS + (LSTM_CONFIGS if name == "LSTM" else []) + (RNN_CONFIGS if name == "RNN" else [])


@pytest.mark.parametrize("name", LAYERS)
def test_layer_attributes_and_repr(name):
    for cfg in _layer_configs(name):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref, new = _pair(name, 5, 4, **cfg)
        assert repr(new) == repr(ref), cfg
        assert new.extra_repr() == ref.extra_repr()
        for attr in nn.RNNBase.__constants__:
            assert getattr(new, attr) == getattr(ref, attr) and type(getattr(new, attr)) is type(getattr(ref, attr))
        assert type(new.dropout) is float
        if name == "RNN":
            assert new.nonlinearity == ref.nonlinearity
        assert isinstance(new, nn.Module) and not hasattr(new, "weight")
    assert getattr(rnn_ext, name).__constants__ == getattr(nn, name).__constants__
    assert rnn_ext.LSTM.__jit_unused_properties__ == nn.LSTM.__jit_unused_properties__ == ["all_weights"]


def test_repr_examples_from_spec():
    m = rnn_ext.LSTM(5, 4, proj_size=2, num_layers=2, batch_first=True, dropout=0.5, bidirectional=True)
    assert repr(m) == "LSTM(5, 4, proj_size=2, num_layers=2, batch_first=True, dropout=0.5, bidirectional=True)"
    # quirk kept: the RNN repr does not show the nonlinearity
    assert repr(rnn_ext.RNN(5, 4, 2, "relu")) == repr(nn.RNN(5, 4, 2, "relu")) == "RNN(5, 4, num_layers=2)"


@pytest.mark.parametrize("name", CELLS)
def test_cell_attributes_and_repr(name):
    cfgs = [dict(), dict(bias=False)] + ([dict(nonlinearity="relu"), dict(bias=False, nonlinearity="relu")]
                                         if name == "RNNCell" else [])
    for cfg in cfgs:
        ref, new = _pair(name, 5, 4, **cfg)
        assert repr(new) == repr(ref)
        for attr in getattr(nn, name).__constants__:
            assert getattr(new, attr) == getattr(ref, attr)
    assert getattr(rnn_ext, name).__constants__ == getattr(nn, name).__constants__
    assert repr(rnn_ext.RNNCell(5, 4, nonlinearity="relu")) == "RNNCell(5, 4, nonlinearity=relu)"
    assert repr(rnn_ext.LSTMCell(5, 4, bias=False)) == "LSTMCell(5, 4, bias=False)"


# ================================================================= parameters and init
@pytest.mark.parametrize("name", LAYERS)
def test_layer_parameters_and_init_bitwise(name):
    for cfg in _layer_configs(name):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref, new = _pair(name, 5, 4, seed=123, **cfg)
        pr, pn = list(ref.named_parameters()), list(new.named_parameters())
        assert [(n, p.shape) for n, p in pr] == [(n, p.shape) for n, p in pn], cfg
        for (n, a), (_, b) in zip(pr, pn):
            assert type(b) is nn.Parameter and b.requires_grad
            assert torch.equal(a, b), f"{cfg}: init of {n} differs"
            bound = 1 / math.sqrt(4)
            assert b.abs().max() <= bound
        if not new.bias:
            assert not hasattr(new, "bias_ih_l0") and not hasattr(new, "bias_hh_l0")
        # the RNG stream after construction is also identical (same number of draws)
        torch.manual_seed(123)
        getattr(nn, name)(5, 4, **cfg)
        after_ref = torch.rand(3)
        torch.manual_seed(123)
        getattr(rnn_ext, name)(5, 4, **cfg)
        assert torch.equal(torch.rand(3), after_ref)


def test_parameter_layout_example_from_spec():
    m = rnn_ext.LSTM(5, 4, 2, bidirectional=True, proj_size=3)
    got = [(n, tuple(p.shape)) for n, p in m.named_parameters()][:7]
    assert got == [("weight_ih_l0", (16, 5)), ("weight_hh_l0", (16, 3)), ("bias_ih_l0", (16,)),
                   ("bias_hh_l0", (16,)), ("weight_hr_l0", (3, 4)), ("weight_ih_l0_reverse", (16, 5)),
                   ("weight_hh_l0_reverse", (16, 3))]
    assert dict(m.named_parameters())["weight_ih_l1"].shape == (16, 6)


@pytest.mark.parametrize("name", CELLS)
def test_cell_parameters_and_init_bitwise(name):
    for cfg in (dict(), dict(bias=False)):
        ref, new = _pair(name, 5, 4, seed=7, **cfg)
        pr, pn = list(ref.named_parameters()), list(new.named_parameters())
        assert [(n, p.shape) for n, p in pr] == [(n, p.shape) for n, p in pn]
        for (n, a), (_, b) in zip(pr, pn):
            assert torch.equal(a, b), n
        if not cfg.get("bias", True):
            assert new.bias_ih is None and new.bias_hh is None and hasattr(new, "bias_ih")
            assert [n for n, _ in pn] == ["weight_ih", "weight_hh"]


@pytest.mark.parametrize("name", ALL)
def test_reset_parameters_matches_nn(name):
    ref, new = _pair(name, 5, 4)
    torch.manual_seed(99)
    ref.reset_parameters()
    torch.manual_seed(99)
    new.reset_parameters()
    for (n, a), (_, b) in zip(ref.named_parameters(), new.named_parameters()):
        assert torch.equal(a, b), n


# ================================================================= state_dict and flat weights
@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trips(device, name):
    cfgs = [dict(num_layers=2, bidirectional=True)] if name in LAYERS else [dict()]
    cfgs += [dict(bias=False)] + ([dict(proj_size=2, num_layers=2)] if name == "LSTM" else [])
    for cfg in cfgs:
        ref, new = _pair(name, 3, 4, **cfg)
        ref, new = ref.to(device), new.to(device)
        assert list(ref.state_dict()) == list(new.state_dict())
        with torch.no_grad():
            for p in ref.parameters():
                p.normal_()
        x = (torch.randn(5, 2, 3) if name in LAYERS else torch.randn(2, 3)).to(device)
        # nn -> rnn_ext (strict)
        new.load_state_dict(ref.state_dict(), strict=True)
        _assert_same_output(ref(x), new(x), rtol=1e-4, atol=1e-5)
        # rnn_ext -> a fresh nn (strict)
        with torch.no_grad():
            for p in new.parameters():
                p.mul_(0.5)
        back = getattr(nn, name)(3, 4, **cfg).to(device)
        back.load_state_dict(new.state_dict(), strict=True)
        for (n, a), (_, b) in zip(back.named_parameters(), new.named_parameters()):
            assert torch.equal(a, b), n
        _assert_same_output(back(x), new(x), rtol=1e-4, atol=1e-5)
        # a state_dict with a missing key is rejected as by nn
        sd = new.state_dict()
        sd.pop(next(iter(sd)))
        with pytest.raises(RuntimeError, match="Missing key"):
            new.load_state_dict(sd, strict=True)


@pytest.mark.parametrize("name", LAYERS)
def test_flat_weight_lists(name):
    cfg = dict(num_layers=2, bidirectional=True, **({"proj_size": 2} if name == "LSTM" else {}))
    ref, new = _pair(name, 3, 4, **cfg)
    assert new._flat_weights_names == ref._flat_weights_names
    assert new._all_weights == ref._all_weights
    assert len(new._all_weights) == 4 and all(isinstance(n, str) for g in new._all_weights for n in g)
    assert [[p.shape for p in g] for g in new.all_weights] == [[p.shape for p in g] for g in ref.all_weights]
    assert all(p is getattr(new, n) for g, names in zip(new.all_weights, new._all_weights) for p, n in zip(g, names))
    assert [w is getattr(new, n) for w, n in zip(new._flat_weights, new._flat_weights_names)] == \
           [True] * len(new._flat_weights_names)
    # bias=False: names exclude the biases
    r2, n2 = _pair(name, 3, 4, bias=False)
    assert n2._flat_weights_names == r2._flat_weights_names
    assert not any("bias" in n for n in n2._flat_weights_names)


@pytest.mark.parametrize("name", LAYERS)
def test_flatten_parameters_is_noop_returning_none(name):
    ref, new = _pair(name, 3, 4, 2)
    before = [p.data_ptr() for p in new.parameters()]
    assert new.flatten_parameters() is None
    assert [p.data_ptr() for p in new.parameters()] == before
    x = torch.randn(5, 2, 3)
    _assert_same_output(ref(x), new(x))


# ================================================================= forward-time errors vs nn
def _fwd_cases():
    r = torch.randn
    c = []
    for n in LAYERS:
        lstm = n == "LSTM"
        H = (lambda *s: _hx("LSTM", *s)) if lstm else (lambda *s: r(*s))
        c += [
            (n, "input-4d", {}, lambda m: m(r(2, 3, 4, 3))),
            (n, "input-1d", {}, lambda m: m(r(3))),
            (n, "input-0d", {}, lambda m: m(torch.tensor(1.0))),
            (n, "hx-2d-for-batched", {}, lambda m, H=H: m(r(5, 2, 3), H(2, 4))),
            (n, "hx-3d-for-unbatched", {}, lambda m, H=H: m(r(5, 3), H(2, 1, 4))),
            (n, "dtype-float64-input", {}, lambda m: m(r(5, 2, 3).double())),
            (n, "dtype-int-input", {}, lambda m: m(torch.ones(5, 2, 3, dtype=torch.long))),
            (n, "input-size", {}, lambda m: m(r(5, 2, 7))),
            (n, "input-size-unbatched", {}, lambda m: m(r(5, 7))),
            (n, "hidden-size", {}, lambda m, H=H: m(r(5, 2, 3), H(2, 2, 5))),
            (n, "hidden-batch", {}, lambda m, H=H: m(r(5, 2, 3), H(2, 3, 4))),
            (n, "hidden-layers", {}, lambda m, H=H: m(r(5, 2, 3), H(3, 2, 4))),
            (n, "hidden-layers-bidirectional", {"bidirectional": True}, lambda m, H=H: m(r(5, 2, 3), H(2, 2, 4))),
            (n, "hidden-unbatched-size", {}, lambda m, H=H: m(r(5, 3), H(2, 5))),
            (n, "seq-len-0", {}, lambda m: m(r(0, 2, 3))),
            (n, "seq-len-0-batch_first", {"batch_first": True}, lambda m: m(r(2, 0, 3))),
            (n, "seq-len-0-unbatched", {}, lambda m: m(r(0, 3))),
            (n, "hx-None-tuple", {}, lambda m: m(r(5, 2, 3), (None, None))),
            (n, "hx-single-3d-tensor", {}, lambda m: m(r(5, 2, 3), r(2, 2, 4))),
            (n, "input-kwarg-hx-kwarg", {}, lambda m, H=H: m(input=r(5, 2, 3), hx=H(2, 2, 5))),
        ]
        if lstm:
            c += [
                (n, "cell-size", {}, lambda m: m(r(5, 2, 3), (r(2, 2, 4), r(2, 2, 5)))),
                (n, "proj-hidden0-size", {"proj_size": 2}, lambda m: m(r(5, 2, 3), (r(2, 2, 4), r(2, 2, 4)))),
                (n, "proj-hidden1-size", {"proj_size": 2}, lambda m: m(r(5, 2, 3), (r(2, 2, 2), r(2, 2, 2)))),
                (n, "hx-mixed-rank", {}, lambda m: m(r(5, 2, 3), (r(2, 2, 4), r(2, 4)))),
                (n, "hx-one-state", {}, lambda m: m(r(5, 2, 3), (r(2, 2, 4),))),
                (n, "hx-three-states", {}, lambda m: m(r(5, 2, 3), (r(2, 2, 4), r(2, 2, 4), r(2, 2, 4)))),
            ]
        else:
            c += [
                (n, "packed-hidden-size", {}, lambda m: m(pack_sequence([r(4, 3), r(2, 3)]), r(2, 2, 5))),
                (n, "packed-hidden-2d", {}, lambda m: m(pack_sequence([r(4, 3), r(2, 3)]), r(2, 4))),
                (n, "packed-input-size", {}, lambda m: m(pack_sequence([r(4, 7), r(2, 7)]))),
                (n, "hx-tuple", {}, lambda m: m(r(5, 2, 3), (r(2, 2, 4),))),
                # LSTM's packed path differs on purpose (tested below); GRU/RNN check like nn
                (n, "dtype-packed-float64", {}, lambda m: m(pack_sequence([r(4, 3), r(2, 3)]).double())),
            ]
    for n in CELLS:
        lstm = n == "LSTMCell"
        H = (lambda *s: _hx("LSTM", *s)) if lstm else (lambda *s: r(*s))
        c += [
            (n, "input-3d", {}, lambda m: m(r(2, 2, 3))),
            (n, "input-0d", {}, lambda m: m(torch.tensor(1.0))),
            (n, "hx-3d", {}, lambda m, H=H: m(r(2, 3), H(1, 2, 4))),
            (n, "hx-0d", {}, lambda m, lstm=lstm: m(r(2, 3), (torch.tensor(1.0),) * 2 if lstm else torch.tensor(1.0))),
            (n, "input-size", {}, lambda m: m(r(2, 5))),
            (n, "input-size-unbatched", {}, lambda m: m(r(5))),
            (n, "hidden-size", {}, lambda m, H=H: m(r(2, 3), H(2, 5))),
            (n, "hidden-batch", {}, lambda m, H=H: m(r(2, 3), H(3, 4))),
            (n, "no-broadcast-batch-1-hx", {}, lambda m, H=H: m(r(2, 3), H(1, 4))),
            (n, "unbatched-input-batched-hx", {}, lambda m, H=H: m(r(3), H(2, 4))),
            (n, "batched-input-unbatched-hx", {}, lambda m, H=H: m(r(2, 3), H(4))),
            (n, "input-and-hidden-size", {}, lambda m, H=H: m(r(2, 5), H(2, 5))),
        ]
        if lstm:
            c += [
                (n, "hidden1-size", {}, lambda m: m(r(2, 3), (r(2, 4), r(2, 5)))),
                (n, "hidden1-batch", {}, lambda m: m(r(2, 3), (r(2, 4), r(3, 4)))),
                (n, "hx1-3d", {}, lambda m: m(r(2, 3), (r(2, 4), r(1, 2, 4)))),
                (n, "hx-single-tensor", {}, lambda m: m(r(3), r(2, 4))),
                (n, "hx-single-tensor-batched", {}, lambda m: m(r(2, 3), r(2, 4))),
                (n, "hx-one-state", {}, lambda m: m(r(2, 3), (r(2, 4),))),
            ]
        else:
            c += [(n, "hx-tuple", {}, lambda m: m(r(2, 3), (r(2, 4),)))]
    c.append(("RNNCell", "unknown-nonlinearity", {"nonlinearity": "x"}, lambda m: m(r(2, 3))))
    return c


FWD_CASES = _fwd_cases()


@pytest.mark.parametrize("idx", range(len(FWD_CASES)), ids=[f"{n}-{lab}" for n, lab, _, _ in FWD_CASES])
def test_forward_errors_match_nn(idx):
    name, label, cfg, fn = FWD_CASES[idx]
    ref, new = _pair(name, 3, 4, *(() if name in CELLS else (2,)), **cfg)
    torch.manual_seed(1)
    out_ref = _outcome(lambda: fn(ref))
    torch.manual_seed(1)
    out_new = _outcome(lambda: fn(new))
    if out_ref[0] == "ok":
        assert out_new[0] == "ok", f"torch.nn accepts this; rnn_ext raised {out_new[0].__name__}: {out_new[1]}"
        _assert_same_output(out_ref[1], out_new[1])
        return
    got = "no exception" if out_new[0] == "ok" else f"{out_new[0].__name__}({out_new[1]!r})"
    assert out_new[0] is out_ref[0], f"torch.nn raised {out_ref[0].__name__}({out_ref[1]!r}); rnn_ext: {got}"
    assert out_new[1] == out_ref[1]


def test_forward_error_messages_spot_check():
    """Messages from NN_API §3.5 checked literally (not only against torch.nn)."""
    with pytest.raises(ValueError, match=r"^RNN: Expected input to be 2D or 3D, got 4D tensor instead$"):
        rnn_ext.RNN(3, 4)(torch.randn(1, 2, 3, 3))
    with pytest.raises(ValueError, match=r"^LSTM: Expected input to be 2D or 3D, got 4D instead$"):
        rnn_ext.LSTM(3, 4)(torch.randn(1, 2, 3, 3))
    with pytest.raises(ValueError, match=r"^GRU: Expected input to be 2D or 3D, got 4D instead$"):
        rnn_ext.GRU(3, 4)(torch.randn(1, 2, 3, 3))
    with pytest.raises(RuntimeError, match=r"^Expected sequence length to be larger than 0 in RNN$"):
        rnn_ext.LSTM(3, 4)(torch.randn(0, 2, 3))
    with pytest.raises(RuntimeError, match=r"^Expected hidden\[0\] size \(1, 2, 2\), got \[1, 2, 4\]$"):
        rnn_ext.LSTM(3, 4, proj_size=2)(torch.randn(5, 2, 3), (torch.randn(1, 2, 4), torch.randn(1, 2, 4)))
    with pytest.raises(RuntimeError, match=r"^Expected hidden\[1\] size \(1, 2, 4\), got \[1, 2, 2\]$"):
        rnn_ext.LSTM(3, 4, proj_size=2)(torch.randn(5, 2, 3), (torch.randn(1, 2, 2), torch.randn(1, 2, 2)))
    with pytest.raises(ValueError, match=r"^LSTMCell: Expected hx\[1\] to be 1D or 2D, got 3D instead$"):
        rnn_ext.LSTMCell(3, 4)(torch.randn(2, 3), (torch.randn(2, 4), torch.randn(1, 2, 4)))
    with pytest.raises(RuntimeError, match=r"^Unknown nonlinearity: x$"):
        rnn_ext.RNNCell(3, 4, nonlinearity="x")(torch.randn(2, 3))


# ================================================================= the deliberate improvement: packed LSTM checks
def _packed(sorted_):
    seqs = [torch.randn(4, 3), torch.randn(2, 3), torch.randn(1, 3)]
    if not sorted_:
        seqs = [seqs[1], seqs[0], seqs[2]]
    return pack_sequence(seqs, enforce_sorted=sorted_)


@pytest.mark.parametrize("sorted_", [True, False], ids=["sorted", "unsorted"])
@pytest.mark.parametrize("batch", [2, 4], ids=["hx-batch-too-small", "hx-batch-too-large"])
def test_lstm_packed_wrong_hx_batch_raises_clear_error(sorted_, batch):
    """pytorch#195803: nn.LSTM skips argument checks for packed input (a too-large hx batch is
    silently truncated when unsorted); rnn_ext raises the dense-input message instead."""
    m = rnn_ext.LSTM(3, 4, 2)
    hx = (torch.randn(2, batch, 4), torch.randn(2, batch, 4))
    with pytest.raises(RuntimeError, match=rf"^Expected hidden\[0\] size \(2, 3, 4\), got \[2, {batch}, 4\]$"):
        m(_packed(sorted_), hx)
    hx = (torch.randn(2, 3, 4), torch.randn(2, batch, 4))
    with pytest.raises(RuntimeError, match=rf"^Expected hidden\[1\] size \(2, 3, 4\), got \[2, {batch}, 4\]$"):
        m(_packed(sorted_), hx)


def test_nn_lstm_packed_truncates_silently_documented_difference():
    """The nn behaviour rnn_ext deliberately does not copy (kept as a guard that the
    difference is real on this torch version)."""
    torch.manual_seed(0)
    ref = nn.LSTM(3, 4)
    out = ref(_packed(False), (torch.randn(1, 4, 4), torch.randn(1, 4, 4)))  # 4 hx rows for 3 sequences
    assert out[1][0].shape == (1, 3, 4)
    with pytest.raises(RuntimeError, match="Expected hidden"):
        rnn_ext.LSTM(3, 4)(_packed(False), (torch.randn(1, 4, 4), torch.randn(1, 4, 4)))


@pytest.mark.parametrize("sorted_", [True, False], ids=["sorted", "unsorted"])
def test_lstm_packed_wrong_feature_size_or_dtype(sorted_):
    m = rnn_ext.LSTM(5, 4)
    with pytest.raises(RuntimeError, match=r"^input.size\(-1\) must be equal to input_size. Expected 5, got 3$"):
        m(_packed(sorted_))
    with pytest.raises(ValueError, match=r"RNN input dtype \(torch.float64\) does not match weight dtype"):
        rnn_ext.LSTM(3, 4)(_packed(sorted_).double())
    with pytest.raises(RuntimeError, match=r"^Expected hidden\[0\] size \(1, 3, 4\), got \[3, 4\]$"):
        rnn_ext.LSTM(3, 4)(_packed(sorted_), (torch.randn(3, 4), torch.randn(3, 4)))


@pytest.mark.parametrize("name", ["GRU", "RNN"])
def test_gru_rnn_packed_small_hx_batch_clear_error(name):
    """nn fails here with an index_select error; rnn_ext checks before permuting."""
    m = getattr(rnn_ext, name)(3, 4)
    with pytest.raises(RuntimeError, match=r"^Expected hidden size \(1, 3, 4\), got \[1, 2, 4\]$"):
        m(_packed(False), torch.randn(1, 2, 4))


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("sorted_", [True, False], ids=["sorted", "unsorted"])
def test_packed_forward_and_grads_match_nn(device, name, sorted_):
    ref, new = _pair(name, 3, 4, 2, bidirectional=True)
    ref, new = ref.to(device), new.to(device)
    p = _packed(sorted_).to(device)
    hx = _hx(name, 4, 3, 4, device=device)
    data_r = p.data.clone().requires_grad_()
    data_n = p.data.clone().requires_grad_()
    out_r = ref(PackedSequence(data_r, p.batch_sizes, p.sorted_indices, p.unsorted_indices), hx)
    out_n = new(PackedSequence(data_n, p.batch_sizes, p.sorted_indices, p.unsorted_indices), hx)
    _assert_same_output(out_r, out_n)
    assert out_n[0].batch_sizes is p.batch_sizes
    w = [torch.randn(t.shape, device=device) for t in _flat(out_r) if t.is_floating_point()]
    lr = sum((a * b).sum() for a, b in zip(w, [t for t in _flat(out_r) if t.is_floating_point()]))
    ln = sum((a * b).sum() for a, b in zip(w, [t for t in _flat(out_n) if t.is_floating_point()]))
    for a, b in zip(torch.autograd.grad(lr, [data_r] + list(ref.parameters())),
                    torch.autograd.grad(ln, [data_n] + list(new.parameters()))):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


# ================================================================= module machinery
def _x(name):
    return torch.randn(5, 2, 3) if name in LAYERS else torch.randn(2, 3)


@pytest.mark.parametrize("name", ALL)
def test_pickle_whole_module(name, tmp_path):
    ref, new = _pair(name, 3, 4)
    path = tmp_path / "m.pt"
    torch.save(new, path)
    loaded = torch.load(path, weights_only=False)
    assert type(loaded) is type(new) and repr(loaded) == repr(new)
    x = _x(name)
    _assert_same_output(new(x), loaded(x))
    _assert_same_output(ref(x), loaded(x))
    if name in LAYERS:
        assert loaded._flat_weights[0] is loaded.weight_ih_l0
    again = pickle.loads(pickle.dumps(new))
    _assert_same_output(new(x), again(x))
    buf = io.BytesIO()
    torch.save(new.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    ref.load_state_dict(sd)
    _assert_same_output(new(x), ref(x))


@pytest.mark.parametrize("name", ALL)
def test_deepcopy_independent(name):
    _, new = _pair(name, 3, 4)
    dup = copy.deepcopy(new)
    x = _x(name)
    _assert_same_output(new(x), dup(x))
    with torch.no_grad():
        for p in dup.parameters():
            p.add_(1.0)
    assert not torch.equal(_flat(new(x))[0], _flat(dup(x))[0])
    if name in LAYERS:
        assert dup._flat_weights[0] is dup.weight_ih_l0 and dup._flat_weights[0] is not new.weight_ih_l0


@pytest.mark.parametrize("name", ALL)
def test_dtype_conversions(name):
    ref, new = _pair(name, 3, 4)
    x = _x(name)
    for conv, dt in ((lambda m: m.to(torch.float64), torch.float64), (lambda m: m.double(), torch.float64),
                     (lambda m: m.half(), torch.float16), (lambda m: m.bfloat16(), torch.bfloat16),
                     (lambda m: m.float(), torch.float32)):
        r2, n2 = conv(copy.deepcopy(ref)), conv(copy.deepcopy(new))
        assert [p.dtype for p in n2.parameters()] == [dt] * len(list(n2.parameters()))
        if name in LAYERS:
            assert all(w.dtype == dt for w in n2._flat_weights)
        if dt == torch.float64:
            _assert_same_output(r2(x.to(dt)), n2(x.to(dt)), rtol=1e-10, atol=1e-12)
        else:
            out = _flat(n2(x.to(dt)))
            assert all(t.dtype == dt for t in out)
            torch.testing.assert_close(out[0].float(), _flat(ref(x))[0], rtol=0.05, atol=0.05)


@pytest.mark.parametrize("name", LAYERS)
def test_swap_module_params_on_conversion(name):
    ref, new = _pair(name, 3, 4)
    prev = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        ref.double()
        new.double()
    finally:
        torch.__future__.set_swap_module_params_on_conversion(prev)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    _assert_same_output(ref(x), new(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_meta_construction_to_empty_and_reset(name):
    m = getattr(rnn_ext, name)(3, 4, device="meta")
    assert all(p.device.type == "meta" for p in m.parameters())
    with torch.device("meta"):
        m2 = getattr(rnn_ext, name)(3, 4)
    assert all(p.device.type == "meta" for p in m2.parameters())
    # a meta forward gives meta outputs of the right shape, like nn
    with torch.device("meta"):
        ref_meta = getattr(nn, name)(3, 4)
    xm = _x(name).to("meta")
    assert [t.shape for t in _flat(m(xm))] == [t.shape for t in _flat(ref_meta(xm))]
    assert all(t.device.type == "meta" for t in _flat(m(xm)))
    m.to_empty(device="cpu")
    torch.manual_seed(5)
    m.reset_parameters()
    torch.manual_seed(5)
    ref = getattr(nn, name)(3, 4)
    for (n, a), (_, b) in zip(ref.named_parameters(), m.named_parameters()):
        assert b.device.type == "cpu" and torch.equal(a, b), n
    x = _x(name)
    _assert_same_output(ref(x), m(x))


@pytest.mark.parametrize("name", LAYERS)
def test_data_parallel_replica(name):
    """What torch.nn.parallel.replicate does: _replicate_for_data_parallel, then setattr of
    non-leaf parameter copies. The replica must use the copies, and gradients must flow back."""
    ref, new = _pair(name, 3, 4, 2)
    x = torch.randn(5, 2, 3)
    for m in (ref, new):
        replica = m._replicate_for_data_parallel()
        assert replica._flat_weights is not m._flat_weights
        assert replica._flat_weights_names is not m._flat_weights_names
        for key, p in m._parameters.items():
            setattr(replica, key, p * 2.0)   # a differentiable copy, like Broadcast
        m._replica = replica
    out_r, out_n = ref._replica(x), new._replica(x)
    _assert_same_output(out_r, out_n)
    assert not torch.allclose(_flat(new(x))[0], _flat(out_n)[0])  # the copies were used
    _flat(out_n)[0].sum().backward()
    _flat(out_r)[0].sum().backward()
    for (n, a), (_, b) in zip(ref.named_parameters(), new.named_parameters()):
        assert b.grad is not None
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5)
    # DataParallel with no devices just calls the module
    dp = nn.DataParallel(new, device_ids=[])
    _assert_same_output(dp(x), new(x))


@pytest.mark.parametrize("name", ALL)
def test_functional_call(name):
    ref, new = _pair(name, 3, 4)
    x = _x(name)
    params = {k: torch.randn_like(v) for k, v in ref.named_parameters()}
    out_r = torch.func.functional_call(ref, params, (x,))
    out_n = torch.func.functional_call(new, params, (x,))
    _assert_same_output(out_r, out_n)
    assert not torch.allclose(_flat(out_n)[0], _flat(new(x))[0])
    # module restored afterwards
    _assert_same_output(ref(x), new(x))
    zeros = {k: torch.zeros_like(v) for k, v in ref.named_parameters()}
    out_z = torch.func.functional_call(new, zeros, (x,))
    assert torch.equal(_flat(out_z)[0], torch.zeros_like(_flat(out_z)[0]))
    # ordinary autograd through functional_call
    p_r = {k: v.clone().requires_grad_() for k, v in params.items()}
    p_n = {k: v.clone().requires_grad_() for k, v in params.items()}
    _flat(torch.func.functional_call(ref, p_r, (x,)))[0].sum().backward()
    _flat(torch.func.functional_call(new, p_n, (x,)))[0].sum().backward()
    for k in params:
        torch.testing.assert_close(p_n[k].grad, p_r[k].grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_torch_func_grad_through_functional_call(name):
    """NN_API §6: functional_call and torch.func.grad through nn's RNNs work."""
    ref, new = _pair(name, 3, 4)
    x = _x(name)
    params = {k: torch.randn_like(v) for k, v in ref.named_parameters()}

    def loss(p, mod):
        return _flat(torch.func.functional_call(mod, p, (x,)))[0].sum()
    g_r = torch.func.grad(loss)(params, ref)
    g_n = torch.func.grad(loss)(params, new)
    for k in params:
        torch.testing.assert_close(g_n[k], g_r[k], rtol=1e-4, atol=1e-5)


PARAMETRIZATIONS = {
    "weight_norm": lambda m, n: nn.utils.parametrizations.weight_norm(m, n),
    "orthogonal": lambda m, n: nn.utils.parametrizations.orthogonal(m, n),
    "spectral_norm": lambda m, n: nn.utils.parametrizations.spectral_norm(m, n),
}


@pytest.mark.parametrize("kind", list(PARAMETRIZATIONS))
@pytest.mark.parametrize("name", ALL)
def test_parametrizations(name, kind):
    pname = "weight_hh_l0" if name in LAYERS else "weight_hh"
    ref, new = _pair(name, 3, 4)
    for m in (ref, new):
        torch.manual_seed(3)
        PARAMETRIZATIONS[kind](m, pname)
    assert list(ref.state_dict()) == list(new.state_dict())
    new.load_state_dict(ref.state_dict())
    with torch.no_grad():  # change the underlying parameters: the forward must follow
        for m in (ref, new):
            for n, p in m.named_parameters():
                if "original" in n:
                    p.mul_(1.7).add_(0.1)
    ref.eval()
    new.eval()
    x = _x(name)
    _assert_same_output(ref(x), new(x), rtol=1e-4, atol=1e-5)
    # a parametrization that zeroes the weight is honoured
    r2, n2 = _pair(name, 3, 4)

    class Zero(nn.Module):
        def forward(self, w):
            return torch.zeros_like(w)
    for m in (r2, n2):
        nn.utils.parametrize.register_parametrization(m, pname, Zero())
    _assert_same_output(r2(x), n2(x))
    # grads reach the original parameter (cells need a non-zero hx for weight_hh to matter)
    out = _flat(new(x) if name in LAYERS else new(x, _hx(name, 2, 4)))[0]
    out.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in new.named_parameters() if "original" in n)


@pytest.mark.parametrize("name", LAYERS)
def test_old_weight_norm_and_remove(name):
    ref, new = _pair(name, 3, 4, 2)
    for m in (ref, new):
        nn.utils.weight_norm(m, "weight_hh_l0")
    assert list(ref.state_dict()) == list(new.state_dict())
    assert "weight_hh_l0_g" in new.state_dict() and "weight_hh_l0_v" in new.state_dict()
    with torch.no_grad():
        for m in (ref, new):
            m.weight_hh_l0_g.mul_(2.0)
    x = torch.randn(5, 2, 3)
    _assert_same_output(ref(x), new(x))
    # test_nn test_rnn_weight_norm: one plain tensor, the rest Parameters
    assert sum(isinstance(w, nn.Parameter) for w in new._flat_weights) == len(new._flat_weights) - 1
    for m in (ref, new):
        nn.utils.remove_weight_norm(m, "weight_hh_l0")
    assert isinstance(new.weight_hh_l0, nn.Parameter)
    assert sum(isinstance(w, nn.Parameter) for w in new._flat_weights) == len(new._flat_weights)
    _assert_same_output(ref(x), new(x))


@pytest.mark.parametrize("name", LAYERS)
def test_weight_drop_style_plain_tensor_and_tied_weights(name):
    ref, new = _pair(name, 3, 4, 1, bidirectional=True)
    x = torch.randn(5, 2, 3)
    for m in (ref, new):  # AWD-LSTM WeightDrop: delete the Parameter, assign a plain tensor
        w = m.weight_hh_l0
        del m._parameters["weight_hh_l0"]
        m.weight_hh_l0 = w.detach() * 0.5
    _assert_same_output(ref(x), new(x))
    ref, new = _pair(name, 3, 4, 1, bidirectional=True)
    for m in (ref, new):
        m.bias_ih_l0_reverse = m.bias_ih_l0
    assert len(list(new.parameters())) == len(list(ref.parameters()))
    assert list(new.state_dict()) == list(ref.state_dict())
    _assert_same_output(ref(x), new(x))


@pytest.mark.parametrize("attr", ["bias_hh_l0", "bias_ih_l1_reverse", "weight_hh_l1"])
@pytest.mark.parametrize("name", LAYERS)
def test_parameter_set_to_none_raises_as_nn(name, attr):
    """A weight or bias replaced by None: torch.nn's TypeError (naming its place in the flat
    weight list), not a run without it."""
    ref, new = _pair(name, 3, 4, 2, bidirectional=True)
    errors = []
    for m in (ref, new):
        delattr(m, attr)
        setattr(m, attr, None)
        with pytest.raises(TypeError) as info:
            m(torch.randn(5, 2, 3))
        errors.append(str(info.value))
    assert errors[1] == errors[0]


@pytest.mark.parametrize("attr", ["weight_ih", "weight_hh", "bias_ih"])
@pytest.mark.parametrize("name,kw", [("LSTMCell", {}), ("GRUCell", {}), ("RNNCell", {}),
                                     ("RNNCell", {"nonlinearity": "relu"})])
def test_cell_parameter_set_to_none_as_nn(name, kw, attr):
    """A cell weight set to None: torch.nn's TypeError from its cell function; a bias set to None:
    torch.nn runs without it, and so does rnn_ext, with the same result."""
    torch.manual_seed(0)
    ref = getattr(nn, name)(3, 4, **kw)
    new = getattr(rnn_ext, name)(3, 4, **kw)
    new.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3)
    outcomes = []
    for m in (ref, new):
        delattr(m, attr)
        setattr(m, attr, None)
        try:
            outcomes.append(m(x))
        except TypeError as e:
            outcomes.append(str(e))
    if attr == "bias_ih":
        _assert_same_output(outcomes[0], outcomes[1])
    else:
        assert isinstance(outcomes[0], str) and outcomes[1] == outcomes[0]


@pytest.mark.parametrize("name", LAYERS)
def test_load_state_dict_assign(name):
    ref, new = _pair(name, 3, 4)
    sd = {k: torch.randn_like(v) for k, v in ref.state_dict().items()}
    ref.load_state_dict(sd, assign=True)
    new.load_state_dict(sd, assign=True)
    x = torch.randn(5, 2, 3)
    _assert_same_output(ref(x), new(x))
    assert new._flat_weights[0] is new.weight_ih_l0


@pytest.mark.parametrize("name", ALL)
def test_forward_hooks_see_same_args(name):
    ref, new = _pair(name, 3, 4)
    seen = {"ref": [], "new": []}
    for key, m in (("ref", ref), ("new", new)):
        m.register_forward_pre_hook(lambda mod, args, key=key: seen[key].append(("pre", len(args))))
        m.register_forward_hook(
            lambda mod, args, out, key=key: seen[key].append(
                ("post", len(args), [tuple(a.shape) for a in _flat(args)], type(out).__name__,
                 [tuple(t.shape) for t in _flat(out)])))
    x = _x(name)
    hx = _hx(name, *((1, 2, 4) if name in LAYERS else (2, 4)))
    ref(x)
    new(x)
    ref(x, hx)
    new(x, hx)
    assert seen["new"] == seen["ref"] and len(seen["new"]) == 4
    # a forward hook may replace the output, as with nn
    h = new.register_forward_hook(lambda mod, args, out: "replaced")
    assert new(x) == "replaced"
    h.remove()


@pytest.mark.parametrize("name", ALL)
def test_keyword_arguments_and_no_grad(name):
    ref, new = _pair(name, 3, 4)
    x = _x(name)
    hx = _hx(name, *((1, 2, 4) if name in LAYERS else (2, 4)))
    _assert_same_output(ref(input=x, hx=hx), new(input=x, hx=hx))
    with torch.no_grad():
        out = new(x)
    assert all(not t.requires_grad for t in _flat(out))
    with torch.inference_mode():
        out = new(x)
    _assert_same_output(ref(x), out)


def test_lstmcell_default_h_and_c():
    ref, new = _pair("LSTMCell", 3, 4)
    x = torch.randn(2, 3)
    h, c = new(x)
    zeros = torch.zeros(2, 4)
    h2, c2 = new(x, (zeros, zeros))
    assert torch.equal(h, h2) and torch.equal(c, c2)
    _assert_same_output(ref(x), (h, c))
    hu, cu = new(torch.randn(3))
    assert hu.shape == (4,) and cu.shape == (4,)
    assert isinstance(new(x), tuple)
    # the other cells and layers: default hx is zeros of the input dtype
    for name in ("GRUCell", "RNNCell"):
        r2, n2 = _pair(name, 3, 4)
        _assert_same_output(n2(x), n2(x, torch.zeros(2, 4)))
        _assert_same_output(r2(x), n2(x))
    for name in LAYERS:
        r2, n2 = _pair(name, 3, 4, 2, dtype=torch.float64)
        x64 = torch.randn(5, 2, 3, dtype=torch.float64)
        out = n2(x64)
        assert all(t.dtype == torch.float64 for t in _flat(out))
        _assert_same_output(n2(x64, None), out)
        z = torch.zeros(2, 2, 4, dtype=torch.float64)
        _assert_same_output(n2(x64, (z, z) if name == "LSTM" else z), out)


@pytest.mark.parametrize("name", LAYERS)
def test_dropout_train_and_eval_match_nn(name):
    """With the same seed, train-mode dropout draws the same masks as nn on CPU; eval is deterministic."""
    ref, new = _pair(name, 3, 4, 3, dropout=0.5)
    x = torch.randn(5, 2, 3)
    torch.manual_seed(11)
    out_r = ref(x)
    torch.manual_seed(11)
    out_n = new(x)
    _assert_same_output(out_r, out_n)
    torch.manual_seed(12)
    assert not torch.allclose(_flat(new(x))[0], _flat(out_n)[0])
    new.eval()
    ref.eval()
    _assert_same_output(ref(x), new(x))
    assert torch.equal(_flat(new(x))[0], _flat(new(x))[0])
    new.train()
    new.dropout = 0.0  # mutating dropout takes effect, as in nn (test_RNN_change_dropout)
    assert torch.equal(_flat(new(x))[0], _flat(new(x))[0])


@pytest.mark.parametrize("name", LAYERS)
def test_batch_first_and_unbatched_match_nn(device, name):
    ref, new = _pair(name, 3, 4, 2, batch_first=True, bidirectional=True)
    ref, new = ref.to(device), new.to(device)
    xb = torch.randn(2, 5, 3, device=device)
    _assert_same_output(ref(xb), new(xb), rtol=1e-4, atol=1e-5)
    assert new(xb)[0].shape == (2, 5, 8)
    hx = _hx(name, 4, 2, 4, device=device)  # hidden states never batch-first
    _assert_same_output(ref(xb, hx), new(xb, hx), rtol=1e-4, atol=1e-5)
    xu = torch.randn(5, 3, device=device)  # unbatched ignores batch_first
    _assert_same_output(ref(xu), new(xu), rtol=1e-4, atol=1e-5)
    assert new(xu)[0].shape == (5, 8)


@pytest.mark.parametrize("name", ALL)
def test_public_classes_have_docs(name):
    cls = getattr(rnn_ext, name)
    assert cls.__doc__ and name.replace("Cell", "") in cls.__doc__ and len(cls.__doc__) > 100
    text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    assert "forward" in text and "reset_parameters" in text
    assert isinstance(cls(3, 4), nn.Module)


def test_module_exports():
    assert set(rnn_ext.__all__) >= set(ALL)
    for name in ALL:
        assert getattr(rnn_ext, name).__name__ == name
        assert getattr(rnn_ext, name).forward.__code__.co_varnames[:3] == ("self", "input", "hx")
