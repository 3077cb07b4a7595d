"""The parity contract (docs/architecture.md, "Numerics"), stated once for the tests and for `ncnn-onnx check`.

Every deployed path must agree with a float64 reference to
    max|Y - Y_ref| <= PARITY_BAR[dtype] * max|Y_ref|
NumPy only: the check runs where torch is absent too.
"""

from __future__ import annotations

import numpy as np

PARITY_BAR = {
    "float64": 1e-10,
    "float32": 1e-4,
    "float16": 1e-2,
    "bfloat16": 2e-2,
}


def bar(dtype) -> float:
    """The bar for a NumPy dtype or scalar type, a torch dtype, or a dtype's name."""
    try:
        name = np.dtype(dtype).name
    except TypeError:  # torch dtypes and names NumPy lacks (bfloat16)
        name = str(dtype).replace("torch.", "")
    if name not in PARITY_BAR:
        raise ValueError(f"no parity bar for dtype {dtype}; known: {sorted(PARITY_BAR)}")
    return PARITY_BAR[name]


def parity_error(y, y_ref) -> float:
    """max|y - y_ref| / max|y_ref| (the figure the bar bounds), in float64."""
    y = np.asarray(y, dtype=np.float64)
    y_ref = np.asarray(y_ref, dtype=np.float64)
    if y.shape != y_ref.shape:
        raise ValueError(f"shape {y.shape} vs reference {y_ref.shape}")
    if y.size == 0:
        return 0.0
    return float(np.max(np.abs(y - y_ref)) / max(float(np.max(np.abs(y_ref))), 1e-30))
