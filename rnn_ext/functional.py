"""Functional multi-layer recurrences over explicit weights.

`recurrence` is what the modules call after validating their arguments. It
loops over layers and directions (one fused op each), concatenates the two
directions, and applies dropout between layers as torch.nn does.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _ops

MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype rnn_ext runs in under autocast, or None when autocast is off.

    Policy: inside `torch.autocast(device_type, dtype)` the recurrent layers run
    in that autocast dtype (input, states and weights are cast; outputs and
    final states come back in it). cuDNN always uses float16 here; rnn_ext
    honours the dtype the user asked for, bfloat16 included.
    """
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def autocast_cast(input: Tensor, hx: Sequence[Tensor], weights: Sequence[Optional[Tensor]]):
    """Apply the autocast policy above: cast input, states and weights when autocast is on."""
    if not torch._C._is_any_autocast_enabled():  # the common case, ~0.1 us
        return input, list(hx), list(weights)
    cast = autocast_dtype(input.device.type)
    if cast is None or input.is_complex():  # autocast leaves complex tensors alone
        return input, list(hx), list(weights)
    return (input.to(cast), [h.to(cast) for h in hx],
            [w.to(cast) if w is not None else None for w in weights])


def recurrence(
    mode: str,
    input: Tensor,
    hx: Sequence[Tensor],
    weights: Sequence[Optional[Tensor]],
    *,
    num_layers: int,
    bidirectional: bool,
    has_bias: bool,
    has_proj: bool,
    dropout: float,
    training: bool,
    batch_sizes: Optional[Tensor] = None,
) -> tuple[Tensor, list[Tensor]]:
    """Run a stacked (bi)directional RNN.

    Args:
        mode: "LSTM", "GRU", "RNN_TANH" or "RNN_RELU".
        input: (T, B, I) time-major, or packed rows (N, I) with `batch_sizes`.
        hx: [h0] or [h0, c0] for LSTM; h0 is (L*D, B, Hout), c0 is (L*D, B, H),
            in sorted batch order for packed input.
        weights: torch.nn's flat weight list, per (layer, direction):
            w_ih, w_hh, [b_ih, b_hh], [w_hr].
    Returns:
        (output, [h_n] or [h_n, c_n]) with output (T, B, D*Hout) or (N, D*Hout).
    """
    input, hx, weights = autocast_cast(input, hx, weights)
    if input.device.type == "cpu" and input.dtype in (torch.float16, torch.bfloat16):
        # The fused float32 kernels, on the values rounded up exactly, and the results
        # rounded once to the storage type (autograd differentiates the casts): the ops'
        # half-precision CPU path (a half-precision GEMM and a rounded h_t per step) took
        # 1.5-9x the time of this (README). Cells keep the ops' path: at one step the casts
        # cost more than they save.
        dtype = input.dtype
        _check_state_dtypes(mode, input, hx)  # (the ops' own check, which the casts would pass)
        output, finals = _layers(
            mode, input.float(), [h.float() for h in hx], [w.float() if w is not None else None for w in weights],
            num_layers, bidirectional, has_bias, has_proj, dropout, training, batch_sizes)
        return output.to(dtype), [f.to(dtype) for f in finals]
    return _layers(mode, input, hx, weights, num_layers, bidirectional, has_bias, has_proj, dropout, training,
                   batch_sizes)


_C10_NAMES = {torch.float32: "Float", torch.float64: "Double", torch.float16: "Half", torch.bfloat16: "BFloat16"}


def _check_state_dtypes(mode: str, input: Tensor, hx: Sequence[Tensor]) -> None:
    """The ops' error for an initial state whose dtype is not the input's."""
    op = {"LSTM": "lstm_forward", "GRU": "gru_forward"}.get(mode, "rnn_forward")
    for name, h in zip(("h0", "c0"), hx):
        if h.dtype != input.dtype:
            got, want = (_C10_NAMES.get(t, str(t)) for t in (h.dtype, input.dtype))
            raise RuntimeError(f"rnn_ext::{op}: {name} has dtype {got} but input has dtype {want}")


def _layers(mode, input, hx, weights, num_layers, bidirectional, has_bias, has_proj, dropout, training, batch_sizes):
    """recurrence() after the dtype policy: the layers and directions, one op each."""
    per_group = 2 + (2 if has_bias else 0) + (1 if has_proj else 0)
    directions = 2 if bidirectional else 1
    finals: list[list[Tensor]] = [[] for _ in hx]
    x = input
    for layer in range(num_layers):
        outs = []
        for d in range(directions):
            idx = layer * directions + d
            group = list(weights[idx * per_group:(idx + 1) * per_group])
            w_ih, w_hh = group[0], group[1]
            b_ih, b_hh = (group[2], group[3]) if has_bias else (None, None)
            w_hr = group[-1] if has_proj else None
            reverse = d == 1
            if mode == "LSTM":
                y, h, c = _ops.lstm_layer(x, hx[0][idx], hx[1][idx], w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse)
                finals[0].append(h)
                finals[1].append(c)
            elif mode == "GRU":
                y, h = _ops.gru_layer(x, hx[0][idx], w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse)
                finals[0].append(h)
            else:
                y, h = _ops.rnn_layer(x, hx[0][idx], w_ih, w_hh, b_ih, b_hh, batch_sizes, mode == "RNN_RELU", reverse)
                finals[0].append(h)
            outs.append(y)
        x = outs[0] if directions == 1 else torch.cat(outs, -1)
        if dropout != 0 and training and layer < num_layers - 1:
            x = F.dropout(x, p=dropout, training=True)
    return x, [torch.stack(f) for f in finals]
