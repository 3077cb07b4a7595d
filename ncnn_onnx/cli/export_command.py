"""ncnn-onnx export SPEC -o model.onnx --input-shape 1,3,224,224 [--weights w.pt] [--fp16] [--no-fallback]"""

from __future__ import annotations

import os


def add_arguments(p) -> None:
    p.add_argument("spec", help="the model factory, package.module:factory (called with no arguments)")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--input-shape", required=True, help="example input shape, e.g. 1,3,224,224")
    p.add_argument("--weights", help="a state_dict saved with torch.save")
    p.add_argument("--fp16", action="store_true", help="export float16 (weights and NC nodes)")
    p.add_argument("--no-fallback", action="store_true",
                   help="do not embed the standard-op function (then only the library can run the model)")
    p.add_argument("--static", action="store_true", help="fixed batch and spatial dims (default: dynamic)")


def run(args) -> int:
    from tqdm import tqdm

    from .._extras import require
    from . import CliError, first_line
    from .model_spec import load_model, parse_shape, split_spec

    shape = parse_shape(args.input_shape)
    split_spec(args.spec)  # a malformed SPEC fails before anything heavy is imported
    for module in ("torch", "onnx_ir", "onnxscript"):  # the [export] extra (onnxscript imports onnx_ir)
        require(module, "ncnn-onnx export", "export")
    with tqdm(total=3, desc="export", unit="step", leave=False, disable=None) as bar:
        bar.set_postfix_str("building the model")
        model = load_model(args.spec, args.weights, "ncnn-onnx export", "export")
        import torch

        dtype = torch.float16 if args.fp16 else torch.float32
        model = model.to(dtype)
        example = torch.randn(*shape, dtype=dtype)
        # An eager run first: a shape the model cannot take then reads as such, not as a tracing failure.
        try:
            with torch.no_grad():
                model(example)
        except Exception as exc:
            raise CliError(f"{args.spec} does not run on an input of shape {shape}: {first_line(exc)}") from exc
        bar.update()
        bar.set_postfix_str("tracing and lowering")
        from ncnn_onnx.export import export

        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        onnx_model = export(model, (example,), args.output, dynamic=not args.static, fallback=not args.no_fallback)
        bar.update()
        bar.set_postfix_str("checking")
        nc_nodes = sum(1 for n in onnx_model.graph.node if n.domain == "ncnn_onnx")
        bar.update()
    size = os.path.getsize(args.output) / 2**20
    fallback = "without" if args.no_fallback else "with"
    print(f"wrote {args.output} ({size:.1f} MiB): {nc_nodes} NormalizedConv node(s), {fallback} the fallback "
          f"function, {'static' if args.static else 'dynamic'} shapes, {dtype}".replace("torch.", ""))
    return 0
