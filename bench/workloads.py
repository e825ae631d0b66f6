"""What is timed: a torch.nn module and its rnn_ext drop-in with the same weights,
random inputs, and the per-call step for each mode.

- inference: `with torch.no_grad(): module(x, hx)`.
- training: forward, then the gradients of every parameter and of x for the
  loss sum(y * g) with a random g (as `y.backward(g)`, without accumulating
  into .grad).
Each call takes the next of a few pre-generated random inputs (x, hx, g), so
no call sees zeros or the same data twice in a row.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor, nn

import rnn_ext

from .grids import Point

_NN = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN,
       "lstm_cell": nn.LSTMCell, "gru_cell": nn.GRUCell, "rnn_cell": nn.RNNCell}
_EXT = {"lstm": rnn_ext.LSTM, "gru": rnn_ext.GRU, "rnn": rnn_ext.RNN,
        "lstm_cell": rnn_ext.LSTMCell, "gru_cell": rnn_ext.GRUCell, "rnn_cell": rnn_ext.RNNCell}


def is_step_cell(cell: str) -> bool:
    """A cell module (one step a call: x (B, I), hx (B, H)) rather than a layer."""
    return cell.endswith("_cell")


def make_pair(cell: str, p: Point, device: str, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """torch.nn module and rnn_ext module, same weights (load_state_dict), on `device` in p.dtype."""
    torch.manual_seed(seed)
    base = _NN[cell](p.I, p.H)
    ext = _EXT[cell](p.I, p.H)
    ext.load_state_dict(base.state_dict())
    dtype = getattr(torch, p.dtype)
    base, ext = base.to(device=device, dtype=dtype), ext.to(device=device, dtype=dtype)
    # .to() leaves torch.nn's weights in separate tensors; without this cuDNN
    # warns and compacts them into one buffer on every call. (In bfloat16 torch
    # refuses to flatten, cudnn.is_acceptable rejects bf16, so nn.LSTM/GRU/RNN
    # compact every call there: that is stock torch.nn behaviour, recorded in
    # the warnings column.)
    if not is_step_cell(cell):
        base.flatten_parameters()
    return base, ext


@dataclass
class Inputs:
    x: Tensor
    hx: object  # Tensor, or (h0, c0) for LSTM
    g: Tensor   # gradient of the output


def make_inputs(cell: str, p: Point, device: str, n: int, training: bool, seed: int = 1) -> list[Inputs]:
    torch.manual_seed(seed)
    kw = {"device": device, "dtype": getattr(torch, p.dtype)}
    out = []
    seq = () if is_step_cell(cell) else (p.T,)  # a cell's input and states have no time or layer axis
    states = () if is_step_cell(cell) else (1,)
    for _ in range(n):
        x = torch.randn(*seq, p.B, p.I, **kw).requires_grad_(training)
        h0 = torch.randn(*states, p.B, p.H, **kw)
        hx = (h0, torch.randn(*states, p.B, p.H, **kw)) if cell.startswith("lstm") else h0
        out.append(Inputs(x, hx, torch.randn(*seq, p.B, p.H, **kw)))
    return out


def _output(module: nn.Module, inp: Inputs) -> Tensor:
    """The output sequence of a layer, the new h of a cell."""
    out = module(inp.x, inp.hx)
    return out if isinstance(out, Tensor) else out[0]


def _call(module: nn.Module, inp: Inputs, training: bool) -> list[Tensor]:
    """One step; returns the output, plus in training the gradients of x and every parameter."""
    if not training:
        with torch.no_grad():
            return [_output(module, inp)]
    y = _output(module, inp)
    return [y, *torch.autograd.grad(y, [inp.x, *module.parameters()], inp.g)]


def step_fn(module: nn.Module, inputs: list[Inputs], training: bool) -> Callable[[], list[Tensor]]:
    """The timed callable: one step on the next input in rotation."""
    it = itertools.cycle(inputs)
    return lambda: _call(module, next(it), training)


@dataclass
class Probe:
    outputs: list[Tensor]
    saved_bytes: Optional[int]     # training only
    peak_mem_bytes: Optional[int]  # CUDA only
    backend: Optional[str]         # which library ran the baseline, read from its autograd graph


def probe(module: nn.Module, inp: Inputs, training: bool, device: str, detect_backend: bool = False) -> Probe:
    """One untimed step on `inp` that also measures memory (and, with detect_backend=True, the baseline backend)."""
    exclude = {t.untyped_storage().data_ptr() for t in [*module.parameters(), inp.x, inp.g,
                                                          *(inp.hx if isinstance(inp.hx, tuple) else [inp.hx])]}
    saved: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        # Saved-activation bytes: unique storages saved for backward, less the
        # parameters and the inputs (which exist anyway).
        try:
            s = t.untyped_storage()
            ptr, nbytes = s.data_ptr(), s.nbytes()
        except (RuntimeError, NotImplementedError):  # opaque tensors (e.g. mkldnn layout)
            ptr, nbytes = id(t), t.numel() * t.element_size()
        if ptr not in exclude:
            saved[ptr] = nbytes
        return t

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outputs = _call(module, inp, training)
    peak = None
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    backend = baseline_backend(module, inp) if detect_backend else None
    return Probe([o.detach() for o in outputs], sum(saved.values()) if training else None, peak, backend)


def baseline_backend(module: nn.Module, inp: Inputs) -> str:
    """Which library torch.nn ran: read from the autograd graph of a 2-step forward
    (MkldnnRnnLayerBackward -> oneDNN, CudnnRnnBackward -> cuDNN, else ATen's native cells)."""
    if isinstance(module, nn.RNNCellBase):
        return "native"  # torch.nn's cells are ATen ops on every device
    x = inp.x[:2].detach().requires_grad_(True)
    with torch.enable_grad():
        y = module(x, inp.hx)[0]
    names, todo, seen = [], [y.grad_fn], set()
    while todo and len(seen) < 200:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.append(type(fn).__name__.lower())
        todo.extend(f for f, _ in fn.next_functions)
    joined = " ".join(names)
    return "cuDNN" if "cudnn" in joined else "oneDNN" if "mkldnn" in joined else "native"


def max_rel_err(ref: list[Tensor], got: list[Tensor]) -> float:
    """Largest max|ref - got| / max|ref| over the output and (in training) every gradient, in float64."""
    errs = []
    for r, g in zip(ref, got):
        r, g = r.double(), g.double()
        errs.append(float((r - g).abs().max() / r.abs().max().clamp_min(1e-30)))
    return max(errs)
