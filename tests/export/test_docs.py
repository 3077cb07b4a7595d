"""docs/op.md is the spec third parties implement: its tables and its direct implementation must
agree with the registered schema and with the float64 reference."""

import pathlib
import re

import numpy as np
import onnx
import pytest

import ncnn_onnx.export  # noqa: F401  (registers the schema)
from reference import assert_non_finite_rule, assert_parity, nc_reference, non_finite_input

SPEC = (pathlib.Path(__file__).parents[2] / "docs" / "op.md").read_text()


def test_attribute_table_matches_schema():
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| ([^|]+) \|", SPEC, re.M)
    kinds = ("int", "ints", "float", "string")
    table = {name: (kind, default.strip()) for name, kind, default in rows if kind in kinds}
    schema = onnx.defs.get_schema("NormalizedConv", 1, "ncnn_onnx")
    assert set(table) == set(schema.attributes)
    for name, attr in schema.attributes.items():
        if attr.default_value.type:
            value = onnx.helper.get_attribute_value(attr.default_value)
            documented = table[name][1].strip("`")
            if isinstance(value, bytes):
                assert documented == value.decode(), name
            else:
                assert float(documented) == pytest.approx(value, rel=1e-6), name


@pytest.mark.parametrize(
    "x_shape,w_shape,attrs,ref_args",
    [
        ((2, 4, 9, 8), (6, 2, 3, 2), dict(strides=[2, 1], pads=[1, 0, 1, 1], dilations=[1, 2], group=2, center=0),
         dict(stride=(2, 1), pads=(1, 0, 1, 1), dilation=(1, 2), groups=2, center=False)),
        ((2, 3, 7), (4, 3, 3), dict(scale=0, pads=[2, 1], epsilon=1e-3), dict(scale=False, pads=(2, 1), eps=1e-3)),
        ((1, 2, 5, 6, 4), (4, 1, 2, 3, 2), dict(group=2, strides=[1, 2, 1]), dict(groups=2, stride=(1, 2, 1))),
    ],
)
def test_direct_implementation_matches_reference(x_shape, w_shape, attrs, ref_args):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    y = direct_implementation()(x, w, b, **attrs)
    assert_parity(y, nc_reference(x, w, b, **ref_args), np.float64)


def direct_implementation():
    code = re.search(r"```python\n(.*?)```", SPEC, re.S).group(1)
    namespace = {}
    exec(code, namespace)
    return namespace["normalized_conv"]


@pytest.mark.parametrize("center,scale", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("shape", [(2, 4, 9), (2, 4, 7, 6)], ids=["1d", "2d"])
def test_direct_implementation_follows_the_non_finite_rule(shape, value, center, scale):
    """The doc's reference states the section "Non-finite values" in code; hold it to the section."""
    x = non_finite_input(shape, value, seed=len(shape))
    ndim = len(shape) - 2
    rng = np.random.default_rng(ndim)
    w, b = rng.standard_normal((6, 2) + (3,) * ndim), rng.standard_normal(6)
    with np.errstate(invalid="ignore"):  # the inf - inf of an infinite patch's mean
        y = direct_implementation()(x, w, b, pads=[1] * (2 * ndim), group=2, center=center, scale=scale)
    assert_non_finite_rule(y, x, w, b, np.float64, pads=1, groups=2, center=bool(center), scale=bool(scale))


def test_spec_states_non_finite_rule_and_limits():
    sections = re.findall(r"^## (.+)$", SPEC, re.M)
    assert {"Non-finite values", "Limits"} <= set(sections)
    limits = SPEC[SPEC.index("## Limits"):]
    for needle in ("NCNN_ONNX_MAX_PAD", "NCNN_ONNX_MAX_BUFFER_BYTES", "4294967296", "normal float32", "int64"):
        assert needle in limits, needle


README = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
# Every tool of issue 13's table and of its "must keep working" list, as the docs name it.
TOOLS = ["optimized_model_filepath", "version_converter", "quant_pre_process", "symbolic_shape_infer", "inliner",
         "quantize_dynamic", "quantize_static", "float16", "onnxsim", "onnxslim", "external_data",
         "ReferenceEvaluator", "polygraphy", "dynamo=False", "dynamo=True", "sess_options"]


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


@pytest.mark.parametrize("doc", ["op.md", "README.md"])
def test_tool_section_names_every_tool_and_only_real_commands(doc):
    from ncnn_onnx.cli import COMMANDS

    section = _section(SPEC if doc == "op.md" else README, "Using ONNX tools on NC models")
    if doc == "op.md":
        rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
        for tool in TOOLS:
            assert sum(tool in row for row in rows) >= 1, tool
    else:
        for tool in ("optimize", "version_converter", "quant_pre_process", "symbolic_shape_infer", "inliner",
                     "quantize_dynamic", "quantize_static", "float16", "onnxsim", "onnxslim", "external data",
                     "onnx.reference", "polygraphy", "dynamo=False", "Triton"):
            assert tool in section, tool
    for command in re.findall(r"`ncnn-onnx ([a-z-]+)", section):
        assert command in COMMANDS, command
    assert "--ncnn-onnxrt" in section and "ncnn_onnx.runtime.polygraphy_ext" in section
