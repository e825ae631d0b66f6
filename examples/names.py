"""Surname classification: guess a surname's language from its characters.

A bidirectional GRU (or LSTM / RNN with --cell) reads each name character by
character; the two final hidden states feed a linear classifier. Names have
different lengths, so a batch is padded, then packed with
pack_padded_sequence(..., enforce_sorted=False): the recurrent layer skips the
padding and returns each name's own last state in h_n, in the batch's order.

    python examples/names.py                       # bi-GRU, rnn_ext kernels
    python examples/names.py --impl torch          # same seed, torch.nn.GRU
    python examples/names.py --cell lstm --no-bidirectional

Data: examples/data/surnames.tsv, ~4000 surnames in 10 languages (Croatian,
Dutch, English, Finnish, French, German, Irish, Italian, Slovak, Spanish),
extracted from Faker's per-locale surname lists (MIT licence, see
examples/data/LICENSE-faker.txt). The file is committed, so this script needs
no extra package; to regenerate it, `pip install faker` and run
examples/data/make_surnames.py. The train/test split (80/20, stratified) is
fixed, so runs differ only by --seed's initialisation and batch order.

Outputs: test accuracy (`metric: test_accuracy=...`), a loss curve and a
confusion-matrix PNG in --out.
"""
from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence

import common

SPLIT_SEED = 1234


def load_surnames(path=common.DATA_DIR / "surnames.tsv"):
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, language = line.rstrip("\n").split("\t")
            pairs.append((name, language))
    return pairs


def split(pairs, test_fraction=0.2, seed=SPLIT_SEED):
    """Stratified split: the same fraction of every language goes to the test set."""
    by_lang = defaultdict(list)
    for name, lang in pairs:
        by_lang[lang].append(name)
    rng = random.Random(seed)
    train, test = [], []
    for lang in sorted(by_lang):
        names = sorted(by_lang[lang])
        rng.shuffle(names)
        k = int(round(len(names) * test_fraction))
        test += [(n, lang) for n in names[:k]]
        train += [(n, lang) for n in names[k:]]
    return train, test


class Vocab:
    def __init__(self, names):
        self.chars = ["<pad>"] + sorted({c for n in names for c in n})
        self.index = {c: i for i, c in enumerate(self.chars)}

    def encode(self, name):  # a character never seen maps to id 0 (padding)
        return torch.tensor([self.index.get(c, 0) for c in name], dtype=torch.long)


def make_batch(items, vocab, label_index, device):
    seqs = [vocab.encode(n) for n, _ in items]
    lengths = torch.tensor([len(s) for s in seqs])
    x = pad_sequence(seqs, batch_first=True, padding_value=0)
    y = torch.tensor([label_index[lang] for _, lang in items])
    return x.to(device), lengths, y.to(device)


class NameClassifier(nn.Module):
    def __init__(self, layer, vocab_size, num_classes, embedding_dim=32, hidden_size=128,
                 bidirectional=True, dropout=0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.rnn = layer(embedding_dim, hidden_size, batch_first=True, bidirectional=bidirectional)
        self.directions = 2 if bidirectional else 1
        self.fc = nn.Linear(hidden_size * self.directions, num_classes)

    def forward(self, x, lengths):
        emb = self.embedding(x)  # (B, T, E), padded
        # lengths must be a CPU int64 tensor; enforce_sorted=False sorts internally and
        # h_n comes back in the original batch order.
        packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h_n = self.rnn(packed)
        if isinstance(h_n, tuple):  # LSTM: (h_n, c_n)
            h_n = h_n[0]
        # h_n: (num_layers * directions, B, H); take the last layer's directions
        last = h_n[-self.directions:]
        features = torch.cat(list(last), dim=1)
        return self.fc(self.dropout(features))


@torch.no_grad()
def evaluate(model, data, vocab, label_index, device, batch_size=512):
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    total_loss, preds = 0.0, []
    for i in range(0, len(data), batch_size):
        x, lengths, y = make_batch(data[i:i + batch_size], vocab, label_index, device)
        logits = model(x, lengths)
        total_loss += criterion(logits, y).item()
        preds.append(logits.argmax(1).cpu())
    model.train()
    preds = torch.cat(preds)
    truth = torch.tensor([label_index[lang] for _, lang in data])
    return total_loss / len(data), (preds == truth).float().mean().item(), preds, truth


def main() -> None:
    p = common.make_parser(__doc__.splitlines()[0], cell="gru", seed=0)
    p.add_argument("--epochs", type=int, default=None, help="default 10, 2 with --quick")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--embedding-dim", type=int, default=32)
    p.add_argument("--dropout", type=float, default=0.3, help="dropout before the classifier")
    p.add_argument("--bidirectional", action=argparse_bool(), default=True,
                   help="bidirectional recurrent layer")
    args = p.parse_args()
    device = common.setup(args)
    epochs = args.epochs or (2 if args.quick else 10)

    pairs = load_surnames()
    train, test = split(pairs)
    if args.quick:  # a small, still stratified, subset
        train, test = train[::5], test[::4]
    languages = sorted({lang for _, lang in pairs})
    label_index = {lang: i for i, lang in enumerate(languages)}
    vocab = Vocab(n for n, _ in pairs)
    print(f"{len(pairs)} surnames, {len(languages)} languages, {len(vocab.chars) - 1} characters; "
          f"train {len(train)}, test {len(test)}")

    layer = common.recurrent_layer(args.cell, args.impl)
    model = NameClassifier(layer, len(vocab.chars), len(languages), args.embedding_dim, args.hidden,
                           args.bidirectional, args.dropout).to(device)
    print(f"model: Embedding -> {layer.__module__}.{layer.__name__}(bidirectional={args.bidirectional}) "
          f"-> Linear; {sum(p.numel() for p in model.parameters())} parameters")
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    criterion = nn.CrossEntropyLoss()
    order_rng = random.Random(args.seed)

    train_losses, test_losses, test_accs = [], [], []
    with common.Timer(device) as timer:
        steps = epochs * ((len(train) + args.batch_size - 1) // args.batch_size)
        bar = common.progress(total=steps, desc="names", unit="batch")
        for epoch in range(1, epochs + 1):
            data = train[:]
            order_rng.shuffle(data)
            running, seen = 0.0, 0
            for i in range(0, len(data), args.batch_size):
                x, lengths, y = make_batch(data[i:i + args.batch_size], vocab, label_index, device)
                optimizer.zero_grad()
                loss = criterion(model(x, lengths), y)
                loss.backward()
                optimizer.step()
                running += loss.item() * len(y)
                seen += len(y)
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{running / seen:.3f}")
            test_loss, test_acc, _, _ = evaluate(model, test, vocab, label_index, device)
            train_losses.append(running / seen)
            test_losses.append(test_loss)
            test_accs.append(test_acc)
            common.say(f"epoch {epoch:2d}  train loss {running / seen:.3f}  test loss {test_loss:.3f}  "
                       f"test accuracy {test_acc:.1%}")
        bar.close()

    _, test_acc, preds, truth = evaluate(model, test, vocab, label_index, device)
    matrix = np.zeros((len(languages), len(languages)), dtype=np.int64)
    for t, q in zip(truth.tolist(), preds.tolist()):
        matrix[t, q] += 1
    print("per-language test accuracy: " + ", ".join(
        f"{lang} {matrix[i, i] / max(matrix[i].sum(), 1):.0%}" for i, lang in enumerate(languages)))

    examples = ["Smith", "Müller", "Bianchi", "Fernández", "Korhonen", "Kovačević", "de Vries",
                "Lefebvre", "Ó Briain", "Kováč"]
    known = {n for n, _ in train}
    with torch.no_grad():
        model.eval()
        x, lengths, _ = make_batch([(n, languages[0]) for n in examples], vocab, label_index, device)
        probs = model(x, lengths).softmax(1).cpu()
    for name, pr in zip(examples, probs):
        top = pr.topk(3)
        seen = "  (in the training set)" if name in known else ""
        print(f"  {name:10s} -> " + ", ".join(f"{languages[j]} {v:.0%}" for v, j in zip(top.values, top.indices))
              + seen)

    common.report({"test_accuracy": test_acc}, timer.seconds)
    xs = range(1, epochs + 1)
    common.plot_curves(common.out_path(args, "names", "loss"),
                       {"train": (xs, train_losses), "test": (xs, test_losses)},
                       title=f"surname -> language ({args.impl} {args.cell})", ylabel="cross-entropy")
    common.plot_confusion(common.out_path(args, "names", "confusion"), matrix, languages,
                          title=f"test confusion, accuracy {test_acc:.1%} ({args.impl} {args.cell})")


def argparse_bool():
    import argparse
    return argparse.BooleanOptionalAction


if __name__ == "__main__":
    main()
