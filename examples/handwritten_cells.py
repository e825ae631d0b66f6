"""Lecture exercises 12-5 / 12-6: hand-written RNN and GRU cells, checked.

rnn_ext/reference.py writes the cells out in a few lines of PyTorch, with
torch.nn's weight layout:

    rnn_cell:  h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)
    gru_cell:  r  = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr)
               z  = sigmoid(x W_iz^T + b_iz + h W_hz^T + b_hz)
               n  = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))
               h' = (1 - z) * n + z * h
    lstm_cell: i, f, g, o = split(x W_ih^T + b_ih + h W_hh^T + b_hh, 4)
               c' = sigmoid(f) * c + sigmoid(i) * tanh(g);  h' = sigmoid(o) * tanh(c')

This script gives the same weights to the hand-written cell, torch.nn's cell
and rnn_ext's cell, and prints the largest absolute difference of

  1. one step's output (and the gradients of a random projection of it with
     respect to the input and both weight matrices), for each cell;
  2. a 50-step sequence unrolled with the hand-written cell against the
     --impl layer (rnn_ext.GRU or torch.nn.GRU, ...) with the same weights;
     the per-step difference is plotted to --out.

    python examples/handwritten_cells.py                  # rnn, gru and lstm
    python examples/handwritten_cells.py --cell gru --impl torch --dtype float64

It exits non-zero if a difference exceeds the tolerance (1e-5 for float32,
1e-10 for float64).
"""
from __future__ import annotations

import sys

import torch
from torch import nn

import common  # noqa: I001  (puts the checkout's rnn_ext on sys.path if needed)
import rnn_ext
from rnn_ext import reference

HAND = {"rnn": reference.rnn_cell, "gru": reference.gru_cell, "lstm": reference.lstm_cell}
CELL_NAME = {"rnn": "RNNCell", "gru": "GRUCell", "lstm": "LSTMCell"}
LAYER_NAME = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}


def run_cell(kind, module_or_weights, x, state):
    """One step with a module (nn / rnn_ext cell) or with the hand-written function."""
    if isinstance(module_or_weights, nn.Module):
        return module_or_weights(x, state)
    w = module_or_weights
    if kind == "lstm":
        return HAND[kind](x, state[0], state[1], *w)
    return HAND[kind](x, state, *w)


def first(out):
    return out[0] if isinstance(out, tuple) else out


def check_step(kind, batch, input_size, hidden, dtype, device):
    """Max abs differences of outputs and gradients: hand-written vs nn vs rnn_ext."""
    torch_cell = getattr(nn, CELL_NAME[kind])(input_size, hidden, device=device, dtype=dtype)
    ext_cell = getattr(rnn_ext, CELL_NAME[kind])(input_size, hidden, device=device, dtype=dtype)
    ext_cell.load_state_dict(torch_cell.state_dict())
    hand_weights = [p.detach().clone().requires_grad_() for p in
                    (torch_cell.weight_ih, torch_cell.weight_hh, torch_cell.bias_ih, torch_cell.bias_hh)]
    x0 = torch.randn(batch, input_size, device=device, dtype=dtype)
    h0 = torch.randn(batch, hidden, device=device, dtype=dtype)
    c0 = torch.randn(batch, hidden, device=device, dtype=dtype)
    probe = torch.randn(batch, hidden, device=device, dtype=dtype)

    results = {}
    for name, impl in [("hand-written", hand_weights), ("torch.nn", torch_cell), ("rnn_ext", ext_cell)]:
        x = x0.clone().requires_grad_()
        state = (h0, c0) if kind == "lstm" else h0
        out = first(run_cell(kind, impl, x, state))
        if isinstance(impl, nn.Module):
            w_ih, w_hh = impl.weight_ih, impl.weight_hh
        else:
            w_ih, w_hh = impl[0], impl[1]
        grads = torch.autograd.grad((out * probe).sum(), [x, w_ih, w_hh])
        results[name] = [out.detach(), *grads]

    diffs = {}
    for other in ("torch.nn", "rnn_ext"):
        diffs[other] = [(a - b).abs().max().item() for a, b in zip(results["hand-written"], results[other])]
    return diffs, torch_cell


def check_sequence(kind, impl, torch_cell, steps, batch, dtype, device):
    """Unroll the hand-written cell; compare every step with the --impl layer."""
    input_size, hidden = torch_cell.input_size, torch_cell.hidden_size
    layer = common.recurrent_layer(kind, impl)(input_size, hidden, device=device, dtype=dtype)
    with torch.no_grad():
        for src, dst in [("weight_ih", "weight_ih_l0"), ("weight_hh", "weight_hh_l0"),
                         ("bias_ih", "bias_ih_l0"), ("bias_hh", "bias_hh_l0")]:
            getattr(layer, dst).copy_(getattr(torch_cell, src))
    xs = torch.randn(steps, batch, input_size, device=device, dtype=dtype)
    w = [torch_cell.weight_ih, torch_cell.weight_hh, torch_cell.bias_ih, torch_cell.bias_hh]
    with torch.no_grad():
        ys, _ = layer(xs)  # (T, B, H), zero initial state
        h = torch.zeros(batch, hidden, device=device, dtype=dtype)
        state = (h, h.clone()) if kind == "lstm" else h
        per_step = []
        for t in range(steps):
            state = run_cell(kind, w, xs[t], state)
            per_step.append((first(state) - ys[t]).abs().max().item())
    return per_step


def main() -> None:
    p = common.make_parser(__doc__.splitlines()[0], cell="all", seed=0, extra_cells=("all",))
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--steps", type=int, default=None, help="sequence length (default 50, 10 with --quick)")
    args = p.parse_args()
    device = common.setup(args)
    if device.type == "cuda":
        # cuDNN RNNs use TF32 on Ampere+ by default (torch.backends.cudnn.allow_tf32), which
        # alone gives ~1e-4 differences; compare exact float32 arithmetic instead.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    dtype = getattr(torch, args.dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    steps = args.steps or (10 if args.quick else 50)
    kinds = ["rnn", "gru", "lstm"] if args.cell == "all" else [args.cell]
    batch, input_size, hidden = 4, 10, 20

    worst, curves = 0.0, {}
    print(f"{args.dtype}, batch {batch}, input {input_size}, hidden {hidden}; tolerance {tol:g}")
    for kind in kinds:
        fn = HAND[kind]
        print(f"\nreference.{fn.__name__} (rnn_ext/reference.py) vs nn.{CELL_NAME[kind]} "
              f"and rnn_ext.{CELL_NAME[kind]}: max abs diff")
        diffs, torch_cell = check_step(kind, batch, input_size, hidden, dtype, device)
        for other, (d_out, d_x, d_wih, d_whh) in diffs.items():
            print(f"  vs {other:9s} output {d_out:.2e}   grad x {d_x:.2e}   grad W_ih {d_wih:.2e}   "
                  f"grad W_hh {d_whh:.2e}")
            worst = max(worst, d_out, d_x, d_wih, d_whh)
        per_step = check_sequence(kind, args.impl, torch_cell, steps, batch, dtype, device)
        layer = common.recurrent_layer(kind, args.impl)
        print(f"  {steps} steps unrolled vs {layer.__module__}.{layer.__name__}: "
              f"max abs diff {max(per_step):.2e} (step 1: {per_step[0]:.2e}, last: {per_step[-1]:.2e})")
        worst = max(worst, max(per_step))
        curves[f"{fn.__name__} vs {args.impl} {LAYER_NAME[kind]}"] = (
            range(1, steps + 1), [max(d, 1e-18) for d in per_step])

    common.report({"max_abs_diff": f"{worst:.3e}"})
    common.plot_curves(common.out_path(args, "handwritten_cells", "diff"), curves,
                       title=f"hand-written cell vs {args.impl} layer ({args.dtype})",
                       xlabel="time step", ylabel="max |h_hand - h_layer|", logy=True)
    if worst > tol:
        print(f"FAILED: difference {worst:.2e} > tolerance {tol:g}")
        sys.exit(1)
    print("all hand-written cells match")


if __name__ == "__main__":
    main()
