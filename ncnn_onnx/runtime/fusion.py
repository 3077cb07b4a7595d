"""Each NormalizedConv and the activation that alone reads its output, fused into one node for the CPU kernel.

onnxruntime fuses a Conv with the activation after it, but cannot fuse into a custom op: an NC model ran
every Relu, HardSwish or x * Sigmoid(x) as a node of its own, one more pass over each output (a fifth of
mobilenet_v3_small's time at batch 8). ``ncnn_onnx::NormalizedConvActivation`` is NormalizedConv with the
attributes ``activation`` and ``activation_params`` (runtime/common/activation.h); the library's CPU
kernel applies the activation as it stores each output.

Only the session helper (``ncnn_onnx.runtime.InferenceSession``) rewrites, in memory and for the CPU
provider alone: exported files keep NormalizedConv and its fallback function, so they run anywhere. The
fused op has neither a fallback function nor a CUDA kernel.

    Relu, LeakyRelu, HardSigmoid, HardSwish, Sigmoid     the node reading the NC output
    Clip                                                 with constant (or absent) min and max
    SiLU                                                 Mul(y, Sigmoid(y)) in either order
"""

from __future__ import annotations

import collections
from typing import Optional

from .opset import DOMAIN

NC_OP = "NormalizedConv"
ACTIVATION_OP = "NormalizedConvActivation"
_FLOAT_MAX = 3.4028234663852886e38


def fuse_activations(model) -> int:
    """Rewrites the main graph of `model` (an onnx.ModelProto) in place; returns how many nodes were fused."""
    graph = model.graph
    consumers: dict[str, list] = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    # Values a subgraph (an If or Loop body) reads are kept as they are, like graph outputs.
    outputs = {o.name for o in graph.output} | _read_by_subgraphs(graph)
    constants = _constants(graph)
    replace: dict[int, object] = {}  # id(node) -> its fused node, or None: removed
    for node in graph.node:
        if node.domain != DOMAIN or node.op_type != NC_OP or node.output[0] in outputs or id(node) in replace:
            continue
        found = _activation_after(node.output[0], consumers, outputs, constants)
        if found is None:
            continue
        name, params, absorbed = found
        fused = _fused_node(node, name, params, absorbed[-1].output[0])
        replace[id(node)] = None
        for i, gone in enumerate(absorbed):
            replace[id(gone)] = fused if i == len(absorbed) - 1 else None
    if not replace:
        return 0
    nodes = [replace.get(id(n), n) for n in graph.node]
    del graph.node[:]
    graph.node.extend(n for n in nodes if n is not None)
    return sum(1 for n in nodes if n is not None and getattr(n, "op_type", "") == ACTIVATION_OP)


def _read_by_subgraphs(graph) -> set:
    names = set()
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                for inner in sub.node:
                    names.update(inner.input)
                names |= _read_by_subgraphs(sub)
                names.update(o.name for o in sub.output)
    return names


def _constants(graph) -> dict:
    """Initializers and Constant node outputs by name, as numpy arrays."""
    from onnx import numpy_helper

    found = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    found[node.output[0]] = attr.t
    return {name: numpy_helper.to_array(t) for name, t in found.items()}


def _attribute(node, name: str, default: float) -> float:
    for attr in node.attribute:
        if attr.name == name:
            return float(attr.f)
    return default


def _activation_after(y: str, consumers, outputs, constants) -> Optional[tuple[str, list, list]]:
    """(activation name, its parameters, the nodes it replaces, the last one giving the fused output), or
    None where the nodes reading y are no activation this fuses."""
    readers = consumers.get(y, [])
    if len(readers) == 1:
        act = readers[0]
        if act.domain not in ("", "ai.onnx") or list(act.input[:1]) != [y]:
            return None
        params = _single_input_params(act, constants)
        return None if params is None else (params[0], params[1], [act])
    if len(readers) == 2:
        sigmoid = next((r for r in readers if r.op_type == "Sigmoid" and r.domain in ("", "ai.onnx")), None)
        mul = next((r for r in readers if r.op_type == "Mul" and r.domain in ("", "ai.onnx")), None)
        if sigmoid is None or mul is None or sigmoid.output[0] in outputs:
            return None
        if sorted(mul.input) != sorted([y, sigmoid.output[0]]) or len(consumers.get(sigmoid.output[0], [])) != 1:
            return None
        return "SiLU", [], [sigmoid, mul]
    return None


def _single_input_params(act, constants) -> Optional[tuple[str, list]]:
    if act.op_type in ("Relu", "HardSwish", "Sigmoid") and len(act.input) == 1:
        return act.op_type, []
    if act.op_type == "LeakyRelu":
        return "LeakyRelu", [_attribute(act, "alpha", 0.01)]
    if act.op_type == "HardSigmoid":
        return "HardSigmoid", [_attribute(act, "alpha", 0.2), _attribute(act, "beta", 0.5)]
    if act.op_type == "Clip":
        bounds = []
        for index, attr, default in ((1, "min", -_FLOAT_MAX), (2, "max", _FLOAT_MAX)):
            name = act.input[index] if len(act.input) > index else ""
            if not name:
                bounds.append(_attribute(act, attr, default))  # opset < 11 keeps them as attributes
                continue
            value = constants.get(name)
            if value is None or value.size != 1:
                return None  # a bound computed at run time: left to onnxruntime
            bounds.append(float(value.reshape(())))
        if not all(abs(b) <= _FLOAT_MAX for b in bounds) or bounds[0] > bounds[1]:
            return None
        return "Clip", bounds
    return None


def _fused_node(nc, activation: str, params: list, output: str):
    from onnx import helper

    node = helper.make_node(ACTIVATION_OP, list(nc.input), [output], name=nc.name, domain=DOMAIN)
    node.attribute.extend(nc.attribute)
    node.attribute.append(helper.make_attribute("activation", activation))
    if params:
        node.attribute.append(helper.make_attribute("activation_params", [float(p) for p in params]))
    return node
