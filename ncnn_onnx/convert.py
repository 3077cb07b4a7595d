"""convert_model: swap the convolutions of an existing model for Normalized Convolutions."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Iterable, Optional, Union

from ._extras import require

require("torch", "ncnn_onnx.convert_model")

from torch import nn

from .nn import CONV_TO_NC, NORMALIZED_CONV_TYPES, from_conv

__all__ = ["convert_model", "ConversionReport"]

log = logging.getLogger("ncnn_onnx")

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


@dataclass
class ConversionReport:
    converted: list[str] = field(default_factory=list)  # names of convolutions now NC
    # names of norm layers now nn.Identity (or the activation a fused norm+activation layer applied)
    removed_norms: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "name: reason" for convolution-like layers left alone

    def __str__(self) -> str:
        lines = [f"converted {len(self.converted)} convolution(s) to NormalizedConv"]
        lines += [f"  {n}" for n in self.converted]
        if self.removed_norms:
            lines.append(f"replaced {len(self.removed_norms)} normalization layer(s) by nn.Identity")
            lines += [f"  {n}" for n in self.removed_norms]
        if self.skipped:
            lines.append(f"left {len(self.skipped)} layer(s) untouched")
            lines += [f"  {n}" for n in self.skipped]
        return "\n".join(lines)


def convert_model(
    model: nn.Module,
    *,
    norms: Union[str, Iterable[str]] = "keep",
    inplace: bool = False,
    return_report: bool = False,
    **nc_options,
):
    """Return `model` with every nn.Conv1d/2d/3d replaced by its NC twin carrying the same weights.

    norms: "keep" leaves normalization layers alone; "following" replaces each BatchNorm, GroupNorm or
        InstanceNorm registered directly after a converted convolution in the same parent module (the
        torchvision `conv1, bn1` convention) and normalizing its out_channels; an iterable of module
        names replaces exactly those.
    nc_options: eps, center, scale, affine, weight_standardization, ws_eps for the new layers.
    Layers that are not plain convolutions (ConvTranspose, already-NC layers, subclasses) are left
    untouched and listed in the report, which is logged and returned when `return_report` is set.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(norms, str) and norms not in ("keep", "following"):
        raise ValueError(f"norms must be 'keep', 'following' or a list of module names, got {norms!r}")
    named_norms = None if isinstance(norms, str) else set(norms)
    if named_norms is not None:
        known = {name for name, _ in model.named_modules()}
        unknown = sorted(named_norms - known)
        if unknown:
            raise ValueError(f"norms names modules that the model does not have: {unknown}")
    if not inplace:
        model = copy.deepcopy(model)
    report = ConversionReport()
    if type(model) in CONV_TO_NC:
        model = from_conv(model, **nc_options)
        report.converted.append("(root)")
    else:
        _convert_children(model, "", norms == "following", named_norms, nc_options, report)
    log.info("%s", report)
    return (model, report) if return_report else model


def _convert_children(parent, prefix, remove_following, named_norms, nc_options, report) -> None:
    previous_conv: Optional[nn.Module] = None
    for name, child in list(parent.named_children()):
        full = f"{prefix}{name}"
        replacement = None
        if type(child) in CONV_TO_NC:
            replacement = from_conv(child, **nc_options)
            report.converted.append(full)
        elif isinstance(child, NORM_TYPES) and _is_removed(child, full, previous_conv, remove_following, named_norms):
            replacement = _without_norm(child, full)
            report.removed_norms.append(full)
        elif isinstance(child, nn.modules.conv._ConvNd) and not isinstance(child, NORMALIZED_CONV_TYPES):
            report.skipped.append(f"{full}: {type(child).__name__} has no NC counterpart")
        elif named_norms is None or full not in named_norms:
            _convert_children(child, f"{full}.", remove_following, named_norms, nc_options, report)
        if named_norms is not None and full in named_norms and replacement is None:
            raise ValueError(f"norms names {full!r}, a {type(child).__name__}, which is no normalization layer")
        if replacement is not None:
            setattr(parent, name, replacement)
        previous_conv = replacement if isinstance(replacement, NORMALIZED_CONV_TYPES) else None


# Norm layers that carry what follows the norm as submodules and apply it after normalizing, in this
# order (timm's BatchNormAct2d, GroupNormAct, ...: `drop`, then `act`).
_NORM_WITH_TAIL = ("drop", "act")


def _without_norm(norm: nn.Module, name: str) -> nn.Module:
    """What replaces a removed norm layer: nn.Identity, or the activation (and dropout) that a fused
    norm+activation layer applies after normalizing, so removing the norm never removes them."""
    children = dict(norm.named_children())
    if not children:
        return nn.Identity()
    if set(children) <= set(_NORM_WITH_TAIL):
        tail = [children[key] for key in _NORM_WITH_TAIL if key in children]
        return tail[0] if len(tail) == 1 else nn.Sequential(*tail)
    raise ValueError(
        f"cannot remove the norm layer {name!r}: {type(norm).__name__} carries submodules {sorted(children)} whose "
        f"place in its forward is unknown (only {list(_NORM_WITH_TAIL)}, applied after the norm, are understood); "
        f"keep it (norms='keep' or leave it out of the list) or replace it yourself"
    )


def _is_removed(norm, name, previous_conv, remove_following, named_norms) -> bool:
    if named_norms is not None:
        return name in named_norms
    if not remove_following or previous_conv is None:
        return False
    features = getattr(norm, "num_features", None) or getattr(norm, "num_channels", None)
    return features == previous_conv.out_channels
