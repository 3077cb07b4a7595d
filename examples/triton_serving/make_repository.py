"""Lay out a Triton Inference Server model repository for an exported NC model.

    python examples/triton_serving/make_repository.py model.onnx --name nc_resnet --out model_repository \
        [--library /opt/ncnn_onnx/libncnn_onnx_ops.so] [--max-batch-size 8] [--gpu]

Writes <out>/<name>/config.pbtxt and <out>/<name>/1/model.onnx, with the model's external data files (if
its weights are stored outside the .onnx file) copied beside it under the same relative names, where
onnxruntime looks for them. The configuration names the onnxruntime backend, lists the model's inputs and outputs with their types and shapes read from
the ONNX graph, and loads our custom-op library through `model_operations`, so the fast
NormalizedConv kernels serve the model (without it, onnxruntime falls back to the embedded function).
"""

from __future__ import annotations

import argparse
import pathlib
import shutil

import onnx

# ONNX element types -> Triton data types
TRITON_TYPES = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.INT32: "TYPE_INT32",
}


def _tensor_entry(value: onnx.ValueInfoProto, batched: bool) -> str:
    ttype = value.type.tensor_type
    if ttype.elem_type not in TRITON_TYPES:
        raise ValueError(f"{value.name}: element type {ttype.elem_type} has no Triton equivalent here")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in ttype.shape.dim]
    if batched:
        dims = dims[1:]  # Triton adds the batch dimension itself when max_batch_size > 0
    return (f'  {{\n    name: "{value.name}"\n    data_type: {TRITON_TYPES[ttype.elem_type]}\n'
            f"    dims: [ {', '.join(str(d) for d in dims)} ]\n  }}")


def model_config(model: onnx.ModelProto, name: str, library: str, max_batch_size: int, gpu: bool) -> str:
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    batched = max_batch_size > 0
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    return "\n".join([
        f'name: "{name}"',
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch_size}",
        "input [\n" + ",\n".join(_tensor_entry(v, batched) for v in inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor_entry(v, batched) for v in model.graph.output) + "\n]",
        f'model_operations {{ op_library_filename: "{library}" }}',
        f"instance_group [ {{ count: 1, kind: {kind} }} ]",
        "",
    ])


def external_data_files(model: onnx.ModelProto) -> list[str]:
    """The relative locations of the model's external data files (initializers and Constant tensors alike)."""
    locations = set()
    for tensor in _tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entries = {e.key: e.value for e in tensor.external_data}
            location = entries.get("location", "")
            parts = pathlib.PurePosixPath(location.replace("\\", "/")).parts
            if not location or pathlib.PurePath(location).is_absolute() or ".." in parts:
                raise ValueError(f"tensor {tensor.name!r} stores its data at {location!r}, outside the model's folder")
            locations.add(location)
    return sorted(locations)


def _tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.TENSORS:
                yield from attr.tensors
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from _tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _tensors(sub)


def make_repository(onnx_path, name, out, library, max_batch_size=8, gpu=False) -> pathlib.Path:
    onnx_path = pathlib.Path(onnx_path)
    model = onnx.load(str(onnx_path), load_external_data=False)
    data_files = external_data_files(model)
    for location in data_files:
        if not (onnx_path.parent / location).is_file():
            raise FileNotFoundError(f"{onnx_path} keeps weights in {location}, which is not beside it")
    root = pathlib.Path(out) / name
    version = root / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, version / "model.onnx")
    # onnxruntime resolves external data relative to the model file: the data goes beside model.onnx.
    for location in data_files:
        (version / location).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(onnx_path.parent / location, version / location)
    (root / "config.pbtxt").write_text(model_config(model, name, library, max_batch_size, gpu))
    return root


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--name", default="nc_model")
    parser.add_argument("--out", default="model_repository")
    parser.add_argument("--library", default=None,
                        help="path of the custom-op library inside the server (default: this install's)")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args(argv)
    library = args.library
    if library is None:
        from ncnn_onnx.runtime import get_library_path

        library = str(get_library_path())
    root = make_repository(args.model, args.name, args.out, library, args.max_batch_size, args.gpu)
    data = external_data_files(onnx.load(str(root / "1" / "model.onnx"), load_external_data=False))
    extra = f" with its external data ({', '.join(data)})" if data else ""
    print(f"wrote {root}/config.pbtxt and {root}/1/model.onnx{extra}")


if __name__ == "__main__":
    main()
