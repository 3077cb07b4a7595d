"""`ncnn-onnx`: export, run, check and benchmark NC models from the command line.

Each subcommand lives in its own module with `add_arguments(parser)` and `run(args) -> int`.
Errors are one line on stderr (exit 1) unless --debug asks for the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "export": "Export a PyTorch model (package.module:factory) to ONNX.",
    "run": "Run an exported model on .npy/.npz or image inputs with onnxruntime.",
    "check": "Compare eager PyTorch with every deployed path and enforce the parity bar.",
    "bench": "Latency and throughput of an exported model on every deployed path.",
    "info": "Versions, library path, providers and whether CUDA kernels are built in.",
}


class CliError(Exception):
    """An error the user can act on: printed as one line, no traceback."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ncnn-onnx", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, summary in COMMANDS.items():
        module = importlib.import_module(f".{name}_command", __name__)
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
