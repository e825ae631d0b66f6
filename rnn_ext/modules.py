"""Drop-in replacements for torch.nn.LSTM, GRU, RNN, LSTMCell, GRUCell, RNNCell.

Same constructor arguments, validation messages, parameters (names, shapes,
order, initial values under a seed), state_dict keys, forward signatures and
outputs as torch.nn. The layers subclass torch.nn.RNNBase (not nn.LSTM etc.),
so they inherit its parameter machinery (flat weight lists, pickling, .to(),
DataParallel replication) but not Dynamo's refusal of nn.LSTM/GRU/RNN
instances: torch.compile traces them with fullgraph=True.

Deliberate differences from torch.nn, all stricter or clearer:
- LSTM with PackedSequence input validates its arguments like dense input
  (torch.nn skips this, pytorch#195803, and silently truncates a too-large hx).
- GRU/RNN with PackedSequence check the hx shape before permuting it, so a
  wrong hx batch gives "Expected hidden size ..." instead of an index error.
- flatten_parameters() is a no-op: the kernels use the parameters in place.
- torch.jit.script (deprecated) raises a clear error; torch.jit.trace works.
- A parametrized weight (spectral_norm, orthogonal, ...) is evaluated once
  per forward; torch.nn evaluates it more than once (twice for an LSTM
  forward on the CPU), so its spectral_norm power iteration advances more
  steps a call.
- The output is saved for backward (as cuDNN saves it): changing it in place
  and then calling backward raises autograd's in-place error, where torch.nn's
  native CPU path (GRU, RNN, float64 LSTM) would run. (Only where the module's
  output is the op's own: one direction, not the CPU half-precision cast;
  a bidirectional output is a concatenated copy, and backward runs.)
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import _ops
from .functional import autocast_cast, recurrence

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]


def _refuse_script(module: nn.Module) -> None:
    # torch.jit.script calls __prepare_scriptable__ on every module it compiles:
    # a clear error there instead of TorchScript's first unsupported line.
    raise RuntimeError(
        f"rnn_ext.{type(module).__name__} cannot be compiled by torch.jit.script (deprecated by PyTorch); "
        "use torch.compile or torch.export, or torch.jit.trace, which records rnn_ext's ops. To script the "
        "model with torch.nn's modules instead, convert it first: rnn_ext.convert(model, to='torch')."
    )


# (torch.compiler.is_exporting: torch 2.6 on; before it, the ONNX exporter used here traced with torch.jit)
_is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)


def _onnx_exporting() -> bool:
    # torch.onnx.export traces through torch.jit (dynamo=False) or torch.export's
    # non-strict mode (dynamo=True); those cheap checks first (is_in_onnx_export costs
    # ~2 us a call). Never under Dynamo (torch.compile): it cannot trace them.
    if torch.compiler.is_dynamo_compiling():
        return False
    return (torch._C._is_tracing() or _is_exporting()) and torch.onnx.is_in_onnx_export()


def _torch_forward(module: nn.Module, input, hx):
    # Under torch.onnx.export: ONNX has LSTM, GRU and RNN operators, and the
    # exporters translate torch.nn's ops into them; rnn_ext's ops they do not know.
    from .convert import torch_forward  # convert imports this module
    return torch_forward(module, input, hx)


def _param(module: nn.Module, name: str) -> Optional[Tensor]:
    # A parameter read through Module.__getattr__ (attribute lookup's slow path) costs
    # ~1 us; the dict holds it unless a parametrization or the old weight_norm moved
    # it (then the attribute computes it). torch.func.functional_call swaps the dict's entries.
    value = module._parameters.get(name)
    return value if value is not None else getattr(module, name, None)


def _permute(hx: Tensor, permutation: Optional[Tensor]) -> Tensor:
    return hx if permutation is None else hx.index_select(1, permutation)


class _RecurrentLayer(nn.RNNBase):
    """Shared forward for the layer modules; subclasses set the mode."""

    # torch.nn's per-class wording of the input-rank error
    _rank_error = "{name}: Expected input to be 2D or 3D, got {dim}D instead"

    def __prepare_scriptable__(self):
        _refuse_script(self)

    def flatten_parameters(self) -> None:
        """No-op, kept for compatibility: rnn_ext uses the parameters in place."""
        return None

    def _weights(self) -> list[Optional[Tensor]]:
        # Read the attributes on every call (not the cached _flat_weights list),
        # so functional_call, parametrizations and weight_norm are honoured.
        weights = [_param(self, n) for n in self._flat_weights_names]
        for i, w in enumerate(weights):
            if w is None:  # a parameter set to None: torch.nn's error, not a run without it
                raise TypeError(f"expected Tensor as element {i} in argument 2, but got NoneType")
        return weights

    def check_input(self, input: Tensor, batch_sizes: Optional[Tensor]) -> None:
        weight = _param(self, self._flat_weights_names[0])
        if input.dtype != weight.dtype and not torch._C._is_any_autocast_enabled():
            raise ValueError(
                f"RNN input dtype ({input.dtype}) does not match weight dtype ({weight.dtype}). "
                f"Convert input: input.to({weight.dtype}), or convert model: model.to({input.dtype})"
            )
        expected_input_dim = 2 if batch_sizes is not None else 3
        if input.dim() != expected_input_dim:
            raise RuntimeError(f"input must have {expected_input_dim} dimensions, got {input.dim()}")
        if self.input_size != input.size(-1):
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {input.size(-1)}"
            )

    def get_expected_cell_size(self, input: Tensor, batch_sizes: Optional[Tensor]) -> tuple[int, int, int]:
        expected = self.get_expected_hidden_size(input, batch_sizes)
        return (expected[0], expected[1], self.hidden_size)

    def _check_states(self, input: Tensor, hx: list[Tensor], batch_sizes: Optional[Tensor]) -> None:
        self.check_input(input, batch_sizes)
        if self.mode == "LSTM":
            self.check_hidden_size(hx[0], self.get_expected_hidden_size(input, batch_sizes),
                                   "Expected hidden[0] size {}, got {}")
            self.check_hidden_size(hx[1], self.get_expected_cell_size(input, batch_sizes),
                                   "Expected hidden[1] size {}, got {}")
        else:
            self.check_hidden_size(hx[0], self.get_expected_hidden_size(input, batch_sizes))

    def _zeros(self, batch: int, input: Tensor) -> list[Tensor]:
        layers = self.num_layers * (2 if self.bidirectional else 1)
        h_out = self.proj_size if self.proj_size > 0 else self.hidden_size
        kw = {"dtype": input.dtype, "device": input.device}
        h = torch.zeros(layers, batch, h_out, **kw)
        if self.mode == "LSTM":
            return [h, torch.zeros(layers, batch, self.hidden_size, **kw)]
        return [h]

    def _split_hx(self, hx) -> Optional[list[Tensor]]:
        if hx is None:
            return None
        if self.mode == "LSTM":
            if isinstance(hx, (tuple, list)) and len(hx) > 2:  # a short one fails on hx[1], as in nn
                raise RuntimeError("lstm expects two hidden states")
            return [hx[0], hx[1]]
        return [hx]

    def _forward(self, input, hx):
        if _onnx_exporting():
            return _torch_forward(self, input, hx)
        orig_input = input
        if isinstance(orig_input, PackedSequence):
            input, batch_sizes, sorted_indices, unsorted_indices = orig_input
            states = self._split_hx(hx)
            if states is None:
                states = self._zeros(int(batch_sizes[0]), input)
                self._check_states(input, states, batch_sizes)
            else:
                self._check_states(input, states, batch_sizes)  # before permuting: clear errors
                states = [_permute(s, sorted_indices) for s in states]
            is_batched = True
        else:
            batch_sizes, sorted_indices, unsorted_indices = None, None, None
            if input.dim() not in (2, 3):
                raise ValueError(self._rank_error.format(name=type(self).__name__, dim=input.dim()))
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if not is_batched:
                input = input.unsqueeze(batch_dim)
            states = self._split_hx(hx)
            if states is not None:
                self._check_state_ranks(states, is_batched)
                if not is_batched:
                    states = [s.unsqueeze(1) for s in states]
            else:
                states = self._zeros(input.size(0) if self.batch_first else input.size(1), input)
            self._check_states(input, states, batch_sizes)
            if input.size(1 - batch_dim) == 0:
                raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
            if self.batch_first:
                input = input.transpose(0, 1)

        output, finals = recurrence(
            self.mode, input, states, self._weights(),
            num_layers=self.num_layers, bidirectional=bool(self.bidirectional), has_bias=bool(self.bias),
            has_proj=self.proj_size > 0, dropout=self.dropout, training=self.training, batch_sizes=batch_sizes,
        )
        if isinstance(orig_input, PackedSequence):
            output = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
            finals = [_permute(f, unsorted_indices) for f in finals]
        else:
            if self.batch_first:
                output = output.transpose(0, 1)
            if not is_batched:
                output = output.squeeze(batch_dim)
                finals = [f.squeeze(1) for f in finals]
        if self.mode == "LSTM":
            return output, (finals[0], finals[1])
        return output, finals[0]

    def _check_state_ranks(self, states: list[Tensor], is_batched: bool) -> None:
        want = 3 if is_batched else 2
        kind = "batched 3-D" if is_batched else "unbatched 2-D"
        if self.mode == "LSTM":
            if states[0].dim() != want or states[1].dim() != want:
                raise RuntimeError(
                    f"For {kind} input, hx and cx should also be {want}-D but got "
                    f"({states[0].dim()}-D, {states[1].dim()}-D) tensors"
                )
        elif states[0].dim() != want:
            raise RuntimeError(f"For {kind} input, hx should also be {want}-D but got {states[0].dim()}-D tensor")


class RNN(_RecurrentLayer):
    r"""Multi-layer Elman RNN with tanh or ReLU, a drop-in for :class:`torch.nn.RNN`.

    .. math:: h_t = \tanh(x_t W_{ih}^T + b_{ih} + h_{t-1} W_{hh}^T + b_{hh})

    Args:
        input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True,
        batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None:
        exactly as :class:`torch.nn.RNN`.

    Inputs: ``input, hx``
        - input: ``(L, H_in)``, ``(L, N, H_in)`` (``(N, L, H_in)`` if batch_first) or a PackedSequence.
        - hx: ``(D*num_layers, H_out)`` or ``(D*num_layers, N, H_out)``; zeros if omitted.

    Outputs: ``output, h_n``
        - output: ``(L, D*H_out)``, ``(L, N, D*H_out)`` (batch_first: ``(N, L, D*H_out)``) or a PackedSequence.
        - h_n: ``(D*num_layers, [N,] H_out)``, each sequence's final state.

    Parameters are named and shaped as in torch.nn (``weight_ih_l{k}[_reverse]``, ...), so
    state_dicts load in both directions.
    """

    _rank_error = "{name}: Expected input to be 2D or 3D, got {dim}D tensor instead"

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif self.nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__(mode, *args, **kwargs)

    def forward(self, input, hx=None):
        """Run the RNN. Returns ``(output, h_n)``; see the class docstring for shapes."""
        return self._forward(input, hx)


class LSTM(_RecurrentLayer):
    r"""Multi-layer LSTM, with optional projections, a drop-in for :class:`torch.nn.LSTM`.

    .. math::
        i, f, g, o = \text{split}(x_t W_{ih}^T + b_{ih} + h_{t-1} W_{hh}^T + b_{hh}) \\
        c_t = \sigma(f) c_{t-1} + \sigma(i) \tanh(g), \quad h_t = \sigma(o) \tanh(c_t)
        \quad (h_t \leftarrow h_t W_{hr}^T \text{ if proj\_size} > 0)

    Args:
        input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
        bidirectional=False, proj_size=0, device=None, dtype=None: exactly as :class:`torch.nn.LSTM`.

    Inputs: ``input, (h_0, c_0)``
        - input: ``(L, H_in)``, ``(L, N, H_in)`` (``(N, L, H_in)`` if batch_first) or a PackedSequence.
        - h_0: ``(D*num_layers, [N,] H_out)`` with H_out = proj_size or hidden_size; c_0:
          ``(D*num_layers, [N,] hidden_size)``. Zeros if omitted.

    Outputs: ``output, (h_n, c_n)`` with the same shapes; h_n/c_n hold each sequence's last valid step.

    Differences from torch.nn: PackedSequence input is validated like dense input (pytorch#195803);
    double backward works on every device; backward works in eval mode.
    """

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    def forward(self, input, hx=None):
        """Run the LSTM. Returns ``(output, (h_n, c_n))``; see the class docstring for shapes."""
        return self._forward(input, hx)


class GRU(_RecurrentLayer):
    r"""Multi-layer GRU, a drop-in for :class:`torch.nn.GRU` (cuDNN's variant: r multiplies W_hn h + b_hn).

    .. math::
        r = \sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}), \quad z = \sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}) \\
        n = \tanh(W_{in} x + b_{in} + r (W_{hn} h + b_{hn})), \quad h' = (1 - z) n + z h

    Args:
        input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
        bidirectional=False, device=None, dtype=None: exactly as :class:`torch.nn.GRU`.

    Inputs: ``input, h_0``
        - input: ``(L, H_in)``, ``(L, N, H_in)`` (``(N, L, H_in)`` if batch_first) or a PackedSequence.
        - h_0: ``(D*num_layers, H_out)`` or ``(D*num_layers, N, H_out)``; zeros if omitted.

    Outputs: ``output, h_n``
        - output: ``(L, D*H_out)``, ``(L, N, D*H_out)`` (batch_first: ``(N, L, D*H_out)``) or a PackedSequence.
        - h_n: ``(D*num_layers, [N,] H_out)``, each sequence's final state.
    """

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)

    def forward(self, input, hx=None):
        """Run the GRU. Returns ``(output, h_n)``; see the class docstring for shapes."""
        return self._forward(input, hx)


# ================================================================= cells
class _Cell(nn.RNNCellBase):
    """Shared checks for the cells; one step runs as a length-1 sequence op."""

    def __prepare_scriptable__(self):
        _refuse_script(self)

    # torch.nn's cell function (its name in torch.nn's errors)
    _function = ""

    def _check_weights(self, w_ih: Optional[Tensor], w_hh: Optional[Tensor]) -> None:
        # a weight set to None: torch.nn's TypeError (its cell function's argument parsing)
        for position, (arg, weight) in enumerate((("w_ih", w_ih), ("w_hh", w_hh)), start=3):
            if weight is None and self._function:
                raise TypeError(f"{self._function}(): argument '{arg}' (position {position}) must be Tensor, "
                                "not NoneType")

    def _prepare(self, input: Tensor, hx: Optional[list[Tensor]], name: str, hx_label: str):
        if input.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None:
            for idx, value in enumerate(hx):
                if value.dim() not in (1, 2):
                    label = hx_label.format(idx=idx)
                    raise ValueError(f"{name}: Expected {label} to be 1D or 2D, got {value.dim()}D instead")
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
        if hx is None:
            zeros = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype, device=input.device)
            hx = [zeros for _ in range(2 if isinstance(self, LSTMCell) else 1)]
        elif not is_batched:
            hx = [h.unsqueeze(0) for h in hx]
        # each read once (_param), a call ~25 us
        weights = [_param(self, "weight_ih"), _param(self, "weight_hh"), _param(self, "bias_ih"),
                   _param(self, "bias_hh")]
        if weights[0] is None or weights[1] is None:
            self._check_weights(weights[0], weights[1])
        if input.size(1) != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} expected {self.input_size}")
        for idx, h in enumerate(hx):
            if h.size(0) != input.size(0):
                raise RuntimeError(f"Input batch size {input.size(0)} doesn't match hidden{idx} batch size {h.size(0)}")
            if h.dim() != 2 or h.size(1) != self.hidden_size:
                got = h.size(1) if h.dim() > 1 else "none"
                raise RuntimeError(f"hidden{idx} has inconsistent hidden_size: got {got}, expected {self.hidden_size}")
        input, hx, weights = autocast_cast(input, hx, weights)
        return input.unsqueeze(0), hx, weights, is_batched


class RNNCell(_Cell):
    r"""Elman RNN cell, a drop-in for :class:`torch.nn.RNNCell`: ``h' = tanh|relu(x W_ih^T + b_ih + h W_hh^T + b_hh)``.

    Inputs: input ``(N, H_in)`` or ``(H_in,)``; hx ``(N, H)`` or ``(H,)`` (zeros if omitted).
    Output: h' with the same rank as the input.
    """

    __constants__ = ["input_size", "hidden_size", "bias", "nonlinearity"]

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks=1, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    @property
    def _function(self) -> str:  # "" for an unknown nonlinearity, which forward reports
        return f"rnn_{self.nonlinearity}_cell" if self.nonlinearity in ("tanh", "relu") else ""

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        if _onnx_exporting():
            return _torch_forward(self, input, hx)
        x, states, w, is_batched = self._prepare(input, None if hx is None else [hx], "RNNCell", "hidden")
        if self.nonlinearity not in ("tanh", "relu"):
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        _, h = _ops.rnn_layer(x, states[0], *w, relu=self.nonlinearity == "relu")
        return h if is_batched else h.squeeze(0)


class LSTMCell(_Cell):
    r"""LSTM cell, a drop-in for :class:`torch.nn.LSTMCell`.

    Inputs: input ``(N, H_in)`` or ``(H_in,)``; hx = ``(h, c)``, each ``(N, H)`` or ``(H,)`` (zeros if omitted).
    Output: ``(h', c')`` with the same rank as the input.
    """

    _function = "lstm_cell"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks=4, device=device, dtype=dtype)

    def forward(self, input: Tensor, hx: Optional[tuple[Tensor, Tensor]] = None) -> tuple[Tensor, Tensor]:
        if _onnx_exporting():
            return _torch_forward(self, input, hx)
        # torch.nn's behaviour, quirks included: unbatched input takes hx[0] and hx[1]
        # whatever hx is; batched input needs a 2-sequence of tensors.
        if hx is not None:
            if input.dim() != 2:
                hx = (hx[0], hx[1])
            elif not isinstance(hx, (tuple, list)):
                raise TypeError(
                    f"lstm_cell(): argument 'hx' (position 2) must be tuple of Tensors, not {type(hx).__name__}")
            elif len(hx) != 2:
                raise RuntimeError("lstm_cell expects two hidden states")
        x, states, w, is_batched = self._prepare(input, None if hx is None else list(hx), "LSTMCell", "hx[{idx}]")
        _, h, c = _ops.lstm_layer(x, states[0], states[1], *w)
        return (h, c) if is_batched else (h.squeeze(0), c.squeeze(0))


class GRUCell(_Cell):
    r"""GRU cell, a drop-in for :class:`torch.nn.GRUCell` (r multiplies ``W_hn h + b_hn``).

    Inputs: input ``(N, H_in)`` or ``(H_in,)``; hx ``(N, H)`` or ``(H,)`` (zeros if omitted).
    Output: h' with the same rank as the input.
    """

    _function = "gru_cell"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks=3, device=device, dtype=dtype)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        if _onnx_exporting():
            return _torch_forward(self, input, hx)
        x, states, w, is_batched = self._prepare(input, None if hx is None else [hx], "GRUCell", "hidden")
        _, h = _ops.gru_layer(x, states[0], *w)
        return h if is_batched else h.squeeze(0)
