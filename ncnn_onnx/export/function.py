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

import onnx
from onnx import AttributeProto, FunctionProto, NodeProto, TensorProto, TypeProto, helper

from .schema import CONV_ATTRIBUTES, DEFAULTS, DOMAIN, NC_ATTRIBUTES, OP_TYPE

# The one-hot Conv sees three per-group maps (m, s, q) as three single-channel groups.
_MAPS = 3


class _Body:
    """Appends nodes with fresh value names; keeps the body below readable as a formula."""

    def __init__(self, counter: Optional[list[int]] = None) -> None:
        self.nodes: list[NodeProto] = []
        self._counter = counter if counter is not None else [0]

    def branch(self) -> "_Body":
        """A body for an If branch: its own nodes, value names unique across the whole function."""
        return _Body(self._counter)

    def graph(self, name: str, output: str) -> "onnx.GraphProto":
        return helper.make_graph(self.nodes, name, [], [helper.make_value_info(output, TypeProto())])

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
        self._counter[0] += 1
        return f"{hint.lower()}_{self._counter[0]}"


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
    minus1 = b.const([-1])

    # Shapes: C, spatial of X; M, cg, kernel of W; G = C / cg; K = prod(kernel). Reshapes leave the batch
    # size to 0 (copy) or -1 (infer), so no Shape node reads it.
    s = _Shapes(
        c=b("Shape", "X", start=1, end=2), spatial=b("Shape", "X", start=2),
        m_out=b("Shape", "W", start=0, end=1), cg=b("Shape", "W", start=1, end=2), kernel=b("Shape", "W", start=2),
    )
    s.k = b("ReduceProd", s.kernel, keepdims=1)
    s.g = b("Div", s.c, s.cg)
    s.m_per_g = b("Div", s.m_out, s.g)

    # center/scale select exactly (Where), never blend arithmetically: dev and m differ by ~mu, and
    # x * 0 turns an inf into NaN.
    flags = _Flags(
        center=b("Cast", b("Constant", refs=[("value_int", "center")]), to=TensorProto.BOOL),
        scale=b("Cast", b("Constant", refs=[("value_int", "scale")]), to=TensorProto.BOOL),
        zero=b.const(0.0, working_type), one=b.const(1.0, working_type),
        eps=b("Cast", b("Constant", refs=[("value_float", "epsilon")]), to=working_type),
    )
    flags.plain = b("Not", b("Or", flags.center, flags.scale))

    # The patches' one-hot kernel (K, 1, k...): a Conv with it lays every patch out along channels.
    eye = b("EyeLike", b("ConstantOfShape", b("Concat", s.k, s.k, axis=0)), dtype=working_type)
    onehot = b("Reshape", eye, b("Concat", s.k, b.const([1]), s.kernel, axis=0))

    # B is optional and a function cannot branch on a missing input; Gemm's optional C can:
    # 0 @ 0 + B is B when the caller gives it and zeros when it does not. The zero is derived from
    # X's data so that ONNX Runtime does not try to constant-fold this Gemm, which it cannot do
    # for float16 (it warns, then runs it in float32 anyway).
    flag = b("Cast", b("Slice", b("Reshape", "X", minus1), b.const([0]), b.const([1])), to=TensorProto.BOOL)
    false = b("Reshape", b("And", flag, b("Not", flag)), b.const([1, 1]))
    zero_a = b("CastLike", false, "X")
    zero_b = b("CastLike", b("ConstantOfShape", b("Concat", b.const([1]), s.m_out, axis=0)), "X")
    bias = b("Cast", b("Gemm", zero_a, zero_b, "B"), to=working_type)  # (1, M)

    # One input channel per group (depthwise): the channel-centring decomposition has nothing to centre
    # (m = x, s = q = 0), and its three patch maps and full Conv would be wasted work; the patches of X
    # themselves give the exact two-pass statistics and the product directly.
    # Each branch casts X and W itself: onnxruntime drops a Cast to the same type, and an outer one read by
    # both branches would make it warn that it cannot rename the subgraphs' implicit input.
    depthwise = b.branch()
    y_depthwise = _depthwise_body(depthwise, s, flags, onehot, bias, working_type)
    general = b.branch()
    y_general = _general_body(general, s, flags, onehot, bias, working_type)
    y = b("If", b("Equal", s.cg, b.const([1])),
          then_branch=depthwise.graph("depthwise", y_depthwise), else_branch=general.graph("general", y_general))
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


class _Shapes:
    """Shape values of the body (1-element int64 tensors)."""

    def __init__(self, **values: str) -> None:
        self.__dict__.update(values)


class _Flags(_Shapes):
    """center, scale and plain as booleans; zero, one and epsilon in the working type."""


def _exact_mean(b: _Body, values: str, axis: str) -> str:
    """The mean along `axis`, and where the values along it are all equal, that value itself (the rounded
    mean of equal values need not be), so an exactly flat patch centres to exactly 0 for every epsilon.
    (A float64 mean of float32 values would be exact too, but its Cast costs more than the two passes.)"""
    low = b("ReduceMin", values, axis, keepdims=1)
    mean = b("ReduceMean", values, axis, keepdims=1)
    return b("Where", b("Equal", low, b("ReduceMax", values, axis, keepdims=1)), low, mean)


def _normalized(b: _Body, f: _Flags, var: str) -> str:
    """rstd, or 1 without scaling. A variance rounded below 0 counts as 0; a NaN one (a non-finite patch)
    stays NaN, which Relu or Max need not guarantee (ONNX leaves their NaN behaviour open)."""
    var = b("Where", b("Less", var, f.zero), f.zero, var)
    rstd = b("Reciprocal", b("Sqrt", b("Add", var, f.eps)))
    return b("Where", f.scale, rstd, f.one)


def _depthwise_body(b: _Body, s: _Shapes, f: _Flags, onehot, bias, working_type) -> str:
    """Y for C/group = 1: P = patches of X (N, G, K, P); d = P - mean (two-pass, residual-corrected);
    Y = (W @ d - r * sum(W)) * rstd + B with r = mean(d), or W @ P * rstd + B without centring."""
    patch_refs = [(a, a) for a in CONV_ATTRIBUTES if a != "group"]
    axis2, minus1 = b.const([2]), b.const([-1])
    xw, ww = b("Cast", "X", to=working_type), b("Cast", "W", to=working_type)
    planes = b("Reshape", xw, b("Concat", minus1, b.const([1]), s.spatial, axis=0))  # (N*C, 1, D...)
    patches_conv = b("Conv", planes, onehot, refs=patch_refs)  # (N*C, K, O...)
    out_spatial = b("Shape", patches_conv, start=2)
    out_plane = b("ReduceProd", out_spatial, keepdims=1)
    patches = b("Reshape", patches_conv, b("Concat", minus1, s.g, s.k, out_plane, axis=0))  # (N, G, K, P)
    dev = b("Sub", patches, _exact_mean(b, patches, axis2))
    r = b("ReduceMean", dev, axis2, keepdims=1)  # (N, G, 1, P)
    mean_square = b("Div", b("ReduceSumSquare", dev, axis2, keepdims=1), b("Cast", s.k, to=working_type))
    var = b("Sub", mean_square, b("Mul", r, r))
    factor = _normalized(b, f, var)
    w_g = b("Reshape", ww, b("Concat", s.g, s.m_per_g, s.k, axis=0))  # (G, M/G, K)
    wsum = b("ReduceSum", w_g, axis2, keepdims=1)  # (G, M/G, 1)
    product = b("MatMul", w_g, b("Where", f.center, dev, patches))  # (N, G, M/G, P)
    correction = b("Mul", wsum, b("Where", f.center, r, f.zero))
    y = b("Mul", b("Sub", product, correction), factor)
    bias_g = b("Reshape", bias, b("Concat", b.const([1]), s.g, s.m_per_g, b.const([1]), axis=0))
    out_shape = b("Concat", b.const([0]), s.m_out, out_spatial, axis=0)
    return b("Reshape", b("Add", y, bias_g), out_shape)


def _general_body(b: _Body, s: _Shapes, f: _Flags, onehot, bias, working_type) -> str:
    """Y by the channel-centring decomposition (module doc)."""
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

    # Channel-centre per group and location, in the working type.
    xw, ww = b("Cast", "X", to=working_type), b("Cast", "W", to=working_type)
    xg = b("Reshape", xw, b("Concat", b.const([0]), s.g, s.cg, minus1, axis=0))  # (N, G, cg, L)
    # center=0, scale=0 is exactly Conv(X, W) + B, with IEEE non-finite results (inf stays inf, where
    # X - m would give inf - inf = NaN): m = 0 there makes xc = X and the patch term 0. The Where is on m,
    # cg times smaller than X, so the common path pays next to nothing for it.
    mean = b("Where", f.plain, f.zero, _exact_mean(b, xg, axis2))
    xc = b("Sub", xg, mean)
    resid = reduce("ReduceSum", xc)
    sq = reduce("ReduceSumSquare", xc)
    y1 = b("Conv", b("Reshape", xc, b("Shape", "X")), ww, refs=conv_refs)  # (N, M, O...)

    # Patches of the three maps by the one-hot kernel: (N*G, 3, D...) -> (N*G, 3K, O...).
    maps = b("Reshape", b("Concat", mean, resid, sq, axis=2),
             b("Concat", minus1, b.const([_MAPS]), s.spatial, axis=0))
    kern = b("Concat", *([onehot] * _MAPS), axis=0)
    patches = b("Conv", maps, kern, group=_MAPS, refs=patch_refs)
    # (N, G, 1, K, P) each: the singleton axis stays, so the K axis is 3 from here on.
    out_plane = b("ReduceProd", b("Shape", patches, start=2), keepdims=1)
    pm, ps, pq = b("Split", b("Reshape", patches, b("Concat", minus1, s.g, b.const([_MAPS]), s.k, out_plane, axis=0)),
                   axis=2, num_outputs=_MAPS, outputs=_MAPS)

    # Corrected two-pass statistics over the K patch locations:
    # mu = mean(m) + [mean(m - mean(m)) + sum(s) / I], the bracket being small.
    cgf = as_work(s.cg)
    fan_in = b("Mul", as_work(s.k), cgf)
    d0 = b("Sub", pm, reduce_k("ReduceMean", pm))
    dev = b("Sub", d0, reduce_k("ReduceMean", b("Add", d0, b("Div", ps, cgf))))
    # I * var = sum_k (q_k + dev_k * (2 s_k + cg dev_k)), every term computed from small numbers.
    spread = b("Add", pq, b("Mul", dev, b("Add", b("Add", ps, ps), b("Mul", cgf, dev))))
    var = b("Div", reduce_k("ReduceSum", spread), fan_in)  # (N, G, 1, 1, P)
    factor = _normalized(b, f, var)
    term_in = b("Where", f.center, dev, pm)

    # Wsum (G, 1, M/G, K) @ (N, G, 1, K, P) -> (N, G, 1, M/G, P), added to Y1 in the same layout.
    wsum = b("ReduceSum", b("Reshape", ww, b("Concat", s.g, minus1, s.cg, s.k, axis=0)), axis2, keepdims=0)
    wsum = b("Reshape", wsum, b("Concat", s.g, b.const([1]), s.m_per_g, s.k, axis=0))
    y1g = b("Reshape", y1, b("Concat", b.const([0]), s.g, b.const([1]), s.m_per_g, minus1, axis=0))
    yg = b("Mul", b("Add", y1g, b("MatMul", wsum, term_in)), factor)
    bias_g = b("Reshape", bias, b("Concat", b.const([1]), s.g, b.const([1]), s.m_per_g, b.const([1]), axis=0))
    return b("Reshape", b("Add", yg, bias_g), b("Shape", y1))


def working_type_for(elem_types: set[int]) -> Optional[int]:
    """The body's working type for the NC nodes' element types; None when no single body serves them."""
    if not elem_types:
        return TensorProto.FLOAT
    if elem_types == {TensorProto.DOUBLE}:
        return TensorProto.DOUBLE
    if TensorProto.DOUBLE in elem_types:
        return None
    return TensorProto.FLOAT
