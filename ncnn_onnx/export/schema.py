"""The op `ncnn_onnx::NormalizedConv` version 1, and its registration with `onnx.defs`.

Registering the schema is what lets `onnx.checker` (full_check) accept the node and
`onnx.shape_inference` give its output type and shape. The output size is that of ONNX `Conv` by
definition, so the schema borrows Conv's own inference function rather than restating the arithmetic:
the two can never disagree, symbolic dims included. Needs only onnx (no torch).
"""

from __future__ import annotations

import atexit
import sys
import threading

import onnx
from onnx import helper
from onnx.defs import OpSchema

DOMAIN = "ncnn_onnx"
OP_TYPE = "NormalizedConv"
VERSION = 1

# Attribute defaults that the function body and the exporter share. The Conv attributes without a
# scalar default (dilations, kernel_shape, pads, strides) default as in ONNX Conv: ones, W's kernel, zeros.
DEFAULTS = {"auto_pad": "NOTSET", "group": 1, "epsilon": 1e-5, "center": 1, "scale": 1}
CONV_ATTRIBUTES = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
NC_ATTRIBUTES = ("epsilon", "center", "scale")
TYPES = ("tensor(float)", "tensor(float16)", "tensor(double)")

DOC = """\
Normalized Convolution: every im2col patch v (C/group * prod(kernel_shape) values, zero padding
included) is standardized before the dot product with the kernel:
    mu = mean(v), var = mean((v - mu)^2)
    Y[n, m, p] = sum_i W[m, i] * (center ? v_i - mu : v_i) / (scale ? sqrt(var + epsilon) : 1) + B[m]
A patch holding NaN or inf gives NaN unless center = scale = 0 (then the op is Conv).
Inputs, output size and the attributes shared with Conv have Conv's meaning and defaults.
float16 is computed with float32 statistics. Specification: docs/op.md of the ncnn_onnx project."""

_lock = threading.Lock()


def _attributes() -> list[OpSchema.Attribute]:
    def with_default(name: str, description: str) -> OpSchema.Attribute:
        return OpSchema.Attribute(name, helper.make_attribute(name, DEFAULTS[name]), description)

    def optional(name: str, kind: OpSchema.AttrType, description: str) -> OpSchema.Attribute:
        return OpSchema.Attribute(name, kind, description, required=False)

    ints = OpSchema.AttrType.INTS
    return [
        with_default("auto_pad", "As Conv: NOTSET, SAME_UPPER, SAME_LOWER or VALID."),
        optional("dilations", ints, "As Conv; default 1 along each spatial axis."),
        with_default("group", "As Conv: number of groups input and output channels are divided into."),
        optional("kernel_shape", ints, "As Conv; default inferred from W."),
        optional("pads", ints, "As Conv: (x1_begin, x2_begin, ..., x1_end, x2_end, ...); default 0."),
        optional("strides", ints, "As Conv; default 1 along each spatial axis."),
        with_default("epsilon", "Added to every patch variance before the square root; > 0."),
        with_default("center", "1: subtract the patch mean; 0: do not."),
        with_default("scale", "1: divide by sqrt(var + epsilon); 0: do not."),
    ]


def build_schema() -> OpSchema:
    optional = OpSchema.FormalParameterOption.Optional
    schema = OpSchema(
        OP_TYPE,
        DOMAIN,
        VERSION,
        DOC,
        inputs=[
            OpSchema.FormalParameter("X", "T", "Input (N, C, D1, ..., Dk), k = 1, 2 or 3."),
            OpSchema.FormalParameter("W", "T", "Weight (M, C/group, k1, ..., kk)."),
            OpSchema.FormalParameter("B", "T", "Optional bias (M).", param_option=optional),
        ],
        outputs=[OpSchema.FormalParameter("Y", "T", "Output (N, M, O1, ..., Ok), sizes as Conv.")],
        type_constraints=[("T", list(TYPES), "float32 and float16 (float32 statistics); float64.")],
        attributes=_attributes(),
    )
    schema.set_type_and_shape_inference_function(
        onnx.defs.get_schema("Conv").get_type_and_shape_inference_function()
    )
    return schema


def register_schema() -> None:
    """Register the schema with onnx.defs once per process; later calls do nothing."""
    with _lock:
        try:
            onnx.defs.get_schema(OP_TYPE, VERSION, DOMAIN)
            return
        except onnx.defs.SchemaError:
            pass
        onnx.defs.register_schema(build_schema())
        atexit.register(_deregister_schema)
        _tell_reference_evaluator()


def _deregister_schema() -> None:
    """At interpreter exit, while Python still runs: onnx 1.19-1.22 destroy their schema registry after
    Python has finalized, and the shape-inference function of a schema registered from Python then hangs
    (1.19) or crashes (1.20-1.22) the exiting process."""
    try:
        onnx.defs.deregister_schema(OP_TYPE, VERSION, DOMAIN)
    except Exception:  # already gone, or an onnx without deregister_schema: nothing to release
        pass


def _tell_reference_evaluator() -> None:
    """onnx.reference snapshots the schema table when it is imported, and only then knows an op's
    attribute defaults; without them it cannot call the model-local function of a node that leaves
    an attribute out. If it was imported before us, add the schema to its snapshot."""
    op_run = sys.modules.get("onnx.reference.op_run")
    table = getattr(op_run, "_schemas", None)
    if isinstance(table, dict):
        table.setdefault(OP_TYPE, onnx.defs.get_schema(OP_TYPE, VERSION, DOMAIN))
