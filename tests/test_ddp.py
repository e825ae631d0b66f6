"""rnn_ext under DistributedDataParallel (2 CPU processes, gloo).

Each rank trains on half of a fixed batch with loss = mean; DDP averages the
gradients, so after a few SGD steps the parameters must equal those of one
process training on the whole batch.
"""
import os
import socket
import subprocess
import sys
import textwrap

import torch
from torch import nn

import rnn_ext

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 4
T, B, I, H, OUT = 6, 8, 3, 5, 2

# Model, data and training step shared verbatim by the workers and the reference.
COMMON = textwrap.dedent(f"""
    import torch
    from torch import nn
    import rnn_ext

    T, B, I, H, OUT, STEPS = {T}, {B}, {I}, {H}, {OUT}, {STEPS}

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = rnn_ext.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True)
            self.head = nn.Linear(2 * H, OUT)

        def forward(self, x):
            y, (h, c) = self.lstm(x)
            return self.head(y[:, -1]) + c[-1].mean(-1, keepdim=True)  # per-sample terms only

    def make_model():
        torch.manual_seed(0)
        return Net().double()

    def make_data():
        g = torch.Generator().manual_seed(123)
        x = torch.randn(B, T, I, generator=g, dtype=torch.float64)
        y = torch.randn(B, OUT, generator=g, dtype=torch.float64)
        return x, y

    def train(model, x, y):
        opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.5)
        losses = []
        for _ in range(STEPS):
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses
""")

WORKER = textwrap.dedent("""
    import os, sys
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = make_model()
    ddp = DDP(model)
    x, y = make_data()
    half = B // world
    xs, ys = x[rank * half:(rank + 1) * half], y[rank * half:(rank + 1) * half]
    losses = train(ddp, xs, ys)
    assert type(ddp.module.lstm) is rnn_ext.LSTM
    torch.save({"params": {n: p.detach().clone() for n, p in model.named_parameters()}, "losses": losses},
               os.path.join(sys.argv[1], f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()
""")


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reference():
    ns = {}
    exec(COMMON, ns)
    model = ns["make_model"]()
    x, y = ns["make_data"]()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = ns["train"](model, x, y)
    return start, {n: p.detach() for n, p in model.named_parameters()}, losses


def test_ddp_two_ranks_match_single_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(COMMON + WORKER)
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   OMP_NUM_THREADS="1", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=90)
            logs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{log[-3000:]}"

    start, ref, ref_losses = _reference()
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    assert set(r0["params"]) == set(ref) and any("lstm.weight_hh_l1_reverse" == n for n in ref)
    for name, p in ref.items():
        assert not torch.allclose(p, start[name]), f"{name} did not train"
        # both ranks hold identical replicas ...
        torch.testing.assert_close(r0["params"][name], r1["params"][name], rtol=0, atol=0, msg=name)
        # ... equal to full-batch single-process training
        torch.testing.assert_close(r0["params"][name], p, rtol=1e-9, atol=1e-10, msg=name)
    # the mean of the per-rank half-batch losses is the full-batch loss at every step
    for l0, l1, lr in zip(r0["losses"], r1["losses"], ref_losses):
        assert abs((l0 + l1) / 2 - lr) < 1e-10
    assert ref_losses[-1] < ref_losses[0]


def test_reference_model_uses_rnn_ext():
    ns = {}
    exec(COMMON, ns)
    model = ns["make_model"]()
    assert type(model.lstm) is rnn_ext.LSTM and isinstance(model.head, nn.Linear)
    assert all(p.dtype == torch.float64 for p in model.parameters())
