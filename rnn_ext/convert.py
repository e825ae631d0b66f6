"""Swap torch.nn recurrent modules in a model for rnn_ext ones, and back.

    model = rnn_ext.convert(model)          # nn.LSTM -> rnn_ext.LSTM, ... in place
    model = rnn_ext.convert(model, to="torch")   # and back

Parameters are moved, not copied: the new module holds the very same
nn.Parameter objects, so optimizers built before the conversion keep working.
Device, dtype, training mode and registered hooks are kept.
"""
from __future__ import annotations

import weakref

import torch
from torch import nn

from . import modules

_TO_EXT = {
    nn.LSTM: modules.LSTM,
    nn.GRU: modules.GRU,
    nn.RNN: modules.RNN,
    nn.LSTMCell: modules.LSTMCell,
    nn.GRUCell: modules.GRUCell,
    nn.RNNCell: modules.RNNCell,
}
_TO_TORCH = {v: k for k, v in _TO_EXT.items()}

# Module state that must survive the swap besides parameters.
_HOOK_DICTS = (
    "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks",
    "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
)


def _constructor_args(m: nn.Module) -> tuple[tuple, dict]:
    if isinstance(m, nn.RNNCellBase):
        kw = {"bias": m.bias}
        if hasattr(m, "nonlinearity"):
            kw["nonlinearity"] = m.nonlinearity
        return (m.input_size, m.hidden_size), kw
    kw = {"num_layers": m.num_layers, "bias": m.bias, "batch_first": m.batch_first, "dropout": m.dropout,
          "bidirectional": m.bidirectional}
    if m.mode == "LSTM":
        kw["proj_size"] = m.proj_size
    if m.mode in ("RNN_TANH", "RNN_RELU"):
        kw["nonlinearity"] = "tanh" if m.mode == "RNN_TANH" else "relu"
    return (m.input_size, m.hidden_size), kw


def _swap(m: nn.Module, cls: type) -> nn.Module:
    args, kw = _constructor_args(m)
    new = cls(*args, **kw, device="meta")  # no allocation, no RNG use
    for name, param in m.named_parameters(recurse=False):
        setattr(new, name, param)
    for name, buf in m.named_buffers(recurse=False):
        new.register_buffer(name, buf)
    if isinstance(new, nn.RNNBase):
        new._init_flat_weights()
    for hooks in _HOOK_DICTS:
        if hasattr(m, hooks):  # share the tables, so existing hook handles still remove hooks
            object.__setattr__(new, hooks, getattr(m, hooks))
    new._is_full_backward_hook = m._is_full_backward_hook
    new.train(m.training)
    return new


def torch_forward(module: nn.Module, *args):
    """torch.nn's forward for an rnn_ext `module`, with its current weights.

    For torch.onnx.export: the exporters translate aten::lstm, gru, rnn_tanh,
    rnn_relu and the cells into ONNX's LSTM, GRU and RNN operators; they know
    nothing of rnn_ext's ops. The weights are read through the module's
    attributes, so parametrizations and weight_norm are honoured.
    """
    cls = next(_TO_TORCH[c] for c in type(module).__mro__ if c in _TO_TORCH)  # subclasses too
    args_, kw = _constructor_args(module)
    twin = cls(*args_, **kw, device="meta")  # no allocation: its weights are replaced below
    twin.train(module.training)
    # Plain attributes, not parameters (a parametrized weight is a computed tensor);
    # not torch.func.functional_call, which refuses to run under torch.jit tracing.
    for name in list(twin._parameters):
        del twin._parameters[name]
        object.__setattr__(twin, name, getattr(module, name))
    if isinstance(twin, nn.RNNBase):  # _init_flat_weights without its flatten_parameters, which
        # on cuDNN would move the module's own weights into a new buffer
        twin._flat_weights = [getattr(twin, name) for name in twin._flat_weights_names]
        twin._flat_weight_refs = [weakref.ref(w) for w in twin._flat_weights]
    return twin.forward(*args)


def convert(model: nn.Module, to: str = "rnn_ext") -> nn.Module:
    """Replace every torch.nn LSTM/GRU/RNN (and cell) in `model` with rnn_ext's.

    Args:
        model: any nn.Module; converted in place (children are replaced).
        to: "rnn_ext" (default) or "torch" to convert back.
    Returns:
        The converted model; if `model` itself is a recurrent module, the new
        module (the caller must use the return value in that case).

    Exact type matches only: subclasses of nn.LSTM etc. are left alone, since
    they may override forward.
    """
    if to not in ("rnn_ext", "torch"):
        raise ValueError(f"convert(to=...) must be 'rnn_ext' or 'torch', got {to!r}")
    table = _TO_EXT if to == "rnn_ext" else _TO_TORCH
    if type(model) in table:
        return _swap(model, table[type(model)])
    for name, child in model.named_children():
        if type(child) in table:
            setattr(model, name, _swap(child, table[type(child)]))
        else:
            convert(child, to)
    return model
