"""The ONNX side of export: check and finish the graph that torch.onnx produced.

- every NC node's W and B become initializers when they are constant (no arithmetic on W is left);
- every NC node's element type is one the op has;
- the optional input B is written as "" when absent (the function has three formal inputs, and
  `onnx.reference` matches them by position);
- the fallback function is embedded, or not, and the model's metadata says which (`ncnn-onnx check` then
  tells a function a tool dropped from one that was never there).
"""

from __future__ import annotations

import ast
import logging
import warnings
from typing import Optional

import onnx
import onnx_ir as ir
import onnxscript.optimizer

from .function import build_function, working_type_for
from .errors import ExportError
from .repair import FALLBACK_METADATA_KEY, fallback_metadata
from .schema import DOMAIN, OP_TYPE

log = logging.getLogger("ncnn_onnx")

_SUPPORTED = {ir.DataType.FLOAT: "float32", ir.DataType.FLOAT16: "float16", ir.DataType.DOUBLE: "float64"}


def nc_nodes(model: ir.Model) -> list[ir.Node]:
    return [
        node for node in ir.traversal.RecursiveGraphIterator(model.graph)
        if node.domain == DOMAIN and node.op_type == OP_TYPE
    ]


def describe(node: ir.Node) -> str:
    """The node and, where torch.onnx recorded it, the module path of the layer it came from."""
    scopes = node.metadata_props.get("pkg.torch.onnx.name_scopes")
    layer = ""
    if scopes:
        try:
            path = [s for s in ast.literal_eval(scopes)[:-1] if s]
        except (ValueError, SyntaxError):
            path = []
        layer = f" (layer '{'.'.join(path) or '<root>'}')"
    return f"node '{node.name}'{layer}"


def fold_weights(model: ir.Model) -> None:
    """Constant-fold whatever computes the W and B of NC nodes, whatever its size, and nothing else."""
    targets: set[ir.Node] = set()
    for node in nc_nodes(model):
        stack = [v.producer() for v in node.inputs[1:] if v is not None and v.producer() is not None]
        while stack:
            producer = stack.pop()
            if producer not in targets:
                targets.add(producer)
                stack += [v.producer() for v in producer.inputs if v is not None and v.producer() is not None]
    if not targets:
        return
    onnxscript.optimizer.fold_constants(model, should_fold=lambda n: True if n in targets else None)
    onnxscript.optimizer.remove_unused_nodes(model)
    for node in nc_nodes(model):
        for value in node.inputs[1:]:
            if value is not None and not value.is_initializer():
                _to_initializer(model, value, node)


def _to_initializer(model: ir.Model, value: ir.Value, node: ir.Node) -> None:
    producer = value.producer()
    tensor = value.const_value
    if producer is not None and producer.op_type == "Constant" and producer.domain == "" and tensor is None:
        tensor = producer.attributes["value"].as_tensor()
    if tensor is None:
        # W computed from the graph's inputs is legal (the op takes W as an input), just not folded.
        log.warning("%s: input %r is computed at run time, not a constant", describe(node), value.name)
        return
    initializer = ir.Value(name=value.name, shape=ir.Shape(tensor.shape), type=ir.TensorType(tensor.dtype),
                           const_value=tensor)
    value.replace_all_uses_with(initializer)
    model.graph.register_initializer(initializer)
    onnxscript.optimizer.remove_unused_nodes(model)


def element_types(model: ir.Model) -> set[int]:
    """The ONNX element types of the NC nodes; raises ExportError for a type the op does not have."""
    found = set()
    for node in nc_nodes(model):
        dtype = node.inputs[0].dtype
        if dtype not in _SUPPORTED:
            raise ExportError(
                f"{describe(node)}: element type {dtype} is not a type of {DOMAIN}::{OP_TYPE} v1 "
                f"({', '.join(_SUPPORTED.values())})"
            )
        found.add(int(dtype))
    return found


def finish(proto: onnx.ModelProto, fallback: bool, types: set[int]) -> None:
    """Give every NC node its explicit third input and embed the function (or drop a stale one)."""
    graphs = [proto.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            if node.domain == DOMAIN and node.op_type == OP_TYPE:
                node.input.extend([""] * (3 - len(node.input)))
            graphs += [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
            graphs += [g for a in node.attribute if a.type == onnx.AttributeProto.GRAPHS for g in a.graphs]
    keep = [f for f in proto.functions if (f.domain, f.name) != (DOMAIN, OP_TYPE)]
    del proto.functions[:]
    proto.functions.extend(keep)
    metadata = [p for p in proto.metadata_props if p.key != FALLBACK_METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(metadata)
    if not types:
        return
    proto.metadata_props.append(fallback_metadata(fallback))
    if not fallback:
        return
    working = _working_type(types)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    proto.functions.append(build_function(opset, working))


def _working_type(types: set[int]) -> int:
    working: Optional[int] = working_type_for(types)
    if working is None:
        raise ExportError(
            "the model mixes float64 NC layers with float32/float16 ones; the embedded function has one "
            "body, which cannot run both in their own precision: export one dtype, or use fallback=False"
        )
    if working == onnx.TensorProto.DOUBLE:
        warnings.warn(
            "float64 NC nodes: the fallback body runs in onnx.reference, but ONNX Runtime's CPU provider "
            "has no float64 Conv, so plain ONNX Runtime cannot run this model without the runtime library",
            stacklevel=3,
        )
    return working
