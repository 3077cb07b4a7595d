from conftest import load

from ncnn_onnx.parity import bar


def test_demo_trains_exports_and_serves_within_the_bar():
    summary = load("digits_demo").main(["--epochs", "1"])
    assert set(summary) == {"eager PyTorch", "onnxruntime + ncnn_onnx library", "plain onnxruntime (fallback)"}
    accuracies = {acc for acc, _ in summary.values()}
    assert min(accuracies) > 0.5  # chance is 0.1; one epoch at batch size 4 reaches ~0.7-0.9
    for label, (_, err) in summary.items():
        assert err <= bar("float32"), f"{label}: parity error {err:.2e}"
    # The deployed paths classify exactly as the eager model does.
    assert max(accuracies) - min(accuracies) < 1e-9
