"""ncnn-onnx optimize model.onnx -o optimized.onnx [--level basic|extended|all]"""

from __future__ import annotations

import warnings


def add_arguments(p) -> None:
    p.add_argument("model", help="the .onnx file (not changed)")
    p.add_argument("-o", "--output", required=True, help="the optimized .onnx file to write")
    p.add_argument("--level", choices=["basic", "extended", "all"], default="basic",
                   help="onnxruntime's optimization level (default basic: standard ONNX ops only, so the result "
                        "runs everywhere the input did; extended and all may write onnxruntime-only fused ops, "
                        "all also layouts for this CPU)")


def run(args) -> int:
    from ncnn_onnx.runtime import tools

    from . import CliError, first_line
    from .check_command import diagnosed_input, load_diagnosis

    diagnosed_input(args)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tools.optimize(args.model, args.output, args.level)
    except ValueError as exc:
        raise CliError(first_line(exc)) from exc
    after = load_diagnosis(args.output)
    print(f"wrote {args.output} (onnxruntime level {args.level}): {after.nc_nodes} NormalizedConv node(s), "
          f"fallback function: {after.fallback_text}")
    for warning in caught:
        print(f"note: {first_line(warning.message)}")
    return 0
