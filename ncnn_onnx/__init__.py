"""ncnn_onnx: Normalized Convolution layers for PyTorch, their ONNX export and ONNX Runtime kernels.

The PyTorch parts (`ncnn_onnx.nn`, `ncnn_onnx.functional`, `convert_model`) are loaded on first use,
so that `import ncnn_onnx.runtime` works for inference without torch installed.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "NormalizedConv1d": "nn",
    "NormalizedConv2d": "nn",
    "NormalizedConv3d": "nn",
    "convert_model": "convert",
    "ConversionReport": "convert",
    "normalized_conv1d": "functional",
    "normalized_conv2d": "functional",
    "normalized_conv3d": "functional",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'ncnn_onnx' has no attribute {name!r}")
