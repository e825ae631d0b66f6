"""FLOP formulas for torch.utils.flop_counter.FlopCounterMode.

torch.nn's recurrent layers count the products they run (aten.mm/addmm): per
row of the sequence, 2*I*G for the input projection and 2*Hout*G for the
recurrent one (G = 4H LSTM, 3H GRU, H RNN), plus 2*H*P for LSTM's projection.
rnn_ext's ops run the same products inside one kernel each, so without these
formulas the counter would see nothing. A backward op runs twice its forward's
products (the input and weight gradients of each), less the ones its
output_mask skips: dX's product (2*I*G a row), the weight gradients' (the
forward's count again) and, for a sequence of one step (a cell call), the
product into h0 (2*Hout*G a row; longer sequences on the CPU compute it in
the fused kernel anyway).

Formulas receive the shapes of the op's tensor arguments (None for absent
ones) and the other arguments as they were passed.
"""
from __future__ import annotations

import math

import torch
from torch.utils.flop_counter import register_flop_formula

_ops = torch.ops.rnn_ext


def _products(input_shape, w_ih_shape, w_hh_shape, w_hr_shape=None) -> int:
    rows = math.prod(input_shape[:-1])  # T*B, or the packed rows
    G, I = w_ih_shape
    flops = 2 * rows * G * (I + w_hh_shape[1])
    if w_hr_shape is not None:
        P, H = w_hr_shape
        flops += 2 * rows * H * P
    return flops


@register_flop_formula(_ops.lstm_forward)
def _lstm_forward_flops(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, *args, out_shape=None, **kwargs) -> int:
    return _products(input, w_ih, w_hh, w_hr)


@register_flop_formula([_ops.gru_forward, _ops.rnn_forward])
def _one_state_forward_flops(input, h0, w_ih, w_hh, *args, out_shape=None, **kwargs) -> int:
    return _products(input, w_ih, w_hh)


def _backward_products(input_shape, batch_sizes_shape, w_ih_shape, w_hh_shape, w_hr_shape, output_mask) -> int:
    wants_input, wants_states, wants_weights = output_mask
    forward = _products(input_shape, w_ih_shape, w_hh_shape, w_hr_shape)
    input_side = 2 * math.prod(input_shape[:-1]) * w_ih_shape[0] * w_ih_shape[1]
    # the state gradients (the recurrence, and projection's); dX and the weights' if wanted
    flops = forward - input_side + (input_side if wants_input else 0) + (forward if wants_weights else 0)
    one_step = (batch_sizes_shape[0] if batch_sizes_shape is not None else input_shape[0]) == 1
    if one_step and not wants_states:  # its only recurrent product would be h0's gradient
        rows = input_shape[0] if batch_sizes_shape is not None else input_shape[1]
        flops -= 2 * rows * w_hh_shape[0] * w_hh_shape[1]
    return flops


def _mask(args, kwargs, position):
    """The output_mask argument, wherever it was passed, else its default."""
    if "output_mask" in kwargs:
        return kwargs["output_mask"]
    return args[position] if len(args) > position else (True, True, True)


@register_flop_formula(_ops.lstm_backward)
def _lstm_backward_flops(grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, w_hr, *args, out_shape=None,
                         **kwargs) -> int:
    # args: batch_sizes, reverse, output, workspace, output_mask
    return _backward_products(input, args[0], w_ih, w_hh, w_hr, _mask(args, kwargs, 4))


@register_flop_formula(_ops.gru_backward)
def _gru_backward_flops(grad_output, grad_h_n, input, h0, w_ih, w_hh, *args, out_shape=None, **kwargs) -> int:
    # args: batch_sizes, reverse, output, workspace, output_mask
    return _backward_products(input, args[0], w_ih, w_hh, None, _mask(args, kwargs, 4))


@register_flop_formula(_ops.rnn_backward)
def _rnn_backward_flops(grad_output, grad_h_n, input, h0, w_ih, w_hh, *args, out_shape=None, **kwargs) -> int:
    # args: batch_sizes, relu, reverse, output, output_mask
    return _backward_products(input, args[0], w_ih, w_hh, None, _mask(args, kwargs, 4))
