"""ncnn-onnx repair model.onnx [-o fixed.onnx]: re-attach the fallback function for the opset the model imports.

Without -o nothing is written: the command says what it would change. -o may name the input file itself
(repair in place, on request only)."""

from __future__ import annotations

import os


def add_arguments(p) -> None:
    p.add_argument("model", help="the .onnx file (not changed unless -o names it)")
    p.add_argument("-o", "--output", help="where to write the repaired model (without it: report only)")


def run(args) -> int:
    from ncnn_onnx.export.repair import RepairError, diagnose, repair

    from . import CliError
    from .check_command import load_diagnosis, print_diagnosis

    diagnosis = load_diagnosis(args.model)
    print_diagnosis(diagnosis, args.model)
    if diagnosis.fatal or not diagnosis.nc_nodes:
        try:
            repair(args.model)
        except RepairError as exc:
            raise CliError(str(exc)) from exc
    change = _change(diagnosis)
    if args.output is None:
        print(f"would: {change}; nothing written (give -o FILE to write the repaired model)")
        return 1 if diagnosis.problems else 0
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    try:
        repair(args.model, args.output)
    except RepairError as exc:
        raise CliError(str(exc)) from exc
    after = diagnose(args.output)
    print(f"wrote {args.output}; done: {change}")
    if after.inlined:
        print(f"note: {after.inlined_text()}")
    return 0


def _change(diagnosis) -> str:
    opset = f"ONNX opset {diagnosis.onnx_opset}"
    return {
        "ok": f"nothing to repair (the fallback for {opset} is in place)",
        "absent": f"add the fallback function for {opset}",
        "missing": f"re-attach the fallback function for {opset}",
        "dropped": f"re-attach the fallback function for {opset}",
        "opset": f"replace the fallback built for ONNX opset {diagnosis.function_opset} by the one for {opset}",
        "type": f"replace the fallback by the one for the NC nodes' element type ({opset})",
        "edited": f"replace the edited fallback body by the one this ncnn_onnx writes for {opset}",
        "duplicate": f"replace the duplicate fallback functions by one for {opset}",
    }.get(diagnosis.fallback, f"re-attach the fallback function for {opset}")
