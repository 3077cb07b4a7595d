"""`ncnn-onnx`: export, run, check and benchmark NC models from the command line.

Each subcommand lives in its own module (`<name>_command`, dashes as underscores) with
`add_arguments(parser)` and `run(args) -> int`.
Errors are one line on stderr (exit 1) unless --debug asks for the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "export": "Export a PyTorch model (package.module:factory) to ONNX.",
    "run": "Run an exported model on .npy/.npz or image inputs with onnxruntime.",
    "check": "Diagnose the file (NC nodes, fallback function, what tools did to it); with --reference, parity.",
    "repair": "Re-attach the fallback function for the ONNX opset the model imports (after a tool dropped it).",
    "optimize": "onnxruntime's offline optimization with the library registered; NC nodes and fallback kept.",
    "infer-shapes": "onnxruntime's symbolic shape inference, with NormalizedConv's output shape known.",
    "quant-pre-process": "onnxruntime's quant_pre_process for NC models (NC nodes and fallback kept).",
    "bench": "Latency and throughput of an exported model on every deployed path.",
    "info": "Versions, library path, providers and whether CUDA kernels are built in.",
}


class CliError(Exception):
    """An error the user can act on: printed as one line, no traceback."""


def read_model(path: str):
    """The ONNX model at `path` without its external data; a missing or unreadable file as a CliError."""
    import os

    import onnx

    if not os.path.isfile(path):
        raise CliError(f"model file not found: {path}")
    try:
        return onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends say nothing about which file
        raise CliError(f"{path} is not a readable ONNX model: {exc}") from exc


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ncnn-onnx", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, summary in COMMANDS.items():
        module = importlib.import_module(f".{name.replace('-', '_')}_command", __name__)
        command = sub.add_parser(name, help=summary, description=summary)
        # Also accepted after the subcommand; SUPPRESS keeps the subparser from resetting one given before it.
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("ncnn-onnx: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line; the traceback only on request
        if args.debug:
            raise
        from .._extras import MissingExtraError

        message = first_line(exc)
        if not isinstance(exc, (CliError, MissingExtraError)) and str(exc).strip():  # unforeseen: the type too
            message = f"{type(exc).__name__}: {message}"
        print(f"ncnn-onnx {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
