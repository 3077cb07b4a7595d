"""The CUDA kernels on onnxruntime's CUDAExecutionProvider (docs/architecture.md): parity with the float64
reference and with eager PyTorch on CUDA, placement on the CUDA EP without copies, concurrency.

Skipped, with the reason, where no CUDA device, no CUDA-enabled onnxruntime or no CUDA kernels exist.
"""

from __future__ import annotations

import functools
import json
import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from ncnn_onnx import runtime
from ort_models import nc_model, reference
from reference import assert_parity, photographs

CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]
# onnxruntime's CUDA MatMul/Gemm/Conv use TF32 by default (10-bit mantissa), which misses the float32 bar
# for reasons that are not NC's: whole-network comparisons switch it off, as they do in torch.
CUDA_NO_TF32 = [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]


@functools.lru_cache(maxsize=None)
def cuda_unavailable_reason() -> str | None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
    try:
        if not runtime.cuda_kernels_built():
            return "the ncnn_onnx library was built without CUDA kernels (no nvcc at build time)"
    except FileNotFoundError as exc:
        return f"the ncnn_onnx library is not built: {exc}"
    w = np.ones((1, 1, 1, 1), np.float32)
    try:
        session = runtime.InferenceSession(nc_model(w), providers=CUDA)
    except Exception as exc:  # noqa: BLE001 - any failure to create a CUDA session means no usable device
        return f"no usable CUDA device: {str(exc).splitlines()[0]}"
    if "CUDAExecutionProvider" not in session.get_providers():
        return "onnxruntime found no CUDA device"
    return None


pytestmark = pytest.mark.skipif(cuda_unavailable_reason() is not None, reason=str(cuda_unavailable_reason()))

GRID = [
    ((2, 4, 17), (6, 4, 3), dict(pads=[1, 1])),
    ((1, 6, 20), (6, 3, 4), dict(group=2, strides=[2], dilations=[2], pads=[2, 1])),
    ((2, 8, 13, 11), (16, 8, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((1, 6, 15, 14), (9, 2, 3, 2), dict(group=3, strides=[2, 1], dilations=[1, 2], pads=[0, 1, 2, 0])),
    ((2, 8, 9, 10), (8, 1, 3, 3), dict(group=8, strides=[2, 2], auto_pad="SAME_LOWER")),
    ((1, 4, 10, 9), (4, 4, 4, 3), dict(strides=[2, 3], auto_pad="SAME_UPPER")),
    ((4, 64, 28, 28), (96, 64, 3, 3), dict(pads=[1, 1, 1, 1])),  # several tiles in every grid dim; split-K
    ((1, 256, 9, 7), (64, 128, 3, 3), dict(group=2, pads=[1, 1, 1, 1])),  # split-K with groups
    ((2, 3, 5, 6, 7), (4, 3, 2, 3, 2), dict(pads=[0, 1, 1, 1, 0, 1])),
]


def _case(index, dtype, offset=3.0):
    x_shape, w_shape, attributes = GRID[index]
    rng = np.random.default_rng(index)
    x = (offset + rng.standard_normal(x_shape)).astype(dtype)
    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    return x, w, b, attributes


def _cuda_run(model, x):
    return runtime.InferenceSession(model, providers=CUDA).run(None, {"X": x})[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("index", range(len(GRID)))
def test_attribute_grid(index, dtype):
    x, w, b, attributes = _case(index, dtype)
    assert_parity(_cuda_run(nc_model(w, b, **attributes), x), reference(x, w, b, **attributes), dtype)


@pytest.mark.parametrize("center,scale", [(0, 1), (1, 0), (0, 0)])
def test_center_scale(center, scale):
    x, w, b, attributes = _case(2, np.float32)
    attributes = dict(attributes, center=center, scale=scale)
    assert_parity(_cuda_run(nc_model(w, b, **attributes), x), reference(x, w, b, **attributes), np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_photographs_at_raw_scale(dtype):
    x = photographs(size=48, count=6).astype(dtype)
    rng = np.random.default_rng(7)
    w = rng.standard_normal((16, 3, 3, 3)).astype(dtype)
    model = nc_model(w, pads=[1, 1, 1, 1])
    assert_parity(_cuda_run(model, x), reference(x, w, pads=[1, 1, 1, 1]), dtype)


def test_empty_batch():
    x, w, b, attributes = _case(2, np.float32)
    y = _cuda_run(nc_model(w, b, **attributes), x[:0])
    assert y.shape == (0, 16, 13, 11)


def test_nodes_run_on_cuda_without_copies(tmp_path):
    x, w, b, attributes = _case(2, np.float32)
    # Two NC nodes back to back: a CPU placement of either would put Memcpy nodes between them.
    first = onnx.load_from_string(nc_model(w, b, **attributes))
    w2 = np.random.default_rng(1).standard_normal((8, 16, 3, 3)).astype(np.float32)
    model = _chain(first, w2)
    options = runtime.session_options()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "profile")
    session = runtime.InferenceSession(model.SerializeToString(), providers=CUDA, sess_options=options)
    session.run(None, {"X": x})
    profile = session.end_profiling()
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    assert not [n.op_type for n in optimized.graph.node if n.op_type.startswith("Memcpy")]
    with open(profile) as f:
        events = json.load(f)
    providers = {e["args"].get("provider") for e in events if e.get("args", {}).get("op_name") == "NormalizedConv"}
    assert providers == {"CUDAExecutionProvider"}


def _chain(first: onnx.ModelProto, w2: np.ndarray) -> onnx.ModelProto:
    from onnx import helper, numpy_helper

    graph = first.graph
    graph.initializer.append(numpy_helper.from_array(w2, "W2"))
    graph.node.append(helper.make_node("NormalizedConv", ["Y", "W2"], ["Z"], domain="ncnn_onnx", pads=[1, 1, 1, 1],
                                       name="nc_second"))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("Z", onnx.TensorProto.FLOAT, None))
    return first


def test_sessions_and_threads_agree():
    x, w, b, attributes = _case(6, np.float32)
    model = nc_model(w, b, **attributes)
    sessions = [runtime.InferenceSession(model, providers=CUDA) for _ in range(2)]
    expected = sessions[0].run(None, {"X": x})[0]
    results, errors = [], []

    def worker(session):
        try:
            for _ in range(5):
                results.append(session.run(None, {"X": x})[0])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(sessions[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 20 and all(np.array_equal(r, expected) for r in results)


def test_exported_network_matches_eager_cuda(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device here; the float64 comparison above still ran")
    from torch import nn

    from ncnn_onnx.export import export
    from ncnn_onnx.nn import NormalizedConv2d

    torch.manual_seed(0)
    model = nn.Sequential(
        NormalizedConv2d(3, 16, 3, padding=1), nn.ReLU(), NormalizedConv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()
    x = torch.from_numpy(photographs(size=32, count=4)).float()
    path = str(tmp_path / "net.onnx")
    export(model, (x[:1],), path)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            eager_cuda = model.cuda()(x.cuda()).cpu().numpy()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    with torch.no_grad():
        ref = model.double().cpu()(x.double()).numpy()
    session = runtime.InferenceSession(path, providers=CUDA_NO_TF32)
    y = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert_parity(y, ref, np.float32)
    assert_parity(eager_cuda, ref, np.float32)
