"""Property-based fuzz cases for ncnn_onnx::NormalizedConv: hypothesis strategies, fixed named cases, and the
machinery that runs them in child processes (fuzz_child.py) and checks what came back.

Properties (docs/op.md and the limits of the custom-op library):

- valid: random valid attributes and shapes (1-d/2-d/3-d, groups incl. depthwise, strides, dilations,
  asymmetric pads up to the pad limit, every auto_pad, bias or not, center/scale, epsilon, float32/float16,
  N = 0) run with (a) the custom-op library (ncnn_onnx.runtime.InferenceSession on a hand-built
  single-node model, ort_models.nc_model) under every CPU backend (NCNN_ONNX_CPU_ISA) and (b) the
  exporter's fallback function in plain onnxruntime, and both agree with the float64 reference
  (ort_models.reference) within ncnn_onnx.parity's bar(dtype) * max|Y_ref|. The fallback is skipped only
  where docs/op.md says onnxruntime cannot run it: auto_pad SAME_* with a dilation > 1, and N = 0.
- malformed: a wrongly typed or out-of-range attribute is a clean error (an exception whose message names
  the attribute), never a crash and never a silent run with defaults.
- opset: a model importing the ncnn_onnx domain at a version other than 1 is refused.
- bombs: a pad beyond max(dilated kernel extent - 1, input extent) (unless NCNN_ONNX_MAX_PAD raises it) and
  an output or scratch buffer over NCNN_ONNX_MAX_BUFFER_BYTES (default 4 GiB) are refused, within a second.

Every case runs in a child process; a crash or a hang there fails the case by name instead of killing
pytest. `python fuzz_cases.py '<case json>'` re-runs one case (as printed by a failing test).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import pickle
import re
import select
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from fuzz_child import make_data
from ncnn_onnx.export import graph as export_graph  # the exporter's finish(): attaches build_function()
from ncnn_onnx.parity import bar
from ort_models import DOMAIN, TENSOR_TYPE, available_isas, nc_model, reference

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, "fuzz_child.py")

# The attributes of the op and the kind each must have (docs/op.md).
ATTR_KINDS = {
    "auto_pad": "string", "dilations": "ints", "group": "int", "kernel_shape": "ints", "pads": "ints",
    "strides": "ints", "epsilon": "float", "center": "int", "scale": "int",
}
SAME = ("SAME_UPPER", "SAME_LOWER")
DEFAULT_BUFFER_BYTES = 1 << 32
# Both limits changed at once: pads up to 10**9 are accepted, and no buffer may exceed 1 MiB.
LIMITS_BUFFER_BYTES = 1 << 20
LIMITS_ENV = {"NCNN_ONNX_MAX_PAD": str(10**9), "NCNN_ONNX_MAX_BUFFER_BYTES": str(LIMITS_BUFFER_BYTES)}
# What a refused bomb's message must contain (any one of them).
PAD_WORDS = ["pad"]
BUFFER_WORDS = ["NCNN_ONNX_MAX_BUFFER_BYTES"]
# A refused bomb must be refused within this many seconds (session creation and run together); the child
# is killed after KILL_BOMB_SECONDS, any other case after KILL_SECONDS. NCNN_ONNX_FUZZ_TIME_SCALE
# stretches all three (the sanitized build runs several times slower).
TIME_SCALE = float(os.environ.get("NCNN_ONNX_FUZZ_TIME_SCALE", "1"))
FAST_SECONDS = 1.0 * TIME_SCALE
KILL_BOMB_SECONDS = 2.5 * TIME_SCALE
KILL_SECONDS = 30.0 * TIME_SCALE
STARTUP_SECONDS = 60.0 * TIME_SCALE

# How many examples of each kind: a fixed, derandomized set for the suite, or NCNN_ONNX_FUZZ_EXAMPLES
# (randomized, `make fuzz`), scaled per kind.
BOUNDED = {"valid": 150, "raised_pad": 10, "malformed": 100, "opset": 5, "pad_bomb": 10, "output_bomb": 5,
           "cap_bomb": 4}
SHARE = {"valid": 1.0, "raised_pad": 0.05, "malformed": 0.5, "opset": 0.02, "pad_bomb": 0.05, "output_bomb": 0.02,
         "cap_bomb": 0.02}


def randomized() -> bool:
    return bool(os.environ.get("NCNN_ONNX_FUZZ_EXAMPLES"))


def example_counts() -> dict:
    if not randomized():
        return dict(BOUNDED)
    total = int(os.environ["NCNN_ONNX_FUZZ_EXAMPLES"])
    return {kind: max(1, round(total * share)) for kind, share in SHARE.items()}


def fuzz_seed() -> int | None:
    """The hypothesis seed of a randomized run (NCNN_ONNX_FUZZ_SEED, else a fresh one, printed)."""
    if not randomized():
        return None
    value = os.environ.get("NCNN_ONNX_FUZZ_SEED")
    return int(value) if value else int.from_bytes(os.urandom(4), "little")


# ---------------------------------------------------------------------------------------------- strategies


def _span(kernel: int, dilation: int) -> int:
    return dilation * (kernel - 1) + 1


@st.composite
def valid_cases(draw, small: bool = False, explicit_pads: bool = False):
    """A valid node and input, small enough to run in milliseconds."""
    k = draw(st.integers(1, 3))
    # Mostly tiny; sometimes wide enough to reach the vector kernels' blocking (partial panels of output
    # channels, strips of positions straddling samples, patch rows over one block).
    wide = not small and draw(st.sampled_from([False, False, False, True]))
    max_kernel, max_dim = {1: (5, 12), 2: (4, 8), 3: (3, 5)}[k]
    if small:
        max_kernel, max_dim = min(max_kernel, 3), min(max_dim, 5)
    if wide:
        max_dim = {1: 40, 2: 14, 3: 7}[k]
    groups = draw(st.integers(1, 4))
    # Depthwise (one input channel per group) about half the time.
    cg = 1 if draw(st.booleans()) else draw(st.integers(2, 16 if wide else 3))
    m_per_g = draw(st.integers(1, 20 if wide else 6))
    n = draw(st.sampled_from([1, 2, 3, 1, 2, 3, 0]))  # an empty batch now and then
    kernel = draw(st.lists(st.integers(1, max_kernel), min_size=k, max_size=k))
    dilations = draw(st.lists(st.sampled_from([1, 1, 2, 3]), min_size=k, max_size=k))
    strides = draw(st.lists(st.sampled_from([1, 1, 2, 3]), min_size=k, max_size=k))
    modes = [None, "NOTSET"] if explicit_pads else [None, "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]
    auto_pad = draw(st.sampled_from(modes))
    spatial, begins, ends = [], [], []
    for d in range(k):
        span = _span(kernel[d], dilations[d])
        size = draw(st.integers(span, span + max_dim - 1)) if auto_pad == "VALID" else draw(st.integers(1, max_dim))
        spatial.append(size)
        if auto_pad in (None, "NOTSET"):
            limit = max(span - 1, size)  # the default pad limit; pads at it must be accepted
            begin = draw(st.one_of(st.integers(0, min(limit, 2)), st.just(limit)))
            need = max(0, span - size - begin)  # the output must not be empty
            end = draw(st.one_of(st.integers(need, max(need, min(limit, 2))), st.just(limit)))
            begins.append(begin)
            ends.append(end)
    attrs: dict = {}
    if auto_pad is not None:
        attrs["auto_pad"] = auto_pad
    if auto_pad in (None, "NOTSET") and (any(begins + ends) or draw(st.booleans())):
        attrs["pads"] = begins + ends
    if any(s != 1 for s in strides) or draw(st.booleans()):
        attrs["strides"] = strides
    if any(s != 1 for s in dilations) or draw(st.booleans()):
        attrs["dilations"] = dilations
    if draw(st.booleans()):
        attrs["kernel_shape"] = kernel
    if groups != 1 or draw(st.booleans()):
        attrs["group"] = groups
    if draw(st.booleans()):
        # A float32 attribute: the reference gets the rounded value.
        attrs["epsilon"] = float(np.float32(draw(st.sampled_from([1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0]))))
    for flag in ("center", "scale"):
        value = draw(st.sampled_from([1, 0]))
        if value == 0 or draw(st.booleans()):
            attrs[flag] = value
    # Data: random activations, shifted ones, and near-flat bright ones (mean far above the spread).
    offset, spread = draw(st.sampled_from([(0.0, 1.0), (3.0, 1.0), (1.0, 0.1), (50.0, 10.0), (200.0, 0.01)]))
    return {
        "kind": "valid",
        "x_shape": [n, groups * cg, *spatial],
        "w_shape": [groups * m_per_g, cg, *kernel],
        "bias": draw(st.booleans()),
        "dtype": draw(st.sampled_from(["float32", "float32", "float16"])),
        "attrs": attrs,
        "seed": draw(st.integers(0, 2**32 - 1)),
        "offset": offset,
        "spread": spread,
        "threads": draw(st.sampled_from([1, 2])),
        "opset": 1,
        "fallback_opset": draw(st.sampled_from([18, 19, 20, 21])),
        "env": {},
        "expect": None,
    }


def _error_case(case: dict, kind: str, words, any_words=None, fast: bool = False) -> dict:
    """A refused case made from a valid one: one sample, float32, no reference."""
    case = copy.deepcopy(case)
    case["x_shape"][0] = max(1, case["x_shape"][0])
    case.update(kind=kind, dtype="float32", expect={"words": list(words), "any_words": list(any_words or []),
                                                     "fast": fast})
    return case


def _wrong_value(kind: str, k: int):
    """Strategies for a value of every kind but `kind` (lists sized as the attribute would be)."""
    ints = st.integers(1, 3)
    floats = st.sampled_from([1.0, 2.0, 0.5, 1e-5])
    as_int, as_float = ints, floats
    as_ints = st.lists(ints, min_size=k, max_size=2 * k)
    as_floats = st.lists(floats, min_size=k, max_size=2 * k)
    as_string = st.sampled_from(["5", "1", "1e-5", "NOTSET", "SAME_UPPER"])
    as_strings = st.lists(st.sampled_from(["1", "2", "VALID"]), min_size=1, max_size=2 * k)
    as_tensor = st.lists(ints, min_size=1, max_size=2 * k).map(lambda v: {"tensor": v})
    options = {"int": as_int, "float": as_float, "ints": as_ints, "floats": as_floats, "string": as_string,
               "strings": as_strings, "tensor": as_tensor}
    del options[kind]
    return st.one_of(*options.values())


@st.composite
def malformed_cases(draw):
    """A valid case with one attribute wrongly typed or out of range; the message must name it."""
    case = draw(valid_cases(small=True))
    attrs = case["attrs"]
    k = len(case["w_shape"]) - 2
    groups, kernel = attrs.get("group", 1), case["w_shape"][2:]
    what = draw(st.sampled_from(["wrong_type", "wrong_type", "pads", "strides", "dilations", "kernel_shape",
                                 "group", "epsilon", "center", "scale", "auto_pad", "auto_pad_with_pads"]))
    if what == "wrong_type":
        name = draw(st.sampled_from(sorted(ATTR_KINDS)))
        attrs[name] = draw(_wrong_value(ATTR_KINDS[name], k))
        return _error_case(case, "malformed", [name])
    name = what
    if what in ("pads", "strides", "dilations", "kernel_shape"):
        count = 2 * k if what == "pads" else k
        base = {"pads": attrs.get("pads", [0] * count), "strides": attrs.get("strides", [1] * k),
                "dilations": attrs.get("dilations", [1] * k), "kernel_shape": list(kernel)}[what]
        if draw(st.booleans()):  # wrong length (never empty: ONNX Runtime's Conv reads [] as the default)
            length = draw(st.integers(1, count + 3).filter(lambda n: n != count))
            value = [draw(st.integers(0 if what == "pads" else 1, 3)) for _ in range(length)]
        else:
            value = list(base)
            i = draw(st.integers(0, count - 1))
            if what == "pads":
                value[i] = -draw(st.one_of(st.integers(1, 3), st.integers(1, 2**62)))
            elif what == "kernel_shape":
                value[i] = draw(st.one_of(st.integers(-3, 0), st.integers(1, 3).map(lambda d: value[i] + d)))
            else:
                value[i] = draw(st.one_of(st.just(0), st.integers(-2**62, -1)))
        if what == "pads":
            attrs.pop("auto_pad", None)
        attrs[what] = value
    elif what == "group":
        attrs["group"] = draw(st.integers(-3, 12).filter(lambda g: g != groups))
    elif what == "epsilon":
        attrs["epsilon"] = draw(st.sampled_from([0.0, -0.0, -1e-5, -1.0, math.nan, math.inf, -math.inf]))
    elif what in ("center", "scale"):
        attrs[what] = draw(st.sampled_from([2, -1, 3, 2**40, -2**40]))
    elif what == "auto_pad":
        attrs.pop("pads", None)
        attrs["auto_pad"] = draw(st.sampled_from(["SAME", "same_upper", "VALID ", "PAD", "SAME_UPPER_", "valid"]))
    else:  # explicit pads together with an auto_pad other than NOTSET (as ONNX Conv, an error)
        attrs["auto_pad"] = draw(st.sampled_from(["SAME_UPPER", "SAME_LOWER", "VALID"]))
        attrs["pads"] = draw(st.lists(st.integers(0, 2), min_size=2 * k, max_size=2 * k))
        name = "pads"
    return _error_case(case, "malformed", [name])


@st.composite
def opset_cases(draw):
    """A valid node in a model that imports ncnn_onnx at another version: refused."""
    case = draw(valid_cases(small=True))
    version = draw(st.one_of(st.sampled_from([0, 2, 99]), st.integers(2, 2**31)))
    case = _error_case(case, "opset", ["ncnn_onnx", str(version)])
    case["opset"] = version
    return case


@st.composite
def pad_bomb_cases(draw):
    """One pad past the default limit, max(dilated kernel extent - 1, input extent): refused, quickly."""
    case = _past_pad_limit(draw, st.one_of(st.integers(1, 65), st.integers(2**20, 2**40)))
    return _error_case(case, "pad_bomb", [], PAD_WORDS, fast=True)


def _past_pad_limit(draw, beyond):
    """A small valid case with one pad `beyond` past the default limit,
    max(dilated kernel extent - 1, input extent)."""
    case = draw(valid_cases(small=True, explicit_pads=True))
    attrs = case["attrs"]
    k = len(case["w_shape"]) - 2
    pads = list(attrs.get("pads", [0] * (2 * k)))
    i = draw(st.integers(0, 2 * k - 1))
    d = i % k
    dilation = attrs.get("dilations", [1] * k)[d]
    limit = max(_span(case["w_shape"][2 + d], dilation) - 1, case["x_shape"][2 + d])
    pads[i] = limit + draw(beyond)
    attrs["pads"] = pads
    return case


@st.composite
def raised_pad_cases(draw):
    """Pads past the default limit with NCNN_ONNX_MAX_PAD raised: valid, and must match the reference."""
    case = _past_pad_limit(draw, st.integers(1, 8))
    case["kind"] = "raised_pad"
    case["env"] = dict(LIMITS_ENV)
    return case


@st.composite
def output_bomb_cases(draw):
    """Pads within the limit (a huge dilation makes the kernel reach far) but an output over 4 GiB:
    refused by NCNN_ONNX_MAX_BUFFER_BYTES' default, quickly."""
    k = draw(st.integers(1, 3))
    low, high = {1: (2**31, 2**40), 2: (2**16, 2**24), 3: (2**11, 2**16)}[k]
    dilations = draw(st.lists(st.integers(low, high), min_size=k, max_size=k))
    spatial = draw(st.lists(st.integers(1, 3), min_size=k, max_size=k))
    m = draw(st.integers(1, 4))
    case = {
        "kind": "output_bomb", "x_shape": [1, 1, *spatial], "w_shape": [m, 1] + [2] * k, "bias": draw(st.booleans()),
        "dtype": "float32", "attrs": {"dilations": dilations, "pads": dilations + dilations},
        "seed": draw(st.integers(0, 2**32 - 1)), "offset": 0.0, "spread": 1.0, "threads": 1, "opset": 1,
        "fallback_opset": 20, "env": {},
        "expect": {"words": [], "any_words": BUFFER_WORDS, "fast": True},
    }
    assert m * math.prod(s + d for s, d in zip(spatial, dilations)) * 4 > DEFAULT_BUFFER_BYTES
    return case


@st.composite
def cap_bomb_cases(draw):
    """An ordinary case whose output exceeds NCNN_ONNX_MAX_BUFFER_BYTES lowered to 1 MiB: refused."""
    n, m = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    need = LIMITS_BUFFER_BYTES // (4 * n * m) + 1  # output positions that exceed the cap
    if draw(st.booleans()):
        kernel = draw(st.integers(1, 3))
        x_shape = [n, 1, need + kernel - 1 + draw(st.integers(0, 4096))]
        w_shape = [m, 1, kernel]
        attrs = {}
    else:
        height = draw(st.integers(128, 600))
        width = -(-need // height) + draw(st.integers(0, 8))
        x_shape, w_shape, attrs = [n, 1, height, width], [m, 1, 3, 3], {"pads": [1, 1, 1, 1]}
    return {
        "kind": "cap_bomb", "x_shape": x_shape, "w_shape": w_shape, "bias": draw(st.booleans()), "dtype": "float32",
        "attrs": attrs, "seed": draw(st.integers(0, 2**32 - 1)), "offset": 0.0, "spread": 1.0, "threads": 1,
        "opset": 1, "fallback_opset": 20, "env": dict(LIMITS_ENV),
        "expect": {"words": [], "any_words": BUFFER_WORDS, "fast": True},
    }


STRATEGIES = {
    "valid": valid_cases(), "raised_pad": raised_pad_cases(), "malformed": malformed_cases(), "opset": opset_cases(),
    "pad_bomb": pad_bomb_cases(), "output_bomb": output_bomb_cases(), "cap_bomb": cap_bomb_cases(),
}


@contextlib.contextmanager
def _without_local_constants():
    """Hypothesis mixes the literals of the project's own modules (those imported so far) into its draws,
    which would make the derandomized examples depend on unrelated code and on which tests were collected.
    Switched off around generation (a private hook; where it is missing, nothing changes)."""
    try:
        from hypothesis.internal.conjecture import providers

        original, empty = providers._get_local_constants, providers.Constants()
    except (ImportError, AttributeError):
        yield
        return
    providers._get_local_constants = lambda: empty
    providers.CONSTANTS_CACHE.cache.clear()
    try:
        yield
    finally:
        providers._get_local_constants = original
        providers.CONSTANTS_CACHE.cache.clear()


def generate(kind: str, count: int, seed: int | None) -> list[dict]:
    """`count` examples of one strategy: derandomized (the same every run) unless `seed` is given."""
    found: list[dict] = []
    keys: set[str] = set()

    def gather(case):
        key = json.dumps(case, sort_keys=True)
        if key not in keys:
            keys.add(key)
            found.append(case)

    gather.__name__ = f"gather_{kind}"  # derandomize seeds from the function: one stream per kind
    test = given(STRATEGIES[kind])(gather)
    test = settings(
        max_examples=count, derandomize=seed is None, database=None, deadline=None,
        phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
    )(test)
    if seed is not None:
        test = hypothesis_seed(seed + sum(map(ord, kind)))(test)
    with _without_local_constants():
        test()
    return found[:count]


# ---------------------------------------------------------------------------------------------- fixed cases


def _case(kind, x_shape, w_shape, attrs, words=(), any_words=(), fast=False, env=None, bias=True, opset=1):
    must_run = kind in ("valid", "raised_pad")
    expect = None if must_run else {"words": list(words), "any_words": list(any_words), "fast": fast}
    return {
        "kind": kind, "x_shape": list(x_shape), "w_shape": list(w_shape), "bias": bias, "dtype": "float32",
        "attrs": attrs, "seed": 7, "offset": 1.0, "spread": 1.0, "threads": 2, "opset": opset, "fallback_opset": 20,
        "env": dict(env or {}), "expect": expect,
    }


def _bad(attrs, word):
    return _case("malformed", (1, 3, 8, 8), (4, 3, 3, 3), attrs, words=[word])


FIXED = {
    # Wrongly typed attributes.
    "strides_floats": _bad({"strides": [2.0, 2.0]}, "strides"),
    "strides_int": _bad({"strides": 2}, "strides"),
    "strides_strings": _bad({"strides": ["1", "1"]}, "strides"),
    "pads_floats": _bad({"pads": [1.0] * 4}, "pads"),
    "pads_tensor": _bad({"pads": {"tensor": [1, 1, 1, 1]}}, "pads"),
    "dilations_floats": _bad({"dilations": [2.0, 2.0]}, "dilations"),
    "kernel_shape_string": _bad({"kernel_shape": "5"}, "kernel_shape"),
    "group_float": _bad({"group": 1.0}, "group"),
    "epsilon_int": _bad({"epsilon": 1}, "epsilon"),
    "center_float": _bad({"center": 1.0}, "center"),
    "scale_string": _bad({"scale": "1"}, "scale"),
    "auto_pad_int": _bad({"auto_pad": 1}, "auto_pad"),
    "auto_pad_strings": _bad({"auto_pad": ["VALID"]}, "auto_pad"),
    # Out-of-range values.
    "pads_negative": _bad({"pads": [1, -1, 1, 1]}, "pads"),
    "strides_zero": _bad({"strides": [0, 1]}, "strides"),
    "dilations_zero": _bad({"dilations": [1, 0]}, "dilations"),
    "group_not_dividing": _bad({"group": 2}, "group"),
    "kernel_shape_disagrees": _bad({"kernel_shape": [3, 5]}, "kernel_shape"),
    # Other versions of the domain.
    "opset_2": _case("opset", (1, 3, 8, 8), (4, 3, 3, 3), {}, words=["ncnn_onnx", "2"], opset=2),
    "opset_99": _case("opset", (1, 3, 8, 8), (4, 3, 3, 3), {}, words=["ncnn_onnx", "99"], opset=99),
    # Resource bombs under the default limits.
    "pads_1e8_1000_channels": _case("pad_bomb", (1, 1000, 1), (1, 1000, 1), {"pads": [10**8, 10**8]},
                                    any_words=PAD_WORDS, fast=True),
    "pads_2e29_one_element": _case("pad_bomb", (1, 1, 1), (1, 1, 1), {"pads": [0, 2**29 - 1]},
                                   any_words=PAD_WORDS, fast=True),
    "pad_one_over_limit": _case("pad_bomb", (1, 2, 3), (2, 2, 2), {"pads": [4, 0]}, any_words=PAD_WORDS, fast=True),
    "pad_at_limit_runs": _case("valid", (1, 2, 3), (2, 2, 2), {"pads": [3, 3]}),
    "dilated_output_8gib_1d": _case("output_bomb", (1, 1, 1), (2, 1, 2), {"dilations": [2**30], "pads": [2**30] * 2},
                                    any_words=BUFFER_WORDS, fast=True),
    "dilated_output_40gb_2d": _case("output_bomb", (1, 1, 1, 1), (1, 1, 2, 2),
                                    {"dilations": [10**5] * 2, "pads": [10**5] * 4}, any_words=BUFFER_WORDS, fast=True),
    # NCNN_ONNX_MAX_PAD raised, NCNN_ONNX_MAX_BUFFER_BYTES lowered to 1 MiB.
    "raised_max_pad_runs": _case("raised_pad", (1, 2, 3), (2, 2, 2), {"pads": [40, 45]}, env=LIMITS_ENV),
    "pads_1e8_hits_buffer_cap": _case("cap_bomb", (1, 1000, 1), (1, 1000, 1), {"pads": [10**8, 10**8]},
                                      any_words=BUFFER_WORDS, fast=True, env=LIMITS_ENV),
    "output_over_buffer_cap": _case("cap_bomb", (1, 1, 300, 300), (4, 1, 1, 1), {}, any_words=BUFFER_WORDS,
                                    fast=True, env=LIMITS_ENV),
    "output_under_buffer_cap_runs": _case("raised_pad", (1, 2, 16, 16), (4, 2, 3, 3), {"pads": [1, 1, 1, 1]},
                                          env=LIMITS_ENV),
}


def all_cases() -> tuple[dict, int | None]:
    """{case id: case}: the fixed ones, then the generated ones; and the seed of a randomized run."""
    seed = fuzz_seed()
    cases = {f"fixed-{name}": copy.deepcopy(case) for name, case in FIXED.items()}
    for kind, count in example_counts().items():
        for i, case in enumerate(generate(kind, count, seed)):
            cases[f"{kind}-{i:04d}"] = case
    return cases, seed


# ---------------------------------------------------------------------------------------------- jobs


def expects_success(case: dict) -> bool:
    return case["expect"] is None


def fallback_runs(case: dict) -> bool:
    """Whether plain onnxruntime can run the fallback body (docs/op.md): not for SAME_* with a dilation > 1,
    not for an empty batch."""
    attrs = case["attrs"]
    if not expects_success(case) or case["x_shape"][0] == 0:
        return False
    return not (attrs.get("auto_pad") in SAME and any(d > 1 for d in attrs.get("dilations", [])))


def targets(case: dict, isas: list[str]) -> list[str]:
    return list(isas) + (["fallback"] if fallback_runs(case) else [])


def _attribute(name: str, value):
    if isinstance(value, dict) and "tensor" in value:
        return numpy_helper.from_array(np.asarray(value["tensor"], dtype=np.int64), name)
    return value


def library_model(case: dict, w, b) -> bytes:
    attrs = {name: _attribute(name, value) for name, value in case["attrs"].items()}
    model = nc_model(w, b, **attrs)
    if case["opset"] == 1:
        return model
    import onnx

    proto = onnx.load_from_string(model)
    for opset in proto.opset_import:
        if opset.domain == DOMAIN:
            opset.version = case["opset"]
    return proto.SerializeToString()


def fallback_model(case: dict, w, b) -> bytes:
    """The single node with the exporter's function attached by the exporter's own code (graph.finish)."""
    elem = TENSOR_TYPE[np.dtype(case["dtype"])]
    inits = [numpy_helper.from_array(w, "W")] + ([numpy_helper.from_array(b, "B")] if b is not None else [])
    node = helper.make_node("NormalizedConv", ["X", "W"] + (["B"] if b is not None else []), ["Y"], domain=DOMAIN,
                            name="nc", **case["attrs"])
    graph = helper.make_graph([node], "nc", [helper.make_tensor_value_info("X", elem, None)],
                              [helper.make_tensor_value_info("Y", elem, None)], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case["fallback_opset"]),
                                                    helper.make_opsetid(DOMAIN, 1)])
    proto.ir_version = 10  # what the exporter writes (torch.onnx); onnx's newer default is refused by onnxruntime 1.18
    export_graph.finish(proto, True, {elem})
    return proto.SerializeToString()


def reference_for(case: dict, x, w, b) -> np.ndarray:
    names = ("auto_pad", "strides", "dilations", "pads", "group", "epsilon", "center", "scale")
    attrs = {k: v for k, v in case["attrs"].items() if k in names}
    if x.shape[0] == 0:  # the unfold reference cannot reshape an empty batch: one sample, then none
        return reference(np.zeros((1, *x.shape[1:]), x.dtype), w, b, **attrs)[:0]
    return reference(x, w, b, **attrs)


def _representable(ref: np.ndarray, dtype: str) -> bool:
    """Whether the exact output fits the output type (float16 ends at 65504; the op does not say what an
    overflowing output is, so such cases are not compared)."""
    return ref.size == 0 or float(np.max(np.abs(ref))) < 0.9 * float(np.finfo(dtype).max)


def build_jobs(cases: dict, isas: list[str]) -> tuple[dict, dict]:
    """{(target, env items): [job]} (one child process per target and environment), and
    {case id: reference output shape} for the cases that must run."""
    groups: dict = {}
    shapes: dict = {}
    for case_id, case in cases.items():
        x, w, b = make_data(case["seed"], case["x_shape"], case["w_shape"], case["bias"], case["dtype"],
                            case["offset"], case["spread"])
        x_spec = {"seed": case["seed"], "shape": case["x_shape"], "dtype": case["dtype"], "offset": case["offset"],
                  "spread": case["spread"]}
        ref = reference_for(case, x, w, b) if expects_success(case) else None
        if ref is not None:
            if not _representable(ref, case["dtype"]):
                continue  # e.g. center=0 on a bright near-flat float16 input: |Y| past float16's range
            shapes[case_id] = list(ref.shape)
        lib = library_model(case, w, b)
        for target in targets(case, isas):
            model = fallback_model(case, w, b) if target == "fallback" else lib
            job = {"id": f"{case_id}@{target}", "case": case_id, "target": target,
                   "path": "fallback" if target == "fallback" else "library", "model": model, "x": x_spec, "ref": ref,
                   "threads": case["threads"], "bomb": bool(case["expect"] and case["expect"]["fast"])}
            env = () if target == "fallback" else tuple(sorted(case["env"].items()))
            groups.setdefault((target, env), []).append(job)
    return groups, shapes


# ---------------------------------------------------------------------------------------------- running


def child_env(target: str, extra: dict) -> dict:
    env = dict(os.environ)
    tests = os.path.dirname(HERE)
    env["PYTHONPATH"] = os.pathsep.join([tests, HERE, env.get("PYTHONPATH", "")])
    for name in ("NCNN_ONNX_CPU_ISA", "NCNN_ONNX_MAX_PAD", "NCNN_ONNX_MAX_BUFFER_BYTES"):
        env.pop(name, None)
    if target != "fallback":
        env["NCNN_ONNX_CPU_ISA"] = target
    env.update(extra)
    return env


CRASH_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "Fatal Python error",
                 "terminate called", "AddressSanitizer:DEADLYSIGNAL")


def _tail(path: str, limit: int = 3000) -> str:
    """What the child wrote to stderr: from a sanitizer's or the interpreter's crash report on (its first
    lines name the fault and the library's frames), else the end."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    starts = [text.rfind("\n", 0, i) + 1 for i in (text.find(m) for m in CRASH_MARKERS) if i >= 0]
    if not starts:
        return text[-limit:].strip()
    lines = text[min(starts):].splitlines()
    excerpt = "\n".join(lines[:30])
    summary = [line for line in lines[30:] if line.startswith("SUMMARY:")]
    return (excerpt + ("\n...\n" + summary[0] if summary else ""))[:limit].strip()


def run_group(jobs: list[dict], env: dict, workdir: str, name: str) -> dict:
    """Runs the jobs in child processes (a new one after each crash or hang); {job id: result}."""
    job_file = os.path.join(workdir, f"{name}.pickle")
    with open(job_file, "wb") as f:
        pickle.dump(jobs, f)
    index = {job["id"]: i for i, job in enumerate(jobs)}
    results: dict = {}
    start, attempt = 0, 0
    while start < len(jobs):
        attempt += 1
        err_file = os.path.join(workdir, f"{name}.{attempt}.stderr")
        with open(err_file, "wb") as err:
            proc = subprocess.Popen([sys.executable, CHILD, job_file, str(start)], stdout=subprocess.PIPE,
                                    stderr=err, env=env)
        fd = proc.stdout.fileno()
        buffer, current, current_start = b"", None, 0.0
        deadline = time.monotonic() + STARTUP_SECONDS
        next_start = len(jobs)
        while True:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:  # a hang: kill the child, fail the case, go on after it
                proc.kill()
                proc.wait()
                proc.stdout.close()
                if current is None:
                    for job in jobs[start:]:
                        results.setdefault(job["id"], {"status": "lost", "message": "the child process hung "
                                                       "between cases: " + _tail(err_file)})
                    break
                results[current] = {"status": "timeout", "seconds": time.monotonic() - current_start}
                next_start = index[current] + 1
                break
            chunk = os.read(fd, 1 << 16)
            if not chunk:  # the child exited
                code = proc.wait()
                proc.stdout.close()
                if current is not None:
                    results[current] = {"status": "crash", "code": code, "stderr": _tail(err_file)}
                    next_start = index[current] + 1
                elif code != 0:
                    for job in jobs[start:]:
                        results.setdefault(job["id"], {"status": "lost", "message": f"the child process exited "
                                                       f"{code} outside any case: " + _tail(err_file)})
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if not line.startswith(b"{"):
                    continue
                record = json.loads(line)
                if record["event"] == "start":
                    current, current_start = record["id"], time.monotonic()
                    limit = KILL_BOMB_SECONDS if jobs[index[current]]["bomb"] else KILL_SECONDS
                    deadline = current_start + limit
                else:
                    results[record["id"]] = dict(record, status="done")
                    current = None
                    deadline = time.monotonic() + STARTUP_SECONDS
        start = next_start
    return results


def run_all(groups: dict, workdir: str, parallel: int | None = None) -> dict:
    """Runs every group (in `parallel` child processes at a time); {job id: result}."""
    parallel = parallel or int(os.environ.get("NCNN_ONNX_FUZZ_PROCESSES", "2"))
    results: dict = {}
    items = sorted(groups.items(), key=lambda item: -len(item[1]))

    def one(i_item):
        i, ((target, env), jobs) = i_item
        return run_group(jobs, child_env(target, dict(env)), workdir, f"group{i}-{target}")

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        for part in pool.map(one, enumerate(items)):
            results.update(part)
    return results


# ---------------------------------------------------------------------------------------------- leaks

# LeakSanitizer in a child of its own: the slow unwinder follows a leak allocated inside onnxruntime back
# into the library's frames (the library is built with frame pointers), and only the leaks with a library
# frame count; Python's and onnxruntime's own allocations at exit (thousands) are ignored.
LEAK_OPTIONS = {"detect_leaks": "1", "fast_unwind_on_malloc": "0", "malloc_context_size": "30"}
_LIBRARY_FRAME = re.compile(r"libncnn_onnx_ops|ncnn_onnx::|/runtime/(common|cpu|cuda)/|/runtime/register\.cc")


def _asan_options(text: str, **changes) -> str:
    options = dict(item.split("=", 1) for item in text.split(":") if "=" in item)
    options.update(changes)
    return ":".join(f"{k}={v}" for k, v in options.items())


def library_leaks(cases: dict, isas: list[str], workdir: str) -> list[str]:
    """The LeakSanitizer reports whose stacks pass through the library, after running the cases' library
    jobs (the ASan runtime must be preloaded)."""
    groups, _ = build_jobs(cases, isas)
    found = []
    for i, ((target, env), jobs) in enumerate(sorted(groups.items())):
        if target == "fallback":
            continue
        job_file = os.path.join(workdir, f"leaks{i}.pickle")
        with open(job_file, "wb") as f:
            pickle.dump(jobs, f)
        child = child_env(target, dict(env))
        child["ASAN_OPTIONS"] = _asan_options(child.get("ASAN_OPTIONS", ""), **LEAK_OPTIONS)
        done = subprocess.run([sys.executable, CHILD, job_file, "0"], capture_output=True, text=True, env=child,
                              timeout=KILL_SECONDS * 10)
        where = target + "".join(f" {k}={v}" for k, v in env)
        if "ERROR: LeakSanitizer" not in done.stderr and done.returncode != 0:
            found.append(f"{where}: the child exited {done.returncode}:\n{done.stderr[-3000:]}")
        for block in re.split(r"\n(?=(?:Direct|Indirect) leak of )", done.stderr):
            if re.match(r"(Direct|Indirect) leak of ", block) and _LIBRARY_FRAME.search(block):
                found.append(f"{where}: {block.split(chr(10) + chr(10))[0][:3000]}")
    return found


# ---------------------------------------------------------------------------------------------- checking


def problem(case: dict, result: dict | None, ref_shape=None) -> str | None:
    """What is wrong with one job's result, or None."""
    if result is None:
        return "no result came back"
    status = result["status"]
    if status == "crash":
        return f"the child process died in this case (exit {result['code']}):\n{result['stderr']}"
    if status == "timeout":
        return f"still running after {result['seconds']:.1f} s: killed"
    if status == "lost":
        return result["message"]
    stage, message = result["stage"], result["message"]
    expect = case["expect"]
    if expect is None:
        if stage != "none":
            return f"raised at {stage}: {result['type']}: {message}"
        if result["shape"] != ref_shape:
            return f"output shape {result['shape']}, expected {ref_shape}"
        if result["dtype"] != case["dtype"]:
            return f"output dtype {result['dtype']}, expected {case['dtype']}"
        err, tol = result.get("error"), bar(np.dtype(case["dtype"]))
        if err is None or not err <= tol:
            return f"parity error {err:.3e} > bar {tol:.0e} (max|Y - Y_ref| / max|Y_ref|)"
        return None
    if stage == "none":
        return f"accepted: ran in {result['seconds']:.2f} s and returned shape {result['shape']} instead of an error"
    missing = [w for w in expect["words"] if w not in message]
    if missing:
        return f"the message does not name {missing}: {result['type']}: {message}"
    if expect["any_words"] and not any(w in message for w in expect["any_words"]):
        return f"the message names none of {expect['any_words']}: {result['type']}: {message}"
    if expect["fast"] and result["seconds"] > FAST_SECONDS:
        return f"refused only after {result['seconds']:.2f} s (bar {FAST_SECONDS:.1f} s): {message}"
    return None


def describe(case_id: str, case: dict) -> str:
    return f"{case_id}: {json.dumps(case)}"


def run_cases(cases: dict, isas: list[str], workdir: str) -> dict:
    """{case id: {target: problem or None}}."""
    groups, shapes = build_jobs(cases, isas)
    results = run_all(groups, workdir)
    report: dict = {}
    for case_id, case in cases.items():
        if expects_success(case) and case_id not in shapes:
            report[case_id] = {}  # not compared (_representable)
            continue
        report[case_id] = {target: problem(case, results.get(f"{case_id}@{target}"), shapes.get(case_id))
                           for target in targets(case, isas)}
    return report


def main(argv: list[str]) -> int:
    """Re-runs the cases given as JSON (what a failing test prints) and prints what each target did."""
    cases = {f"repro-{i}": json.loads(text) for i, text in enumerate(argv)}
    with tempfile.TemporaryDirectory() as workdir:
        report = run_cases(cases, available_isas(), workdir)
    bad = 0
    for case_id, per_target in report.items():
        for target, found in per_target.items():
            print(f"{case_id}@{target}: {found or 'ok'}")
            bad += found is not None
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
