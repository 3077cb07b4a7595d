"""Checking and resolving convolution arguments, with the conventions of torch.nn.functional.conv*d.

Pure Python on purpose: the layer, the exporter and the tests all resolve arguments the same way.
Every error names the argument and says what was expected and what was got.
"""

from __future__ import annotations

import math
import struct
from typing import Optional, Sequence, Union

IntOrTuple = Union[int, Sequence[int]]


def expand(name: str, value: IntOrTuple, ndim: int, minimum: int) -> tuple[int, ...]:
    """An int or a tuple of `ndim` ints, each >= minimum."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a tuple of {ndim} ints, got {value!r}")
    if isinstance(value, int):
        values = (value,) * ndim
    else:
        try:
            values = tuple(value)
        except TypeError:
            raise TypeError(f"{name} must be an int or a tuple of {ndim} ints, got {value!r}") from None
        if len(values) == 1:
            values = values * ndim
        if len(values) != ndim or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ValueError(f"{name} must be an int or a tuple of {ndim} ints, got {value!r}")
    if any(v < minimum for v in values):
        raise ValueError(f"{name} must be >= {minimum} in every dim, got {values}")
    return values


def resolve_pads(
    padding: Union[str, IntOrTuple],
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
) -> tuple[int, ...]:
    """Pads as (before_1..before_k, after_1..after_k), like the ONNX `pads` attribute.

    'same' puts the odd leftover of an even effective kernel after, as torch does.
    """
    ndim = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * (2 * ndim)
        if padding != "same":
            raise ValueError(f"padding must be 'same', 'valid', an int or a tuple of ints, got {padding!r}")
        if any(s != 1 for s in stride):
            raise ValueError(f"padding='same' needs stride 1 in every dim, got stride={tuple(stride)}")
        total = [dilation[d] * (kernel[d] - 1) for d in range(ndim)]
        before = tuple(t // 2 for t in total)
        after = tuple(t - b for t, b in zip(total, before))
        return before + after
    symmetric = expand("padding", padding, ndim, 0)
    return symmetric + symmetric


def output_size(
    spatial: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    pads: Sequence[int],
    dilation: Sequence[int],
) -> list[int]:
    ndim = len(kernel)
    return [
        (spatial[d] + pads[d] + pads[ndim + d] - dilation[d] * (kernel[d] - 1) - 1) // stride[d] + 1
        for d in range(ndim)
    ]


def check_shapes(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    bias_shape: Sequence[int] | None,
    ndim: int,
    groups: int,
    stride: Sequence[int],
    pads: Sequence[int],
    dilation: Sequence[int],
) -> list[int]:
    """Validate input/weight/bias shapes for an `ndim`-d NC; return the output spatial size."""
    if len(input_shape) != ndim + 2:
        raise ValueError(
            f"input must be {ndim + 2}-D (N, C, {_dims(ndim)}) for a {ndim}d normalized conv, "
            f"got {len(input_shape)}-D shape {tuple(input_shape)}"
        )
    if len(weight_shape) != ndim + 2:
        raise ValueError(
            f"weight must be {ndim + 2}-D (out_channels, in_channels/groups, {_dims(ndim, 'k')}), "
            f"got shape {tuple(weight_shape)}"
        )
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    channels = input_shape[1]
    out_channels = weight_shape[0]
    if channels == 0:
        raise ValueError(
            f"input has 0 channels (shape {tuple(input_shape)}): a normalized conv standardizes patches of "
            f"C/groups * prod(kernel) values, and an empty patch has no mean or variance"
        )
    if channels % groups:
        raise ValueError(f"input channels ({channels}) must be divisible by groups ({groups})")
    if out_channels % groups:
        raise ValueError(f"out channels ({out_channels}) must be divisible by groups ({groups})")
    if weight_shape[1] != channels // groups:
        raise ValueError(
            f"weight.shape[1] must equal input channels / groups = {channels} / {groups} = "
            f"{channels // groups}, got weight shape {tuple(weight_shape)}"
        )
    if any(k < 1 for k in weight_shape[2:]):
        raise ValueError(f"kernel sizes must be >= 1, got weight shape {tuple(weight_shape)}")
    if bias_shape is not None and tuple(bias_shape) != (out_channels,):
        raise ValueError(f"bias must have shape ({out_channels},), got {tuple(bias_shape)}")
    kernel = list(weight_shape[2:])
    out = output_size(input_shape[2:], kernel, stride, pads, dilation)
    if any(o < 1 for o in out):
        padded = [input_shape[2 + d] + pads[d] + pads[ndim + d] for d in range(ndim)]
        effective = [dilation[d] * (kernel[d] - 1) + 1 for d in range(ndim)]
        raise ValueError(
            f"kernel larger than the padded input: effective kernel {tuple(effective)} "
            f"(kernel {tuple(kernel)}, dilation {tuple(dilation)}) vs padded input {tuple(padded)}"
        )
    return out


def as_float32(value: float) -> float:
    """`value` rounded to the nearest float32 (0.0 or inf where it underflows or overflows)."""
    try:
        return struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


# The smallest normal float32, 2^-126.
FLOAT32_TINY = 2.0**-126


def eps_error(eps, name: str = "eps", float32: bool = True) -> Optional[str]:
    """Why `eps` cannot be used, or None. NC's epsilon is a float32 (the op's attribute, and the
    statistics of float32 and float16 models) and must be a normal one: one that rounds to 0 makes every
    exactly flat patch 0/0 = NaN, a subnormal one acts as 0 where denormals are flushed to zero (an
    onnxruntime session option, and common in GPU arithmetic), one that rounds to inf makes every output B.
    The layer, the functional call, the exporter and the kernel library share this rule (docs/op.md,
    "Limits"); `float32=False` asks only for a finite float > 0."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        return f"{name} must be a finite float > 0, got {eps!r}"
    eps32 = as_float32(float(eps))
    if float32 and not FLOAT32_TINY <= eps32 < math.inf:
        return (
            f"{name}={eps!r} is not a finite, normal float32 (>= 1.17549435e-38; it rounds to {eps32!r} in "
            f"float32), and NC's epsilon is a float32"
        )
    return None


def check_eps(eps, name: str = "eps", float32: bool = True) -> float:
    """`eps` as a float, or ValueError naming `name` (see `eps_error`)."""
    problem = eps_error(eps, name, float32)
    if problem is not None:
        raise ValueError(problem)
    return float(eps)


def _dims(ndim: int, prefix: str = "") -> str:
    names = {1: ["L"], 2: ["H", "W"], 3: ["D", "H", "W"]}[ndim]
    return ", ".join(prefix + n for n in names)
