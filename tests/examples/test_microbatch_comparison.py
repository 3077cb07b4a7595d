import math

from conftest import load


def test_comparison_trains_both_models_and_plots(tmp_path, capsys):
    out = tmp_path / "curves.png"
    histories = load("microbatch_comparison").main(
        ["--epochs", "2", "--train-size", "80", "--out", str(out)]
    )
    assert set(histories) == {"ResNet+GN", "ResNet+NC"}
    for hist in histories.values():
        assert len(hist) == 2 and all(math.isfinite(h["val_loss"]) for h in hist)
    assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ResNet+NC val acc" in capsys.readouterr().out
