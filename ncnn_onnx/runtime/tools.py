"""onnxruntime's model tools, run so that an NC model comes out with its NormalizedConv nodes and its
fallback function (the commands `ncnn-onnx optimize`, `infer-shapes` and `quant-pre-process`).

Run plainly, onnxruntime's offline optimization drops the fallback function (with the library registered)
or inlines it (without), `quant_pre_process` inlines it, and `symbolic_shape_infer` does not know the op's
output shape, so residual models fail there. Here:

- `optimize`: onnxruntime's offline optimization with the library registered, then the function re-attached;
- `symbolic_shape_inference()`: a context in which onnxruntime's symbolic shape inference (and everything
  that calls it, such as `quant_pre_process`) computes NormalizedConv's output shape as Conv's, which it
  is by definition, and onnx's shape inference knows the op (its schema is registered);
- `infer_shapes`: the symbolic shape inference of `python -m onnxruntime.tools.symbolic_shape_infer`, so;
- `quant_pre_process`: onnxruntime's `quant_pre_process`, with its optimization step replaced by `optimize`
  and its shape inference steps run in that context.

Needs onnx and onnxruntime (and sympy for the symbolic shape inference), not torch.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Iterator, Optional, Union

import onnx
import onnxruntime as ort

from . import session_options
from .opset import check_op_version

PathLike = Union[str, os.PathLike]

LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_EXTERNAL_FILE_KEY = "session.optimized_model_external_initializers_file_name"
_EXTERNAL_MIN_SIZE_KEY = "session.optimized_model_external_initializers_min_size_in_bytes"
_patch_lock = threading.RLock()


def optimize(model: PathLike, output: PathLike, level: str = "basic") -> onnx.ModelProto:
    """onnxruntime's offline graph optimization of `model` at `level` ("basic", "extended", "all" or
    "disable"), with the ncnn_onnx library registered so the NormalizedConv nodes stay, written to `output`
    with the fallback function re-attached for the ONNX opset of the result (where the input had one).
    Returns the written model (without its external data).

    "basic" keeps standard ONNX ops only, so the result runs everywhere the input did; "extended" and "all"
    may write onnxruntime's own fused ops (domain com.microsoft), which only onnxruntime runs, and "all"
    also layouts specific to the CPU it ran on. External data of the input goes to `<output>.data`.
    """
    from ncnn_onnx.export.repair import FALLBACK_METADATA_KEY, diagnose, repair, save
    from ncnn_onnx.export.schema import DOMAIN, OP_TYPE

    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    model, output = os.fspath(model), os.fspath(output)
    if os.path.abspath(model) == os.path.abspath(output):
        raise ValueError("the output must be another file than the input (onnxruntime reads the input while "
                         "it writes the output)")
    check_op_version(model)
    before = diagnose(model)
    options = session_options(graph_optimization_level=LEVELS[level], optimized_model_filepath=output)
    proto = onnx.load(model, load_external_data=False)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    if external:
        options.add_session_config_entry(_EXTERNAL_FILE_KEY, os.path.basename(output) + ".data")
        options.add_session_config_entry(_EXTERNAL_MIN_SIZE_KEY, "1024")
    ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(output, load_external_data=False)
    # onnxruntime writes every domain it knows into the opset imports; the model does not need them.
    used = _used_domains(optimized)
    kept = [o for o in optimized.opset_import if o.domain in ("", "ai.onnx") or o.domain in used]
    del optimized.opset_import[:]
    optimized.opset_import.extend(kept)
    if before.fallback == "ok":
        optimized = repair(optimized)
    else:
        # Not ours to change: what the input had (an edited or mismatched function, none at all) goes back as
        # it was, and `ncnn-onnx check` / `repair` say what is wrong with it.
        del optimized.functions[:]
        optimized.functions.extend(f for f in proto.functions if (f.domain, f.name) == (DOMAIN, OP_TYPE))
        keep = [p for p in optimized.metadata_props if p.key != FALLBACK_METADATA_KEY]
        del optimized.metadata_props[:]
        optimized.metadata_props.extend(keep)
        optimized.metadata_props.extend(p for p in proto.metadata_props if p.key == FALLBACK_METADATA_KEY)
        if before.problems:
            warnings.warn(f"{model}: {before.problems[0]}; kept as it was (ncnn-onnx check / repair)", stacklevel=2)
    save(optimized, output)  # the external data onnxruntime wrote beside it stays as it is
    return optimized


def _used_domains(model: onnx.ModelProto) -> set[str]:
    def walk(graph):
        for node in graph.node:
            yield node.domain
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    yield from walk(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        yield from walk(sub)

    domains = set(walk(model.graph))
    for function in model.functions:
        domains.add(function.domain)
        domains.update(node.domain for node in function.node)
    return domains


def _nc_symbolic_class():
    try:
        from onnxruntime.tools import symbolic_shape_infer
    except ImportError as exc:  # sympy
        raise ImportError(f"onnxruntime's symbolic shape inference needs sympy (pip install sympy): {exc}") from exc

    from ncnn_onnx.export.schema import DOMAIN, OP_TYPE

    base = symbolic_shape_infer.SymbolicShapeInference
    if getattr(base, "_ncnn_onnx", False):
        return symbolic_shape_infer, base

    class NCSymbolicShapeInference(base):
        """onnxruntime's symbolic shape inference, with NormalizedConv's output shape computed as Conv's
        (docs/op.md: "Exactly that of ONNX Conv with the same attributes")."""

        _ncnn_onnx = True

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            conv = self.dispatcher_["Conv"]
            other = self.dispatcher_.get(OP_TYPE)

            def infer(node):
                if node.domain == DOMAIN:
                    conv(node)
                elif other is not None:
                    other(node)

            self.dispatcher_[OP_TYPE] = infer

    return symbolic_shape_infer, NCSymbolicShapeInference


@contextlib.contextmanager
def symbolic_shape_inference() -> Iterator[None]:
    """Within it, onnxruntime's `SymbolicShapeInference` (used by `symbolic_shape_infer` and by
    `onnxruntime.quantization.quant_pre_process`) gives NormalizedConv nodes Conv's symbolic output shape,
    and onnx's shape inference knows the op (`ncnn_onnx.export` registers its schema). Process-wide while
    active (it replaces the class in its module): not for use from several threads at once."""
    import ncnn_onnx.export  # noqa: F401  (registers the schema with onnx.defs)

    with _patch_lock:
        module, nc_class = _nc_symbolic_class()
        original = module.SymbolicShapeInference
        module.SymbolicShapeInference = nc_class
        try:
            yield
        finally:
            module.SymbolicShapeInference = original


def infer_shapes(model: Union[PathLike, onnx.ModelProto], output: Optional[PathLike] = None, *,
                 auto_merge: bool = False, guess_output_rank: bool = False, int_max: int = 2**31 - 1,
                 verbose: int = 0) -> onnx.ModelProto:
    """onnxruntime's symbolic shape inference (as `python -m onnxruntime.tools.symbolic_shape_infer`) with
    NormalizedConv's output shape known; writes `output` when given. Raises RuntimeError where the
    inference stays incomplete (as that tool does), without leaving its scratch file in the working folder."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(os.fspath(model))
    with symbolic_shape_inference():
        from onnxruntime.tools import symbolic_shape_infer

        with tempfile.TemporaryDirectory(prefix="ncnn_onnx_shapes_") as scratch, _cwd(scratch):
            try:
                inferred = symbolic_shape_infer.SymbolicShapeInference.infer_shapes(
                    proto, int_max, auto_merge, guess_output_rank, verbose
                )
            except Exception as exc:
                if "Incomplete symbolic shape inference" not in str(exc):
                    raise
                raise RuntimeError(
                    "onnxruntime's symbolic shape inference is incomplete for this model (an op other than "
                    "NormalizedConv it cannot infer, or dims it cannot merge): try auto_merge / --auto-merge"
                ) from exc
    if inferred is None:
        raise RuntimeError("onnxruntime's symbolic shape inference needs ONNX opset 7 or later")
    if output is not None:
        from ncnn_onnx.export.repair import save

        save(inferred, output)
    return inferred


def quant_pre_process(model: PathLike, output: PathLike, *, skip_optimization: bool = False,
                      skip_onnx_shape: bool = False, skip_symbolic_shape: bool = False, auto_merge: bool = False,
                      guess_output_rank: bool = False, int_max: int = 2**31 - 1, verbose: int = 0) -> None:
    """`onnxruntime.quantization.quant_pre_process` for NC models: the optimization step is `optimize`
    (library registered, fallback function re-attached) instead of onnxruntime's plain one that inlines the
    function, and both shape inferences know NormalizedConv. Writes `output`."""
    from onnxruntime.quantization.shape_inference import quant_pre_process as ort_quant_pre_process

    model, output = os.path.abspath(model), os.path.abspath(output)
    with tempfile.TemporaryDirectory(prefix="ncnn_onnx_quant_pre_") as scratch:
        source = model
        if not skip_optimization:
            source = str(Path(scratch) / "optimized.onnx")
            optimize(model, source, level="basic")
        with symbolic_shape_inference(), _cwd(scratch):
            ort_quant_pre_process(
                source, output, skip_optimization=True,
                skip_onnx_shape=skip_onnx_shape, skip_symbolic_shape=skip_symbolic_shape, auto_merge=auto_merge,
                int_max=int_max, guess_output_rank=guess_output_rank, verbose=verbose,
            )


@contextlib.contextmanager
def _cwd(folder: str) -> Iterator[None]:
    """symbolic_shape_infer saves its partial result as ./sym_shape_infer_temp.onnx on failure: not into
    the user's folder."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)
