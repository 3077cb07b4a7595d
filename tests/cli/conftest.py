"""Fixtures of the CLI tests: a module of tiny model factories on sys.path (what SPEC names), the models
exported once per session through the CLI, and `cli(...)`, which runs `ncnn_onnx.cli.main` in-process."""

from __future__ import annotations

import importlib
import sys
import textwrap

import numpy as np
import pytest

from cli_helpers import FACTORY_MODULE, Result, spec
from ncnn_onnx.cli import main

FACTORIES = textwrap.dedent(
    '''
    import torch
    from torch import nn

    from ncnn_onnx import NormalizedConv2d


    def _classifier(seed):
        torch.manual_seed(seed)
        return nn.Sequential(
            NormalizedConv2d(3, 4, 3, padding=1), nn.ReLU(), NormalizedConv2d(4, 4, 3, padding=1, stride=2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5),
        )


    def classifier():
        return _classifier(0)


    def seven_classes():
        torch.manual_seed(0)
        return nn.Sequential(NormalizedConv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 7))


    def classifier_seed1():
        return _classifier(1)


    def _ill_conditioned(seed):
        # A 1x1 mix whose eight output channels nearly equal one another (the first input channel, times
        # 1000, dominates all of them), then a pointwise NC layer: its patches have variances around eps, so
        # the mix's float32 rounding reaches the output multiplied by ~1/sqrt(eps).
        torch.manual_seed(seed)
        mix = nn.Conv2d(3, 8, 1, bias=False)
        with torch.no_grad():
            mix.weight.zero_()
            mix.weight[:, 0] = 1000.0
            mix.weight[:, 1] = 3e-3 * torch.randn(8, 1, 1)
        return nn.Sequential(mix, NormalizedConv2d(8, 6, 1), nn.Flatten(), nn.Linear(6 * 8 * 8, 5))


    def ill_conditioned():
        return _ill_conditioned(0)


    def ill_conditioned_seed1():
        return _ill_conditioned(1)


    def not_a_module():
        return 3


    def broken():
        raise ValueError("factory failed on purpose\\nsecond line that must not be printed")


    NOT_CALLABLE = 7
    '''
)


@pytest.fixture(scope="session")
def factory_dir(tmp_path_factory):
    """The folder holding FACTORY_MODULE: on sys.path for the session, PYTHONPATH for subprocesses."""
    folder = tmp_path_factory.mktemp("factories")
    (folder / f"{FACTORY_MODULE}.py").write_text(FACTORIES)
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop(FACTORY_MODULE, None)


@pytest.fixture
def cli(capsys, factory_dir):
    """cli("run", "m.onnx", ...) -> Result(exit code, stdout, stderr); argparse's SystemExit gives the code."""

    def invoke(*argv) -> Result:
        capsys.readouterr()  # drop what session fixtures printed while exporting
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


def _export(tmp_path_factory, name: str, *options) -> str:
    path = tmp_path_factory.mktemp("models") / f"{name}.onnx"
    code = main(["export", spec("classifier"), "-o", str(path), *options])
    assert code == 0 and path.is_file()
    return str(path)


@pytest.fixture(scope="session")
def model_path(tmp_path_factory, factory_dir):
    """The default export: float32, dynamic shapes, with the fallback function."""
    return _export(tmp_path_factory, "default", "--input-shape", "1,3,8,8")


@pytest.fixture(scope="session")
def static_no_fallback_path(tmp_path_factory, factory_dir):
    """Fixed 1x3x8x8 input and no fallback function: only the library can run it."""
    return _export(tmp_path_factory, "static_nf", "--input-shape", "1x3x8x8", "--static", "--no-fallback")


@pytest.fixture(scope="session")
def fp16_path(tmp_path_factory, factory_dir):
    return _export(tmp_path_factory, "fp16", "--input-shape", "1,3,8,8", "--fp16")


@pytest.fixture
def sample(tmp_path):
    """One (3, 8, 8) sample saved as .npy (the CLI adds the batch dim): (path, array)."""
    x = np.random.default_rng(7).standard_normal((3, 8, 8)).astype(np.float32)
    path = tmp_path / "sample.npy"
    np.save(path, x)
    return path, x


@pytest.fixture(scope="session")
def seed1_weights(tmp_path_factory, factory_dir):
    """A state_dict of classifier_seed1(), which fits classifier() but holds other values."""
    import torch

    factories = importlib.import_module(FACTORY_MODULE)
    path = tmp_path_factory.mktemp("weights") / "seed1.pt"
    torch.save(factories.classifier_seed1().state_dict(), path)
    return path
