"""Run-to-run determinism: outputs and gradients are bitwise identical.

For LSTM (with and without projection), GRU and RNN (tanh / relu), multi-layer
and bidirectional, with dense and packed (unsorted) input, on CPU and CUDA
(`device` fixture), with torch.use_deterministic_algorithms off and on (the
flag is restored afterwards). The kernels claim determinism (no atomics; bias
gradients are a plain column sum), so repeated runs must agree bit for bit,
not just within a tolerance. Dropout between layers draws its masks from the
global generator: the same manual_seed gives identical results, a different
seed gives different ones (so the dropout really is active).
"""
from __future__ import annotations

import os

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnn_ext

REPEATS = 3
CASES = [
    ("LSTM", {}),
    ("LSTM", {"proj_size": 3}),
    ("GRU", {}),
    ("RNN", {"nonlinearity": "tanh"}),
    ("RNN", {"nonlinearity": "relu"}),
]
IDS = ["lstm", "lstm_proj", "gru", "rnn_tanh", "rnn_relu"]


@pytest.fixture
def deterministic_flag(request, monkeypatch):
    """Sets torch.use_deterministic_algorithms for the test and restores the previous state."""
    on = request.param
    before, before_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    # cuBLAS needs a fixed workspace config for deterministic mode (else torch raises on CUDA mm)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8"))
    torch.use_deterministic_algorithms(on)
    try:
        yield on
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)
    assert torch.are_deterministic_algorithms_enabled() == before


@pytest.fixture
def one_intra_op_thread():
    """The small-shape grid runs single-threaded (its steps have <= 5 rows, which the kernels never
    split anyway): on a shared 2-core CI box, OpenMP regions with a descheduled second thread made
    this file 50x slower. Multi-threaded row splitting has its own test below."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(name, kw, device, dtype, dropout=0.0):
    torch.manual_seed(11)
    m = getattr(rnn_ext, name)(7, 6, num_layers=3, bidirectional=True, dropout=dropout, dtype=dtype, **kw)
    return m.to(device)


LENGTHS = [4, 9, 1, 7, 7]  # unsorted, with ties


def _inputs(packed, device, dtype):
    """A leaf input tensor (T, B, 7) on `device`; packing happens per run (it is part of the graph)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(9, 5, 7, generator=g, dtype=dtype).to(device).requires_grad_()
    return x, packed


def _run(m, x, packed, device, dtype):
    """Forward + backward with fixed cotangents; returns a flat list of result tensors."""
    m.zero_grad(set_to_none=True)
    x.grad = None
    inp = pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False) if packed else x
    out, hidden = m(inp)
    y = out.data if isinstance(out, PackedSequence) else out
    hs = list(hidden) if isinstance(hidden, tuple) else [hidden]
    g = torch.Generator().manual_seed(5)
    loss = (y * torch.randn(y.shape, generator=g, dtype=dtype).to(device)).sum()
    loss = loss + sum((h * torch.randn(h.shape, generator=g, dtype=dtype).to(device)).sum() for h in hs)
    loss.backward()
    res = [y.detach().clone()] + [h.detach().clone() for h in hs] + [x.grad.clone()]
    res += [p.grad.clone() for p in m.parameters()]
    return res


def _assert_bitwise(a, b, what):
    assert len(a) == len(b)
    for k, (u, v) in enumerate(zip(a, b)):
        assert u.shape == v.shape and u.dtype == v.dtype, f"{what}[{k}]"
        # torch.equal treats -0.0 == 0.0; compare the raw bits as well
        assert torch.equal(u, v), f"{what}[{k}]: values differ (max |diff| {(u - v).abs().max().item():.3e})"
        assert torch.equal(u.view(torch.int32 if u.dtype == torch.float32 else torch.int64),
                           v.view(torch.int32 if v.dtype == torch.float32 else torch.int64)), f"{what}[{k}]: bits differ"


@pytest.mark.parametrize("deterministic_flag", [False, True], ids=["nondet_flag", "det_flag"], indirect=True)
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_repeated_runs_bitwise_identical(device, name, kw, dtype, packed, deterministic_flag, one_intra_op_thread):
    m = _model(name, kw, device, dtype)
    x, inp = _inputs(packed, device, dtype)
    first = _run(m, x, inp, device, dtype)
    assert all(torch.isfinite(t).all() for t in first)
    assert first[-1].abs().sum() > 0  # gradients are not trivially zero
    for r in range(REPEATS - 1):
        _assert_bitwise(_run(m, x, inp, device, dtype), first, f"repeat {r + 1}")
    # a fresh module and fresh input tensors (new allocations) give the same bits too
    m2 = _model(name, kw, device, dtype)
    x2, inp2 = _inputs(packed, device, dtype)
    _assert_bitwise(_run(m2, x2, inp2, device, dtype), first, "fresh module")


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_deterministic_flag_does_not_change_results(device, name, kw, monkeypatch, one_intra_op_thread):
    """Results with and without torch.use_deterministic_algorithms(True) are bitwise equal."""
    dtype = torch.float64
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8"))
    before = torch.are_deterministic_algorithms_enabled()
    results = {}
    try:
        for flag in (False, True):
            torch.use_deterministic_algorithms(flag)
            m = _model(name, kw, device, dtype)
            x, inp = _inputs(True, device, dtype)
            results[flag] = _run(m, x, inp, device, dtype)
    finally:
        torch.use_deterministic_algorithms(before)
    assert torch.are_deterministic_algorithms_enabled() == before
    _assert_bitwise(results[True], results[False], "det vs nondet")


@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_dropout_same_seed_same_result(device, name, kw, packed, one_intra_op_thread):
    dtype = torch.float32
    m = _model(name, kw, device, dtype, dropout=0.4)
    m.train()
    x, inp = _inputs(packed, device, dtype)
    runs = []
    for seed in (123, 123, 124):
        torch.manual_seed(seed)
        runs.append(_run(m, x, inp, device, dtype))
    _assert_bitwise(runs[1], runs[0], "same seed")
    # a different seed draws different masks: the outputs differ (dropout is active)
    assert not torch.equal(runs[2][0], runs[0][0])
    # and in eval mode dropout is off: independent of the seed
    m.eval()
    evals = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        evals.append(_run(m, x, inp, device, dtype))
    _assert_bitwise(evals[1], evals[0], "eval mode")
    assert not torch.equal(evals[0][0], runs[0][0])


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_multithreaded_row_split_bitwise_identical(device, name):
    """Batch 96 x hidden 128: the CPU step kernels split rows across intra-op threads
    (at::parallel_for); results must not depend on the split or the thread count."""
    dtype = torch.float32
    torch.manual_seed(11)
    m = getattr(rnn_ext, name)(7, 128, num_layers=2, bidirectional=True, dtype=dtype).to(device)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 96, 7, generator=g, dtype=dtype).to(device).requires_grad_()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(max(2, threads))
        first = _run(m, x, False, device, dtype)
        _assert_bitwise(_run(m, x, False, device, dtype), first, "repeat, multi-threaded")
        torch.set_num_threads(1)
        single = _run(m, x, False, device, dtype)
    finally:
        torch.set_num_threads(threads)
    assert first[-1].abs().sum() > 0
    # the BLAS library may block GEMMs differently per thread count, so 1 vs many threads
    # is compared within rounding (bitwise equality is only required run to run)
    for k, (a, b) in enumerate(zip(single, first)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"1 vs many threads [{k}]: {m}")


def test_bitwise_check_is_sensitive():
    """The comparison helper rejects a one-ulp change (so the tests above can fail)."""
    a = [torch.tensor([1.0, 2.0], dtype=torch.float64)]
    b = [torch.nextafter(a[0], torch.tensor(3.0, dtype=torch.float64))]
    with pytest.raises(AssertionError):
        _assert_bitwise(a, b, "ulp")
    with pytest.raises(AssertionError):
        _assert_bitwise([torch.tensor([0.0])], [torch.tensor([-0.0])], "signed zero")
