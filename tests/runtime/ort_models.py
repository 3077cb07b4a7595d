"""Single-node NormalizedConv models built by hand with onnx.helper (no exporter, no fallback function,
so only the custom-op library can run them), the float64 reference for the same ONNX attributes, and the
CPU backends this machine can run."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from reference import nc_reference

DOMAIN = "ncnn_onnx"
OPSETS = [helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)]
TENSOR_TYPE = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float16): TensorProto.FLOAT16,
    np.dtype(np.float64): TensorProto.DOUBLE,
    np.dtype(np.int32): TensorProto.INT32,
}


def nc_model(w, b=None, *, x_dtype=None, name="nc", w_input=False, b_input=False, empty_b=False,
             **attributes) -> bytes:
    """A model computing Y = NormalizedConv(X, W[, B]); W and B are initializers unless *_input. With
    empty_b and no B the node names B with the empty string, as exporters write an absent bias."""
    w = np.asarray(w)
    x_type = TENSOR_TYPE[np.dtype(x_dtype or w.dtype)]
    inputs = [helper.make_tensor_value_info("X", x_type, None)]
    initializers = []
    names = ["X", "W"]
    for key, value, as_input in (("W", w, w_input), ("B", b, b_input)):
        if value is None:
            continue
        value = np.asarray(value)
        if as_input:
            inputs.append(helper.make_tensor_value_info(key, TENSOR_TYPE[value.dtype], None))
        else:
            initializers.append(numpy_helper.from_array(value, key))
        if key == "B":
            names.append("B")
    if b is None and empty_b:
        names.append("")
    node = helper.make_node("NormalizedConv", names, ["Y"], domain=DOMAIN, name=name, **attributes)
    graph = helper.make_graph([node], "nc", inputs, [helper.make_tensor_value_info("Y", x_type, None)], initializers)
    model = helper.make_model(graph, opset_imports=OPSETS)
    model.ir_version = 8
    return model.SerializeToString()


def onnx_pads(auto_pad, spatial, kernel, strides, dilations, pads):
    """ONNX Conv's begin/end pads, written out independently of the library."""
    k = len(kernel)
    if auto_pad in (None, "NOTSET"):
        return list(pads) if pads else [0] * (2 * k)
    if auto_pad == "VALID":
        return [0] * (2 * k)
    begin, end = [], []
    for d in range(k):
        out = math.ceil(spatial[d] / strides[d])
        total = max(0, (out - 1) * strides[d] + dilations[d] * (kernel[d] - 1) + 1 - spatial[d])
        small = total // 2
        first = small if auto_pad == "SAME_UPPER" else total - small
        begin.append(first)
        end.append(total - first)
    return begin + end


def reference(x, w, b=None, **attributes) -> np.ndarray:
    """Float64 NormalizedConv for ONNX-style attributes."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    k = w.ndim - 2
    strides = attributes.get("strides", [1] * k)
    dilations = attributes.get("dilations", [1] * k)
    pads = onnx_pads(attributes.get("auto_pad"), x.shape[2:], w.shape[2:], strides, dilations, attributes.get("pads"))
    y = nc_reference(
        x, w, None if b is None else np.asarray(b, dtype=np.float64), tuple(strides), tuple(pads), tuple(dilations),
        attributes.get("group", 1), attributes.get("epsilon", 1e-5), bool(attributes.get("center", 1)),
        bool(attributes.get("scale", 1)),
    )
    return y.numpy()


def available_isas() -> list[str]:
    """The CPU backends this machine runs (the library picks one per kernel from NCNN_ONNX_CPU_ISA)."""
    isas = ["portable"]
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return isas
    if all(f in flags for f in (" avx2", " fma", " f16c")):
        isas.append("avx2")
    if all(f in flags for f in (" avx512f", " avx512bw", " avx512vl", " avx512dq")):
        isas.append("avx512")
    return isas


def run_python(code: str, timeout: float = 120, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """Runs code in a fresh interpreter with the tests folder importable (and `env_extra` in its environment)."""
    env = dict(os.environ, **(env_extra or {}))
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([tests, os.path.dirname(os.path.abspath(__file__)), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)


def load(model: bytes) -> onnx.ModelProto:
    return onnx.load_from_string(model)
