"""The Python surface (ncnn_onnx.runtime) and proof that the library's kernel, not something else, ran."""

from __future__ import annotations

import glob
import json
import os
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from ncnn_onnx import runtime
from ort_models import nc_model, reference, run_python
from reference import assert_parity


def _small():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    return x, w, nc_model(w, pads=[1, 1, 1, 1])


def test_library_exists_and_exports_only_the_entry_point():
    path = runtime.get_library_path()
    assert os.path.isabs(path) and os.path.isfile(path)
    import ctypes

    library = ctypes.CDLL(path)
    assert hasattr(library, "RegisterCustomOps")
    for internal in ("_ZN9ncnn_onnx3Api", "ReadConvAttributes", "_ZN9ncnn_onnx3cpu9CustomOpsEv"):
        assert not hasattr(library, internal)


def test_import_does_not_import_torch():
    done = run_python(
        "import sys, ncnn_onnx.runtime as r; r.get_library_path(); r.session_options();"
        "print('torch' in sys.modules)"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_missing_library_names_the_expected_path(monkeypatch, tmp_path):
    monkeypatch.delenv("NCNN_ONNX_LIBRARY", raising=False)  # make sanitize points it at its own build
    monkeypatch.setattr(runtime, "_package_dirs", lambda: [tmp_path])
    with pytest.raises(FileNotFoundError, match=str(tmp_path / runtime.LIBRARY_NAME)):
        runtime.get_library_path()
    monkeypatch.setenv("NCNN_ONNX_LIBRARY", str(tmp_path / "nowhere.so"))
    with pytest.raises(FileNotFoundError, match="NCNN_ONNX_LIBRARY"):
        runtime.get_library_path()


def test_session_options_register_once_and_set_attributes():
    options = runtime.session_options(intra_op_num_threads=2)
    assert options.intra_op_num_threads == 2
    assert runtime.session_options(options) is options  # a second registration would break the session
    x, _, model = _small()
    ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]).run(None, {"X": x})
    with pytest.raises(TypeError, match="no_such_option"):
        runtime.session_options(no_such_option=1)


def test_inference_session_takes_path_bytes_and_model_proto(tmp_path):
    x, w, model = _small()
    path = tmp_path / "nc.onnx"
    path.write_bytes(model)
    expected = reference(x, w, pads=[1, 1, 1, 1])
    for source in (str(path), path, model, onnx.load_from_string(model)):
        y = runtime.InferenceSession(source).run(None, {"X": x})[0]
        assert_parity(y, expected, np.float32)
    with pytest.raises(TypeError, match="model must be"):
        runtime.InferenceSession(12)


def test_cuda_flag_is_a_bool():
    assert isinstance(runtime.cuda_kernels_built(), bool)


def test_the_library_kernel_runs(tmp_path):
    """The model has no fallback function: plain onnxruntime cannot load it, the library runs it, and the
    profile shows the node executed by CPUExecutionProvider."""
    x, w, model = _small()
    with pytest.raises(Exception, match="NormalizedConv"):
        ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    options = runtime.session_options(enable_profiling=True, profile_file_prefix=str(tmp_path / "profile"))
    session = runtime.InferenceSession(model, sess_options=options)
    session.run(None, {"X": x})
    profile = session.end_profiling()
    events = json.loads(open(profile).read())
    ran = [e for e in events if e.get("cat") == "Node" and e.get("args", {}).get("op_name") == "NormalizedConv"]
    assert ran, "no NormalizedConv node in the profile"
    # onnxruntime records the provider in the profile since 1.19 (the oldest supported, 1.18, does not).
    recorded = {e["args"]["provider"] for e in ran if "provider" in e["args"]}
    assert recorded == {"CPUExecutionProvider"} or (not recorded and ort.__version__.startswith("1.18."))
    assert glob.glob(str(tmp_path / "profile*.json"))


@pytest.mark.parametrize("version", [2, 99])
@pytest.mark.parametrize("as_path", [False, True])
def test_later_op_versions_are_refused(version, as_path, tmp_path):
    """onnxruntime resolves every import of the domain to the one schema the library registers, so the
    session helper reads the import itself and refuses what the library does not implement."""
    _, w, model = _small()
    proto = onnx.load_from_string(model)
    for opset in proto.opset_import:
        if opset.domain == "ncnn_onnx":
            opset.version = version
    source = proto.SerializeToString()
    if as_path:
        source = tmp_path / "model.onnx"
        onnx.save(proto, source)
    with pytest.raises(ValueError, match=f"imports ncnn_onnx opset version {version}; .* version 1 only"):
        runtime.InferenceSession(source)


def test_opset_imports_are_read_without_loading_the_graph(tmp_path):
    from ncnn_onnx.runtime.opset import domain_versions

    _, _, model = _small()
    assert domain_versions(model) == {"": 17, "ncnn_onnx": 1}
    path = tmp_path / "model.onnx"
    path.write_bytes(model)
    assert domain_versions(path) == {"": 17, "ncnn_onnx": 1}
    # Not a model at all: onnxruntime, not the helper, says what is wrong with it.
    path.write_bytes(b"\x07garbage")
    with pytest.raises(Exception, match="(?i)protobuf|parse|load"):
        runtime.InferenceSession(path)


def test_caller_options_are_used_not_copied_and_the_session_says_so():
    """onnxruntime's SessionOptions cannot be copied (config entries, dimension overrides and initializers
    would be lost), so the helper registers the library on the caller's object and warns: a plain session
    made from that object later runs the library, not the fallback function."""
    x, w, model = _small()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    with pytest.warns(UserWarning, match=r"registers the ncnn_onnx library on the SessionOptions passed as "
                                         r"sess_options.*plain onnxruntime.InferenceSession too, runs the library"):
        runtime.InferenceSession(model, sess_options=options)
    assert runtime.has_library(options) and options.intra_op_num_threads == 1
    # What the warning says: the model has no fallback function, and a plain session now loads and runs it.
    plain = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    assert_parity(plain.run(None, {"X": x})[0], reference(x, w, pads=[1, 1, 1, 1]), np.float32)
    assert not runtime.has_library(ort.SessionOptions())


def test_options_registered_on_purpose_do_not_warn():
    _, _, model = _small()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runtime.InferenceSession(model, sess_options=runtime.session_options(ort.SessionOptions()))
        runtime.InferenceSession(model, sess_options=runtime.session_options(intra_op_num_threads=1))
        runtime.InferenceSession(model)
