"""ncnn-onnx quant-pre-process model.onnx -o prepared.onnx [--skip-optimization] [--skip-symbolic-shape] ...

What `python -m onnxruntime.quantization.preprocess` does, for NC models: the optimization runs with the
library registered and the fallback function re-attached, and both shape inferences know NormalizedConv.
Quantize the result with onnxruntime.quantization.quantize_static / quantize_dynamic as usual."""

from __future__ import annotations



def add_arguments(p) -> None:
    p.add_argument("model", help="the .onnx file (not changed)")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--skip-optimization", action="store_true", help="as quant_pre_process")
    p.add_argument("--skip-onnx-shape", action="store_true", help="as quant_pre_process")
    p.add_argument("--skip-symbolic-shape", action="store_true", help="as quant_pre_process")
    p.add_argument("--auto-merge", action="store_true", help="as quant_pre_process")
    p.add_argument("--guess-output-rank", action="store_true", help="as quant_pre_process")


def run(args) -> int:
    from ncnn_onnx.runtime import tools

    from . import CliError
    from .check_command import diagnosed_input, load_diagnosis

    diagnosed_input(args)
    try:
        tools.quant_pre_process(args.model, args.output, skip_optimization=args.skip_optimization,
                                skip_onnx_shape=args.skip_onnx_shape, skip_symbolic_shape=args.skip_symbolic_shape,
                                auto_merge=args.auto_merge, guess_output_rank=args.guess_output_rank)
    except Exception as exc:
        if "Incomplete symbolic shape inference" in str(exc):
            raise CliError("onnxruntime's symbolic shape inference is incomplete for this model (an op other than "
                           "NormalizedConv, or dims it cannot merge): try --auto-merge") from exc
        raise
    after = load_diagnosis(args.output)
    print(f"wrote {args.output}: {after.nc_nodes} NormalizedConv node(s), fallback function: {after.fallback_text}")
    return 0 if not after.problems else 1
