"""torch.backends.cudnn's settings for one block. flags() sets every flag at once, and it is
the only way once a torch.testing import has frozen plain assignments (disable_global_flags):
this passes the current enabled, benchmark, deterministic, allow_tf32 (and benchmark_limit)
for those not given. flags() resets the rest to its defaults (fp32_precision "none"), which the
tests never set: mixing that newer per-operation API with allow_tf32 makes torch raise."""
import inspect

import torch


def cudnn_flags(**changes):
    b = torch.backends.cudnn
    params = inspect.signature(b.flags).parameters
    current = dict(enabled=b.enabled, benchmark=b.benchmark, deterministic=b.deterministic,
                   allow_tf32=b.allow_tf32)
    if "benchmark_limit" in params:
        current["benchmark_limit"] = b.benchmark_limit
    current.update(changes)
    return b.flags(**current)
