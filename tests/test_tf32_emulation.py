"""The TF32 tolerances of the CUDA tests (test_cuda_persistent.check_tf32_errors), checked on the
CPU against an emulation of TF32 (tests/tf32_emulation.py): they pass TF32's own rounding at
the shapes the CUDA tests use, for every cell, and they fail a wrong recurrent product."""
import pytest

import tf32_emulation
from test_cuda_persistent import SHAPES, check_tf32_errors

CELLS = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("cell", CELLS)
def test_tolerances_pass_tf32_rounding(cell, shape):
    for seed in range(3):
        want = tf32_emulation.run(cell, shape, seed, tf32=False)
        got = tf32_emulation.run(cell, shape, seed, tf32=True)
        check_tf32_errors(cell, got, want, [0.0] * len(want))


@pytest.mark.parametrize("cell", CELLS)
def test_tolerances_catch_a_wrong_product(cell):
    shape = SHAPES[2]
    want = tf32_emulation.run(cell, shape, 0, tf32=False)
    got = tf32_emulation.run(cell, shape, 0, tf32=True, w_hh_fault=True)
    with pytest.raises(AssertionError):
        check_tf32_errors(cell, got, want, [0.0] * len(want))
