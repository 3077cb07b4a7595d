from conftest import load

from ncnn_onnx.parity import bar


def test_convert_finetune_export_serve():
    result = load("convert_finetune").main(["--pretrain-epochs", "1", "--finetune-epochs", "1", "--train-size", "200"])
    assert result["converted_layers"] == 6 and result["removed_norms"] == 6
    assert abs(result["served"] - result["nc"]) < 1e-6, "the served model classifies as the eager one does"
    assert result["parity"] <= bar("float32")
    assert result["nc"] > 0.2  # chance is 0.1: the fine-tune learns even on 200 images
