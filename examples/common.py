"""What the examples share: scikit-learn's digits as tensors, a small ResNet with a choice of norm,
and a plain training loop. Real data that ships inside a package, so every example runs offline."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from ncnn_onnx.nn import NormalizedConv2d


def digits(seed: int = 0, upscale: int = 2):
    """(x_train, y_train, x_val, y_val): 8x8 digits in [0, 1], upscaled to 16x16 by default."""
    data = load_digits()
    x = data.images.astype(np.float32)[:, None] / 16.0
    if upscale > 1:
        x = x.repeat(upscale, axis=2).repeat(upscale, axis=3)
    x_train, x_val, y_train, y_val = train_test_split(
        x, data.target, test_size=0.25, random_state=seed, stratify=data.target
    )
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return as_t(x_train), as_t(y_train).long(), as_t(x_val), as_t(y_val).long()


def _conv(norm: str, cin: int, cout: int, stride: int = 1) -> nn.Module:
    """A 3x3 conv unit: NC alone, or conv + GroupNorm (the paper's baseline) or + BatchNorm."""
    if norm == "nc":
        return NormalizedConv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
    conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
    if norm == "gn":
        return nn.Sequential(conv, nn.GroupNorm(4, cout))
    if norm == "bn":
        return nn.Sequential(conv, nn.BatchNorm2d(cout))
    raise ValueError(f"norm must be 'nc', 'gn' or 'bn', got {norm!r}")


class BasicBlock(nn.Module):
    def __init__(self, norm: str, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = _conv(norm, cin, cout, stride)
        self.conv2 = _conv(norm, cout, cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else _conv(norm, cin, cout, stride)

    def forward(self, x):
        return self.relu(self.conv2(self.relu(self.conv1(x))) + self.shortcut(x))


class SmallResNet(nn.Module):
    """Stem, two residual stages, global pooling, linear head."""

    def __init__(self, norm: str = "nc", width: int = 16, classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.stem = nn.Sequential(_conv(norm, in_channels, width), nn.ReLU(inplace=True))
        self.stage1 = BasicBlock(norm, width, width, 1)
        self.stage2 = BasicBlock(norm, width, 2 * width, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = self.stage2(self.stage1(self.stem(x)))
        return self.head(self.pool(x).flatten(1))


def small_resnet(norm: str = "nc", width: int = 16) -> SmallResNet:
    """Factory for the command line (`ncnn-onnx export examples.common:small_resnet`)."""
    return SmallResNet(norm=norm, width=width)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(cross-entropy loss, accuracy) without gradients, in eval mode."""
    model.eval()
    with torch.no_grad():
        logits = model(x)
        return nn.functional.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def train_epoch(model, opt, x, y, batch_size: int, generator: torch.Generator, schedule=None) -> float:
    """One epoch of minibatch training (stepping `schedule` per batch if given); the mean training loss."""
    model.train()
    order = torch.randperm(len(x), generator=generator)
    total = 0.0
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        if schedule is not None:
            schedule.step()
        total += loss.item() * len(idx)
    return total / len(x)
