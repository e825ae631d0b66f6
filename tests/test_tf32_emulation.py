"""The TF32 tolerances of the CUDA tests (test_cuda_persistent.check_tf32_errors), checked on the
CPU against an emulation of TF32 (tests/tf32_emulation.py): they pass TF32's own rounding at
the shapes the CUDA tests use, for every cell, and they fail a wrong recurrent product."""
import pytest

import tf32_emulation
from test_cuda_persistent import SHAPES, check_tf32_errors

CELLS = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]


def reference(cell, shape, seed, got):
    """The float64 run to compare a TF32 run `got` with: for RNN_RELU with relu' where `got`'s
    output is positive (as the CUDA tests' MaskedReluRNN)."""
    mask = got[0] > 0 if cell == "RNN_RELU" else None
    return tf32_emulation.run(cell, shape, seed, tf32=False, relu_mask=mask)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("cell", CELLS)
def test_tolerances_pass_tf32_rounding(cell, shape):
    for seed in range(20):
        got = tf32_emulation.run(cell, shape, seed, tf32=True)
        check_tf32_errors(cell, got, reference(cell, shape, seed, got), [0.0] * len(got))


@pytest.mark.parametrize("cell", CELLS)
def test_tolerances_catch_a_wrong_product(cell):
    shape = SHAPES[2]
    got = tf32_emulation.run(cell, shape, 0, tf32=True, w_hh_fault=True)
    with pytest.raises(AssertionError):
        check_tf32_errors(cell, got, reference(cell, shape, 0, got), [0.0] * len(got))


def test_relu_needs_the_mask():
    """Against plain float64 (relu' of its own), TF32's relu' flips put some RNN_RELU gradient
    far off at these shapes: why MaskedReluRNN is there."""
    worst = 0.0
    for seed in range(4):
        got = tf32_emulation.run("RNN_RELU", SHAPES[1], seed, tf32=True)
        want = tf32_emulation.run("RNN_RELU", SHAPES[1], seed, tf32=False)
        worst = max(worst, max(((g - w).abs().max() / w.abs().max()).item() for g, w in zip(got, want)))
    assert worst > 1e-2


@pytest.mark.parametrize("bidirectional", [False, True])
def test_masked_relu_rnn_is_nn_rnn_under_its_own_mask(bidirectional):
    """MaskedReluRNN (the CUDA tests' RNN_RELU reference under TF32) given nn.RNN's own output
    is nn.RNN: the same output, final state and gradients, in the same order (float64, CPU)."""
    import torch

    from test_cuda_persistent import MaskedReluRNN, run

    torch.manual_seed(0)
    ref = torch.nn.RNN(5, 7, nonlinearity="relu", bidirectional=bidirectional).double()
    D = 2 if bidirectional else 1
    x, h0 = torch.randn(6, 3, 5, dtype=torch.float64), torch.randn(D, 3, 7, dtype=torch.float64)
    want = run(ref, x.clone().requires_grad_(), h0.clone().requires_grad_())
    got = run(MaskedReluRNN(ref, want[0]), x.clone().requires_grad_(), h0.clone().requires_grad_())
    assert len(got) == len(want) == 4 + 4 * D  # out, h_n, x, h0, then the parameters
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
