"""Optional dependencies and the extras that install them.

Serving needs only the base install; the PyTorch parts, the exporter and image inputs need more. A missing
optional module surfaces as one MissingExtraError line naming the pip command, e.g.

    ncnn_onnx.nn needs torch, which is not installed: pip install "ncnn_onnx[torch]"

instead of a bare ModuleNotFoundError (with no traceback of the failed import chained to it).
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Top-level module -> (the extra that installs it, its name on the package index).
EXTRAS = {
    "torch": ("torch", "torch"),
    "onnxscript": ("export", "onnxscript"),
    "onnx_ir": ("export", "onnx-ir"),
    "PIL": ("images", "Pillow"),
}


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency is not installed; the message names the extra that brings it."""

    def __init__(self, module: str, feature: str, extra: str | None = None):
        default_extra, distribution = EXTRAS.get(module, (extra, module))
        self.extra = extra or default_extra
        super().__init__(f'{feature} needs {distribution}, which is not installed: '
                         f'pip install "ncnn_onnx[{self.extra}]"', name=module)


def require(module: str, feature: str, extra: str | None = None) -> ModuleType:
    """Imports `module`; raises MissingExtraError naming `extra` (default: EXTRAS) when it is not installed.

    Only the absence of `module` itself is translated: an ImportError from inside an installed module
    (a broken install, a missing dependency of it) is raised as it is.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name is None or exc.name.split(".")[0] != top:
            raise
        raise MissingExtraError(top, feature, extra) from None
