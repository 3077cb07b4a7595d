"""Real architectures that nobody here wrote, for benchmarks/models.py and the tests: torchvision and timm
classification models with random (seeded) weights, their NC conversion and their GroupNorm twin.

The models come from the `bench` extra (`pip install ".[bench]"`, or `make bench-models`). PyPI's
torchvision wheels are built against torch's CUDA build: with the CPU build of torch their compiled ops
(nms, roi_align, ...) do not load, and `import torchvision` then fails while it registers a fake kernel
for `torchvision::nms`, an op that was never defined. Classification models never call those ops, so
`import_torchvision()` defines the two op schemas the import needs (nms, qnms) first; where the compiled
ops did load, it changes nothing.
"""

from __future__ import annotations

import copy
import importlib
import math
from typing import Callable

import torch
from torch import nn

from ncnn_onnx import convert_model

# name: (package, constructor name)
MODELS = {
    "resnet18": ("torchvision", "resnet18"),
    "densenet121": ("torchvision", "densenet121"),
    "regnet_x_400mf": ("torchvision", "regnet_x_400mf"),
    "convnext_tiny": ("torchvision", "convnext_tiny"),
    "efficientnet_b0": ("torchvision", "efficientnet_b0"),
    "mobilenet_v3_small": ("torchvision", "mobilenet_v3_small"),
    "timm_resnet18": ("timm", "resnet18"),
    "timm_mobilenetv3_small_100": ("timm", "mobilenetv3_small_100"),
}

_TORCHVISION_STANDIN_OPS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_standin_library = None  # kept alive: the schemas last as long as their Library object


def import_torchvision():
    """`import torchvision`, also where its compiled ops do not match the installed (CPU) torch."""
    global _standin_library
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as error:
        if "torchvision::nms" not in str(error):
            raise
    # The failed import left half-initialized torchvision modules behind: drop them and retry with the
    # schemas defined.
    import sys

    for module in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[module]
    _standin_library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _TORCHVISION_STANDIN_OPS:
        _standin_library.define(schema)
    return importlib.import_module("torchvision")


def import_timm():
    import_torchvision()  # timm imports torchvision
    return importlib.import_module("timm")


def build(name: str, seed: int = 0, num_classes: int = 1000) -> nn.Module:
    """The original model (BatchNorm), random weights from `seed`, in eval mode."""
    package, constructor = MODELS[name]
    torch.manual_seed(seed)
    if package == "torchvision":
        model = getattr(import_torchvision().models, constructor)(weights=None, num_classes=num_classes)
    else:
        model = import_timm().create_model(constructor, pretrained=False, num_classes=num_classes)
    _randomize_norms(model, seed)
    return model.eval()


def _randomize_norms(model: nn.Module, seed: int) -> None:
    """Running statistics and affine parameters away from their init (1 and 0), so that the twin's folded
    BatchNorm is not an identity and NC's conversion is not trivially equal to it."""
    generator = torch.Generator().manual_seed(seed + 1)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                module.running_mean.uniform_(-0.2, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
                if module.affine:
                    module.weight.uniform_(0.5, 1.5, generator=generator)
                    module.bias.uniform_(-0.2, 0.2, generator=generator)


def nc_version(model: nn.Module) -> nn.Module:
    """convert_model(norms="following"): every convolution NC, the BatchNorm after it removed."""
    return convert_model(model, norms="following").eval()


def _groups_for(channels: int) -> int:
    return max(g for g in range(1, 33) if channels % g == 0)


def group_norm_twin(model: nn.Module) -> nn.Module:
    """The model with every BatchNorm replaced by GroupNorm (up to 32 groups): what NC competes with when
    the batch is too small for BatchNorm. A fused norm+activation layer keeps its activation."""
    twin = copy.deepcopy(model)

    def replace(parent: nn.Module) -> None:
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                norm = nn.GroupNorm(_groups_for(child.num_features), child.num_features)
                tail = [m for key, m in child.named_children() if key in ("drop", "act")]
                setattr(parent, name, nn.Sequential(norm, *tail) if tail else norm)
            else:
                replace(child)

    replace(twin)
    return twin


def count_modules(model: nn.Module, predicate: Callable[[nn.Module], bool]) -> int:
    return sum(1 for m in model.modules() if predicate(m))


def conv_kind(weight_shape, groups: int, stride) -> str:
    """How a convolution layer is classified in the breakdowns: depthwise, grouped, pointwise, stride 2,
    or dense kxk."""
    per_group = weight_shape[1]
    kernel = list(weight_shape[2:])
    if groups > 1 and per_group == 1:
        return f"depthwise {kernel[0]}x{kernel[0]}"
    if groups > 1:
        return "grouped"
    if math.prod(kernel) == 1:
        return "pointwise 1x1"
    if any(s > 1 for s in stride):
        return "stride 2"
    return f"dense {kernel[0]}x{kernel[0]}"
