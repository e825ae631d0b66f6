"""Shared fixtures. CUDA cases are parametrised like CPU ones and skipped
cleanly when no GPU is present; nothing queries the GPU at import time."""
import pytest
import torch

import rnn_ext  # noqa: F401  (registers torch.ops.rnn_ext)
from cudnn_settings import cudnn_flags

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def pytest_collection_modifyitems(config, items):
    cuda_ok = None
    for item in items:
        if item.get_closest_marker("cuda") is None:
            continue
        if cuda_ok is None:  # first CUDA item: ask once, at run time
            cuda_ok = torch.cuda.is_available() and torch.ops.rnn_ext.lstm_forward.default.has_kernel_for_dispatch_key("CUDA")
        if not cuda_ok:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device and an rnn_ext build with CUDA kernels"))


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _full_float32():
    """nn.LSTM's cuDNN runs float32 as TF32 by default on sm_80+, and rnn_ext's CUDA kernels
    follow the same setting (csrc/matmul.h, float32_as_tf32): the tests compare float32 at full
    precision, so that setting is off unless a test turns it on (test_cuda_persistent's
    tf32_allowed). No effect on the CPU."""
    with cudnn_flags(allow_tf32=False):
        yield


@pytest.fixture
def nn_without_cudnn():
    """Run torch.nn's CUDA reference on its native (non-cuDNN) path: cuDNN uses
    TF32 by default and refuses backward in eval mode, so it is not an exact
    oracle. Files that compare against cuDNN itself (test_dtypes) don't use this."""
    with cudnn_flags(enabled=False):
        yield
