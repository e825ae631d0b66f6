"""Typed wrappers over torch.ops.rnn_ext.*, with fake and autograd kernels.

Each op runs one layer, one direction, over the whole sequence (the schemas
and their arguments are documented in csrc/rnn_ext.cpp).

Autograd: the forward op saves a workspace; backward calls the matching
*_backward op. When backward itself must be differentiable (create_graph=True,
double backward), the step is recomputed with the pure-PyTorch reference in
rnn_ext/reference.py and differentiated by autograd, the same approach
torch.nn uses for its oneDNN LSTM on CPU.
"""
from __future__ import annotations

import inspect
from typing import Optional

import torch
import torch.autograd.forward_ad as _forward_ad
from torch import Tensor
from torch._functorch.utils import unwrap_dead_wrappers as _unwrap_dead_wrappers

from . import _C  # noqa: F401  (loads the library, which registers the ops)
from . import reference

_ops = torch.ops.rnn_ext


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _rows(input: Tensor, batch_sizes: Optional[Tensor]) -> int:
    return input.shape[0] if batch_sizes is not None else input.shape[0] * input.shape[1]


def _needs_grad(*tensors) -> bool:
    # torch.jit.trace records need_grad as a constant, and the trace may later run
    # with grad mode either way: keep the workspace whenever something requires grad.
    # (A plain loop: every call of a layer or cell comes here.)
    if not torch.is_grad_enabled() and not torch.jit.is_tracing():
        return False
    for t in tensors:
        if t is not None and t.requires_grad:
            return True
    return False


# ----------------------------------------------------------------- public wrappers
# The wrappers go through the C++ autograd node of the *_forward_eager ops in plain
# eager training calls (csrc/eager_autograd.cpp), and otherwise through
# autograd.Function classes (defined at the bottom, sharing the op's
# setup/backward), which torch.func transforms and forward AD accept; the ops
# themselves also carry register_autograd for direct callers.
# Complex modules: torch.nn runs them on its native path (cuDNN and oneDNN take
# no complex); rnn_ext runs them on the pure-PyTorch reference layers, with the
# same formulas and autograd's gradients. The kernels take real dtypes only.
def lstm_layer(input, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None, batch_sizes=None, reverse=False):
    """One LSTM layer-direction: returns (output, h_n, c_n)."""
    if input.is_complex():
        return reference.lstm_layer(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse)
    need = _needs_grad(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
    y, h, c = _apply(_LstmFunction, _ops.lstm_forward, need,
                     input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse, need,
                     eager_op=_ops.lstm_forward_eager)[:3]  # (the eager op returns no workspace)
    return y, h, c


def gru_layer(input, h0, w_ih, w_hh, b_ih=None, b_hh=None, batch_sizes=None, reverse=False):
    """One GRU layer-direction: returns (output, h_n)."""
    if input.is_complex():
        return reference.gru_layer(input, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse)
    need = _needs_grad(input, h0, w_ih, w_hh, b_ih, b_hh)
    y, h = _apply(_GruFunction, _ops.gru_forward, need,
                  input, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, need, eager_op=_ops.gru_forward_eager)[:2]
    return y, h


def rnn_layer(input, h0, w_ih, w_hh, b_ih=None, b_hh=None, batch_sizes=None, relu=False, reverse=False):
    """One Elman RNN layer-direction (tanh or relu): returns (output, h_n)."""
    if input.is_complex():
        return reference.rnn_layer(input, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, relu, reverse)
    need = _needs_grad(input, h0, w_ih, w_hh, b_ih, b_hh)
    return _apply(_RnnFunction, _ops.rnn_forward, need, input, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, relu, reverse,
                  eager_op=_ops.rnn_forward_eager)


def _apply(function, op, need_grad, *args, eager_op=None):
    # Under torch.compile the op is called directly: Dynamo traces custom ops
    # natively (no graph break even when one tensor is passed twice).
    if torch.compiler.is_compiling():
        return op(*args)
    # torch.jit.trace records the op itself (a Function would be an opaque
    # PythonOp that torch.jit.save refuses); the traced graph differentiates
    # through the op's own autograd registration.
    if torch._C._is_tracing():  # torch.jit.is_tracing without its scripting check (Dynamo returned above)
        return op(*args)
    # Nothing to differentiate (no_grad, inference, frozen model): call the
    # kernel below the autograd layers, which cost more than a small layer's
    # whole run (~50 us a call). Forward-mode AD and torch.func transforms
    # still go through the Function.
    if _forward_ad._current_level < 0 and not torch._C._are_functorch_transforms_active():
        if not need_grad:
            with torch._C._AutoDispatchBelowAutograd():
                return op(*args)
        # The forward op behind a C++ autograd node (csrc/eager_autograd.cpp): the same
        # saved tensors and backward op as the Function, 20-40 us less a training call.
        # Tensors left over from finished torch.func transforms are unwrapped, as
        # Function.apply does.
        if eager_op is not None:
            return eager_op(*_unwrap_dead_wrappers(args))
        # Function.apply's Python part binds the arguments to forward's signature (all
        # positional here), unwraps tensors left over from finished torch.func transforms
        # (done here too) and routes active transforms (none): its C++ part directly
        # spares a small call ~3 us.
        return function.apply_positional(*_unwrap_dead_wrappers(args))
    return function.apply(*args)


# ----------------------------------------------------------------- fake kernels
def _check_fake(input: Tensor, batch_sizes: Optional[Tensor], *tensors: Optional[Tensor]) -> None:
    """The checks of the real kernels that need no data: ranks and devices."""
    torch._check(input.dim() == (2 if batch_sizes is not None else 3), lambda: "rnn_ext: bad input rank")
    for t in tensors:
        if t is not None and t.device != input.device:
            raise RuntimeError(f"rnn_ext: tensors are on different devices: {t.device} and input on {input.device}")
    if batch_sizes is not None and batch_sizes.device.type != "cpu":
        raise RuntimeError("rnn_ext: batch_sizes should always be on CPU")


@torch.library.register_fake("rnn_ext::lstm_forward")
def _lstm_forward_fake(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse, need_grad):
    _check_fake(input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
    H = w_hh.shape[0] // 4
    h_out = w_hr.shape[0] if w_hr is not None else H
    rows = _rows(input, batch_sizes) if need_grad else 0
    return (
        input.new_empty((*input.shape[:-1], h_out)),
        h0.new_empty(h0.shape),
        c0.new_empty(c0.shape),
        input.new_empty((rows, 5 * H), dtype=_acc_dtype(input.dtype)),
    )


def _empty_unless(wanted: bool, like: Tensor, shape) -> Tensor:
    """A backward op's output: its shape, or empty where the output_mask skipped it."""
    return like.new_empty(shape if wanted else (0,))


@torch.library.register_fake("rnn_ext::lstm_backward")
def _lstm_backward_fake(grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, w_hr, batch_sizes, reverse,
                        output, workspace, output_mask=(True, True, True)):
    G = w_hh.shape[0]
    x, s, w = output_mask
    return (
        _empty_unless(x, input, input.shape), _empty_unless(s, input, h0.shape), _empty_unless(s, input, c0.shape),
        _empty_unless(w, input, w_ih.shape), _empty_unless(w, input, w_hh.shape), _empty_unless(w, input, (G,)),
        _empty_unless(w, input, (G,)), _empty_unless(w and w_hr is not None, input, w_hr.shape if w_hr is not None else ()),
    )


@torch.library.register_fake("rnn_ext::gru_forward")
def _gru_forward_fake(input, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, need_grad):
    _check_fake(input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh)
    H = w_hh.shape[0] // 3
    rows = _rows(input, batch_sizes) if need_grad else 0
    return (
        input.new_empty((*input.shape[:-1], H)),
        h0.new_empty(h0.shape),
        input.new_empty((rows, 4 * H), dtype=_acc_dtype(input.dtype)),
    )


def _one_hidden_backward_fake(input, h0, w_ih, w_hh, output_mask):
    G = w_hh.shape[0]
    x, s, w = output_mask
    return (_empty_unless(x, input, input.shape), _empty_unless(s, input, h0.shape),
            _empty_unless(w, input, w_ih.shape), _empty_unless(w, input, w_hh.shape),
            _empty_unless(w, input, (G,)), _empty_unless(w, input, (G,)))


@torch.library.register_fake("rnn_ext::gru_backward")
def _gru_backward_fake(grad_output, grad_h_n, input, h0, w_ih, w_hh, batch_sizes, reverse, output, workspace,
                       output_mask=(True, True, True)):
    return _one_hidden_backward_fake(input, h0, w_ih, w_hh, output_mask)


@torch.library.register_fake("rnn_ext::rnn_forward")
def _rnn_forward_fake(input, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, relu, reverse):
    _check_fake(input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh)
    return input.new_empty((*input.shape[:-1], w_hh.shape[0])), h0.new_empty(h0.shape)


@torch.library.register_fake("rnn_ext::rnn_backward")
def _rnn_backward_fake(grad_output, grad_h_n, input, h0, w_ih, w_hh, batch_sizes, relu, reverse, output,
                       output_mask=(True, True, True)):
    return _one_hidden_backward_fake(input, h0, w_ih, w_hh, output_mask)


# ----------------------------------------------------------------- autograd
def _or_zeros(grad: Optional[Tensor], like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad


def _varying(layer_fn, args, positions, kwargs):
    """layer_fn as a function of the arguments at `positions` only, the others fixed."""
    def fn(*values):
        full = list(args)
        for i, v in zip(positions, values):
            full[i] = v
        return layer_fn(*full, **kwargs)
    return fn


def _differentiable_grads(needs, layer_fn, inputs, kwargs, outputs, grads):
    """Gradients that autograd can differentiate again (create_graph=True).

    Recomputes the layer with the reference implementation from the saved
    inputs (which keep their graph history) and differentiates it; `needs`:
    the node's needs_input_grad.
    """
    wanted = [i for i, t in enumerate(inputs) if t is not None and needs[i]]
    result = [None] * len(inputs)
    if not wanted:
        return result
    # torch.func.vjp rather than torch.autograd.grad: it also differentiates
    # correctly when this backward runs under torch.func (vjp, jacrev), where
    # the saved inputs are not on the graph autograd.grad would walk, and its
    # result stays differentiable for double backward.
    with torch.enable_grad():
        _, vjp_fn = torch.func.vjp(_varying(layer_fn, inputs, wanted, kwargs), *[inputs[i] for i in wanted])
        gs = vjp_fn(tuple(_or_zeros(g, o) for g, o in zip(grads, outputs)))
    for i, g in zip(wanted, gs):
        result[i] = g if g is not None else torch.zeros_like(inputs[i])
    return result


def _below_autograd(op, *args):
    """A backward op called from a backward that builds no graph (grad mode off): below its
    autograd registration, a Python kernel that would only check that nothing requires grad
    (~10 us a call)."""
    with torch._C._AutoDispatchBelowAutograd():
        return op(*args)


def _output_mask(need, n_states: int, n_weights: int) -> list[bool]:
    """The backward op's output_mask from the forward's needs_input_grad: (input, states..., weights...)."""
    return [need[0], any(need[1:1 + n_states]), any(need[1 + n_states:1 + n_states + n_weights])]


def _wanted(mask, dx, states, weights) -> tuple:
    """The backward op's gradients, None where its output_mask skipped them (empty outputs)."""
    return ((dx if mask[0] else None), *(states if mask[1] else (None,) * len(states)),
            *(weights if mask[2] else (None,) * len(weights)))


def _lstm_setup(ctx, inputs, output):
    input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse, need_grad = inputs
    y, _h_n, _c_n, ws = output
    ctx.reverse = reverse
    # The final states are not saved (backward needs only their shapes, h0's and c0's), so the
    # caller may modify them in place, as torch.nn's. The output is: it holds h_{t-1}.
    ctx.save_for_backward(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, y, ws)
    # Unused outputs (the workspace, often h_n) get None, not a zero tensor as
    # large as the output: backward fills in only what it reads.
    ctx.set_materialize_grads(False)


def _lstm_backward(ctx, grad_y, grad_h, grad_c, _grad_ws):
    input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, y, ws = ctx.saved_tensors
    if torch.is_grad_enabled():
        g = _differentiable_grads(
            ctx.needs_input_grad, reference.lstm_layer, (input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr),
            {"batch_sizes": batch_sizes, "reverse": ctx.reverse}, (y, h0, c0), (grad_y, grad_h, grad_c))
        return (*g, None, None, None)
    mask = _output_mask(ctx.needs_input_grad, 2, 5)  # h0, c0; w_ih, w_hh, b_ih, b_hh, w_hr
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr = _below_autograd(_ops.lstm_backward,
        _or_zeros(grad_y, y), _or_zeros(grad_h, h0), _or_zeros(grad_c, c0), input, h0, c0, w_ih, w_hh, w_hr,
        batch_sizes, ctx.reverse, y, ws, mask)
    return (*_wanted(mask, dx, (dh0, dc0), (dw_ih, dw_hh, db_ih if b_ih is not None else None,
                                           db_hh if b_hh is not None else None, dw_hr if w_hr is not None else None)),
            None, None, None)


def _gru_setup(ctx, inputs, output):
    input, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, need_grad = inputs
    y, _h_n, ws = output
    ctx.reverse = reverse
    ctx.save_for_backward(input, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, y, ws)  # h_n: h0's shape
    ctx.set_materialize_grads(False)


def _gru_backward(ctx, grad_y, grad_h, _grad_ws):
    input, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, y, ws = ctx.saved_tensors
    if torch.is_grad_enabled():
        g = _differentiable_grads(
            ctx.needs_input_grad, reference.gru_layer, (input, h0, w_ih, w_hh, b_ih, b_hh),
            {"batch_sizes": batch_sizes, "reverse": ctx.reverse}, (y, h0), (grad_y, grad_h))
        return (*g, None, None, None)
    mask = _output_mask(ctx.needs_input_grad, 1, 4)  # h0; w_ih, w_hh, b_ih, b_hh
    dx, dh0, dw_ih, dw_hh, db_ih, db_hh = _below_autograd(_ops.gru_backward,
        _or_zeros(grad_y, y), _or_zeros(grad_h, h0), input, h0, w_ih, w_hh, batch_sizes, ctx.reverse, y, ws, mask)
    return (*_wanted(mask, dx, (dh0,), (dw_ih, dw_hh, db_ih if b_ih is not None else None,
                                        db_hh if b_hh is not None else None)), None, None, None)


def _rnn_setup(ctx, inputs, output):
    input, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, relu, reverse = inputs
    y, _h_n = output
    ctx.relu, ctx.reverse = relu, reverse
    ctx.save_for_backward(input, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, y)  # h_n: h0's shape
    ctx.set_materialize_grads(False)


def _rnn_backward(ctx, grad_y, grad_h):
    input, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, y = ctx.saved_tensors
    if torch.is_grad_enabled():
        g = _differentiable_grads(
            ctx.needs_input_grad, reference.rnn_layer, (input, h0, w_ih, w_hh, b_ih, b_hh),
            {"batch_sizes": batch_sizes, "relu": ctx.relu, "reverse": ctx.reverse}, (y, h0), (grad_y, grad_h))
        return (*g, None, None, None)
    mask = _output_mask(ctx.needs_input_grad, 1, 4)  # h0; w_ih, w_hh, b_ih, b_hh
    dx, dh0, dw_ih, dw_hh, db_ih, db_hh = _below_autograd(_ops.rnn_backward,
        _or_zeros(grad_y, y), _or_zeros(grad_h, h0), input, h0, w_ih, w_hh, batch_sizes, ctx.relu, ctx.reverse, y,
        mask)
    return (*_wanted(mask, dx, (dh0,), (dw_ih, dw_hh, db_ih if b_ih is not None else None,
                                        db_hh if b_hh is not None else None)), None, None, None)


def _lstm_backward_graph(grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes,
                         reverse, output, needs):
    """Double backward of lstm_forward_eager's C++ node (csrc/eager_autograd.cpp): as _lstm_backward's."""
    g = _differentiable_grads(needs, reference.lstm_layer, (input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr),
                              {"batch_sizes": batch_sizes, "reverse": reverse}, (output, h0, c0),
                              (grad_output, grad_h_n, grad_c_n))
    return [t if t is not None else input.new_empty(0) for t in g]  # (the node reads only the needed ones)


def _gru_backward_graph(grad_output, grad_h_n, input, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, output, needs):
    """Double backward of gru_forward_eager's C++ node (csrc/eager_autograd.cpp): as _gru_backward's."""
    g = _differentiable_grads(needs, reference.gru_layer, (input, h0, w_ih, w_hh, b_ih, b_hh),
                              {"batch_sizes": batch_sizes, "reverse": reverse}, (output, h0), (grad_output, grad_h_n))
    return [t if t is not None else input.new_empty(0) for t in g]


def _rnn_backward_graph(grad_output, grad_h_n, input, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, relu, reverse, output,
                        needs):
    """Double backward of rnn_forward_eager's C++ node (csrc/eager_autograd.cpp): as _rnn_backward's."""
    g = _differentiable_grads(needs, reference.rnn_layer, (input, h0, w_ih, w_hh, b_ih, b_hh),
                              {"batch_sizes": batch_sizes, "relu": relu, "reverse": reverse}, (output, h0),
                              (grad_output, grad_h_n))
    return [t if t is not None else input.new_empty(0) for t in g]


# The *_backward_graph ops run at the autograd level (CompositeImplicitAutograd), so
# autograd records the reference recompute they differentiate.
_graph_lib = torch.library.Library("rnn_ext", "IMPL")
_graph_lib.impl("lstm_backward_graph", _lstm_backward_graph, "CompositeImplicitAutograd")
_graph_lib.impl("gru_backward_graph", _gru_backward_graph, "CompositeImplicitAutograd")
_graph_lib.impl("rnn_backward_graph", _rnn_backward_graph, "CompositeImplicitAutograd")

torch.library.register_autograd("rnn_ext::lstm_forward", _lstm_backward, setup_context=_lstm_setup)
torch.library.register_autograd("rnn_ext::gru_forward", _gru_backward, setup_context=_gru_setup)
torch.library.register_autograd("rnn_ext::rnn_forward", _rnn_backward, setup_context=_rnn_setup)


# The *_backward ops are not differentiable themselves (double backward goes
# through the reference recompute above). Registering an autograd formula that
# raises keeps the error loud instead of returning a silently partial graph.
def _not_differentiable(name):
    def backward(ctx, *grads):
        raise RuntimeError(
            f"rnn_ext::{name} is not differentiable; for double backward call backward through the "
            "forward op (rnn_ext modules or rnn_ext._ops.*_layer) with create_graph=True")

    def setup(ctx, inputs, output):
        pass

    torch.library.register_autograd(f"rnn_ext::{name}", backward, setup_context=setup)


for _name in ("lstm_backward", "gru_backward", "rnn_backward"):
    _not_differentiable(_name)


def _function(name: str, op, setup, backward):
    """An autograd.Function running `op`, with the same setup and backward as
    the op's own autograd registration (torch.func needs this form)."""

    def forward(*args):
        # below the op's own autograd registration: this Function is the graph node
        with torch._C._AutoDispatchBelowAutograd():
            return op(*args)

    # Function.apply binds the arguments to forward's signature on every call;
    # a precomputed one spares inspect a walk over the function (~30 us).
    forward.__signature__ = inspect.signature(forward)

    n_diff = _DIFFERENTIABLE_ARGS[name]

    def setup_context(ctx, inputs, output):
        setup(ctx, inputs, output)
        if name != "rnn":
            ctx.mark_non_differentiable(output[-1])  # the workspace
        # What jvp reads, kept only where it may run: a forward-AD level or a torch.func
        # transform is active now (tangents are computed during the forward).
        if _forward_ad._current_level >= 0 or torch._C._are_functorch_transforms_active():
            ctx.save_for_forward(*inputs[:n_diff])
            ctx.layer_kwargs = _layer_kwargs(name, inputs)

    def jvp(ctx, *tangents):
        # Forward-mode AD (torch.autograd.forward_ad, torch.func.jvp/jacfwd):
        # the tangent of the reference layer at the same inputs, as double
        # backward differentiates the reference too. Forward AD cannot nest, so
        # J t comes from two reverse passes: v -> J^T v is linear, and its vjp
        # with cotangent t is J t.
        saved = ctx.saved_tensors
        present = [i for i, p in enumerate(saved) if p is not None and tangents[i] is not None]
        layer = _varying(_REFERENCE_LAYERS[name], saved, present, ctx.layer_kwargs)
        if not present:
            outs = layer()
            out_t = [torch.zeros_like(o) for o in outs]
        else:
            outs, vjp_fn = torch.func.vjp(layer, *[saved[i] for i in present])
            _, vjp_of_vjp = torch.func.vjp(lambda *v: vjp_fn(v), *[torch.zeros_like(o) for o in outs])
            out_t = vjp_of_vjp(tuple(tangents[i] for i in present))
        return (*out_t, None) if name != "rnn" else tuple(out_t)

    def vmap(info, in_dims, *args):
        # torch.func.vmap (and jacfwd, hessian): one call per slice of the
        # mapped dimension, outputs stacked along a new leading one. Correct
        # for any mix of mapped inputs; not a batched kernel.
        outs = [function.apply(*[a.select(d, i) if d is not None else a for a, d in zip(args, in_dims)])
                for i in range(info.batch_size)]
        stacked = tuple(torch.stack([o[j] for o in outs]) for j in range(len(outs[0])))
        return stacked, (0,) * len(stacked)

    function = type(f"_{name.capitalize()}Function", (torch.autograd.Function,), {
        "forward": staticmethod(forward),
        "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward),
        "jvp": staticmethod(jvp),
        "vmap": staticmethod(vmap),
    })
    # The C++ apply that Function.apply ends in, bound to this class (see _apply).
    function.apply_positional = torch._C._FunctionBase.__dict__["apply"].__get__(None, function)
    return function


# The leading arguments of each forward op that tangents can flow through
# (input, states, weights), and the rest as the reference layer's keywords.
_DIFFERENTIABLE_ARGS = {"lstm": 8, "gru": 6, "rnn": 6}
_REFERENCE_LAYERS = {"lstm": reference.lstm_layer, "gru": reference.gru_layer, "rnn": reference.rnn_layer}


def _layer_kwargs(name, inputs):
    if name == "rnn":
        return {"batch_sizes": inputs[6], "relu": inputs[7], "reverse": inputs[8]}
    n = _DIFFERENTIABLE_ARGS[name]
    return {"batch_sizes": inputs[n], "reverse": inputs[n + 1]}


_LstmFunction = _function("lstm", _ops.lstm_forward, _lstm_setup, _lstm_backward)
_GruFunction = _function("gru", _ops.gru_forward, _gru_setup, _gru_backward)
_RnnFunction = _function("rnn", _ops.rnn_forward, _rnn_setup, _rnn_backward)
