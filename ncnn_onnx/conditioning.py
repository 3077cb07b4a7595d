"""How ill-conditioned a network is in float32 on one input, layer by layer.

A network of NC layers can be ill-conditioned in float32 itself: where a patch's variance is only a
little above epsilon, the standardization divides the rounding error of its input by sqrt(var + eps) and
hands it on, multiplied, to every later layer. Every single layer then still agrees with float64 to a
few ulp, yet the network's float32 output misses the parity bar, in eager PyTorch as on every deployed
path. `ncnn-onnx check` uses this module to tell that apart from a deployment error: it judges each
deployed path against the network's own float32-vs-float64 spread and names the layer where the error
grows most (README, "Parity contract").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ._extras import require

require("torch", "ncnn_onnx.conditioning")

import torch
import torch.nn.functional as F

from ._arguments import resolve_pads
from .nn import _NormalizedConvMixin
from .parity import parity_error

# A patch whose variance is below NEAR_FLAT * eps is counted as near-flat: its rstd is within a factor
# 10 of the 1/sqrt(eps) of an exactly flat patch, the gain the standardization applies to its rounding.
NEAR_FLAT = 100.0

# What check accepts from a deployed path on an input where the network itself misses the bar: its error
# within this factor of eager float32's own error against float64 (two float32 evaluations of one
# ill-conditioned network differ by about as much as each differs from float64).
SPREAD_FACTOR = 10.0


def within_spread(error: float, eager_error: float, bar: float) -> bool:
    """A path's error on an input where eager itself is at `eager_error` from float64: as good as the
    network's own float32 arithmetic allows."""
    return error <= max(bar, SPREAD_FACTOR * eager_error)


@dataclass
class LayerCondition:
    """One NC layer's float32 error against float64, at its input and at its output, on one input."""

    name: str
    description: str
    error_in: float
    error_out: float
    near_flat: int  # patches with variance < NEAR_FLAT * eps (in the float64 run)
    patches: int
    smallest_variance: float  # over eps

    @property
    def growth(self) -> float:
        """How much the layer multiplies the relative error it is given (at least one float32 ulp in)."""
        return self.error_out / max(self.error_in, 2.0**-24)

    def text(self) -> str:
        return (f"{self.name} ({self.description}): float32 error {self.error_in:.1e} at its input, "
                f"{self.error_out:.1e} at its output ({self.growth:.0f}x); {self.near_flat} of {self.patches} "
                f"patches have a variance below {NEAR_FLAT:g}*eps (smallest {self.smallest_variance:.3g}*eps)")


def layer_conditions(model32: torch.nn.Module, model64: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> list[LayerCondition]:
    """Every NC layer of `model32` (its float64 copy `model64`, same module names) on `inputs`, in the
    order they ran."""
    seen64: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    seen32: list[tuple[str, torch.Tensor, torch.Tensor]] = []

    def record(store, name):
        def hook(module, args, output):
            if isinstance(store, dict):
                store[name] = (args[0].detach(), output.detach())
            else:
                store.append((name, args[0].detach(), output.detach()))
        return hook

    handles = []
    for model, store in ((model64, seen64), (model32, seen32)):
        for name, module in model.named_modules():
            if isinstance(module, _NormalizedConvMixin):
                handles.append(module.register_forward_hook(record(store, name)))
    try:
        with torch.no_grad():
            model64(*[t.double() for t in inputs])
            model32(*inputs)
    finally:
        for h in handles:
            h.remove()
    modules = dict(model64.named_modules())
    result = []
    for name, x32, y32 in seen32:
        if name not in seen64:
            continue
        x64, y64 = seen64[name]
        near_flat, patches, smallest = _near_flat_patches(modules[name], x64)
        result.append(LayerCondition(
            name=name, description=_describe(modules[name]),
            error_in=parity_error(x32.numpy(), x64.numpy()), error_out=parity_error(y32.numpy(), y64.numpy()),
            near_flat=near_flat, patches=patches, smallest_variance=smallest,
        ))
    return result


def worst_layer(conditions: Sequence[LayerCondition]):
    """The layer that multiplies its input's float32 error the most, or None without NC layers."""
    return max(conditions, key=lambda c: c.growth, default=None)


def _describe(module) -> str:
    kernel = "x".join(str(k) for k in module.kernel_size)
    groups = "" if module.groups == 1 else (", depthwise" if module.groups == module.in_channels else f", groups {module.groups}")
    return f"{type(module).__name__} {module.in_channels}->{module.out_channels}, {kernel}{groups}"


def _near_flat_patches(module, x: torch.Tensor) -> tuple[int, int, float]:
    """(patches with var < NEAR_FLAT * eps, all patches, smallest var / eps) of the layer's float64 input.

    As in the layer's own decomposition (ncnn_onnx/_algorithm.py): per location, the group's channel mean
    m and the sum q of squared deviations from it; per patch, var = (sum q + cg * sum (m - mean m)^2) / I,
    the sums taken by box convolutions. Only the location means can cancel, and that in float64.
    """
    if module.padding_mode != "zeros":
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        pads = (0,) * (2 * len(module.kernel_size))
    else:
        pads = resolve_pads(module.padding, module.kernel_size, module.stride, module.dilation)
    k = len(module.kernel_size)
    x = F.pad(x, [p for d in reversed(range(k)) for p in (pads[d], pads[k + d])])
    groups, taps = module.groups, math.prod(module.kernel_size)
    xg = x.unflatten(1, (groups, x.shape[1] // groups))
    m = xg.mean(2)
    q = (xg - m.unsqueeze(2)).square().sum(2)
    box = torch.ones(groups, 1, *module.kernel_size, dtype=torch.float64)
    conv = (F.conv1d, F.conv2d, F.conv3d)[k - 1]
    sum_q, sum_m, sum_m2 = (conv(t, box, stride=module.stride, dilation=module.dilation, groups=groups)
                            for t in (q, m, m.square()))
    cg = xg.shape[2]
    var = ((sum_q + cg * (sum_m2 - sum_m.square() / taps)) / (cg * taps)).clamp_min(0)
    return int((var < NEAR_FLAT * module.eps).sum()), var.numel(), float(var.min()) / module.eps
