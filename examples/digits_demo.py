"""End to end on scikit-learn's digits: train an NC ResNet at micro-batch size, export it to ONNX,
serve it with onnxruntime + the ncnn_onnx library, and compare with eager PyTorch.

NC standardizes every patch itself, so it needs no batch statistics and trains at batch size 2-4,
where BatchNorm breaks down (the paper's setting). The exported file also carries a standard-op
fallback, which plain onnxruntime runs; both deployed paths are checked against a float64 copy of
the eager model with the parity bar of ncnn_onnx.parity.

    python examples/digits_demo.py [--epochs 3] [--batch-size 4] [--out digits_nc.onnx]
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time

import numpy as np
import torch

from common import SmallResNet, digits, evaluate, train_epoch


def train(epochs: int, batch_size: int, lr: float, seed: int = 0):
    x_train, y_train, x_val, y_val = digits(seed=seed)
    torch.manual_seed(seed)
    model = SmallResNet(norm="nc")
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    steps = epochs * -(-len(x_train) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    print(f"training an NC ResNet on digits: {len(x_train)} train / {len(x_val)} validation images, "
          f"batch size {batch_size}")
    start = time.perf_counter()
    for epoch in range(epochs):
        train_loss = train_epoch(model, opt, x_train, y_train, batch_size, gen, schedule)
        val_loss, val_acc = evaluate(model, x_val, y_val)
        print(f"  epoch {epoch + 1}: train loss {train_loss:.3f}, validation loss {val_loss:.3f}, "
              f"accuracy {val_acc:.3f} ({time.perf_counter() - start:.0f}s)")
    return model.eval(), x_val, y_val


def serve(model, x_val, y_val, path: str) -> dict:
    """Export, then run every deployed path; returns {path: (accuracy, parity error)}."""
    import onnxruntime as ort

    from ncnn_onnx.export import export
    from ncnn_onnx.parity import bar, parity_error
    from ncnn_onnx.runtime import InferenceSession

    export(model, (x_val[:1],), path)
    print(f"exported to {path}")
    with torch.no_grad():
        eager = model(x_val).numpy()
        reference = copy.deepcopy(model).double()(x_val.double()).numpy()
    feed = {"input": x_val.numpy()}
    sessions = {
        "onnxruntime + ncnn_onnx library": InferenceSession(path),
        "plain onnxruntime (fallback)": ort.InferenceSession(path, providers=["CPUExecutionProvider"]),
    }
    results = {"eager PyTorch": eager}
    for label, sess in sessions.items():
        name = sess.get_inputs()[0].name
        results[label] = sess.run(None, {name: feed["input"]})[0]
    labels = y_val.numpy()
    limit = bar(np.float32)
    print(f"\n{'path':<34}{'accuracy':>9}{'parity error':>14}   (bar {limit:.0e} x max|Y|, vs float64)")
    summary = {}
    for label, logits in results.items():
        acc = float((logits.argmax(1) == labels).mean())
        err = parity_error(logits, reference)
        summary[label] = (acc, err)
        print(f"{label:<34}{acc:>9.3f}{err:>14.2e}   {'ok' if err <= limit else 'OVER THE BAR'}")
    return summary


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--out", default=None, help="where to write the .onnx file (default: a temporary file)")
    args = parser.parse_args(argv)
    model, x_val, y_val = train(args.epochs, args.batch_size, args.lr)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.out or os.path.join(tmp, "digits_nc.onnx")
        summary = serve(model, x_val, y_val, path)
    from ncnn_onnx.parity import bar

    if any(err > bar(np.float32) for _, err in summary.values()):
        raise SystemExit("a deployed path is over the parity bar")
    return summary


if __name__ == "__main__":
    main()
