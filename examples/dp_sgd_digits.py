"""DP-SGD with Opacus on scikit-learn's digits: an NC ResNet against its Conv+GroupNorm twin, trained at
the same privacy budget (epsilon, delta), with the same clipping, noise, sampling and schedule.

DP-SGD clips and noises per-sample gradients, so no layer may mix samples: BatchNorm is out, and the
usual substitute is GroupNorm. NC needs no batch statistics either: it standardizes each patch itself.
Opacus has no built-in per-sample rule for NC layers and computes theirs with torch.func (vmap over grad
of the layer), which the layer supports.

    python examples/dp_sgd_digits.py [--epochs 15] [--epsilon 4] [--delta 1e-5] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from torch import nn

from common import SmallResNet, digits, evaluate


def train_private(norm: str, args, data) -> tuple[float, float]:
    """Trains one model with DP-SGD; returns (test accuracy, epsilon spent)."""
    from opacus import PrivacyEngine
    from opacus.validators import ModuleValidator

    x_train, y_train, x_test, y_test = data
    torch.manual_seed(args.seed)
    model = SmallResNet(norm=norm, width=args.width)
    for m in model.modules():  # Opacus captures each layer's output gradient: no in-place activations
        if isinstance(m, nn.ReLU):
            m.inplace = False
    errors = ModuleValidator.validate(model, strict=False)
    assert not errors, errors
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x_train, y_train), batch_size=args.batch_size,
        generator=torch.Generator().manual_seed(args.seed),
    )
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    engine = PrivacyEngine(accountant="rdp", secure_mode=False)
    model, opt, loader = engine.make_private_with_epsilon(
        module=model, optimizer=opt, data_loader=loader, target_epsilon=args.epsilon, target_delta=args.delta,
        epochs=args.epochs, max_grad_norm=args.max_grad_norm,
    )
    noise = opt.noise_multiplier
    steps = 0
    for _ in range(args.epochs):
        model.train()
        for xb, yb in loader:
            if len(xb) == 0:  # Poisson sampling can draw an empty batch
                continue
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
            steps += 1
            if args.max_steps and steps >= args.max_steps:
                break
        if args.max_steps and steps >= args.max_steps:
            break
    _, acc = evaluate(model, x_test, y_test)
    eps = engine.get_epsilon(args.delta)
    print(f"  {norm.upper():<3} noise multiplier {noise:.3f}, {steps} steps, epsilon spent {eps:.2f}: "
          f"test accuracy {acc:.3f}")
    return acc, eps


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--epsilon", type=float, default=4.0)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--batch-size", type=int, default=64, help="expected batch size (Poisson sampling)")
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--upscale", type=int, default=1, help="1: the 8x8 digits as they are")
    parser.add_argument("--max-steps", type=int, default=0, help="stop early (for tests); 0: all epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = digits(seed=args.seed, upscale=args.upscale)
    print(f"DP-SGD on digits ({len(data[0])} train / {len(data[2])} test images), target epsilon "
          f"{args.epsilon}, delta {args.delta}, clip {args.max_grad_norm}, {args.epochs} epochs, "
          f"expected batch {args.batch_size}")
    results = {}
    start = time.perf_counter()
    with warnings.catch_warnings():
        # Opacus warns about its non-cryptographic RNG (secure_mode=False) and full backward hooks.
        warnings.simplefilter("ignore", UserWarning)
        for norm in ("nc", "gn"):
            results[norm] = train_private(norm, args, data)
    print(f"({time.perf_counter() - start:.0f}s)")
    return results


if __name__ == "__main__":
    main()
