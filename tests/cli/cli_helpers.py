"""What the CLI tests share besides fixtures: the factory module's name, SPEC strings, the error contract."""

from __future__ import annotations

from dataclasses import dataclass

# Unique, so that it cannot shadow or be shadowed by another test's module.
FACTORY_MODULE = "ncnn_cli_tiny_models"
CLASSES = 5


@dataclass
class Result:
    code: int
    out: str
    err: str


def spec(factory: str) -> str:
    return f"{FACTORY_MODULE}:{factory}"


def one_line_error(result: Result, command: str) -> str:
    """Asserts the CLI's error contract (exit 1, one line on stderr, no traceback); returns the message."""
    assert result.code == 1, (result.code, result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    prefix = f"ncnn-onnx {command}: error: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix):]


def library_session(path):
    from ncnn_onnx import runtime

    return runtime.InferenceSession(str(path))
