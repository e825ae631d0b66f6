"""Run PyTorch's own ModuleInfo samples (torch.testing._internal.common_modules.module_db)
for the six recurrent modules against rnn_ext (NN_API.md §8).

For every sample of every module, dtype (float32, float64) and mode (train, eval):
- build torch.nn and rnn_ext modules from the same constructor input under the same seed;
  parameter init must be bitwise identical and the state_dict keys equal and in order;
- load nn's state_dict into rnn_ext (strict), run both forwards on independent copies of
  the inputs and compare every output tensor (PackedSequence: data, batch_sizes, indices);
- backpropagate the same random-weighted sum of the outputs through both and compare the
  gradients of every input tensor and every parameter;
- for non-packed samples, check mi.reference_fn (unbatched == batched-of-one) on rnn_ext.

And every module_error_inputs_func entry: rnn_ext raises the same exception type, matching
PyTorch's regex, and the exact message torch.nn raises.
"""
import copy
import functools
import re

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence
# torch.testing._internal imports expecttest, which torch does not install: the Makefile
# does; a machine without it (a GPU box with no network) skips this file instead of
# aborting the whole run at collection.
pytest.importorskip("expecttest", reason="torch.testing._internal needs expecttest")
from torch.testing._internal.common_modules import ModuleErrorEnum, module_db  # noqa: E402  (slow import: once)

import rnn_ext

# torch.nn on CUDA as an exact oracle: no cuDNN (TF32, no eval-mode backward)
pytestmark = pytest.mark.usefixtures("nn_without_cudnn")

MAP = {
    nn.LSTM: rnn_ext.LSTM,
    nn.GRU: rnn_ext.GRU,
    nn.RNN: rnn_ext.RNN,
    nn.LSTMCell: rnn_ext.LSTMCell,
    nn.GRUCell: rnn_ext.GRUCell,
    nn.RNNCell: rnn_ext.RNNCell,
}
INFOS = {info.module_cls.__name__: info for info in module_db if info.module_cls in MAP}
NAMES = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"]
DTYPES = [torch.float32, torch.float64]
# float32: the CPU kernels use their own exp/tanh (1-2 ulp), so allow a few float32 ulps of drift
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def _tol(dtype, want):
    """TOL, with atol relative to want's largest element when that is over 1: module_db draws
    inputs up to 9 in size, so a gradient sums terms of 10-100 and cancels to elements near 0,
    which float32 then holds only to ~1e-5 absolute (a GRU weight gradient, 2 layers, both
    directions: 1.7e-5 against nn.GRU at an element of 0.05)."""
    tol = dict(TOL[dtype])
    tol["atol"] *= max(1.0, want.abs().max().item()) if want.numel() else 1.0
    return tol


def _extra(info):
    return {"with_packed_sequence": True} if info.module_cls in (nn.RNN, nn.GRU) else {}


@functools.lru_cache(maxsize=None)
def _samples(name, device, dtype, training):
    # cached: tests only ever use independent copies of the sample tensors (_fresh). Seeded, so
    # that every run draws the same values: the first call comes at import, where the global
    # generator's state differs from process to process (the draws did, 2026-12-05).
    info = INFOS[name]
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device == "cuda" else []):
        torch.manual_seed(0)
        return tuple(info.module_inputs_func(info, device=device, dtype=dtype, requires_grad=True,
                                            training=training, **_extra(info)))


def _errors(name, device, dtype):
    info = INFOS[name]
    return list(info.module_error_inputs_func(info, device=device, dtype=dtype, requires_grad=False,
                                              training=True))


# Sample counts do not depend on device/dtype/mode; count them once for parametrisation.
N_SAMPLES = {n: len(_samples(n, "cpu", torch.float32, True)) for n in NAMES}
N_ERRORS = {n: len(_errors(n, "cpu", torch.float32)) for n in NAMES}
SAMPLE_IDS = [(n, i) for n in NAMES for i in range(N_SAMPLES[n])]
ERROR_IDS = [(n, i) for n in NAMES for i in range(N_ERRORS[n])]


def test_module_db_has_all_six_modules():
    assert sorted(INFOS) == sorted(NAMES)
    # module_db must actually provide samples, packed ones included for RNN/GRU
    assert N_SAMPLES["RNN"] == 64 and N_SAMPLES["GRU"] == 32 and N_SAMPLES["LSTM"] == 32
    assert all(N_SAMPLES[n] >= 2 for n in NAMES)
    assert all(N_ERRORS[n] >= 4 for n in NAMES)


# ----------------------------------------------------------------- helpers
def _fresh(obj):
    """An independent copy of a forward argument: new leaf tensors with the same values."""
    if isinstance(obj, PackedSequence):
        return PackedSequence(_fresh(obj.data), obj.batch_sizes, obj.sorted_indices, obj.unsorted_indices)
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone().requires_grad_(obj.requires_grad)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_fresh(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _fresh(v) for k, v in obj.items()}
    return obj


def _flatten(obj):
    """All tensors of a (nested) output or input, PackedSequence expanded into its fields."""
    if obj is None:
        return []
    if isinstance(obj, PackedSequence):
        return [obj.data, obj.batch_sizes] + [t for t in (obj.sorted_indices, obj.unsorted_indices) if t is not None]
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _flatten(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _flatten(o)]
    return []


def _structure(obj):
    if isinstance(obj, PackedSequence):
        return ("packed", obj.sorted_indices is None, obj.unsorted_indices is None)
    if isinstance(obj, torch.Tensor):
        return ("tensor", obj.dim())
    if isinstance(obj, (tuple, list)):
        return (type(obj).__name__, tuple(_structure(o) for o in obj))
    return type(obj).__name__


def _is_packed(mi):
    return any(isinstance(a, PackedSequence) for a in mi.forward_input.args)


def _dead_relu(mi):
    """A ReLU RNN can legitimately output all zeros (every unit inactive)."""
    return mi.constructor_input.kwargs.get("nonlinearity") == "relu" or "relu" in mi.constructor_input.args


def _build_pair(name, mi, device, dtype):
    info = INFOS[name]
    args, kwargs = mi.constructor_input.args, mi.constructor_input.kwargs
    torch.manual_seed(1234)
    ref = info.module_cls(*args, **kwargs)
    torch.manual_seed(1234)
    new = MAP[info.module_cls](*args, **kwargs)
    # identical init under the same seed (NN_API §2.4), before any conversion
    ref_params, new_params = list(ref.named_parameters()), list(new.named_parameters())
    assert [n for n, _ in ref_params] == [n for n, _ in new_params]
    for (n, a), (_, b) in zip(ref_params, new_params):
        assert a.shape == b.shape and torch.equal(a, b), f"init of {n} differs from torch.nn"
    return ref.to(device=device, dtype=dtype), new.to(device=device, dtype=dtype)


# ----------------------------------------------------------------- forward/backward parity
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,idx", SAMPLE_IDS, ids=[f"{n}-{i}" for n, i in SAMPLE_IDS])
def test_module_db_sample(device, name, idx, dtype, training):
    torch.manual_seed(idx)
    mi = _samples(name, device, dtype, training)[idx]
    ref, new = _build_pair(name, mi, device, dtype)

    assert list(ref.state_dict()) == list(new.state_dict())
    # with a different seed the weights would differ: prove load_state_dict transfers them
    new.load_state_dict(ref.state_dict(), strict=True)
    ref.train(training)
    new.train(training)
    for (n, a), (_, b) in zip(ref.named_parameters(), new.named_parameters()):
        assert a.dtype == b.dtype == dtype and a.device == b.device and torch.equal(a, b), n

    fargs, fkwargs = mi.forward_input.args, mi.forward_input.kwargs
    ref_args, ref_kwargs = _fresh(fargs), _fresh(fkwargs)
    new_args, new_kwargs = _fresh(fargs), _fresh(fkwargs)
    out_ref = ref(*ref_args, **ref_kwargs)
    out_new = new(*new_args, **new_kwargs)

    assert _structure(out_new) == _structure(out_ref)
    flat_ref, flat_new = _flatten(out_ref), _flatten(out_new)
    assert len(flat_ref) == len(flat_new) > 0
    for a, b in zip(flat_ref, flat_new):
        assert a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
        if a.is_floating_point():
            torch.testing.assert_close(b, a, **_tol(dtype, a))
        else:  # batch_sizes, sorted/unsorted indices: exactly the same
            assert torch.equal(a, b)
    # the comparison is not vacuous: outputs are not all zeros
    assert any(t.is_floating_point() and t.abs().sum() > 0 for t in flat_new) or _dead_relu(mi)

    # backward of the same random-weighted sum of all floating outputs
    float_ref = [t for t in flat_ref if t.is_floating_point()]
    float_new = [t for t in flat_new if t.is_floating_point()]
    gen = torch.Generator().manual_seed(99 + idx)
    weights = [torch.randn(t.shape, generator=gen, dtype=dtype).to(device) for t in float_ref]
    loss_ref = sum((w * t).sum() for w, t in zip(weights, float_ref))
    loss_new = sum((w * t).sum() for w, t in zip(weights, float_new))

    in_ref = [t for t in _flatten((ref_args, ref_kwargs)) if t.requires_grad]
    in_new = [t for t in _flatten((new_args, new_kwargs)) if t.requires_grad]
    assert len(in_ref) == len(in_new) > 0
    p_ref, p_new = list(ref.parameters()), list(new.parameters())
    g_ref = torch.autograd.grad(loss_ref, in_ref + p_ref, allow_unused=True)
    g_new = torch.autograd.grad(loss_new, in_new + p_new, allow_unused=True)
    names = [f"input{i}" for i in range(len(in_ref))] + [n for n, _ in ref.named_parameters()]
    for n, a, b in zip(names, g_ref, g_new):
        assert (a is None) == (b is None), f"gradient of {n}: nn {a is None}, rnn_ext {b is None}"
        if a is not None:
            torch.testing.assert_close(b, a, **_tol(dtype, a), msg=lambda m: f"grad of {n}: {m}")
    assert any(g is not None and g.abs().sum() > 0 for g in g_new) or _dead_relu(mi)

    # PyTorch's reference: the unbatched sample equals the batch-of-one run (not meaningful when packed)
    if mi.reference_fn is not None and not _is_packed(mi):
        with torch.no_grad():
            expected = mi.reference_fn(new, *_fresh(fargs), **_fresh(fkwargs))
            actual = new(*_fresh(fargs), **_fresh(fkwargs))
        exp_flat, act_flat = _flatten(expected), _flatten(actual)
        assert len(exp_flat) == len(act_flat) > 0
        for e, a in zip(exp_flat, act_flat):
            assert e.shape == a.shape
            torch.testing.assert_close(a, e, **_tol(dtype, e))


# ----------------------------------------------------------------- error inputs
def _raise_of(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - we compare whatever is raised
        return e
    return None


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,idx", ERROR_IDS, ids=[f"{n}-{i}" for n, i in ERROR_IDS])
def test_module_db_error_input(device, name, idx, dtype):
    ei = _errors(name, device, dtype)[idx]
    mi = ei.module_error_input
    info = INFOS[name]
    args, kwargs = mi.constructor_input.args, mi.constructor_input.kwargs

    def run(cls):
        if ei.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR:
            return _raise_of(lambda: cls(*args, **kwargs))
        m = cls(*args, **kwargs).to(device=device, dtype=kwargs.get("dtype", dtype))
        fargs, fkwargs = copy.deepcopy(mi.forward_input.args), copy.deepcopy(mi.forward_input.kwargs)
        return _raise_of(lambda: m(*fargs, **fkwargs))

    ref_exc = run(info.module_cls)
    new_exc = run(MAP[info.module_cls])
    # sanity: the entry does what PyTorch says for torch.nn
    assert type(ref_exc) is ei.error_type, repr(ref_exc)
    assert new_exc is not None, f"rnn_ext raised nothing; torch.nn raised {ref_exc!r}"
    assert type(new_exc) is ei.error_type, f"rnn_ext raised {new_exc!r}, expected {ei.error_type.__name__}"
    assert re.search(ei.error_regex, str(new_exc)), f"{str(new_exc)!r} does not match {ei.error_regex!r}"
    assert str(new_exc) == str(ref_exc)
