"""The paper's micro-batch comparison at small scale: the same small ResNet with GroupNorm vs NC.

Batch size 2, plain SGD (no momentum, no weight decay, as in the preprint), on scikit-learn's digits.
Writes training curves to a PNG and prints a table of validation loss and accuracy per epoch. It
reports whatever it measures; nothing here is tuned to favour either model.

    python examples/microbatch_comparison.py [--epochs 4] [--out microbatch.png] [--train-size N]
"""

from __future__ import annotations

import argparse
import time

import torch

from common import SmallResNet, digits, evaluate, train_epoch


def run(norm: str, data, epochs: int, batch_size: int, lr: float, seed: int) -> list[dict]:
    x_train, y_train, x_val, y_val = data
    torch.manual_seed(seed)
    model = SmallResNet(norm=norm)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(epochs):
        start = time.perf_counter()
        train_loss = train_epoch(model, opt, x_train, y_train, batch_size, gen)
        val_loss, val_acc = evaluate(model, x_val, y_val)
        history.append(dict(epoch=epoch + 1, train_loss=train_loss, val_loss=val_loss, val_acc=val_acc,
                            seconds=time.perf_counter() - start))
    return history


def plot(histories: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    for name, hist in histories.items():
        epochs = [h["epoch"] for h in hist]
        ax_loss.plot(epochs, [h["train_loss"] for h in hist], "--", label=f"{name} train")
        ax_loss.plot(epochs, [h["val_loss"] for h in hist], "-", label=f"{name} validation")
        ax_acc.plot(epochs, [h["val_acc"] for h in hist], "-o", label=name)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss (batch size 2, SGD)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="validation accuracy")
    ax_loss.legend()
    ax_acc.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--out", default="microbatch.png")
    args = parser.parse_args(argv)
    data = list(digits(seed=args.seed))
    if args.train_size:
        data[0], data[1] = data[0][: args.train_size], data[1][: args.train_size]
    histories = {
        name: run(norm, data, args.epochs, args.batch_size, args.lr, args.seed)
        for name, norm in (("ResNet+GN", "gn"), ("ResNet+NC", "nc"))
    }
    print(f"{'epoch':>5}" + "".join(f"{n + ' val loss':>22}{n + ' val acc':>21}" for n in histories))
    for i in range(args.epochs):
        print(f"{i + 1:>5}" + "".join(
            f"{h[i]['val_loss']:>22.4f}{h[i]['val_acc']:>21.3f}" for h in histories.values()))
    seconds = {n: sum(e["seconds"] for e in h) for n, h in histories.items()}
    print("training time: " + ", ".join(f"{n} {s:.1f}s" for n, s in seconds.items()))
    plot(histories, args.out)
    print(f"curves written to {args.out}")
    return histories


if __name__ == "__main__":
    main()
