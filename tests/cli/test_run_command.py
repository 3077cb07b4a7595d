"""`ncnn-onnx run model.onnx INPUTS...`: .npy/.npz/image inputs, the paths, the saved outputs, top-k."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from cli_helpers import CLASSES, library_session, one_line_error
from ncnn_onnx.parity import bar, parity_error


def _input_name(path) -> str:
    return onnx.load(str(path)).graph.input[0].name


def _output_name(path) -> str:
    return onnx.load(str(path)).graph.output[0].name


def _saved(out_dir, stem, model_path) -> np.ndarray:
    return np.load(out_dir / f"{stem}.{_output_name(model_path)}.npy")


def _direct(model_path, x) -> np.ndarray:
    return library_session(model_path).run(None, {_input_name(model_path): x})[0]


def test_npy_output_equals_a_direct_onnxruntime_run(cli, tmp_path, model_path, sample):
    path, x = sample
    result = cli("run", model_path, path, "--output-dir", tmp_path / "out")
    assert result.code == 0, result.err
    y = _saved(tmp_path / "out", "sample", model_path)
    assert y.shape == (1, CLASSES) and y.dtype == np.float32
    np.testing.assert_allclose(y, _direct(model_path, x[None]), rtol=1e-6, atol=1e-7)
    assert str(tmp_path / "out" / "sample.") in result.out


def test_npz_by_input_name_runs_the_whole_batch(cli, tmp_path, model_path):
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "batch.npz", **{_input_name(model_path): x})
    result = cli("run", model_path, tmp_path / "batch.npz", "--output-dir", tmp_path)
    assert result.code == 0, result.err
    np.testing.assert_allclose(_saved(tmp_path, "batch", model_path), _direct(model_path, x), rtol=1e-6, atol=1e-7)
    assert "sample 0:" in result.out and "sample 1:" in result.out


def test_npz_with_unnamed_arrays_feeds_them_in_order(cli, tmp_path, model_path):
    x = np.random.default_rng(4).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "unnamed.npz", x)  # stored as arr_0
    result = cli("run", model_path, tmp_path / "unnamed.npz", "--output-dir", tmp_path)
    assert result.code == 0, result.err
    np.testing.assert_allclose(_saved(tmp_path, "unnamed", model_path), _direct(model_path, x), rtol=1e-6, atol=1e-7)


def test_image_is_scaled_to_unit_range_and_resized_to_a_static_model(cli, tmp_path, static_no_fallback_path):
    Image = pytest.importorskip("PIL.Image")
    pixels = np.random.default_rng(5).integers(0, 256, (16, 12, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    result = cli("run", static_no_fallback_path, tmp_path / "photo.png", "--output-dir", tmp_path)
    assert result.code == 0, result.err
    resized = np.asarray(Image.fromarray(pixels).resize((8, 8)), dtype=np.float32) / 255.0
    expected = _direct(static_no_fallback_path, resized.transpose(2, 0, 1)[None])
    np.testing.assert_allclose(_saved(tmp_path, "photo", static_no_fallback_path), expected, rtol=1e-6, atol=1e-7)


def test_several_inputs_are_run_one_by_one(cli, tmp_path, model_path, sample):
    path, x = sample
    other = tmp_path / "other.npy"
    np.save(other, x[:, ::-1].copy())  # not 2 * x: NC is invariant to the input's scale
    result = cli("run", model_path, path, other, "--output-dir", tmp_path)
    assert result.code == 0, result.err
    assert not np.allclose(_saved(tmp_path, "sample", model_path), _saved(tmp_path, "other", model_path))


def test_no_library_runs_the_fallback_function(cli, tmp_path, model_path, sample):
    path, x = sample
    result = cli("run", model_path, path, "--no-library", "--output-dir", tmp_path)
    assert result.code == 0, result.err
    y = _saved(tmp_path, "sample", model_path)
    plain = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(y, plain.run(None, {_input_name(model_path): x[None]})[0], rtol=1e-6, atol=1e-7)
    assert parity_error(y, _direct(model_path, x[None])) <= bar(np.float32)


def test_no_library_without_fallback_is_a_one_line_error(cli, tmp_path, static_no_fallback_path, sample):
    result = cli("run", static_no_fallback_path, sample[0], "--no-library", "--output-dir", tmp_path)
    message = one_line_error(result, "run")
    assert "fallback" in message and "--no-fallback" in message and "not embedded" in message
    assert not list(tmp_path.glob("sample.*.npy"))


def test_fp16_model_gets_float16_inputs_and_gives_float16_outputs(cli, tmp_path, fp16_path, sample):
    result = cli("run", fp16_path, sample[0], "--output-dir", tmp_path)  # a float32 file, cast on the way in
    assert result.code == 0, result.err
    assert _saved(tmp_path, "sample", fp16_path).dtype == np.float16


def test_cuda_provider_runs_or_says_why_not(cli, tmp_path, model_path, sample):
    from ncnn_onnx import runtime

    result = cli("run", model_path, sample[0], "--provider", "cuda", "--output-dir", tmp_path)
    if "CUDAExecutionProvider" in ort.get_available_providers() and runtime.cuda_kernels_built():
        assert result.code == 0, result.err
        y = _saved(tmp_path, "sample", model_path)
        assert parity_error(y, _direct(model_path, sample[1][None])) <= bar(np.float32)
    else:
        assert "library CUDA" in one_line_error(result, "run")


def _top(out: str) -> list[tuple[int, float]]:
    line = next(line for line in out.splitlines() if "top-" in line)
    return [(int(c), float(p)) for c, p in re.findall(r"class (\d+) \(([\d.]+)\)", line)]


def test_top_k_is_printed_for_a_classifier(cli, tmp_path, model_path, sample):
    result = cli("run", model_path, sample[0], "--output-dir", tmp_path)
    assert result.code == 0, result.err
    top = _top(result.out)
    assert len(top) == CLASSES  # default k=5 and the classifier has 5 classes
    y = _saved(tmp_path, "sample", model_path)[0].astype(np.float64)
    assert [c for c, _ in top] == list(np.argsort(-y))
    probs = np.exp(y - y.max()) / np.exp(y - y.max()).sum()
    assert [p for _, p in top] == pytest.approx(list(np.sort(probs)[::-1]), abs=1e-3)


def test_top_k_option(cli, tmp_path, model_path, sample):
    result = cli("run", model_path, sample[0], "--top-k", 2, "--output-dir", tmp_path)
    assert len(_top(result.out)) == 2 and "top-2" in result.out
    result = cli("run", model_path, sample[0], "--top-k", 0, "--output-dir", tmp_path)
    assert result.code == 0 and "top-" not in result.out


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d: d / "missing.npy", "input file not found"),
        (lambda d: _write(d / "notes.txt", b"hello"), "unsupported input file"),
        (lambda d: _npy(d / "wrong.npy", np.zeros((4, 8, 8), np.float32)), "the model expects"),
        (lambda d: _npz(d / "wrong.npz", a=np.zeros((1, 3, 8, 8)), b=np.zeros(1)), "the model takes"),
    ],
    ids=["missing", "suffix", "shape", "npz-names"],
)
def test_bad_inputs_are_one_line_errors(cli, tmp_path, model_path, make, expected):
    result = cli("run", model_path, make(tmp_path), "--output-dir", tmp_path)
    assert expected in one_line_error(result, "run")


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _npy(path, array):
    np.save(path, array)
    return path


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path
