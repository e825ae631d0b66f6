"""torch.backends.cudnn's settings for one block: flags() sets every flag at once, and it is the
only way once a torch.testing import has frozen plain assignments (disable_global_flags), so
this passes the current value of each flag not given."""
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
