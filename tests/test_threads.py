"""Thread safety: four Python threads running different models concurrently
(LSTM, GRU, RNN, bidirectional LSTM with projection; forward + backward, dense and
packed input) get bitwise the same outputs and gradients as serial runs.

The ops release the GIL inside the kernels and GEMMs, so the four threads really
overlap in C++; any shared mutable state (static scratch buffers, a shared
workspace, a cached stream or bias buffer) would show up as a mismatch or a crash.
A barrier starts the threads together, and the whole round is repeated.
"""
from __future__ import annotations

import threading

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnn_ext

ROUNDS = 4
ITERS_PER_THREAD = 6


def _jobs(device):
    """(name, module, input leaf, lengths or None) for each thread; different shapes per job."""
    specs = [
        ("lstm", rnn_ext.LSTM(5, 16, num_layers=2), (12, 6, 5), None),
        # batch 96 x 3*128 gates: several at::parallel_for chunks per step inside each thread
        ("gru", rnn_ext.GRU(7, 128, num_layers=2, batch_first=True), (96, 6, 7), None),
        ("rnn", rnn_ext.RNN(3, 20, nonlinearity="relu"), (15, 4, 3), [15, 3, 9, 15]),
        ("bilstm", rnn_ext.LSTM(6, 18, num_layers=2, bidirectional=True, proj_size=7), (9, 5, 6), [4, 9, 1, 7, 9]),
    ]
    jobs = []
    for k, (name, m, shape, lengths) in enumerate(specs):
        torch.manual_seed(100 + k)
        for p in m.parameters():
            p.data.uniform_(-0.4, 0.4)
        g = torch.Generator().manual_seed(200 + k)
        x = torch.randn(*shape, generator=g)
        jobs.append((name, m.to(device), x.to(device), lengths))
    return jobs


def _run(module, x, lengths):
    leaf = x.detach().clone().requires_grad_()
    inp = leaf
    if lengths is not None:
        inp = pack_padded_sequence(leaf, torch.tensor(lengths), batch_first=module.batch_first, enforce_sorted=False)
    out, hidden = module(inp)
    y = out.data if isinstance(out, PackedSequence) else out
    hs = list(hidden) if isinstance(hidden, tuple) else [hidden]
    loss = (y * y.detach().sin()).sum() + sum(h.square().sum() for h in hs)
    params = list(module.parameters())
    grads = torch.autograd.grad(loss, [leaf, *params])
    return [y.detach().clone()] + [h.detach().clone() for h in hs] + [g.clone() for g in grads]


def _same_bits(a, b):
    return len(a) == len(b) and all(u.shape == v.shape and torch.equal(u.view(torch.int32), v.view(torch.int32))
                                    for u, v in zip(a, b))


def test_concurrent_models_match_serial(device):
    jobs = _jobs(device)
    serial = {name: _run(m, x, lengths) for name, m, x, lengths in jobs}
    for name, res in serial.items():
        assert all(torch.isfinite(t).all() for t in res), name
        assert res[-1].abs().sum() > 0, name
    # the serial reference is itself reproducible
    for name, m, x, lengths in jobs:
        assert _same_bits(_run(m, x, lengths), serial[name]), f"{name}: serial runs differ"

    mismatches, errors = [], []
    for rnd in range(ROUNDS):
        barrier = threading.Barrier(len(jobs))

        def worker(name, m, x, lengths):
            try:
                barrier.wait(timeout=60)
                for it in range(ITERS_PER_THREAD):
                    if not _same_bits(_run(m, x, lengths), serial[name]):
                        mismatches.append((rnd, name, it))
                if device == "cuda":
                    torch.cuda.synchronize()
            except Exception as e:  # noqa: BLE001  (reported below)
                errors.append((rnd, name, repr(e)))

        threads = [threading.Thread(target=worker, args=job, name=f"rnn_ext-{job[0]}") for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in threads), "a worker thread hung"
    assert not errors, errors
    assert not mismatches, f"concurrent results differ from serial ones (round, model, iteration): {mismatches}"


def test_same_module_shared_by_threads(device):
    """Four threads calling ONE module (read-only weights) concurrently match the serial result."""
    name, m, x, lengths = _jobs(device)[3]  # bidirectional LSTM with projection, packed
    ref = _run(m, x, lengths)
    results, errors = [None] * 4, []
    barrier = threading.Barrier(4)

    def worker(k):
        try:
            barrier.wait(timeout=60)
            results[k] = [_run(m, x, lengths) for _ in range(ITERS_PER_THREAD)]
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    for k, runs in enumerate(results):
        assert runs is not None, f"thread {k} produced nothing"
        for it, r in enumerate(runs):
            assert _same_bits(r, ref), f"thread {k} iteration {it} differs from the serial result"
