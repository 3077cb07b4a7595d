"""The torch side of export: find the NC layers of a model, refuse the ones ONNX cannot carry
faithfully, and present every layer's effective weight as its plain weight while it is traced.

Weight standardization and the per-channel gain are computed in the layer's forward from its
parameters. Tracing that would leave arithmetic on W in the graph (and put W behind it, so it is no
longer an initializer); evaluating it once here leaves one initializer per layer, under the layer's
own parameter name.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from .._arguments import eps_error
from ..nn import NORMALIZED_CONV_TYPES
from .errors import ExportError

# The element types of ncnn_onnx::NormalizedConv v1.
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.float64)
# Non-zero padding modes run as a standard Pad before the node; all four have an exact ONNX Pad mode.
SUPPORTED_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def nc_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name or "<root>", m) for name, m in model.named_modules() if isinstance(m, NORMALIZED_CONV_TYPES)]


def check_layers(layers: list[tuple[str, nn.Module]]) -> None:
    """Raise ExportError naming the first layer that ONNX cannot carry, and why."""
    for name, layer in layers:
        what = f"layer '{name}' ({type(layer).__name__})"
        dtype = layer.weight.dtype
        if dtype not in SUPPORTED_DTYPES:
            raise ExportError(
                f"{what}: its weight is {dtype}, but ncnn_onnx::NormalizedConv v1 takes float32, float16 or "
                f"float64 only; convert the model first (e.g. model.float() or model.half())"
            )
        if layer.padding_mode not in SUPPORTED_PADDING_MODES:
            raise ExportError(f"{what}: padding_mode {layer.padding_mode!r} has no ONNX equivalent")
        # The ONNX attribute is a float32: an eps that rounds to 0 or inf would change the op. The layer
        # refuses such an eps at construction; this catches one assigned afterwards.
        problem = eps_error(layer.eps)
        if problem is not None:
            raise ExportError(f"{what}: {problem}")


@contextlib.contextmanager
def effective_weights(layers: list[tuple[str, nn.Module]]) -> Iterator[None]:
    """While active, every layer with weight standardization or a gain holds its effective weight as
    `weight` and neither transformation; the original parameters come back afterwards, even on error."""
    saved = []
    try:
        with torch.no_grad():
            for _, layer in layers:
                if not (layer.weight_standardization or layer.gain is not None):
                    continue
                folded = nn.Parameter(layer.effective_weight().detach().clone(), requires_grad=False)
                saved.append((layer, layer.weight, layer.gain, layer.weight_standardization))
                layer.weight = folded
                layer.gain = None
                layer.weight_standardization = False
        yield
    finally:
        for layer, weight, gain, ws in reversed(saved):
            layer.weight = weight
            layer.gain = gain
            layer.weight_standardization = ws
