"""Export time, and inference latency of the exported fallback in plain ONNX Runtime vs eager PyTorch.

A ResNet-style CNN with NC layers (stem, three residual stages, pooling, linear head) and its twin with
plain nn.Conv2d in place of every NC layer (same weights), so each ratio has its physical reference:

- NC in ORT (the embedded standard-op function, no custom-op library) vs NC in eager PyTorch;
- NC in ORT vs the plain-Conv twin in ORT (the cost of NC's statistics in the fallback);
- NC in eager PyTorch vs the plain-Conv twin in eager PyTorch.

Every method runs interleaved in one process (one call each per round, medians over the rounds), with
the same thread count for PyTorch and ONNX Runtime, so the ratios hold on a noisy shared machine.

    python benchmarks/export.py [--threads 2] [--repeats 15] [--batch 4] [--size 96] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from ncnn_onnx.export import export
from ncnn_onnx.nn import NormalizedConv2d


def conv(cin, cout, k, stride=1, nc=True, **kw):
    cls = NormalizedConv2d if nc else nn.Conv2d
    return cls(cin, cout, k, stride, k // 2, **kw)


class Block(nn.Module):
    def __init__(self, cin, cout, stride, nc):
        super().__init__()
        self.conv1 = conv(cin, cout, 3, stride, nc, bias=False)
        self.conv2 = conv(cout, cout, 3, 1, nc)
        self.project = None if (cin, stride) == (cout, 1) else conv(cin, cout, 1, stride, nc)

    def forward(self, x):
        skip = x if self.project is None else self.project(x)
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + skip)


class ResNetStyle(nn.Module):
    def __init__(self, nc=True, width=32, classes=10):
        super().__init__()
        self.stem = conv(3, width, 3, 1, nc)
        self.pool = nn.MaxPool2d(2)
        self.stages = nn.Sequential(
            Block(width, width, 1, nc), Block(width, 2 * width, 2, nc), Block(2 * width, 4 * width, 2, nc)
        )
        self.head = nn.Linear(4 * width, classes)

    def forward(self, x):
        x = self.stages(self.pool(torch.relu(self.stem(x))))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def models():
    torch.manual_seed(0)
    nc = ResNetStyle(nc=True).eval()
    plain = ResNetStyle(nc=False).eval()
    plain.load_state_dict(nc.state_dict())
    return nc, plain


def session(proto, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--quick", action="store_true", help="3 repeats, batch 2, 64x64")
    args = parser.parse_args(argv)
    repeats, batch, size = (3, 2, 64) if args.quick else (args.repeats, args.batch, args.size)
    torch.set_num_threads(args.threads)
    nc, plain = models()
    example = torch.randn(2, 3, size, size)

    export_times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the plain twin has no NC layer, and export says so
        for _ in range(3 if args.quick else 5):
            export_times.append(timed(lambda: export(copy.deepcopy(nc), (example,))))
        plain_export = timed(lambda: export(plain, (example,)))
        nc_proto, plain_proto = export(nc, (example,)), export(plain, (example,))

    x = torch.randn(batch, 3, size, size)
    nc_sess, plain_sess = session(nc_proto, args.threads), session(plain_proto, args.threads)
    feed = {nc_sess.get_inputs()[0].name: x.numpy()}
    with torch.inference_mode():
        y_ref = nc(x).numpy()
    err = np.abs(nc_sess.run(None, feed)[0] - y_ref).max() / np.abs(y_ref).max()

    methods = {
        "NC, ORT fallback": lambda: nc_sess.run(None, feed),
        "NC, eager": lambda: nc(x),
        "Conv, ORT": lambda: plain_sess.run(None, feed),
        "Conv, eager": lambda: plain(x),
    }
    times = {name: [] for name in methods}
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first round warms caches and primitives
            for name, fn in methods.items():
                times[name].append(timed(fn))
    ms = {name: statistics.median(t[1:]) * 1e3 for name, t in times.items()}

    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {args.threads} threads, "
          f"ResNet-style CNN, batch {batch}, {size}x{size}, median of {repeats} interleaved repeats")
    print(f"export: NC model {statistics.median(export_times):.2f} s (median of {len(export_times)}), "
          f"plain-Conv twin {plain_export:.2f} s")
    print(f"fallback vs eager output: max|dY| / max|Y| = {err:.1e}")
    for name, value in ms.items():
        print(f"  {name:<18}{value:>9.2f} ms")
    print(f"NC ORT fallback / NC eager      {ms['NC, ORT fallback'] / ms['NC, eager']:.2f}x")
    print(f"NC ORT fallback / Conv ORT      {ms['NC, ORT fallback'] / ms['Conv, ORT']:.2f}x")
    print(f"NC eager / Conv eager           {ms['NC, eager'] / ms['Conv, eager']:.2f}x")


if __name__ == "__main__":
    main()
