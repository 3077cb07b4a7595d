"""Train a small Normalized-Convolution network on scikit-learn's digits at micro-batch size.

NC standardizes every patch itself, so it needs no batch statistics and trains at batch size 2-4,
where BatchNorm breaks down. Prints validation accuracy after each epoch.

    python examples/digits_demo.py [--epochs 3] [--batch-size 4]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from ncnn_onnx.nn import NormalizedConv2d


def small_nc_net(classes: int = 10) -> nn.Module:
    return nn.Sequential(
        NormalizedConv2d(1, 16, 3, padding=1),
        nn.ReLU(inplace=True),
        NormalizedConv2d(16, 32, 3, padding=1, stride=2),
        nn.ReLU(inplace=True),
        NormalizedConv2d(32, 32, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, classes),
    )


def digits(seed: int = 0):
    data = load_digits()
    x = data.images.astype(np.float32)[:, None] / 16.0  # (1797, 1, 8, 8)
    x_train, x_val, y_train, y_val = train_test_split(
        x, data.target, test_size=0.25, random_state=seed, stratify=data.target
    )
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return as_t(x_train), as_t(y_train).long(), as_t(x_val), as_t(y_val).long()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def train(model, x, y, epochs: int, batch_size: int, lr: float, seed: int = 0, on_epoch=None):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        if on_epoch is not None:
            on_epoch(epoch, loss.item())
    return model


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.02)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    x_train, y_train, x_val, y_val = digits()
    model = small_nc_net()
    print(f"digits: {len(x_train)} train / {len(x_val)} validation images, batch size {args.batch_size}")
    start = time.perf_counter()

    def report(epoch, loss):
        acc = accuracy(model, x_val, y_val)
        print(f"epoch {epoch + 1}: last loss {loss:.3f}, validation accuracy {acc:.3f} "
              f"({time.perf_counter() - start:.0f}s)")

    train(model, x_train, y_train, args.epochs, args.batch_size, args.lr, on_epoch=report)
    acc = accuracy(model, x_val, y_val)
    print(f"final validation accuracy of the NC network: {acc:.3f}")
    return acc


if __name__ == "__main__":
    main()
