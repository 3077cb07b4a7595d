"""Convert an existing convolutional model to NC, fine-tune it briefly, export it and serve it.

A ResNet with BatchNorm is trained first (standing in for a pretrained model), then `convert_model`
swaps every nn.Conv2d for a NormalizedConv2d carrying the same weights and replaces the BatchNorm right
after each one by nn.Identity. A short fine-tune at batch size 2 (where BatchNorm would struggle) adapts
the weights; the result is exported and served with onnxruntime + the library.

    python examples/convert_finetune.py [--pretrain-epochs 2] [--finetune-epochs 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import torch

from common import SmallResNet, digits, evaluate, train_epoch
from ncnn_onnx import convert_model


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=None)
    args = parser.parse_args(argv)
    x_train, y_train, x_val, y_val = digits()
    if args.train_size:
        x_train, y_train = x_train[: args.train_size], y_train[: args.train_size]
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)

    model = SmallResNet(norm="bn")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(args.pretrain_epochs):
        train_epoch(model, opt, x_train, y_train, 32, gen)
    _, acc_bn = evaluate(model, x_val, y_val)
    print(f"BatchNorm model (batch size 32): validation accuracy {acc_bn:.3f}")

    nc_model, report = convert_model(model, norms="following", return_report=True)
    print(report)
    _, acc_converted = evaluate(nc_model, x_val, y_val)
    print(f"converted, before fine-tuning: validation accuracy {acc_converted:.3f}")
    opt = torch.optim.SGD(nc_model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(args.finetune_epochs):
        train_epoch(nc_model, opt, x_train, y_train, 2, gen)
    _, acc_nc = evaluate(nc_model, x_val, y_val)
    print(f"NC model fine-tuned at batch size 2: validation accuracy {acc_nc:.3f}")

    from ncnn_onnx.export import export
    from ncnn_onnx.parity import parity_error
    from ncnn_onnx.runtime import InferenceSession

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "converted_nc.onnx")
        export(nc_model.eval(), (x_val[:1],), path)
        session = InferenceSession(path)
        served = session.run(None, {session.get_inputs()[0].name: x_val.numpy()})[0]
    with torch.no_grad():
        eager = nc_model(x_val).numpy()
    acc_served = float((served.argmax(1) == y_val.numpy()).mean())
    err = parity_error(served, eager)
    print(f"served with onnxruntime + library: accuracy {acc_served:.3f}, max|dY| / max|Y| vs eager {err:.2e}")
    return dict(bn=acc_bn, converted=acc_converted, nc=acc_nc, served=acc_served, parity=err,
                converted_layers=len(report.converted), removed_norms=len(report.removed_norms))


if __name__ == "__main__":
    main()
