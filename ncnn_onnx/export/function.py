"""The portable fallback: a model-local ONNX function `ncnn_onnx.NormalizedConv` of standard ops only.

ONNX Runtime inlines it wherever no kernel for the op is registered, and `onnx.reference` runs it too.
The body is the decomposition of `ncnn_onnx/_algorithm.py` (exact, no cancellation; docs/architecture.md, "Numerics"):

    m  = channel mean per group and location (0 when center=0 and scale=0);  xc = X - m
    Y1 = Conv(xc, W)                              the node's own Conv attributes
    patches of m, of the residual s = sum_c xc and of q = sum_c xc^2, by one Conv with a one-hot kernel
    dev = patches(m) - mu (residual-corrected), var = (boxsum(q) + 2 sum(dev s) + cg sum(dev^2)) / I
    Y  = (Y1 + Wsum @ dev) * rstd + B             Wsum = W summed over its input channels, (G, M/G, K)

Non-finite inputs follow docs/op.md ("Non-finite values"): every step is local to a location or a patch,
so a NaN or inf reaches only the outputs whose patch holds it (NaN there, through inf - inf in xc and
the NaN variance); with center=0 and scale=0, m = 0 makes the body the plain Conv with its IEEE results.

Everything is rank-generic (1, 2 and 3 spatial dims share one body) and computed in float32
(float64 for a float64 model: ONNX has no type promotion, so the exporter picks the working type).
The Conv attributes are passed through by reference and left out where the caller leaves them out, so
both inner Convs resolve pads, auto_pad, strides and dilations exactly as the node itself would.
"""

from __future__ import annotations

from typing import Optional

from onnx import AttributeProto, FunctionProto, NodeProto, TensorProto, helper

from .schema import CONV_ATTRIBUTES, DEFAULTS, DOMAIN, NC_ATTRIBUTES, OP_TYPE

# The one-hot Conv sees three per-group maps (m, s, q) as three single-channel groups.
_MAPS = 3


class _Body:
    """Appends nodes with fresh value names; keeps the body below readable as a formula."""

    def __init__(self) -> None:
        self.nodes: list[NodeProto] = []
        self._count = 0

    def __call__(self, op_type: str, *inputs: str, outputs: int = 1, refs=(), **attrs) -> str | list[str]:
        names = [self._name(op_type) for _ in range(outputs)]
        node = helper.make_node(op_type, list(inputs), names, **attrs)
        for attr, ref in refs:
            node.attribute.append(_ref(attr, ref))
        self.nodes.append(node)
        return names[0] if outputs == 1 else names

    def const(self, value, dtype=TensorProto.INT64) -> str:
        values = value if isinstance(value, list) else [value]
        dims = [len(values)] if isinstance(value, list) else []
        return self("Constant", value=helper.make_tensor(self._name("c"), dtype, dims, values))

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint.lower()}_{self._count}"


def _ref(name: str, ref_name: str) -> AttributeProto:
    kinds = {
        "auto_pad": AttributeProto.STRING, "group": AttributeProto.INT, "center": AttributeProto.INT,
        "scale": AttributeProto.INT, "epsilon": AttributeProto.FLOAT, "value_int": AttributeProto.INT,
        "value_float": AttributeProto.FLOAT,
    }
    attr = AttributeProto(name=name, ref_attr_name=ref_name)
    attr.type = kinds.get(name, AttributeProto.INTS)
    return attr


def build_function(opset: int, working_type: int = TensorProto.FLOAT) -> FunctionProto:
    """The FunctionProto for a model whose default-domain opset is `opset` (>= 18)."""
    if opset < 18:
        raise ValueError(f"the NormalizedConv function body needs ONNX opset >= 18, got {opset}")
    b = _Body()
    conv_refs = [(a, a) for a in CONV_ATTRIBUTES]
    # The one-hot Conv has its own group count; everything else about it follows the node.
    patch_refs = [(a, a) for a in CONV_ATTRIBUTES if a != "group"]
    axis2, axis3, minus1 = b.const([2]), b.const([3]), b.const([-1])

    def reduce(op, x):
        return b(op, x, axis2, keepdims=1)

    def reduce_k(op, x):
        return b(op, x, axis3, keepdims=1)

    def as_work(int_tensor):
        return b("Cast", int_tensor, to=working_type)

    # Shapes: N, C, spatial of X; M, cg, kernel of W; G = C / cg; K = prod(kernel).
    shape_x = b("Shape", "X")
    n = b("Shape", "X", start=0, end=1)
    c = b("Shape", "X", start=1, end=2)
    spatial = b("Shape", "X", start=2)
    m_out = b("Shape", "W", start=0, end=1)
    cg = b("Shape", "W", start=1, end=2)
    kernel = b("Shape", "W", start=2)
    k = b("ReduceProd", kernel, keepdims=1)
    g = b("Div", c, cg)
    m_per_g = b("Div", m_out, g)

    # center/scale select exactly (Where), never blend arithmetically: dev and m differ by ~mu, and
    # x * 0 turns an inf into NaN.
    center = b("Cast", b("Constant", refs=[("value_int", "center")]), to=TensorProto.BOOL)
    scale = b("Cast", b("Constant", refs=[("value_int", "scale")]), to=TensorProto.BOOL)
    plain = b("Not", b("Or", center, scale))
    zero = b.const(0.0, working_type)

    # Channel-centre per group and location, in the working type.
    xw = b("Cast", "X", to=working_type)
    ww = b("Cast", "W", to=working_type)
    xg = b("Reshape", xw, b("Concat", n, g, cg, minus1, axis=0))  # (N, G, cg, L)
    # center=0, scale=0 is exactly Conv(X, W) + B, with IEEE non-finite results (inf stays inf, where
    # X - m would give inf - inf = NaN): m = 0 there makes xc = X and the patch term 0. The Where is on m,
    # cg times smaller than X, so the common path pays next to nothing for it.
    # Where a location's channels all hold one value the mean is that value itself (the rounded mean of
    # equal values need not be), so an exactly flat patch centres to exactly 0 for every epsilon.
    low = reduce("ReduceMin", xg)
    exact_mean = b("Where", b("Equal", low, reduce("ReduceMax", xg)), low, reduce("ReduceMean", xg))
    mean = b("Where", plain, zero, exact_mean)
    xc = b("Sub", xg, mean)
    resid = reduce("ReduceSum", xc)
    sq = reduce("ReduceSum", b("Mul", xc, xc))
    y1 = b("Conv", b("Reshape", xc, shape_x), ww, refs=conv_refs)  # (N, M, O...)

    # Patches of the three maps by a one-hot kernel: (N*G, 3, D...) -> (N*G, 3K, O...).
    maps = b("Reshape", b("Concat", mean, resid, sq, axis=2), b("Concat", minus1, b.const([_MAPS]), spatial, axis=0))
    eye = b("EyeLike", b("ConstantOfShape", b("Concat", k, k, axis=0)), dtype=working_type)
    onehot = b("Reshape", eye, b("Concat", k, b.const([1]), kernel, axis=0))  # (K, 1, k...)
    kern = b("Concat", *([onehot] * _MAPS), axis=0)
    patches = b("Conv", maps, kern, group=_MAPS, refs=patch_refs)
    # (N, G, 1, K, P) each: the singleton axis stays, so the K axis is 3 from here on.
    pm, ps, pq = b("Split", b("Reshape", patches, b("Concat", n, g, b.const([_MAPS]), k, minus1, axis=0)),
                   axis=2, num_outputs=_MAPS, outputs=_MAPS)

    # Corrected two-pass statistics over the K patch locations:
    # mu = mean(m) + [mean(m - mean(m)) + sum(s) / I], the bracket being small.
    cgf = as_work(cg)
    fan_in = b("Mul", as_work(k), cgf)
    d0 = b("Sub", pm, reduce_k("ReduceMean", pm))
    dev = b("Sub", d0, reduce_k("ReduceMean", b("Add", d0, b("Div", ps, cgf))))
    # I * var = sum_k (q_k + dev_k * (2 s_k + cg dev_k)), every term computed from small numbers.
    spread = b("Add", pq, b("Mul", dev, b("Add", b("Add", ps, ps), b("Mul", cgf, dev))))
    var = b("Div", reduce_k("ReduceSum", spread), fan_in)  # (N, G, 1, 1, P)
    eps = b("Cast", b("Constant", refs=[("value_float", "epsilon")]), to=working_type)
    # A variance rounded below 0 counts as 0; a NaN one (a non-finite patch) stays NaN, which Relu or Max
    # need not guarantee (ONNX leaves their NaN behaviour open).
    var = b("Where", b("Less", var, zero), zero, var)
    rstd = b("Reciprocal", b("Sqrt", b("Add", var, eps)))

    term_in = b("Where", center, dev, pm)
    factor = b("Where", scale, rstd, b.const(1.0, working_type))

    # Wsum (G, 1, M/G, K) @ (N, G, 1, K, P) -> (N, G, 1, M/G, P), added to Y1 in the same layout.
    wsum = b("ReduceSum", b("Reshape", ww, b("Concat", g, minus1, cg, k, axis=0)), axis2, keepdims=0)
    wsum = b("Reshape", wsum, b("Concat", g, b.const([1]), m_per_g, k, axis=0))
    y1g = b("Reshape", y1, b("Concat", n, g, b.const([1]), m_per_g, minus1, axis=0))
    yg = b("Mul", b("Add", y1g, b("MatMul", wsum, term_in)), factor)

    # B is optional and a function cannot branch on a missing input; Gemm's optional C can:
    # 0 @ 0 + B is B when the caller gives it and zeros when it does not. The zero is derived from
    # X's data so that ONNX Runtime does not try to constant-fold this Gemm, which it cannot do
    # for float16 (it warns, then runs it in float32 anyway).
    flag = b("Cast", b("Slice", b("Reshape", "X", minus1), b.const([0]), b.const([1])), to=TensorProto.BOOL)
    false = b("Reshape", b("And", flag, b("Not", flag)), b.const([1, 1]))
    zero_a = b("CastLike", false, "X")
    zero_b = b("CastLike", b("ConstantOfShape", b("Concat", b.const([1]), m_out, axis=0)), "X")
    bias = b("Cast", b("Gemm", zero_a, zero_b, "B"), to=working_type)  # (1, M)
    bias = b("Reshape", bias, b("Concat", b.const([1]), g, b.const([1]), m_per_g, b.const([1]), axis=0))
    y = b("Reshape", b("Add", yg, bias), b("Shape", y1))
    b.nodes.append(helper.make_node("CastLike", [y, "X"], ["Y"]))

    defaults = [helper.make_attribute(a, DEFAULTS[a]) for a in NC_ATTRIBUTES]
    return helper.make_function(
        DOMAIN,
        OP_TYPE,
        inputs=["X", "W", "B"],
        outputs=["Y"],
        nodes=b.nodes,
        opset_imports=[helper.make_opsetid("", opset)],
        attributes=list(CONV_ATTRIBUTES),
        attribute_protos=defaults,
        doc_string="Standard-op body of ncnn_onnx::NormalizedConv v1 (float32 statistics).",
    )


def working_type_for(elem_types: set[int]) -> Optional[int]:
    """The body's working type for the NC nodes' element types; None when no single body serves them."""
    if not elem_types:
        return TensorProto.FLOAT
    if elem_types == {TensorProto.DOUBLE}:
        return TensorProto.DOUBLE
    if TensorProto.DOUBLE in elem_types:
        return None
    return TensorProto.FLOAT
