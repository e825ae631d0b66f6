"""rnn_ext.convert: swapping torch.nn recurrent modules for rnn_ext's and back.

Checked on a model that nests the recurrent modules in plain submodules,
nn.Sequential, nn.ModuleList and nn.ModuleDict: class of every replacement,
parameter identity (an optimizer built before conversion keeps working),
numerics (float64), device/dtype, training mode, hooks, the way back to
torch.nn, and the documented edge cases (subclasses, bare modules, bad `to=`).
"""
import copy

import pytest
import torch
from torch import nn

import rnn_ext

DT = torch.float64
T, B, I, H = 5, 3, 4, 6

# (path in the model, torch.nn class, rnn_ext class)
EXPECTED = [
    ("enc.lstm", nn.LSTM, rnn_ext.LSTM),
    ("seq.0", nn.GRU, rnn_ext.GRU),
    ("mlist.0", nn.RNN, rnn_ext.RNN),
    ("mlist.1.cell", nn.LSTMCell, rnn_ext.LSTMCell),
    ("mdict.gru_cell", nn.GRUCell, rnn_ext.GRUCell),
    ("mdict.rnn_cell", nn.RNNCell, rnn_ext.RNNCell),
]


class _Holder(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.cell = cell


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=3)
        self.lin = nn.Linear(6, I)  # 2 directions * proj_size 3


class Net(nn.Module):
    """Every kind of recurrent module, in every kind of container."""

    def __init__(self):
        super().__init__()
        self.enc = _Encoder()
        self.seq = nn.Sequential(nn.GRU(I, H, batch_first=True))
        self.mlist = nn.ModuleList([nn.RNN(H, H, nonlinearity="relu"), _Holder(nn.LSTMCell(H, H))])
        self.mdict = nn.ModuleDict({"gru_cell": nn.GRUCell(H, H), "rnn_cell": nn.RNNCell(H, H, bias=False)})

    def forward(self, x):  # x: (T, B, I)
        y, (h, c) = self.enc.lstm(x)
        y = self.enc.lin(y)
        y, hg = self.seq[0](y.transpose(0, 1))  # batch_first GRU
        y, hr = self.mlist[0](y.transpose(0, 1))
        hc = None
        hgc = None
        hrc = None
        outs = []
        for t in range(y.shape[0]):
            hc = self.mlist[1].cell(y[t], hc)
            hgc = self.mdict["gru_cell"](hc[0], hgc)
            hrc = self.mdict["rnn_cell"](hgc, hrc)
            outs.append(hrc)
        return torch.stack(outs), h, c, hg, hr, hc[1]


def _make(device="cpu"):
    torch.manual_seed(0)
    return Net().to(device=device, dtype=DT)


def _input(device="cpu"):
    g = torch.Generator().manual_seed(1)
    return torch.randn(T, B, I, generator=g, dtype=DT).to(device)


def _module(model, path):
    return model.get_submodule(path)


def _assert_outputs_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------- types, identity, numerics
def test_every_recurrent_module_is_replaced(device):
    model = _make(device)
    assert rnn_ext.convert(model) is model  # converted in place, same container
    for path, torch_cls, ext_cls in EXPECTED:
        assert type(_module(model, path)) is ext_cls, path
    # non-recurrent modules untouched
    assert type(model.enc.lin) is nn.Linear
    assert not any(type(m) in {c for _, c, _ in EXPECTED} for m in model.modules())


def test_config_is_kept():
    model = rnn_ext.convert(_make())
    lstm = model.enc.lstm
    assert (lstm.num_layers, lstm.bidirectional, lstm.proj_size, lstm.hidden_size) == (2, True, 3, H)
    assert model.seq[0].batch_first is True
    assert model.mlist[0].nonlinearity == "relu" and model.mlist[0].mode == "RNN_RELU"
    assert model.mdict["rnn_cell"].bias is False and model.mdict["rnn_cell"].bias_ih is None


def test_parameters_are_the_same_objects(device):
    model = _make(device)
    before = dict(model.named_parameters())
    sd_keys = list(model.state_dict().keys())
    rnn_ext.convert(model)
    after = dict(model.named_parameters())
    assert list(before) == list(after)
    for name in before:
        assert after[name] is before[name], name
    assert list(model.state_dict().keys()) == sd_keys
    # the layer modules read those same objects through their flat weight lists
    lstm = model.enc.lstm
    assert all(w is getattr(lstm, n) for w, n in zip(lstm._flat_weights, lstm._flat_weights_names))


def test_outputs_equal_after_conversion(device):
    model = _make(device)
    x = _input(device)
    with torch.no_grad():
        ref = model(x)
        rnn_ext.convert(model)
        out = model(x)
    _assert_outputs_equal(ref, out)


def test_optimizer_built_before_conversion_still_updates():
    model = _make()
    twin = copy.deepcopy(model)  # stays torch.nn, trained in lockstep
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt_twin = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    rnn_ext.convert(model)
    x = _input()
    start = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):
        for m, o in ((model, opt), (twin, opt_twin)):
            o.zero_grad()
            loss = sum((t * t).mean() for t in m(x))
            loss.backward()
            o.step()
    for (name, p), p0, q in zip(model.named_parameters(), start, twin.parameters()):
        assert not torch.equal(p, p0), f"{name} not updated by the optimizer"
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-11, msg=name)


def test_device_and_dtype_kept(device):
    model = _make(device)
    rnn_ext.convert(model)
    for path, _, _ in EXPECTED:
        for p in _module(model, path).parameters():
            assert p.device.type == device and p.dtype == DT
    # float32 too
    m32 = rnn_ext.convert(nn.Sequential(nn.GRU(3, 4)).to(device))
    assert all(p.dtype == torch.float32 and p.device.type == device for p in m32.parameters())


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_training_mode_kept(mode):
    model = _make()
    getattr(model, mode)()
    rnn_ext.convert(model)
    for path, _, _ in EXPECTED:
        assert _module(model, path).training is (mode == "train"), path
    assert model.training is (mode == "train")


def test_mixed_training_modes_kept():
    model = _make()
    model.train()
    model.enc.lstm.eval()
    model.mdict["gru_cell"].eval()
    rnn_ext.convert(model)
    assert model.enc.lstm.training is False
    assert model.mdict["gru_cell"].training is False
    assert model.seq[0].training is True


def test_dropout_behaviour_follows_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LSTM(I, H, num_layers=2, dropout=0.5)).to(DT).eval()
    rnn_ext.convert(model)
    x = _input()
    a, _ = model(x)
    b, _ = model(x)
    assert torch.equal(a, b)  # eval: no dropout
    model.train()
    c, _ = model(x)
    assert not torch.allclose(a, c)  # train: dropout active


# ----------------------------------------------------------------- hooks
def test_forward_hooks_and_pre_hooks_kept_and_called():
    model = _make()
    calls = []
    for path, _, _ in EXPECTED:
        m = _module(model, path)
        m.register_forward_pre_hook(lambda mod, args, p=path: calls.append(("pre", p, type(mod))))
        m.register_forward_hook(lambda mod, args, out, p=path: calls.append(("post", p, type(mod))))
    rnn_ext.convert(model)
    model(_input())
    for path, _, ext_cls in EXPECTED:
        assert ("pre", path, ext_cls) in calls, path
        assert ("post", path, ext_cls) in calls, path
    # the cells run once per step: T pre and T post calls each
    assert calls.count(("pre", "mdict.gru_cell", rnn_ext.GRUCell)) == T
    assert calls.count(("post", "mdict.rnn_cell", rnn_ext.RNNCell)) == T


def test_hook_can_modify_output_after_conversion():
    model = nn.Sequential(nn.GRU(I, H)).to(DT)
    model[0].register_forward_hook(lambda mod, args, out: (out[0] * 0 + 7.0, out[1]))
    model[0].register_forward_pre_hook(lambda mod, args: (args[0] * 2,))
    x = _input()
    ref_y, ref_h = model(x)
    rnn_ext.convert(model)
    y, h = model(x)
    assert torch.all(y == 7.0)
    torch.testing.assert_close(h, ref_h)  # the pre-hook's doubling applied in both


def test_kwargs_and_always_call_hooks_kept():
    model = nn.Sequential(nn.LSTM(I, H)).to(DT)
    seen = []
    model[0].register_forward_pre_hook(lambda mod, args, kwargs: seen.append("pre_kw"), with_kwargs=True)
    model[0].register_forward_hook(lambda mod, args, kwargs, out: seen.append("post_kw"), with_kwargs=True)
    model[0].register_forward_hook(lambda mod, args, out: seen.append("always"), always_call=True)
    rnn_ext.convert(model)
    model(_input())
    assert seen == ["pre_kw", "post_kw", "always"]
    seen.clear()
    with pytest.raises(RuntimeError):
        model(torch.randn(T, B, I + 1, dtype=DT))  # wrong input size: forward raises
    assert seen == ["pre_kw", "always"]


def test_full_backward_hook_kept_and_called():
    """register_full_backward_hook sets module._is_full_backward_hook = True;
    without it Module._call_impl never runs the hooks in _backward_hooks."""
    model = nn.Sequential(nn.GRU(I, H)).to(DT)
    calls = []
    model[0].register_full_backward_hook(lambda mod, gin, gout: calls.append(type(mod)))
    x = _input().requires_grad_()
    model(x)[0].sum().backward()
    assert calls == [nn.GRU]
    rnn_ext.convert(model)
    model(x)[0].sum().backward()
    assert calls == [nn.GRU, rnn_ext.GRU]


def test_hook_handle_still_removes_hook_after_conversion():
    model = nn.Sequential(nn.LSTM(I, H)).to(DT)
    calls = []
    handle = model[0].register_forward_hook(lambda *a: calls.append(1))
    rnn_ext.convert(model)
    model(_input())
    assert calls == [1]
    handle.remove()
    model(_input())
    assert calls == [1], "RemovableHandle.remove() no longer detaches the hook from the converted module"


# ----------------------------------------------------------------- back to torch
def test_convert_back_to_torch(device):
    model = _make(device)
    x = _input(device)
    with torch.no_grad():
        ref = model(x)
    params = dict(model.named_parameters())
    rnn_ext.convert(model)
    assert rnn_ext.convert(model, to="torch") is model
    for path, torch_cls, _ in EXPECTED:
        assert type(_module(model, path)) is torch_cls, path
    for name, p in model.named_parameters():
        assert p is params[name]
    with torch.no_grad():
        out = model(x)
    _assert_outputs_equal(ref, out)


def test_round_trip_keeps_hooks_and_mode():
    model = _make().eval()
    calls = []
    model.mlist[0].register_forward_hook(lambda *a: calls.append(1))
    rnn_ext.convert(rnn_ext.convert(model), to="torch")
    assert type(model.mlist[0]) is nn.RNN and model.mlist[0].training is False
    model(_input())
    assert calls == [1]


def test_rnn_ext_model_converts_to_torch():
    torch.manual_seed(0)
    model = nn.Sequential(rnn_ext.LSTM(I, H, proj_size=2), rnn_ext.RNNCell(I, H, nonlinearity="relu")).to(DT)
    x = _input()
    ref = model[0](x)[0], model[1](x[0])
    rnn_ext.convert(model, to="torch")
    assert type(model[0]) is nn.LSTM and model[0].proj_size == 2
    assert type(model[1]) is nn.RNNCell and model[1].nonlinearity == "relu"
    torch.testing.assert_close(model[0](x)[0], ref[0])
    torch.testing.assert_close(model[1](x[0]), ref[1])


# ----------------------------------------------------------------- edge cases
def test_subclass_of_nn_lstm_left_alone():
    class MyLSTM(nn.LSTM):
        def forward(self, input, hx=None):
            y, s = super().forward(input, hx)
            return y + 1, s

    model = nn.Sequential(MyLSTM(I, H), nn.GRU(H, H))
    sub = model[0]
    rnn_ext.convert(model)
    assert model[0] is sub and type(model[0]) is MyLSTM
    assert type(model[1]) is rnn_ext.GRU
    bare = MyLSTM(I, H)
    assert rnn_ext.convert(bare) is bare


def test_bare_module_returns_new_module():
    torch.manual_seed(0)
    lstm = nn.LSTM(I, H, batch_first=True, bidirectional=True).to(DT)
    new = rnn_ext.convert(lstm)
    assert type(new) is rnn_ext.LSTM and new is not lstm
    assert type(lstm) is nn.LSTM  # the original object is not mutated into something else
    assert new.batch_first and new.bidirectional
    x = torch.randn(B, T, I, dtype=DT)
    torch.testing.assert_close(new(x)[0], lstm(x)[0])
    for a, b in zip(new.parameters(), lstm.parameters()):
        assert a is b
    back = rnn_ext.convert(new, to="torch")
    assert type(back) is nn.LSTM and back is not new


def test_bare_cell_returns_new_cell():
    cell = nn.RNNCell(I, H, bias=False, nonlinearity="relu").to(DT)
    new = rnn_ext.convert(cell)
    assert type(new) is rnn_ext.RNNCell and new.nonlinearity == "relu" and new.bias is False
    x = torch.randn(B, I, dtype=DT)
    torch.testing.assert_close(new(x), cell(x))


def test_convert_is_idempotent():
    model = _make()
    rnn_ext.convert(model)
    mods = {path: _module(model, path) for path, _, _ in EXPECTED}
    rnn_ext.convert(model)
    for path, m in mods.items():
        assert _module(model, path) is m
    rnn_ext.convert(model, to="torch")
    mods = {path: _module(model, path) for path, _, _ in EXPECTED}
    rnn_ext.convert(model, to="torch")
    for path, m in mods.items():
        assert _module(model, path) is m


@pytest.mark.parametrize("to", ["nn", "Torch", "", None, "rnn-ext"])
def test_bad_target_raises(to):
    with pytest.raises(ValueError, match="rnn_ext"):
        rnn_ext.convert(nn.Sequential(nn.LSTM(2, 3)), to=to)
    with pytest.raises(ValueError):
        rnn_ext.convert(nn.LSTM(2, 3), to=to)
