import importlib.util
import pathlib

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_demo_learns_in_one_epoch():
    accuracy = load("digits_demo").main(["--epochs", "1"])
    assert accuracy > 0.7  # chance is 0.1; one epoch at batch size 4 reaches ~0.9
