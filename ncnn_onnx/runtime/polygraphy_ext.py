"""polygraphy with the ncnn_onnx library registered.

polygraphy's `--onnxrt` runner builds plain onnxruntime sessions, and its `--plugins` option loads TensorRT
plugins only: with an onnxruntime runner it is ignored, and the fallback function runs. This module gives
polygraphy what it lacks:

- `SessionWithLibrary(model, providers)`: a polygraphy loader (like `SessionFromOnnx`) whose session has the
  library registered, for the Python API:

      from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
      from polygraphy.comparator import Comparator
      runners = [OnnxrtRunner(SessionFromOnnx("model.onnx")),                       # the fallback
                 OnnxrtRunner(SessionWithLibrary("model.onnx"), name="library")]     # the kernels
      assert Comparator.compare_accuracy(Comparator.run(runners))

- the runner `--ncnn-onnxrt` of `polygraphy run`, through polygraphy's extension entry point
  (`polygraphy.run.plugins`, declared in this package's metadata):

      polygraphy run model.onnx --onnxrt --ncnn-onnxrt      # fallback vs library, compared

Imported by polygraphy (or by the user) only; it needs polygraphy installed.
"""

from __future__ import annotations

import onnxruntime as ort
from polygraphy import util
from polygraphy.backend.base import BaseLoader
from polygraphy.tools.args.base import BaseRunnerArgs
from polygraphy.tools.args.model import ModelArgs
from polygraphy.tools.script import make_invocable

from . import InferenceSession, session_options

RUNNER_OPTION = "ncnn-onnxrt"


def _providers(names) -> list[str]:
    """polygraphy's provider matching: exact names, or case-insensitive parts of one ("cpu", "cuda")."""
    available = ort.get_available_providers()
    chosen = []
    for name in names or ["cpu"]:
        match = name if name in available else next((p for p in available if name.lower() in p.lower()), None)
        if match is None:
            raise ValueError(f"no onnxruntime execution provider matches {name!r}; available: {available}")
        chosen.append(match)
    return chosen


class SessionWithLibrary(BaseLoader):
    """Functor that builds an onnxruntime session with the ncnn_onnx library registered
    (`ncnn_onnx.runtime.InferenceSession`); arguments as polygraphy's `SessionFromOnnx`."""

    def __init__(self, model_bytes, providers=None, graph_optimization_level=None):
        self._model = model_bytes
        self.providers = providers
        self.graph_optimization_level = graph_optimization_level

    def call_impl(self):
        model, _ = util.invoke_if_callable(self._model)
        options = session_options()
        if self.graph_optimization_level is not None:
            options.graph_optimization_level = self.graph_optimization_level
        return InferenceSession(model, providers=_providers(self.providers), sess_options=options)


class LibraryRunnerArgs(BaseRunnerArgs):
    """
    ONNX-Runtime with the ncnn_onnx library: running inference with the NormalizedConv kernels registered.

    Depends on:

        - ModelArgs
        - OnnxrtSessionArgs: for --providers
    """

    def get_name_opt_impl(self):
        return "ONNX-Runtime with the ncnn_onnx library", RUNNER_OPTION

    def get_extra_help_text_impl(self):
        return "(ncnn_onnx's extension: --plugins does not reach onnxruntime runners)"

    def add_to_script_impl(self, script):
        from polygraphy.tools.args.backend.onnxrt.loader import OnnxrtSessionArgs

        providers = None
        if OnnxrtSessionArgs in self.arg_groups:
            providers = self.arg_groups[OnnxrtSessionArgs].providers
        script.add_import(imports=["OnnxrtRunner"], frm="polygraphy.backend.onnxrt")
        script.add_import(imports=["SessionWithLibrary"], frm="ncnn_onnx.runtime.polygraphy_ext")
        loader = script.add_loader(
            make_invocable("SessionWithLibrary", self.arg_groups[ModelArgs].path, providers=providers),
            "build_ncnn_onnx_session",
        )
        script.add_runner(make_invocable("OnnxrtRunner", loader, name="ncnn-onnxrt-runner"))


def run_argument_groups() -> list:
    """The `polygraphy.run.plugins` entry point: the argument groups this extension adds to `polygraphy run`."""
    return [LibraryRunnerArgs()]
