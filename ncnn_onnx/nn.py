"""NormalizedConv1d/2d/3d: drop-in replacements for nn.Conv1d/2d/3d.

They subclass the torch convolutions, so constructor arguments, parameters, state_dict keys,
initialization and `isinstance(m, nn.Conv2d)` checks all behave as for a plain convolution.
Extra keyword-only arguments:

- `eps`, `center`, `scale`: the NC patch standardization (see `ncnn_onnx.functional`).
- `affine`: a per-output-channel gain applied after the convolution, before the bias (the paper's
  affine; the bias is its shift). Stored as parameter `gain`.
- `weight_standardization`: standardize every output channel's kernel over its fan-in before use
  (WS + NC, which the paper proposes), with `ws_eps` in its denominator.

The gain and weight standardization only change the effective kernel, so the layer still computes a
single NC with weight `effective_weight()`: that is what the exporter writes.
"""

from __future__ import annotations

from ._extras import require

require("torch", "ncnn_onnx.nn")

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _arguments
from . import functional as ncf

__all__ = ["NormalizedConv1d", "NormalizedConv2d", "NormalizedConv3d", "NORMALIZED_CONV_TYPES"]


class _NormalizedConvMixin:
    """NC behaviour shared by the three ranks; combined with the matching nn.Conv*d."""

    _nc_function = staticmethod(ncf.normalized_conv)

    def _init_nc(self, eps, center, scale, affine, weight_standardization, ws_eps, device, dtype):
        self.eps = _arguments.check_eps(eps)
        self.center = bool(center)
        self.scale = bool(scale)
        self.weight_standardization = bool(weight_standardization)
        # ws_eps is not an op attribute: it only needs to be positive in the weight's own dtype.
        self.ws_eps = _arguments.check_eps(ws_eps, "ws_eps", float32=False)
        if affine:
            self.gain = nn.Parameter(torch.ones(self.out_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("gain", None)

    @property
    def affine(self) -> bool:
        return self.gain is not None

    def effective_weight(self) -> Tensor:
        """The kernel NC actually applies: weight standardization and gain folded in."""
        w = self.weight
        if self.weight_standardization:
            flat = w.reshape(w.shape[0], -1)
            mean = flat.mean(1, keepdim=True)
            var = (flat - mean).square().mean(1, keepdim=True)
            w = ((flat - mean) * torch.rsqrt(var + self.ws_eps)).reshape(w.shape)
        if self.gain is not None:
            w = w * self.gain.reshape(-1, *([1] * (w.dim() - 1)))
        return w

    def forward(self, input: Tensor) -> Tensor:
        padding = self.padding
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        return self._nc_function(
            input, self.effective_weight(), self.bias, self.stride, padding, self.dilation, self.groups,
            self.eps, self.center, self.scale,
        )

    def __prepare_scriptable__(self):
        # torch.jit.script calls this on every submodule before compiling it. The forward pass dispatches
        # to a Python autograd.Function (the training path), which TorchScript cannot compile; instead of
        # its type error deep in the argument handling, say what works.
        raise TypeError(
            f"{type(self).__name__} cannot be compiled by torch.jit.script: its forward pass runs a Python "
            "autograd.Function. Use torch.jit.trace(model, example_inputs) (the layer is one traced "
            "ncnn_onnx::normalized_conv node, trainable), torch.compile(model), or ncnn_onnx.export.export(model, "
            "args, path) for deployment."
        )

    def extra_repr(self) -> str:
        parts = [super().extra_repr()]
        if self.eps != 1e-5:
            parts.append(f"eps={self.eps}")
        if not self.center:
            parts.append("center=False")
        if not self.scale:
            parts.append("scale=False")
        if self.gain is not None:
            parts.append("affine=True")
        if self.weight_standardization:
            parts.append("weight_standardization=True")
        return ", ".join(parts)


def _nc_init(conv_cls):
    def __init__(
        self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
        groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None, *,
        eps: float = 1e-5, center: bool = True, scale: bool = True, affine: bool = False,
        weight_standardization: bool = False, ws_eps: float = 1e-5,
    ) -> None:
        if in_channels == 0:  # nn.Conv*d accepts it; NC has no patch to standardize
            raise ValueError(
                "in_channels must be >= 1 for a normalized convolution, got 0: it standardizes patches of "
                "in_channels/groups * prod(kernel_size) values, and an empty patch has no mean or variance"
            )
        conv_cls.__init__(
            self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device, dtype,
        )
        self._init_nc(eps, center, scale, affine, weight_standardization, ws_eps, device, dtype)

    return __init__


class NormalizedConv1d(_NormalizedConvMixin, nn.Conv1d):
    """Normalized Convolution over (N, C, L) inputs; arguments as nn.Conv1d plus the NC options."""

    __init__ = _nc_init(nn.Conv1d)


class NormalizedConv2d(_NormalizedConvMixin, nn.Conv2d):
    """Normalized Convolution over (N, C, H, W) inputs; arguments as nn.Conv2d plus the NC options."""

    __init__ = _nc_init(nn.Conv2d)


class NormalizedConv3d(_NormalizedConvMixin, nn.Conv3d):
    """Normalized Convolution over (N, C, D, H, W) inputs; arguments as nn.Conv3d plus the NC options."""

    __init__ = _nc_init(nn.Conv3d)


NORMALIZED_CONV_TYPES = (NormalizedConv1d, NormalizedConv2d, NormalizedConv3d)
CONV_TO_NC = {nn.Conv1d: NormalizedConv1d, nn.Conv2d: NormalizedConv2d, nn.Conv3d: NormalizedConv3d}


def from_conv(conv: nn.Module, **nc_options) -> "_NormalizedConvMixin":
    """The NC twin of a plain nn.Conv*d, carrying the same parameters (on the same device and dtype)."""
    cls = CONV_TO_NC[type(conv)]
    weight: Tensor = conv.weight
    twin = cls(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        conv.groups, conv.bias is not None, conv.padding_mode, device=weight.device, dtype=weight.dtype,
        **nc_options,
    )
    twin.load_state_dict(conv.state_dict(), strict=False)
    twin.train(conv.training)
    return twin

