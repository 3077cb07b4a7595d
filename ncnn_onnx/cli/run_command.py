"""ncnn-onnx run model.onnx INPUTS... [--provider cpu|cuda] [--no-library] [--output-dir DIR] [--top-k K]"""

from __future__ import annotations

import os

import numpy as np


def add_arguments(p) -> None:
    p.add_argument("model", help="the .onnx file")
    p.add_argument("inputs", nargs="+", help=".npy, .npz or image files; each is run on its own")
    p.add_argument("--provider", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--no-library", action="store_true", help="plain onnxruntime (runs the fallback function)")
    p.add_argument("--output-dir", default=".", help="where <input>.<output>.npy files go (default: .)")
    p.add_argument("--top-k", type=int, default=5, help="classes to print for (N, classes) outputs")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")


def run(args) -> int:
    from . import deployed, inputs

    sess = deployed.session(args.model, args.provider, library=not args.no_library, threads=args.threads)
    sig = inputs.signature(sess)
    names = [o.name for o in sess.get_outputs()]
    os.makedirs(args.output_dir, exist_ok=True)
    for path in args.inputs:
        outputs = sess.run(None, inputs.load(path, sig))
        stem = os.path.splitext(os.path.basename(path))[0]
        for name, array in zip(names, outputs):
            target = os.path.join(args.output_dir, f"{stem}.{_safe(name)}.npy")
            np.save(target, array)
            print(f"{path}: {name} {array.shape} {array.dtype} -> {target}")
            if array.ndim == 2 and args.top_k > 0:
                for row, scores in enumerate(array.astype(np.float64)):
                    print(f"  sample {row}: top-{min(args.top_k, scores.size)} " + _top_k(scores, args.top_k))
    return 0


def _top_k(scores: np.ndarray, k: int) -> str:
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    order = np.argsort(-scores)[:k]
    return ", ".join(f"class {i} ({probs[i]:.3f})" for i in order)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
