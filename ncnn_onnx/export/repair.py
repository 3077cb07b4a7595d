"""What ONNX tools leave of an exported NC model, and the way back to one portable file.

Tools that rewrite a model do not all keep the fallback function: onnxruntime's offline optimization
with the library registered and `onnx.version_converter` drop it (the NC nodes stay, but plain onnxruntime
and `onnx.reference` can no longer load the file), onnxruntime's optimization without the library,
`quant_pre_process` and `onnx.inliner` inline it (no NC node stays: the library never runs again).

`diagnose()` says which of that happened to a model: how many NC nodes it has and which op version it
imports, whether the fallback function is there, built for the ONNX opset the model imports now and for
the NC nodes' element type, or edited by hand, and whether copies of the fallback body were inlined.
`repair()` re-attaches the fallback that this package writes for the model's opset; it refuses, with the
reason, what it cannot repair. Neither changes its input; `repair` writes only the output it is given.
Needs only onnx (no torch, no onnxruntime).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
from typing import Optional, Union

import onnx
from onnx import TensorProto, numpy_helper

from .errors import ExportError
from .function import build_function, working_type_for
from .schema import DOMAIN, OP_TYPE, VERSION

# Model metadata written by the exporter: whether it embedded the fallback function ("embedded"/"none").
# Tools that drop the function keep the model's metadata, so a missing function can be told apart from
# one that was never there.
FALLBACK_METADATA_KEY = "ncnn_onnx.fallback"
_MIN_OPSET = 18
_TYPE_NAMES = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16", TensorProto.DOUBLE: "float64"}
# onnxruntime names the values of a function it inlines "_inlfunc_<function name>_...".
_ORT_INLINED_PREFIX = f"_inlfunc_{OP_TYPE}_"

ModelLike = Union[str, os.PathLike, onnx.ModelProto]


class RepairError(ExportError):
    """A model `repair` cannot make portable; the message says exactly why and what to do instead."""


@dataclasses.dataclass
class Diagnosis:
    """What `diagnose` found. `lines()` gives it as one line per aspect, `problems` lists what is wrong."""

    nc_nodes: int
    op_version: Optional[int]          # the ncnn_onnx version the model imports (None: no import)
    onnx_opset: Optional[int]          # the ONNX (default domain) opset the model imports
    element_types: set                 # ONNX element types of the NC nodes' X (where known)
    fallback: str                      # ok | absent | missing | dropped | opset | type | edited | duplicate | none
    fallback_text: str
    function_opset: Optional[int] = None
    inlined: int = 0
    problems: list = dataclasses.field(default_factory=list)
    fatal: Optional[str] = None        # why `repair` cannot help (None: it can, or nothing to do)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def op_version_supported(self) -> bool:
        return self.op_version in (None, VERSION)

    def nodes_text(self) -> str:
        text = str(self.nc_nodes)
        if self.op_version is None:
            return text + (f", but the model does not import the {DOMAIN} domain" if self.nc_nodes else "")
        if not self.op_version_supported:
            return (f"{text}; the model imports {DOMAIN} version {self.op_version}, but this ncnn_onnx implements "
                    f"{OP_TYPE} version {VERSION} only")
        return f"{text}, {DOMAIN} version {self.op_version}, ONNX opset {self.onnx_opset}"

    def inlined_text(self) -> str:
        if not self.inlined:
            return "none"
        lost = ("no NormalizedConv node is left, so the ncnn_onnx library never runs this file"
                if not self.nc_nodes else "those layers no longer run on the ncnn_onnx library")
        return (f"{self.inlined} inlined copy(ies) of the fallback body (onnxruntime optimization without the "
                f"library, quant_pre_process or onnx.inliner inline it): {lost}")

    def fix(self, path: str = "model.onnx") -> str:
        if self.fatal:
            return self.fatal
        if not self.problems and self.fallback != "absent":
            return "none needed"
        stem, suffix = os.path.splitext(path)
        command = f"ncnn-onnx repair {path} -o {stem}.repaired{suffix or '.onnx'}"
        if self.fallback == "absent" and not self.problems:
            return f"none needed for the library; `{command}` adds the fallback function"
        return command

    def lines(self, path: str = "model.onnx") -> list[tuple[str, str]]:
        """[(label, text)]: NC nodes, fallback function, inlined copies, the fix; one line each."""
        return [
            ("NormalizedConv nodes", self.nodes_text()),
            ("fallback function", self.fallback_text),
            ("inlined fallback", self.inlined_text()),
            ("fix", self.fix(path)),
        ]


def diagnose(model: ModelLike) -> Diagnosis:
    """Diagnose an NC model (a path or a ModelProto, which is not modified). External data is not read."""
    proto = _load(model, external_data=False)
    nodes = _nc_nodes(proto.graph)
    op_version = _import_version(proto, DOMAIN)
    onnx_opset = _import_version(proto, "")
    types = _element_types(proto, nodes)
    functions = [f for f in proto.functions if (f.domain, f.name) == (DOMAIN, OP_TYPE)]
    inlined = _inlined_copies(proto)
    problems: list[str] = []

    fallback, text, function_opset = _fallback_state(proto, nodes, functions, onnx_opset, types)
    if fallback not in ("ok", "absent", "none"):
        problems.append(f"fallback function: {text}")
    if nodes and op_version is None:
        problems.append(f"the model does not import the {DOMAIN} domain")
    if inlined:
        problems.append(f"{inlined} inlined copy(ies) of the fallback body")

    fatal = None
    if op_version is not None and op_version != VERSION:
        problems.insert(0, f"unsupported {DOMAIN} version {op_version}")
        fatal = (f"none here: this ncnn_onnx implements {OP_TYPE} version {VERSION} only; re-export the model "
                 "with this package, or use the ncnn_onnx version that wrote it")
    elif not nodes and inlined:
        fatal = ("re-export the model with ncnn_onnx.export (or go back to the file before the tool that inlined "
                 "it); for onnxruntime's optimization use `ncnn-onnx optimize`, for quant_pre_process "
                 "`ncnn-onnx quant-pre-process`")
    elif nodes and fallback not in ("ok", "none") and (onnx_opset is None or onnx_opset < _MIN_OPSET):
        fatal = (f"the fallback function needs ONNX opset >= {_MIN_OPSET}, the model imports {onnx_opset}: convert "
                 f"it first (onnx.version_converter.convert_version(model, {_MIN_OPSET})), then run ncnn-onnx repair")
    elif nodes and fallback not in ("ok", "none") and working_type_for(types) is None:
        fatal = ("the NC nodes mix float64 with float32/float16, and one fallback body cannot run both in their "
                 "own precision: cast the model to one type")
    return Diagnosis(len(nodes), op_version, onnx_opset, types, fallback, text, function_opset, inlined, problems,
                     fatal)


def repair(model: ModelLike, output: Optional[Union[str, os.PathLike]] = None) -> onnx.ModelProto:
    """A copy of `model` with the fallback function this ncnn_onnx writes for the ONNX opset the model imports
    now and for its NC nodes' element type (replacing a missing, mismatched or edited one), the ncnn_onnx
    import, and B written as "" where a node leaves it out. Writes `output` when given (external data, if
    the model has any, goes to `<output>.data`); the input is never changed.

    Raises RepairError, naming the reason, for a model it cannot make portable: an unsupported op version,
    an inlined fallback with no NC node left, an ONNX opset below 18, NC nodes of mixed float64 and
    float32/float16, or no NC node at all.
    """
    diagnosis = diagnose(model)
    if diagnosis.fatal:
        raise RepairError(f"cannot repair: {diagnosis.problems[0] if diagnosis.problems else 'see check'}; "
                          f"{diagnosis.fatal}")
    if not diagnosis.nc_nodes:
        raise RepairError(f"cannot repair: the model has no {DOMAIN}::{OP_TYPE} node (nothing to re-attach)")
    external = isinstance(model, (str, os.PathLike)) and _has_external_data(_load(model, external_data=False))
    proto = _load(model, external_data=True)
    if isinstance(model, onnx.ModelProto):
        proto = copy.deepcopy(proto)
    keep = [f for f in proto.functions if (f.domain, f.name) != (DOMAIN, OP_TYPE)]
    del proto.functions[:]
    proto.functions.extend(keep)
    proto.functions.append(build_function(diagnosis.onnx_opset, working_type_for(diagnosis.element_types)))
    if diagnosis.op_version is None:
        proto.opset_import.append(onnx.helper.make_opsetid(DOMAIN, VERSION))
    proto.ir_version = max(proto.ir_version, 8)  # model-local functions
    for node in _nc_nodes(proto.graph):
        node.input.extend([""] * (3 - len(node.input)))
    _set_metadata(proto, FALLBACK_METADATA_KEY, "embedded")
    if output is not None:
        save(proto, output, external_data=external)
    return proto


def save(proto: onnx.ModelProto, output: Union[str, os.PathLike], external_data: bool = False) -> None:
    """Save, with all tensors in `<output>.data` when `external_data` or when the model would pass 2 GiB."""
    output = os.fspath(output)
    if not external_data and proto.ByteSize() < (1 << 31) - (1 << 20):
        onnx.save_model(proto, output)
        return
    onnx.save_model(proto, output, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=os.path.basename(output) + ".data")


def fallback_metadata(embedded: bool) -> onnx.StringStringEntryProto:
    return onnx.StringStringEntryProto(key=FALLBACK_METADATA_KEY, value="embedded" if embedded else "none")


# --- internals -------------------------------------------------------------------------------------------

def _load(model: ModelLike, external_data: bool) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a path or an onnx.ModelProto, got {type(model).__name__}")
    return onnx.load(os.fspath(model), load_external_data=external_data)


def _has_external_data(proto: onnx.ModelProto) -> bool:
    return any(t.data_location == TensorProto.EXTERNAL for t in _all_initializers(proto.graph))


def _all_initializers(graph: onnx.GraphProto):
    yield from graph.initializer
    for node in graph.node:
        for sub in _subgraphs(node):
            yield from _all_initializers(sub)


def _subgraphs(node: onnx.NodeProto):
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for sub in _subgraphs(node):
            yield from _all_nodes(sub)


def _nc_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    return [n for n in _all_nodes(graph) if (n.domain, n.op_type) == (DOMAIN, OP_TYPE)]


def _import_version(proto, domain: str) -> Optional[int]:
    aliases = ("", "ai.onnx") if domain == "" else (domain,)
    versions = [o.version for o in proto.opset_import if o.domain in aliases]
    return versions[0] if versions else None


def _set_metadata(proto: onnx.ModelProto, key: str, value: str) -> None:
    keep = [p for p in proto.metadata_props if p.key != key]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    proto.metadata_props.add(key=key, value=value)


def _metadata(proto: onnx.ModelProto, key: str) -> Optional[str]:
    return next((p.value for p in proto.metadata_props if p.key == key), None)


def _element_types(proto: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> set:
    """The element types of the NC nodes (X, W and B share one type): from W's initializer, else from the
    model's type information, else from shape inference (our schema is registered)."""
    if not nodes:
        return set()
    known = {t.name: t.data_type for t in _all_initializers(proto.graph)}
    graphs = [proto.graph] + [g for n in _all_nodes(proto.graph) for g in _subgraphs(n)]
    for graph in graphs:
        for value in list(graph.input) + list(graph.value_info) + list(graph.output):
            if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
                known.setdefault(value.name, value.type.tensor_type.elem_type)

    def lookup(table):
        found, missing = set(), False
        for node in nodes:
            names = [n for n in node.input[:2] if n]
            elem = next((table[n] for n in names if n in table), None)
            if elem is None:
                missing = True
            else:
                found.add(elem)
        return found, missing

    found, missing = lookup(known)
    if missing:
        stripped = onnx.ModelProto()
        stripped.CopyFrom(proto)
        for tensor in _all_initializers(stripped.graph):
            tensor.ClearField("raw_data")  # types and dims are all inference needs
            tensor.ClearField("float_data")
            tensor.ClearField("double_data")
            tensor.ClearField("int32_data")
            tensor.ClearField("int64_data")
        try:
            inferred = onnx.shape_inference.infer_shapes(stripped)
        except Exception:  # noqa: BLE001 - a model inference cannot type keeps the types found so far
            return found
        for value in list(inferred.graph.value_info) + list(inferred.graph.output):
            if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
                known.setdefault(value.name, value.type.tensor_type.elem_type)
        found, _ = lookup(known)
    return found


def _fallback_state(proto, nodes, functions, onnx_opset, types) -> tuple[str, str, Optional[int]]:
    if not nodes and not functions:
        return "none", "none (the model has no NormalizedConv node)", None
    if len(functions) > 1:
        return "duplicate", (f"{len(functions)} functions named {DOMAIN}.{OP_TYPE} (one expected); "
                             "onnxruntime and onnx.checker refuse the file"), None
    if not functions:
        embedded = _metadata(proto, FALLBACK_METADATA_KEY)
        consequence = "plain onnxruntime and onnx.reference cannot load this file"
        if embedded == "none":
            return "absent", ("not embedded (exported with fallback=False / --no-fallback): only a runtime with "
                              "the ncnn_onnx library can run this file"), None
        if embedded == "embedded":
            return "dropped", (f"missing: dropped after export (the exporter embedded it; onnxruntime's offline "
                               f"optimization and onnx.version_converter drop it): {consequence}"), None
        return "missing", f"missing (exported with --no-fallback, or dropped by a tool since): {consequence}", None
    function = functions[0]
    function_opset = _import_version(function, "")
    body_type = _body_type(function)
    try:
        expected = build_function(function_opset, body_type) if function_opset and body_type else None
    except ValueError:
        expected = None
    if expected is None or _signature(function) != _signature(expected):
        return "edited", ("present, but its body differs from the one this ncnn_onnx writes (edited by hand, or "
                          "written by another version): its results are not vouched for"), function_opset
    if function_opset != onnx_opset:
        return "opset", (f"present, but built for ONNX opset {function_opset} while the model imports "
                         f"{onnx_opset} (e.g. after onnx.version_converter)"), function_opset
    wanted = working_type_for(types)
    if types and wanted is not None and wanted != body_type:
        return "type", (f"present, but its body computes in {_TYPE_NAMES.get(body_type, body_type)} while the NC "
                        f"nodes are {', '.join(sorted(_TYPE_NAMES.get(t, str(t)) for t in types))}"), function_opset
    node_type = ", ".join(sorted(_TYPE_NAMES.get(t, str(t)) for t in types)) or "of unknown type"
    return "ok", (f"present and as this ncnn_onnx writes it for ONNX opset {function_opset} "
                  f"({_TYPE_NAMES.get(body_type, body_type)} body, NC nodes {node_type})"), function_opset


def _body_type(function: onnx.FunctionProto) -> Optional[int]:
    """The working type of a fallback body: what its Cast of the input X casts to (in its If branches)."""
    nodes = list(function.node)
    for node in nodes:
        nodes.extend(n for sub in _subgraphs(node) for n in sub.node)
        if node.op_type == "Cast" and list(node.input) == ["X"]:
            for attr in node.attribute:
                if attr.name == "to":
                    return attr.i
    return None


def _signature(function: onnx.FunctionProto) -> Optional[str]:
    """A digest of what the function computes, independent of value names, node names and node order (tools
    such as onnxslim rename constants and reorder nodes): each value is named by the digest of the node that
    computes it and its output index, formal inputs by position; a subgraph (the body's If branches) is
    digested the same way, reading outer values through the enclosing names. None for a body that is not a
    DAG."""
    formal = {name: f"input:{i}" for i, name in enumerate(function.input)}
    outputs = _digest_nodes(list(function.node), lambda name: formal.get(name, f"undefined:{name}"))
    if outputs is None:
        return None
    header = [
        ",".join(function.input), ",".join(function.output), ",".join(function.attribute),
        *sorted(_attribute_key(a, None) for a in function.attribute_proto),
        *sorted(f"{o.domain or 'ai.onnx'}:{o.version}" for o in function.opset_import),
    ]
    return hashlib.sha256("\x00".join(header + [outputs(o) for o in function.output]).encode()).hexdigest()


def _digest_nodes(nodes: list, outer):
    """Digests `nodes` in dependency order; returns the resolver of value names to digests (names not
    computed here resolve through `outer`), or None when the nodes are not a DAG."""
    producer = {out: (index, position) for index, node in enumerate(nodes) for position, out in enumerate(node.output)
                if out}
    keys: dict[int, str] = {}

    def value(name: str) -> str:
        if not name:
            return "absent"
        if name in producer:
            index, position = producer[name]
            return f"{keys[index]}:{position}"
        return outer(name)

    # Kahn's order: a node is digested once every node it reads from is, subgraphs' outer reads included.
    reads = {i: set(n.input) | _outer_reads(n) for i, n in enumerate(nodes)}
    waiting = {i: {producer[v][0] for v in names if v in producer} for i, names in reads.items()}
    readers: dict[int, list[int]] = {}
    for i, sources in waiting.items():
        for source in sources:
            readers.setdefault(source, []).append(i)
    ready = [i for i, sources in waiting.items() if not sources]
    while ready:
        index = ready.pop()
        node = nodes[index]
        attributes = []
        for attr in node.attribute:
            key = _attribute_key(attr, value)
            if key is None:
                return None
            attributes.append(key)
        parts = [node.domain, node.op_type, node.overload, *[value(v) for v in node.input],
                 str(len(node.output)), *sorted(attributes)]
        keys[index] = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
        for reader in readers.get(index, []):
            waiting[reader].discard(index)
            if not waiting[reader]:
                ready.append(reader)
    return value if len(keys) == len(nodes) else None


def _outer_reads(node) -> set:
    """Names a node's subgraphs read from enclosing scopes (any name they do not compute themselves)."""
    names = set()
    for graph in _subgraphs(node):
        computed = {out for n in graph.node for out in n.output} | {i.name for i in graph.input}
        for inner in graph.node:
            names |= {v for v in inner.input if v and v not in computed} | (_outer_reads(inner) - computed)
        names |= {o.name for o in graph.output if o.name not in computed}
    return names


def _attribute_key(attr: onnx.AttributeProto, outer) -> Optional[str]:
    if attr.ref_attr_name:
        return f"{attr.name}=ref:{attr.ref_attr_name}:{attr.type}"
    if attr.type == onnx.AttributeProto.TENSOR:
        array = numpy_helper.to_array(attr.t)
        return f"{attr.name}=tensor:{attr.t.data_type}:{list(attr.t.dims)}:{array.tobytes().hex()}"
    if attr.type == onnx.AttributeProto.GRAPH and outer is not None:
        graph = attr.g
        formal = {i.name: f"graph-input:{k}" for k, i in enumerate(graph.input)}
        # A subgraph's initializer is a Constant by another name (onnxslim turns the branches' Constants,
        # and shared ones from the enclosing body, into initializers): digested as that Constant node.
        for tensor in graph.initializer:
            value = onnx.helper.make_attribute("value", tensor)
            parts = ["", "Constant", "", "1", _attribute_key(value, None)]
            formal[tensor.name] = hashlib.sha256("\x00".join(parts).encode()).hexdigest() + ":0"
        resolve = _digest_nodes(list(graph.node), lambda name: formal.get(name) or outer(name))
        if resolve is None:
            return None
        return f"{attr.name}=graph:" + ",".join(resolve(o.name) for o in graph.output)
    if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        return f"{attr.name}=graph:{hashlib.sha256(attr.SerializeToString()).hexdigest()}"
    value = onnx.helper.get_attribute_value(attr)
    return f"{attr.name}={attr.type}:{value!r}"


def _inlined_copies(proto: onnx.ModelProto) -> int:
    """How many inlined copies of the fallback body the graph holds. The body's mark is the channel mean that
    is exact on flat locations: Equal(ReduceMin(t), ReduceMax(t)) of one tensor, which onnxruntime's
    optimizations keep (it depends on the input). The body's two If branches (depthwise, general) both hold
    it, so an If counts once whatever its branches hold. Values named by onnxruntime's inliner count at
    least one."""
    named = any(out.startswith(_ORT_INLINED_PREFIX) for node in _all_nodes(proto.graph) for out in node.output)
    return max(_marks(proto.graph), 1 if named else 0)


def _marks(graph: onnx.GraphProto) -> int:
    producer = {out: node for node in graph.node for out in node.output if out}
    count = 0
    for node in graph.node:
        branches = [_marks(sub) for sub in _subgraphs(node)]
        if branches:
            count += max(branches) if node.op_type == "If" else sum(branches)
            continue
        if node.op_type != "Equal" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
            continue
        a, b = (producer.get(name) for name in node.input)
        if a is None or b is None or not a.input or not b.input:
            continue
        if {a.op_type, b.op_type} == {"ReduceMin", "ReduceMax"} and a.input[0] == b.input[0]:
            count += 1
    return count
