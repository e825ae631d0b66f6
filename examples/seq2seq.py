"""Sequence to sequence: translate human-written dates into ISO 8601.

    "25 November 2026"              -> "2026-11-25"
    "November 25, 2026"             -> "2026-11-25"
    "Wednesday, 25 November 2026"   -> "2026-11-25"
    "25 Nov 2026", "25.11.2026"     -> "2026-11-25"

A bidirectional encoder GRU (--cell picks GRU, LSTM or RNN) reads the source
characters, packed so that every date's final states are its own; a linear
"bridge" joins the two directions' final states into the initial state of a
decoder GRU that writes the 10 output characters.

Teacher forcing: during training the decoder's input at step t is the true
character t-1 of the target, whatever it predicted, so all 10 steps are known
in advance and run as one call of the decoder layer. At test time the decoder
is fed its own previous prediction (greedy decoding), so it runs one step at a
time, carrying its state. Both paths are in `Seq2Seq.forward`.

    python examples/seq2seq.py                    # GRU, rnn_ext kernels
    python examples/seq2seq.py --impl torch       # same seed, torch.nn

Data is generated with Python's datetime: calendar days from 1900 to 2099,
10% of which are held out; the test set is 1000 dates (200 with --quick) drawn from held-out
days only, so the metric (`metric: exact_match=...`, the fraction of dates
translated exactly) measures generalisation to dates never seen in training.
"""
from __future__ import annotations

import datetime as dt
import random

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence

import common

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
FIRST, LAST = dt.date(1900, 1, 1), dt.date(2099, 12, 31)
TARGET_LEN = 10  # YYYY-MM-DD
PAD, BOS = "\0", "^"


def humanize(d: dt.date, rng: random.Random) -> str:
    """One of several unambiguous human formats (locale-independent month names)."""
    day = str(d.day) if rng.random() < 0.5 else f"{d.day:02d}"
    month, mon = MONTHS[d.month - 1], MONTHS[d.month - 1][:3]
    fmt = rng.randrange(5)
    if fmt == 0:
        return f"{day} {month} {d.year}"
    if fmt == 1:
        return f"{month} {day}, {d.year}"
    if fmt == 2:
        return f"{day} {mon} {d.year}"
    if fmt == 3:
        return f"{DAYS[d.weekday()]}, {day} {month} {d.year}"
    return f"{d.day:02d}.{d.month:02d}.{d.year}"


def split_days(seed: int = 1234, held_out: float = 0.1):
    days = [FIRST + dt.timedelta(days=i) for i in range((LAST - FIRST).days + 1)]
    random.Random(seed).shuffle(days)
    k = int(len(days) * held_out)
    return days[k:], days[:k]


class Vocab:
    def __init__(self, chars):
        self.chars = [PAD] + sorted(set(chars) - {PAD})
        self.index = {c: i for i, c in enumerate(self.chars)}

    def encode(self, s):
        return torch.tensor([self.index[c] for c in s], dtype=torch.long)

    def decode(self, ids):
        return "".join(self.chars[int(i)] for i in ids)


SRC = Vocab("".join(MONTHS) + "".join(DAYS) + "0123456789 ,.")
TGT = Vocab("0123456789-" + BOS)


def make_batch(days, rng, device):
    sources = [humanize(d, rng) for d in days]
    seqs = [SRC.encode(s) for s in sources]
    lengths = torch.tensor([len(s) for s in seqs])
    x = pad_sequence(seqs, batch_first=True).to(device)
    y = torch.stack([TGT.encode(d.isoformat()) for d in days]).to(device)
    return sources, x, lengths, y


class Seq2Seq(nn.Module):
    def __init__(self, layer, hidden_size=128, embedding_dim=32):
        super().__init__()
        self.src_embedding = nn.Embedding(len(SRC.chars), embedding_dim, padding_idx=0)
        # bidirectional: the day is at the start of most formats and the year at the end,
        # so the decoder starts from both ends' final states (joined by `bridge`)
        self.encoder = layer(embedding_dim, hidden_size, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * hidden_size, hidden_size)
        self.tgt_embedding = nn.Embedding(len(TGT.chars), embedding_dim)
        self.decoder = layer(embedding_dim, hidden_size, batch_first=True)
        self.fc = nn.Linear(hidden_size, len(TGT.chars))

    def encode(self, x, lengths):
        packed = pack_padded_sequence(self.src_embedding(x), lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        _, state = self.encoder(packed)
        # (2, B, H): forward and backward final states -> (1, B, H) for the decoder
        join = lambda s: torch.tanh(self.bridge(torch.cat([s[0], s[1]], 1))).unsqueeze(0)  # noqa: E731
        return tuple(join(s) for s in state) if isinstance(state, tuple) else join(state)

    def forward(self, x, lengths, target=None):
        """Logits (B, 10, V). With `target`: teacher forcing. Without: greedy decoding."""
        state = self.encode(x, lengths)
        bos = torch.full((x.size(0), 1), TGT.index[BOS], dtype=torch.long, device=x.device)
        if target is not None:
            # teacher forcing: step t gets the true character t-1 (BOS first), all steps at once
            prev = torch.cat([bos, target[:, :-1]], 1)
            out, _ = self.decoder(self.tgt_embedding(prev), state)
            return self.fc(out)
        outputs, prev = [], bos
        for _ in range(TARGET_LEN):  # inference: feed back the model's own previous guess
            out, state = self.decoder(self.tgt_embedding(prev), state)
            logits = self.fc(out)  # (B, 1, V)
            outputs.append(logits)
            prev = logits.argmax(-1)
        return torch.cat(outputs, 1)


@torch.no_grad()
def exact_match(model, days, device, seed, show=0):
    model.eval()
    rng = random.Random(seed)
    sources, x, lengths, y = make_batch(days, rng, device)
    pred = model(x, lengths).argmax(-1)
    model.train()
    ok = (pred == y).all(1)
    for i in range(show):
        mark = "ok" if ok[i] else "WRONG"
        print(f"  {sources[i]:30s} -> {TGT.decode(pred[i])}  ({mark}, expected {TGT.decode(y[i])})")
    return ok.float().mean().item(), (pred == y).float().mean().item()


def main() -> None:
    p = common.make_parser(__doc__.splitlines()[0], cell="gru", seed=0)
    p.add_argument("--steps", type=int, default=None, help="training steps (default 600, 30 with --quick)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--embedding-dim", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--test-size", type=int, default=None, help="held-out test dates (1000, 200 with --quick)")
    args = p.parse_args()
    device = common.setup(args)
    steps = args.steps or (30 if args.quick else 600)
    eval_every = max(steps // (2 if args.quick else 10), 1)

    train_days, held_out = split_days()
    test_size = args.test_size or (200 if args.quick else 1000)
    test_days = random.Random(1).sample(held_out, min(test_size, len(held_out)))
    print(f"{len(train_days)} training days, {len(held_out)} held-out days; test on {len(test_days)}")

    layer = common.recurrent_layer(args.cell, args.impl)
    model = Seq2Seq(layer, args.hidden, args.embedding_dim).to(device)
    print(f"model: encoder {layer.__module__}.{layer.__name__}({args.embedding_dim}, {args.hidden}, bidirectional), "
          f"decoder {layer.__name__}({args.embedding_dim}, {args.hidden}); {sum(p.numel() for p in model.parameters())} parameters")
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps,
                                                    pct_start=0.1)
    criterion = nn.CrossEntropyLoss()
    rng = random.Random(args.seed)

    loss_curve, acc_curve = ([], []), ([], [])
    running, count = 0.0, 0
    with common.Timer(device) as timer:
        bar = common.progress(range(1, steps + 1), desc="seq2seq", unit="step")
        for step in bar:
            days = [rng.choice(train_days) for _ in range(args.batch_size)]
            _, x, lengths, y = make_batch(days, rng, device)
            logits = model(x, lengths, target=y)
            loss = criterion(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            running += loss.item()
            count += 1
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step % eval_every == 0 or step == steps:
                em, char_acc = exact_match(model, test_days, device, seed=2)
                loss_curve[0].append(step)
                loss_curve[1].append(running / count)
                acc_curve[0].append(step)
                acc_curve[1].append(em)
                common.say(f"step {step:4d}  train loss {running / count:.4f}  "
                           f"held-out exact match {em:.1%}  (characters {char_acc:.1%})")
                running, count = 0.0, 0
        bar.close()

    print("held-out examples (greedy decoding):")
    em, char_acc = exact_match(model, test_days, device, seed=2, show=8)
    common.report({"exact_match": em, "char_accuracy": char_acc}, timer.seconds)
    common.plot_curves(common.out_path(args, "seq2seq", "loss"), {"train loss": loss_curve},
                       title=f"dates -> ISO ({args.impl} {args.cell}); final exact match {em:.1%}",
                       xlabel="step", ylabel="cross-entropy (teacher forcing)", logy=True)


if __name__ == "__main__":
    main()
