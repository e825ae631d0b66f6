"""Character-level language model on Alice's Adventures in Wonderland.

The model reads text one character at a time and predicts the next one. It is
trained with teacher forcing: for a window c_0 .. c_T of the book the input is
c_0 .. c_{T-1} and the target at every step is the true next character
c_1 .. c_T (never the model's own guess). Generation then feeds the model its
own samples, one character at a time, carrying the hidden state.

    python examples/charlm.py                     # LSTM, rnn_ext kernels
    python examples/charlm.py --impl torch        # same seed, torch.nn.LSTM
    python examples/charlm.py --cell gru --temperature 0.5

Data: examples/data/alice.txt, Lewis Carroll's "Alice's Adventures in
Wonderland" (1865, public domain), the Millennium Fulcrum Edition 2.9 text
(Project Gutenberg etext #11) as found in the Canterbury corpus; see
examples/data/README.md. The first 90% trains, the last 10% (the end of
chapter XI and chapter XII) is the validation text.

Outputs: validation perplexity (`metric: val_perplexity=...`, per character;
a uniform guess over the ~70 characters would score ~70), generated samples,
and a PNG of the training and validation loss.
"""
from __future__ import annotations

import math

import torch
from torch import nn

import common


class CharLM(nn.Module):
    def __init__(self, layer, vocab_size, embedding_dim=64, hidden_size=256, num_layers=1, dropout=0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.rnn = layer(embedding_dim, hidden_size, num_layers=num_layers, batch_first=True,
                         dropout=dropout if num_layers > 1 else 0.0)
        self.fc = nn.Linear(hidden_size, vocab_size)

    def forward(self, x, state=None):  # x: (B, T) char ids
        out, state = self.rnn(self.embedding(x), state)
        return self.fc(out), state  # logits (B, T, V)


def detach(state):
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


@torch.no_grad()
def evaluate(model, data, seq_len, streams, device):
    """Mean cross-entropy (nats/char) over `data`, read as `streams` contiguous
    streams in chunks of seq_len, carrying the hidden state across chunks."""
    model.eval()
    n = (len(data) - 1) // streams
    x_all = data[:n * streams].view(streams, n)
    y_all = data[1:n * streams + 1].view(streams, n)
    total, count, state = 0.0, 0, None
    for i in range(0, n, seq_len):
        x = x_all[:, i:i + seq_len].to(device)
        y = y_all[:, i:i + seq_len].to(device)
        logits, state = model(x, state)
        total += nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1),
                                             reduction="sum").item()
        count += y.numel()
    model.train()
    return total / count


@torch.no_grad()
def generate(model, prompt, length, chars, index, device, temperature=0.8, generator=None):
    model.eval()
    x = torch.tensor([[index[c] for c in prompt]], device=device)
    logits, state = model(x)  # warm the state on the prompt
    out = list(prompt)
    for _ in range(length):
        probs = torch.softmax(logits[0, -1] / temperature, dim=-1).cpu()
        nxt = int(torch.multinomial(probs, 1, generator=generator))
        out.append(chars[nxt])
        logits, state = model(torch.tensor([[nxt]], device=device), state)
    model.train()
    return "".join(out)


def main() -> None:
    p = common.make_parser(__doc__.splitlines()[0], cell="lstm", seed=0)
    p.add_argument("--steps", type=int, default=None, help="training steps (default 400, 30 with --quick)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64, help="characters per training window (BPTT length)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--embedding-dim", type=int, default=64)
    p.add_argument("--lr", type=float, default=6e-3)
    p.add_argument("--eval-every", type=int, default=None, help="steps between validations")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--sample-len", type=int, default=300)
    args = p.parse_args()
    device = common.setup(args)
    steps = args.steps or (30 if args.quick else 400)
    eval_every = args.eval_every or max(steps // (2 if args.quick else 10), 1)

    text = (common.DATA_DIR / "alice.txt").read_text(encoding="utf-8")
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([index[c] for c in text], dtype=torch.long)
    cut = int(len(data) * 0.9)
    train, val = data[:cut], data[cut:]
    if args.quick:
        val = val[:3000]
    print(f"{len(text)} characters, vocabulary {len(chars)}; train {len(train)}, validation {len(val)}")

    layer = common.recurrent_layer(args.cell, args.impl)
    model = CharLM(layer, len(chars), args.embedding_dim, args.hidden, args.layers).to(device)
    print(f"model: Embedding({len(chars)}, {args.embedding_dim}) -> {layer.__module__}.{layer.__name__}"
          f"({args.embedding_dim}, {args.hidden}, num_layers={args.layers}) -> Linear; "
          f"{sum(p.numel() for p in model.parameters())} parameters")
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=args.lr / 10)
    gen = torch.Generator().manual_seed(args.seed)

    train_curve, val_curve = ([], []), ([], [])
    running, count = 0.0, 0
    with common.Timer(device) as timer:
        bar = common.progress(range(1, steps + 1), desc="charlm", unit="step")
        for step in bar:
            # teacher forcing: random windows; input = chars t, target = chars t+1
            starts = torch.randint(0, len(train) - args.seq_len - 1, (args.batch_size,), generator=gen)
            window = torch.stack([train[s:s + args.seq_len + 1] for s in starts.tolist()]).to(device)
            x, y = window[:, :-1], window[:, 1:]
            logits, _ = model(x)
            loss = nn.functional.cross_entropy(logits.reshape(-1, len(chars)), y.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            running += loss.item()
            count += 1
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step % eval_every == 0 or step == steps:
                val_loss = evaluate(model, val, args.seq_len, 16, device)
                train_curve[0].append(step)
                train_curve[1].append(running / count)
                val_curve[0].append(step)
                val_curve[1].append(val_loss)
                common.say(f"step {step:4d}  train loss {running / count:.3f}  val loss {val_loss:.3f}  "
                           f"val perplexity {math.exp(val_loss):.2f}")
                running, count = 0.0, 0
        bar.close()

    val_loss = val_curve[1][-1]
    for prompt in ["Alice ", "The Queen "]:
        sample = generate(model, prompt, 60 if args.quick else args.sample_len, chars, index, device,
                          args.temperature, gen)
        print(f"\n--- sample (temperature {args.temperature}), prompt {prompt!r}:\n{sample}")
    print()
    common.report({"val_perplexity": math.exp(val_loss), "val_bits_per_char": val_loss / math.log(2)},
                  timer.seconds)
    common.plot_curves(common.out_path(args, "charlm", "loss"),
                       {"train (mean since last point)": train_curve, "validation": val_curve},
                       title=f"Alice char-LM ({args.impl} {args.cell}, hidden {args.hidden})",
                       xlabel="step", ylabel="cross-entropy (nats/char)")


if __name__ == "__main__":
    main()
