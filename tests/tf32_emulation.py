"""TF32 emulated on the CPU: one layer of LSTM / GRU / RNN in float32 with every matrix
product's inputs rounded to TF32 (10 mantissa bits, to nearest) first, as the CUDA kernels
compute with TF32 allowed (torch.backends.cudnn.allow_tf32, nn.LSTM's setting, which rnn_ext
follows), next to the same layer in float64.
It sizes the TF32 tolerances of tests/test_cuda_persistent.py (check_tf32_errors) without
a GPU; `python tests/tf32_emulation.py` prints the errors it finds."""
import torch


def round_tf32(t):
    """t (float32) rounded to TF32's 10 mantissa bits, ties away from zero (cvt.rna.tf32)."""
    bits = t.float().contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


class _Product(torch.autograd.Function):
    """a @ b, and its two gradient products, on TF32-rounded inputs when `tf32`."""

    @staticmethod
    def forward(ctx, a, b, tf32):
        ctx.save_for_backward(a, b)
        ctx.tf32 = tf32
        return round_tf32(a) @ round_tf32(b) if tf32 else a @ b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        mm = (lambda x, y: round_tf32(x) @ round_tf32(y)) if ctx.tf32 else (lambda x, y: x @ y)
        return mm(g, b.t()), mm(a.t(), g), None


def run(cell, shape, seed, tf32, w_hh_fault=False, relu_mask=None):
    """Output, final states and the gradients of x, the initial states and the four
    parameters for a fixed random loss: float32 with TF32 products (tf32) or float64.
    w_hh_fault: the recurrent product uses W_hh with its rows rolled by one (a wrong tile, to
    check that the tolerances catch one). relu_mask (RNN_RELU): relu replaced by this 0/1 mask
    of the output (T, B, H), e.g. where another run's output is positive: its relu' then."""
    T, B, I, H = shape
    torch.manual_seed(seed)
    NG = {"LSTM": 4, "GRU": 3}.get(cell, 1)
    k = H ** -0.5
    params = [torch.empty(NG * H, I).uniform_(-k, k), torch.empty(NG * H, H).uniform_(-k, k),
              torch.empty(NG * H).uniform_(-k, k), torch.empty(NG * H).uniform_(-k, k)]
    x, h0, c0 = torch.randn(T, B, I), torch.randn(B, H), torch.randn(B, H)
    dtype = torch.float32 if tf32 else torch.float64
    params = [p.to(dtype).requires_grad_() for p in params]
    x, h0, c0 = (t.to(dtype).requires_grad_() for t in (x, h0, c0))
    w_ih, w_hh, b_ih, b_hh = params
    w_rec = w_hh.roll(1, 0) if w_hh_fault else w_hh
    xg = _Product.apply(x.reshape(T * B, I), w_ih.t(), tf32).reshape(T, B, NG * H)
    h, c, outs = h0, c0, []
    for t in range(T):
        hg = _Product.apply(h, w_rec.t(), tf32)
        if cell == "LSTM":
            i, f, g, o = (xg[t] + hg + b_ih + b_hh).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        elif cell == "GRU":
            xr, xz, xn = (xg[t] + b_ih).chunk(3, 1)
            hr, hz, hn = (hg + b_hh).chunk(3, 1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            h = n + z * (h - n)
        else:
            pre = xg[t] + hg + b_ih + b_hh
            if cell == "RNN_TANH":
                h = torch.tanh(pre)
            else:
                h = torch.relu(pre) if relu_mask is None else pre * relu_mask[t].to(pre.dtype)
        outs.append(h)
    states = [torch.stack(outs), h] + ([c] if cell == "LSTM" else [])
    gen = torch.Generator().manual_seed(2)
    loss = sum((v.double() * torch.randn(v.shape, generator=gen, dtype=torch.float64)).sum() for v in states)
    leaves = [x, h0] + ([c0] if cell == "LSTM" else []) + params
    grads = torch.autograd.grad(loss, leaves)
    return [v.detach().double() for v in states + list(grads)]


if __name__ == "__main__":
    for cell in ("LSTM", "GRU", "RNN_TANH", "RNN_RELU"):
        for shape in ((7, 3, 5, 20), (5, 19, 16, 299), (6, 16, 8, 64)):
            for seed in range(4):
                want, got = run(cell, shape, seed, False), run(cell, shape, seed, True)
                errors = [((g - w).abs().max() / w.abs().max()).item() for g, w in zip(got, want)]
                print(cell, shape, seed, " ".join(f"{e:.1e}" for e in errors))
