"""What every export test does with an exported model: validate it, infer its shapes from scratch,
and run it in plain ONNX Runtime (no custom-op library: the embedded function runs) and in
onnx.reference.ReferenceEvaluator."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx.reference import ReferenceEvaluator

DOMAIN, OP_TYPE = "ncnn_onnx", "NormalizedConv"


def nc_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in proto.graph.node if (n.domain, n.op_type) == (DOMAIN, OP_TYPE)]


def initializer_names(proto: onnx.ModelProto) -> set[str]:
    return {t.name for t in proto.graph.initializer}


def attributes(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def check_model(proto: onnx.ModelProto) -> None:
    """checker full_check, then shape inference from a model stripped of every shape but the inputs':
    each NC output must come back with its type, rank, channel count and its input's symbolic batch."""
    onnx.checker.check_model(proto, full_check=True)
    stripped = onnx.ModelProto()
    stripped.CopyFrom(proto)
    del stripped.graph.value_info[:]
    for out in stripped.graph.output:
        out.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(stripped, strict_mode=True)
    values = list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output)
    types = {v.name: v.type.tensor_type for v in values}
    weights = {t.name: t for t in proto.graph.initializer}
    for node in nc_nodes(proto):
        t = types.get(node.output[0])
        assert t is not None and t.HasField("shape"), f"no inferred shape for {node.output[0]}"
        x = types[node.input[0]]
        assert t.elem_type == x.elem_type
        dims = t.shape.dim
        w = weights.get(node.input[1])
        if w is not None:
            assert len(dims) == len(w.dims)
            assert dims[1].dim_value == w.dims[0]
        batch = x.shape.dim[0]
        if batch.dim_param:
            assert dims[0].dim_param == batch.dim_param, f"batch dim {dims[0]} vs the node input's {batch}"


def session(proto: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run_ort(sess: ort.InferenceSession, *inputs: np.ndarray) -> np.ndarray:
    feeds = {i.name: np.ascontiguousarray(x) for i, x in zip(sess.get_inputs(), inputs)}
    return sess.run(None, feeds)[0]


def run_evaluator(proto: onnx.ModelProto, *inputs: np.ndarray) -> np.ndarray:
    evaluator = ReferenceEvaluator(proto)
    feeds = {name: np.ascontiguousarray(x) for name, x in zip(evaluator.input_names, inputs)}
    return evaluator.run(None, feeds)[0]
