"""Export of NC models to ONNX: one `ncnn_onnx::NormalizedConv` node (domain "ncnn_onnx", version 1)
per NC layer, plus a model-local function of standard ONNX ops with the same name (the fallback).

Importing this package registers the op's schema with `onnx.defs`, so `onnx.checker` and
`onnx.shape_inference` understand the node; that part needs only onnx. `export()` needs torch and
onnxscript and is loaded on first use.

    from ncnn_onnx.export import export
    model_proto = export(model.eval(), (example_input,), "model.onnx")

`diagnose()` and `repair()` (also torch-free) say what ONNX tools did to an exported file and re-attach the
fallback function a tool dropped (`ncnn-onnx check` / `ncnn-onnx repair`).
"""

from __future__ import annotations

import importlib

from .function import build_function
from .errors import ExportError
from .repair import Diagnosis, RepairError, diagnose, repair
from .schema import DOMAIN, OP_TYPE, VERSION, build_schema, register_schema

register_schema()

_LAZY = {"export": "exporter", "DEFAULT_OPSET": "exporter"}

__all__ = [
    "DEFAULT_OPSET", "DOMAIN", "OP_TYPE", "VERSION", "Diagnosis", "ExportError", "RepairError", "build_function",
    "build_schema", "diagnose", "export", "register_schema", "repair",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'ncnn_onnx.export' has no attribute {name!r}")
