from conftest import load


def test_digits_demo_learns_in_one_epoch():
    accuracy = load("digits_demo").main(["--epochs", "1"])
    assert accuracy > 0.7  # chance is 0.1; one epoch at batch size 4 reaches ~0.9
