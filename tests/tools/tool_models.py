"""What the tool tests share: one small residual NC model, exported once per session (with and without
the fallback function), its float64 eager reference, and how each deployed path runs a file.

Residual on purpose: onnxruntime's symbolic shape inference fails on a residual model whose NC output shape
it does not know (the Add cannot merge unknown dims). Eight channels, so that the NC weights (2.3 KiB) pass
onnx's default external-data threshold of 1 KiB."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx.reference import ReferenceEvaluator
from torch import nn

import ncnn_onnx.export  # noqa: F401  (registers the schema; onnx.reference then knows the op's defaults)
from ncnn_onnx import runtime
from ncnn_onnx.nn import NormalizedConv2d
from reference import assert_parity

DOMAIN, OP_TYPE = "ncnn_onnx", "NormalizedConv"


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = NormalizedConv2d(3, 8, 3, padding=1)
        self.block = NormalizedConv2d(8, 8, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def forward(self, x):
        y = torch.relu(self.stem(x))
        return self.head(y + torch.relu(self.block(y)))


@dataclass
class Exported:
    path: str            # with the fallback function
    no_fallback: str     # exported with fallback=False
    x: np.ndarray        # an input of another batch and size than the export's example
    y_ref: np.ndarray    # float64 eager output on x


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> Exported:
    torch.manual_seed(0)
    model = Residual().eval()
    folder = tmp_path_factory.mktemp("tool_models")
    example = torch.randn(1, 3, 8, 8)
    ncnn_onnx.export.export(model, (example,), str(folder / "nc.onnx"))
    ncnn_onnx.export.export(model, (example,), str(folder / "nc_no_fallback.onnx"), fallback=False)
    x = np.random.default_rng(3).standard_normal((2, 3, 10, 9)).astype(np.float32)
    with torch.no_grad():
        y_ref = copy.deepcopy(model).double()(torch.from_numpy(x).double()).numpy()
    return Exported(str(folder / "nc.onnx"), str(folder / "nc_no_fallback.onnx"), x, y_ref)


def nc_count(model) -> int:
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(os.fspath(model), load_external_data=False)
    return sum((n.domain, n.op_type) == (DOMAIN, OP_TYPE) for n in proto.graph.node)


def has_fallback(model) -> bool:
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(os.fspath(model), load_external_data=False)
    return any((f.domain, f.name) == (DOMAIN, OP_TYPE) for f in proto.functions)


def _feed(session_inputs, x):
    name = session_inputs[0].name
    dtype = np.float16 if session_inputs[0].type == "tensor(float16)" else np.float32
    return {name: x.astype(dtype)}


def run_plain(path, x) -> np.ndarray:
    """Plain onnxruntime: the fallback function (or whatever the file holds instead)."""
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    return session.run(None, _feed(session.get_inputs(), x))[0]


def run_library(path, x) -> np.ndarray:
    session = runtime.InferenceSession(os.fspath(path))
    return session.run(None, _feed(session.get_inputs(), x))[0]


def run_evaluator(path, x) -> np.ndarray:
    evaluator = ReferenceEvaluator(onnx.load(os.fspath(path)))
    name = evaluator.input_names[0]
    typed = onnx.load(os.fspath(path), load_external_data=False).graph.input[0].type.tensor_type.elem_type
    return evaluator.run(None, {name: x.astype(np.float16 if typed == onnx.TensorProto.FLOAT16 else np.float32)})[0]


def assert_runs_everywhere(path, exported: Exported, dtype=np.float32, evaluator: bool = True) -> None:
    """The promise of docs/op.md: the file runs with the library, in plain onnxruntime and in the reference
    evaluator, each within the parity bar of the eager float64 model (output type's bar)."""
    runs = {"library": run_library, "plain onnxruntime": run_plain}
    if evaluator:
        runs["onnx.reference"] = run_evaluator
    for name, run in runs.items():
        y = run(path, exported.x)
        assert y.shape == exported.y_ref.shape, name
        assert_parity(y, exported.y_ref, dtype)
