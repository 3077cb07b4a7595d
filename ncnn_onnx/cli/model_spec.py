"""Building the eager model named by `package.module:factory` (needs torch)."""

from __future__ import annotations

import importlib
import os
import sys


def load_model(spec: str, weights: str | None = None, command: str = "ncnn-onnx", extra: str = "torch"):
    """Import `package.module`, call `factory()`, load a state_dict if given; the model in eval mode.
    torch is checked before the user's module is imported, so that its absence names the extra to install
    (`command` needs `extra`) instead of failing inside that module."""
    from .._extras import require
    from . import CliError

    module_name, factory_name = split_spec(spec)
    require("torch", command, extra)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # so a module beside the user's files is found, as with python -m
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import {module_name!r} from {spec!r}: {exc}") from exc
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise CliError(f"{module_name} has no callable {factory_name!r}")
    model = factory()
    import torch

    if not isinstance(model, torch.nn.Module):
        raise CliError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    if weights:
        if not os.path.exists(weights):
            raise CliError(f"weights file not found: {weights}")
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle and zip errors alike: the file is not what --weights wants
            raise CliError(f"cannot read {weights} as a state_dict saved with torch.save: {exc}") from exc
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            # torch's first line is only "Error(s) in loading state_dict for X:"; the first detail says which.
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise CliError(f"weights do not fit {spec}: {lines[1] if len(lines) > 1 else lines[0]}") from exc
    return model.eval()


def split_spec(spec: str) -> tuple[str, str]:
    """("package.module", "factory") of a SPEC; CliError when it does not have that form."""
    from . import CliError

    module_name, sep, factory_name = spec.partition(":")
    if not sep or not module_name or not factory_name:
        raise CliError(f"model spec must look like package.module:factory, got {spec!r}")
    return module_name, factory_name


def parse_shape(text: str) -> tuple[int, ...]:
    from . import CliError

    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise CliError(f"input shape must be comma-separated ints like 1,3,224,224, got {text!r}") from None
    if not shape or any(v < 1 for v in shape):
        raise CliError(f"input shape must be positive ints like 1,3,224,224, got {text!r}")
    return shape
