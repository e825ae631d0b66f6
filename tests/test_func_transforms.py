"""torch.func transforms over rnn_ext modules: vjp, jacrev, vmap, jacfwd, hessian.

torch.nn's LSTM/GRU/RNN have no vmap batching rule, so the references here are
plain autograd (torch.autograd.grad, torch.autograd.functional.jacobian) on
torch.nn and Python loops, all in float64.
"""
import pytest
import torch
from torch import nn

import rnn_ext

NAMES = ["LSTM", "GRU", "RNN"]


def _pair(name):
    torch.manual_seed(0)
    ext = getattr(rnn_ext, name)(3, 4).double()
    ref = getattr(nn, name)(3, 4).double()
    ref.load_state_dict(ext.state_dict())
    return ext, ref


@pytest.mark.parametrize("name", NAMES)
def test_vjp_matches_autograd(name):
    # (before the fix, torch.func.vjp's cotangent path returned wrong gradients silently)
    ext, ref = _pair(name)
    x = torch.randn(5, 2, 3, dtype=torch.double)
    v = torch.randn(5, 2, 4, dtype=torch.double)
    _, vjp_fn = torch.func.vjp(lambda x: ext(x)[0], x)
    xr = x.clone().requires_grad_()
    want = torch.autograd.grad(ref(xr)[0], xr, v)[0]
    torch.testing.assert_close(vjp_fn(v)[0], want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_jacrev_matches_autograd_jacobian(name):
    ext, ref = _pair(name)
    x = torch.randn(4, 2, 3, dtype=torch.double)
    got = torch.func.jacrev(lambda x: ext(x)[0].sum(0))(x)
    want = torch.autograd.functional.jacobian(lambda x: ref(x)[0].sum(0), x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_matches_a_loop(name):
    ext, ref = _pair(name)
    xs = torch.randn(3, 5, 2, 3, dtype=torch.double)
    got = torch.vmap(lambda x: ext(x)[0])(xs)
    with torch.no_grad():
        want = torch.stack([ref(x)[0] for x in xs])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_jacfwd_over_parameters_matches_reverse_mode(name):
    ext, ref = _pair(name)
    x = torch.randn(4, 2, 3, dtype=torch.double)
    params = {k: v.detach() for k, v in ext.named_parameters()}
    got = torch.func.jacfwd(lambda p: torch.func.functional_call(ext, p, (x,))[0].sum())(params)
    ref.zero_grad()
    ref(x)[0].sum().backward()
    for k, p in ref.named_parameters():
        torch.testing.assert_close(got[k], p.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_hessian_matches_autograd_hessian(name):
    ext, ref = _pair(name)
    x = torch.randn(3, 2, 3, dtype=torch.double)
    got = torch.func.hessian(lambda x: ext(x)[0].pow(2).sum())(x)
    want = torch.autograd.functional.hessian(lambda x: ref(x)[0].pow(2).sum(), x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_tensor_leaked_from_a_finished_transform_trains_as_in_torch_nn():
    """A tensor stashed inside torch.func.grad outlives the transform as a dead wrapper;
    Function.apply unwraps such tensors, and so does rnn_ext's direct C++ apply (rnn_ext/_ops.py,
    _apply): without it backward raised 'Trying to backward through the graph a second time'."""
    grads = []
    for mod in (torch.nn, rnn_ext):
        torch.manual_seed(0)
        m = mod.LSTM(3, 4).double()
        leaked = {}

        def f(x):
            leaked["z"] = x * 2
            return (leaked["z"] ** 2).sum()

        torch.func.grad(f)(torch.randn(2, 1, 3, dtype=torch.float64))
        y, _ = m(leaked["z"])
        y.sum().backward()
        grads.append(m.weight_ih_l0.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)
