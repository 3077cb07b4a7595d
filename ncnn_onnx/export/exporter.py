"""`export()`: a PyTorch model with NC layers -> an ONNX model with one `ncnn_onnx::NormalizedConv`
node per layer, built on `torch.onnx.export(dynamo=True)`."""

from __future__ import annotations

import inspect
import contextlib
import logging
import os
import warnings
from typing import Any, Callable, Mapping, Optional, Sequence

from .._extras import require

# export() needs the [export] extra; name it before any of these imports fails on its own.
for _module in ("torch", "onnx_ir", "onnxscript"):  # onnxscript imports onnx_ir
    require(_module, "ncnn_onnx.export.export()", "export")

import onnx
import onnx_ir as ir
import torch
from torch import nn
from torch.utils import _pytree

from .. import _op
from . import graph
from .layers import check_layers, effective_weights, nc_layers
from .translation import translation_table

log = logging.getLogger("ncnn_onnx")

# torch.onnx's own default; the function body needs >= 18 (ReduceMean with axes as an input).
DEFAULT_OPSET = 20
_MIN_OPSET = 18
# protobuf cannot serialize a message of 2 GiB or more; larger weights go to an external file.
_EXTERNAL_DATA_THRESHOLD = 1 << 30


class _SkipMissingPackageNotices(logging.Filter):
    """Drops torch.onnx's "torchvision is not installed. Skipping ..." notices: they concern
    translations of optional packages' ops, never an NC model."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is not installed. Skipping" not in record.getMessage()


@contextlib.contextmanager
def _quiet_optional_op_registration():
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    notice_filter = _SkipMissingPackageNotices()
    logger.addFilter(notice_filter)
    try:
        yield
    finally:
        logger.removeFilter(notice_filter)


def export(
    model: nn.Module,
    args: tuple = (),
    f: Optional[str | os.PathLike] = None,
    *,
    kwargs: Optional[Mapping[str, Any]] = None,
    dynamic: bool = True,
    dynamic_shapes: Any = None,
    fallback: bool = True,
    opset: int = DEFAULT_OPSET,
    input_names: Optional[Sequence[str]] = None,
    output_names: Optional[Sequence[str]] = None,
    optimize: bool = True,
    custom_translation_table: Optional[dict[Callable, Callable]] = None,
    verbose: bool = False,
) -> onnx.ModelProto:
    """Export `model` called on the example inputs `args` (and `kwargs`) to ONNX.

    Every NC layer (and every call of the functional NC) becomes one `ncnn_onnx::NormalizedConv` node
    whose W and B are initializers, weight standardization and gain folded into W; everything else
    exports as torch.onnx exports it. `dynamic` makes the batch dim and all spatial dims (dim 0 and
    dims >= 2 of every input tensor) dynamic where the model allows it; `dynamic_shapes` (as in
    torch.export) overrides that. With `fallback`, the model carries a model-local ONNX function of
    standard ops with the op's name, so plain ONNX Runtime and `onnx.reference` run it too; without,
    only a runtime with the op's kernel (`ncnn_onnx.runtime`) can. Writes `f` when given.

    Raises `ExportError` (a ValueError) naming the layer for one ONNX cannot carry faithfully.
    The model is not changed, but is briefly modified during the call (its folded weights are
    swapped in), so do not use it from another thread meanwhile.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(args, tuple):
        args = (args,)
    if opset < _MIN_OPSET:
        raise ValueError(f"opset must be >= {_MIN_OPSET} (the NormalizedConv function body needs it), got {opset}")
    layers = nc_layers(model)
    check_layers(layers)
    if dynamic_shapes is None and dynamic:
        dynamic_shapes = dynamic_spec(model, args, kwargs)

    with effective_weights(layers), warnings.catch_warnings(), _quiet_optional_op_registration(), \
            _op.ncnn_onnx_export():
        # torch.export's own deprecation chatter is not the user's concern.
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.onnx.export(
            model,
            args,
            kwargs=dict(kwargs) if kwargs else None,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            custom_translation_table=translation_table(custom_translation_table),
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            optimize=optimize,
            verbose=verbose,
        )
        ir_model = program.model
        graph.fold_weights(ir_model)
        types = graph.element_types(ir_model)
        count = len(graph.nc_nodes(ir_model))
        proto = ir.serde.serialize_model(ir_model)

    if count == 0:
        warnings.warn(
            f"{type(model).__name__} has no NormalizedConv layer: exported as a plain ONNX model "
            f"(use ncnn_onnx.convert_model to swap its convolutions first)",
            stacklevel=2,
        )
    else:
        log.info("exported %d NormalizedConv node(s)%s", count, " with the fallback function" if fallback else "")
    graph.finish(proto, fallback, types)
    if f is not None:
        save(proto, f)
    return proto


def save(proto: onnx.ModelProto, f: str | os.PathLike) -> None:
    weights = sum(len(t.raw_data) for t in proto.graph.initializer)
    if weights < _EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(proto, f)
        return
    location = os.path.basename(os.fspath(f)) + ".data"
    onnx.save_model(proto, f, save_as_external_data=True, all_tensors_to_one_file=True, location=location)


def dynamic_spec(model: nn.Module, args: tuple, kwargs: Optional[Mapping[str, Any]]):
    """Dim.AUTO on the batch dim and every spatial dim of every input tensor; channels stay static.

    AUTO (rather than named Dims) lets torch.export keep static whatever the model pins down, such
    as the spatial size in front of a flatten + linear head, instead of failing.
    """

    def spec(value):
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            return None
        return {d: torch.export.Dim.AUTO for d in range(value.dim()) if d != 1}

    if not kwargs:
        return tuple(_pytree.tree_map(spec, list(args)))
    bound = inspect.signature(model.forward).bind(*args, **kwargs)
    return {name: _pytree.tree_map(spec, value) for name, value in bound.arguments.items()}
