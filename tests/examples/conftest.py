"""Examples are scripts, not a package: make `examples/` importable and load them by name."""

import importlib
import pathlib
import sys

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))


def load(name: str):
    return importlib.import_module(name)
