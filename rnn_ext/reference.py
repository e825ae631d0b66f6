"""Readable pure-PyTorch recurrent cells and layers.

These are the equations rnn_ext's kernels implement, written the way the
lecture (PyTorch Zero to All, lecture 12, exercises 12-5 and 12-6) asks for
hand-written cells. They are the tests' oracle, and the differentiable path
that rnn_ext uses for double backward (create_graph=True).

Shapes: x (B, I), h (B, Hout), c (B, H); weights in torch.nn layout.

    RNN:   h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)        (or relu)

    LSTM:  i, f, g, o = split(x W_ih^T + b_ih + h W_hh^T + b_hh, 4)
           c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
           h' = sigmoid(o) * tanh(c')          (then h' W_hr^T with proj_size)

    GRU:   r = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr)
           z = sigmoid(x W_iz^T + b_iz + h W_hz^T + b_hz)
           n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))
           h' = (1 - z) * n + z * h
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def _linear(x: Tensor, w: Tensor, b: Optional[Tensor]) -> Tensor:
    y = x @ w.t()
    return y if b is None else y + b


def _split(t: Tensor, parts: int) -> list[Tensor]:
    # narrow instead of chunk, so hidden_size == 0 still gives `parts` pieces
    h = t.shape[-1] // parts
    return [t.narrow(-1, k * h, h) for k in range(parts)]


def rnn_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, relu: bool = False) -> Tensor:
    pre = _linear(x, w_ih, b_ih) + _linear(h, w_hh, b_hh)
    return torch.relu(pre) if relu else torch.tanh(pre)


def lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None) -> tuple[Tensor, Tensor]:
    gates = _linear(x, w_ih, b_ih) + _linear(h, w_hh, b_hh)
    i, f, g, o = _split(gates, 4)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    if w_hr is not None:
        h_new = h_new @ w_hr.t()
    return h_new, c_new


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None) -> Tensor:
    xr, xz, xn = _split(_linear(x, w_ih, b_ih), 3)
    hr, hz, hn = _split(_linear(h, w_hh, b_hh), 3)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def _schedule(x: Tensor, batch_sizes: Optional[Tensor], reverse: bool):
    """(t, rows, offset) in processing order; rows are the active batch rows."""
    if batch_sizes is None:
        T, B = x.shape[0], x.shape[1]
        steps = [(t, B, None) for t in range(T)]
    else:
        sizes = [int(b) for b in batch_sizes]
        offsets = [sum(sizes[:t]) for t in range(len(sizes))]
        steps = list(zip(range(len(sizes)), sizes, offsets))
    return steps[::-1] if reverse else steps


def _run(step_fn, x, states, batch_sizes, reverse):
    """Run `step_fn(x_t, *active_states) -> new states (first is the output)`.

    Rows past the active count keep their state, so packed sequences end with
    their own last state and (in reverse) start from their own initial state.
    """
    outputs = {}
    for t, rows, off in _schedule(x, batch_sizes, reverse):
        x_t = x[t] if off is None else x[off:off + rows]
        new = step_fn(x_t, *[s[:rows] for s in states])
        states = [torch.cat([n, s[rows:]]) for n, s in zip(new, states)]
        outputs[t] = new[0]
    ordered = [outputs[t] for t in sorted(outputs)]
    y = torch.stack(ordered) if batch_sizes is None else torch.cat(ordered)
    return y, states


def lstm_layer(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None, batch_sizes=None, reverse=False):
    """One LSTM layer-direction over a sequence: returns (y, h_n, c_n)."""
    step = lambda x_t, h, c: lstm_cell(x_t, h, c, w_ih, w_hh, b_ih, b_hh, w_hr)  # noqa: E731
    y, (h, c) = _run(step, x, [h0, c0], batch_sizes, reverse)
    return y, h, c


def gru_layer(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, batch_sizes=None, reverse=False):
    """One GRU layer-direction over a sequence: returns (y, h_n)."""
    step = lambda x_t, h: (gru_cell(x_t, h, w_ih, w_hh, b_ih, b_hh),)  # noqa: E731
    y, (h,) = _run(step, x, [h0], batch_sizes, reverse)
    return y, h


def rnn_layer(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, batch_sizes=None, relu=False, reverse=False):
    """One Elman RNN layer-direction over a sequence: returns (y, h_n)."""
    step = lambda x_t, h: (rnn_cell(x_t, h, w_ih, w_hh, b_ih, b_hh, relu),)  # noqa: E731
    y, (h,) = _run(step, x, [h0], batch_sizes, reverse)
    return y, h
