import sys

import onnx
import torch

from conftest import EXAMPLES

sys.path.insert(0, str(EXAMPLES / "triton_serving"))

from make_repository import make_repository  # noqa: E402

from common import small_resnet  # noqa: E402
from ncnn_onnx.export import export  # noqa: E402


def test_repository_layout_and_config(tmp_path):
    model_path = tmp_path / "nc.onnx"
    export(small_resnet().eval(), (torch.randn(1, 1, 16, 16),), str(model_path))
    root = make_repository(model_path, "nc_resnet", tmp_path / "repo", "/opt/ncnn_onnx/libncnn_onnx_ops.so",
                           max_batch_size=8, gpu=True)
    assert onnx.load(str(root / "1" / "model.onnx")).graph.node, "the model is copied into version 1"
    config = (root / "config.pbtxt").read_text()
    model = onnx.load(str(model_path))
    in_name, out_name = model.graph.input[0].name, model.graph.output[0].name
    assert 'backend: "onnxruntime"' in config and "max_batch_size: 8" in config
    assert 'model_operations { op_library_filename: "/opt/ncnn_onnx/libncnn_onnx_ops.so" }' in config
    # Triton adds the batch dim: the configured dims are the model's without its first one.
    assert f'name: "{in_name}"' in config and "dims: [ 1, -1, -1 ]" in config
    assert f'name: "{out_name}"' in config and "dims: [ 10 ]" in config
    assert "kind: KIND_GPU" in config


def test_external_data_is_copied_beside_the_model(tmp_path):
    """Weights stored outside the .onnx file (as onnx saves them past its threshold, or torch for > 2 GiB
    models) go along, under the same relative name: the repository runs with the source folder gone."""
    import shutil

    import numpy as np
    import onnxruntime as ort

    from ncnn_onnx.runtime import InferenceSession

    source = tmp_path / "src"
    (source / "weights").mkdir(parents=True)
    x = torch.randn(2, 1, 16, 16)
    model = small_resnet().eval()
    proto = export(model, (x,))
    onnx.save_model(proto, source / "nc.onnx", save_as_external_data=True, location="weights/nc.bin")
    stored = onnx.load(str(source / "nc.onnx"), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in stored.graph.initializer)
    root = make_repository(source / "nc.onnx", "nc_resnet", tmp_path / "repo", "/opt/ncnn_onnx/libncnn_onnx_ops.so")
    assert (root / "1" / "weights" / "nc.bin").is_file()
    shutil.rmtree(source)
    with torch.no_grad():
        expected = model(x).numpy()
    path = str(root / "1" / "model.onnx")
    name = onnx.load(path, load_external_data=False).graph.input[0].name
    for session in (InferenceSession(path), ort.InferenceSession(path, providers=["CPUExecutionProvider"])):
        np.testing.assert_allclose(session.run(None, {name: x.numpy()})[0], expected, rtol=1e-3, atol=1e-4)


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    import pytest

    proto = export(small_resnet().eval(), (torch.randn(1, 1, 16, 16),))
    (tmp_path / "a").mkdir()
    onnx.save_model(proto, tmp_path / "a" / "nc.onnx", save_as_external_data=True, location="nc.bin",
                    size_threshold=0)
    model = onnx.load(str(tmp_path / "a" / "nc.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../elsewhere.bin"
    onnx.save(model, tmp_path / "a" / "escaping.onnx")
    with pytest.raises(ValueError, match="outside the model's folder"):
        make_repository(tmp_path / "a" / "escaping.onnx", "m", tmp_path / "repo", "/lib.so")
    (tmp_path / "a" / "nc.bin").unlink()
    with pytest.raises(FileNotFoundError, match="keeps weights in nc.bin"):
        make_repository(tmp_path / "a" / "nc.onnx", "m", tmp_path / "repo", "/lib.so")
