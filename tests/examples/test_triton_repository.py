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
