"""ncnn-onnx infer-shapes model.onnx -o shaped.onnx [--auto-merge] [--guess-output-rank]

What `python -m onnxruntime.tools.symbolic_shape_infer` does, with NormalizedConv's output shape known."""

from __future__ import annotations

import os


def add_arguments(p) -> None:
    p.add_argument("model", help="the .onnx file (not changed)")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write, with value_info for every tensor")
    p.add_argument("--auto-merge", action="store_true", help="merge symbolic dims that conflict (as the ORT tool)")
    p.add_argument("--guess-output-rank", action="store_true", help="as the ORT tool, for other unknown ops")
    p.add_argument("--int-max", type=int, default=2**31 - 1, help="as the ORT tool")


def run(args) -> int:
    from ncnn_onnx.runtime import tools

    from . import CliError, first_line
    from .check_command import load_diagnosis

    load_diagnosis(args.model)  # a missing or unreadable file as one line
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    try:
        model = tools.infer_shapes(args.model, args.output, auto_merge=args.auto_merge,
                                   guess_output_rank=args.guess_output_rank, int_max=args.int_max)
    except (RuntimeError, ImportError) as exc:
        raise CliError(first_line(exc)) from exc
    print(f"wrote {args.output}: shapes of {len(model.graph.value_info)} intermediate tensor(s)")
    return 0
