"""Malformed NormalizedConv models and inputs, run one after another in this (child) process.

Prints one JSON line per case: where it failed (session creation "load" or "run", or "none"), the
exception type and message. The parent test checks the messages and that this process exits normally:
a crash here would be a crash in a user's server.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import AttributeProto, helper, numpy_helper

from ncnn_onnx import runtime
from ort_models import nc_model

F32 = np.float32


def _w(*shape, dtype=F32):
    return (np.ones(shape) * 0.1).astype(dtype)


def _with_attribute(model: bytes, attribute) -> bytes:
    """The model with `attribute` added to its node (attributes onnx.helper cannot infer, such as [])."""
    proto = onnx.load_from_string(model)
    proto.graph.node[0].attribute.append(attribute)
    return proto.SerializeToString()


def _x(*shape, dtype=F32):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


# name: (model bytes, X, extra feeds, words the message must contain)
CASES = {
    "x_rank_2": (nc_model(_w(4, 3, 3, 3)), _x(2, 3), {}, ["X must have rank 3, 4 or 5"]),
    "x_rank_6": (nc_model(_w(4, 3, 3, 3)), _x(1, 3, 4, 4, 4, 4), {}, ["X must have rank 3, 4 or 5"]),
    "w_rank_differs": (nc_model(_w(4, 3, 3)), _x(1, 3, 8, 8), {}, ["W must have the rank of X"]),
    "channel_mismatch": (nc_model(_w(4, 3, 3, 3)), _x(1, 5, 8, 8), {}, ["C=5", "W.shape[1]"]),
    "group_not_dividing_c": (nc_model(_w(4, 2, 3, 3), group=2), _x(1, 5, 8, 8), {}, ["group=2 does not divide", "C=5"]),
    "group_not_dividing_m": (nc_model(_w(5, 2, 3, 3), group=2), _x(1, 4, 8, 8), {}, ["group=2 does not divide", "M=5"]),
    "kernel_shape_disagrees": (nc_model(_w(4, 3, 3, 3), kernel_shape=[3, 5]), _x(1, 3, 8, 8), {}, ["kernel_shape", "[3, 5]"]),
    "pads_wrong_length": (nc_model(_w(4, 3, 3, 3), pads=[1, 1]), _x(1, 3, 8, 8), {}, ["'pads'", "expected 4"]),
    "pads_negative": (nc_model(_w(4, 3, 3, 3), pads=[1, -1, 1, 1]), _x(1, 3, 8, 8), {}, ["'pads'", ">= 0"]),
    "pads_odd_count": (nc_model(_w(4, 3, 3, 3), pads=[1, 1, 1]), _x(1, 3, 8, 8), {}, ["'pads'", "2 values per spatial dim"]),
    "strides_wrong_length": (nc_model(_w(4, 3, 3, 3), strides=[1, 1, 1]), _x(1, 3, 8, 8), {}, ["'strides'", "expected 2"]),
    "strides_zero": (nc_model(_w(4, 3, 3, 3), strides=[0, 1]), _x(1, 3, 8, 8), {}, ["'strides'", ">= 1"]),
    "dilations_wrong_length": (nc_model(_w(4, 3, 3, 3), dilations=[1]), _x(1, 3, 8, 8), {}, ["'dilations'", "expected 2"]),
    "dilations_zero": (nc_model(_w(4, 3, 3, 3), dilations=[1, 0]), _x(1, 3, 8, 8), {}, ["'dilations'", ">= 1"]),
    "output_size_zero": (nc_model(_w(4, 3, 5, 5)), _x(1, 3, 3, 8), {}, ["output size would be <= 0", "spatial dim 0"]),
    # Past the default pad limit (test_ort_validation checks the overflow itself with the limit raised).
    "pads_overflow": (nc_model(_w(4, 3, 3, 3), pads=[2**62, 2**62, 2**62, 2**62]), _x(1, 3, 8, 8), {},
                      ["pad 4611686018427387904", "NCNN_ONNX_MAX_PAD"]),
    # Resource bombs: a few bytes of pads asking for gigabytes of output or minutes of work.
    "pads_bomb_work": (nc_model(_w(1, 1000, 1), pads=[10**8, 10**8]), _x(1, 1000, 1), {},
                       ["pad 100000000 in spatial dim 0", "NCNN_ONNX_MAX_PAD"]),
    "pads_bomb_output": (nc_model(_w(8, 1, 1), pads=[0, 2**31]), _x(1, 1, 1), {}, ["pad 2147483648", "NCNN_ONNX_MAX_PAD"]),
    "pads_bomb_2gib": (nc_model(_w(1, 1, 1), pads=[0, 2**29 - 1]), _x(1, 1, 1), {}, ["pad 536870911"]),
    "dilation_overflow": (nc_model(_w(4, 3, 3, 3), dilations=[2**62, 1]), _x(1, 3, 8, 8), {}, ["overflows"]),
    "bias_wrong_length": (nc_model(_w(4, 3, 3, 3), np.zeros(3, F32)), _x(1, 3, 8, 8), {}, ["B must have shape [M] = [4]", "[3]"]),
    "bias_input_wrong_length": (nc_model(_w(4, 3, 3, 3), np.zeros(5, F32), b_input=True), _x(1, 3, 8, 8),
                                {"B": np.zeros(5, F32)}, ["B must have shape [M] = [4]"]),
    "x_int32": (nc_model(_w(4, 3, 3, 3, dtype=np.int32), x_dtype=np.int32), _x(1, 3, 8, 8).astype(np.int32), {},
                ["tensor(int32)", "NormalizedConv"]),
    "w_int32": (nc_model(_w(4, 3, 3, 3, dtype=np.int32), x_dtype=F32), _x(1, 3, 8, 8), {}, ["W has element type int32"]),
    "w_float16_x_float32": (nc_model(_w(4, 3, 3, 3, dtype=np.float16), x_dtype=F32), _x(1, 3, 8, 8), {},
                            ["W has element type float16, expected float32"]),
    "no_input_channels": (nc_model(_w(4, 0, 3, 3)), _x(1, 0, 8, 8), {}, ["at least 1 input channel"]),
    "epsilon_zero": (nc_model(_w(4, 3, 3, 3), epsilon=0.0), _x(1, 3, 8, 8), {}, ["'epsilon'", "normal float32"]),
    "epsilon_subnormal": (nc_model(_w(4, 3, 3, 3), epsilon=1e-40), _x(1, 3, 8, 8), {}, ["'epsilon'", "normal float32"]),
    # Wrongly typed attributes: never mistaken for absent ones (onnxruntime reads any of them as an empty
    # list of ints).
    "strides_floats": (nc_model(_w(2, 3, 3, 3), strides=[2.0, 2.0]), _x(1, 3, 8, 8), {},
                       ["'strides' must be a list of ints, got a list of floats"]),
    "strides_int": (nc_model(_w(2, 3, 3, 3), strides=2), _x(1, 3, 8, 8), {}, ["'strides' must be a list of ints, got an int"]),
    "pads_floats": (nc_model(_w(2, 3, 3, 3), pads=[1.0] * 4), _x(1, 3, 8, 8), {}, ["'pads' must be a list of ints"]),
    "dilations_floats": (nc_model(_w(2, 3, 3, 3), dilations=[2.0, 2.0]), _x(1, 3, 8, 8), {},
                         ["'dilations' must be a list of ints"]),
    "kernel_shape_string": (nc_model(_w(2, 3, 3, 3), kernel_shape="5"), _x(1, 3, 8, 8), {},
                            ["'kernel_shape' must be a list of ints, got a string"]),
    "strides_strings": (nc_model(_w(2, 3, 3, 3), strides=["2", "2"]), _x(1, 3, 8, 8), {},
                        ["'strides' holds no ints"]),
    "pads_empty": (_with_attribute(nc_model(_w(2, 3, 3, 3)), helper.make_attribute("pads", [], attr_type=AttributeProto.INTS)),
                   _x(1, 3, 8, 8), {}, ["'pads' holds no ints"]),
    "strides_tensor": (_with_attribute(nc_model(_w(2, 3, 3, 3)), helper.make_attribute("strides", numpy_helper.from_array(np.array([2, 2])))),
                       _x(1, 3, 8, 8), {}, ["'strides' must be a list of ints, got another kind of attribute"]),
    "group_float": (nc_model(_w(2, 3, 3, 3), group=1.0), _x(1, 3, 8, 8), {}, ["'group' must be an int, got a float"]),
    "group_ints": (nc_model(_w(2, 3, 3, 3), group=[1]), _x(1, 3, 8, 8), {}, ["'group' must be an int, got a list of ints"]),
    "center_float": (nc_model(_w(2, 3, 3, 3), center=1.0), _x(1, 3, 8, 8), {}, ["'center' must be an int"]),
    "auto_pad_int": (nc_model(_w(2, 3, 3, 3), auto_pad=3), _x(1, 3, 8, 8), {}, ["'auto_pad' must be a string"]),
    "epsilon_int": (nc_model(_w(4, 3, 3, 3), epsilon=1), _x(1, 3, 8, 8), {}, ["'epsilon' must be a float", "an int"]),
    "center_two": (nc_model(_w(4, 3, 3, 3), center=2), _x(1, 3, 8, 8), {}, ["'center' must be 0 or 1"]),
    "auto_pad_unknown": (nc_model(_w(4, 3, 3, 3), auto_pad="SAME"), _x(1, 3, 8, 8), {}, ["'auto_pad'", "'SAME'"]),
    "auto_pad_with_pads": (nc_model(_w(4, 3, 3, 3), auto_pad="VALID", pads=[1, 1, 1, 1]), _x(1, 3, 8, 8), {},
                           ["'pads' and 'auto_pad'=VALID"]),
    "group_zero": (nc_model(_w(4, 3, 3, 3), group=0), _x(1, 3, 8, 8), {}, ["'group' must be >= 1"]),
    "kernel_dim_zero": (nc_model(_w(4, 3, 0, 3), w_input=True), _x(1, 3, 8, 8), {"W": _w(4, 3, 0, 3)}, ["kernel dims must be >= 1"]),
}


def main() -> None:
    for name, (model, x, feeds, words) in CASES.items():
        stage = "load"
        try:
            session = runtime.InferenceSession(model, intra_op_num_threads=2)
            stage = "run"
            session.run(None, {"X": x, **feeds})
            stage = "none"
            message, kind = "", ""
        except Exception as exc:  # noqa: BLE001 - every failure is reported to the parent
            message, kind = str(exc), type(exc).__name__
        print(json.dumps({"case": name, "stage": stage, "type": kind, "message": message, "words": words}), flush=True)


if __name__ == "__main__":
    main()
