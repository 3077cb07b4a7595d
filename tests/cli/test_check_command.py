"""`ncnn-onnx check model.onnx --reference SPEC`: the diagnosis, the parity table and its exit code.
(The diagnosis alone, on files that tools changed, is tested in test_repair_command.py.)"""

from __future__ import annotations

import onnxruntime as ort

from cli_helpers import one_line_error, spec


def _rows(out: str) -> list[list[str]]:
    """The table's rows, split on runs of two or more spaces: input, path, output, abs, rel, bar, ok."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "max abs err" in line)
    rows = []
    for line in lines[start + 1:]:
        if line.startswith(("not checked:", "parity:")):
            break
        rows.append([cell for cell in line.split("  ") if cell.strip()])
    return [[cell.strip() for cell in row] for row in rows]


def _paths(rows) -> set[str]:
    return {row[1] for row in rows}


def test_correct_model_passes_on_every_path(cli, model_path):
    result = cli("check", model_path, "--reference", spec("classifier"))
    assert result.code == 0, result.out + result.err
    lines = result.out.splitlines()
    assert lines[0] == "NormalizedConv nodes: 2, ncnn_onnx version 1, ONNX opset 20"
    assert lines[1].startswith("fallback function: present and as this ncnn_onnx writes it for ONNX opset 20")
    assert lines[2:4] == ["inlined fallback: none", "fix: none needed"]
    header = next(line for line in lines if "max abs err" in line)
    for column in ("input", "path", "output", "max abs err", "rel err", "bar", "ok"):
        assert column in header
    rows = _rows(result.out)
    assert {"eager PyTorch", "library CPU", "fallback (no library)"} <= _paths(rows)
    assert len(rows) == 2 * len(_paths(rows))  # two random inputs by default, each on every path
    for row in rows:
        assert row[-1] == "yes" and float(row[4]) <= float(row[5]) == 1e-4
    assert "parity: all paths within the bar" in result.out
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "not checked: library CUDA" in result.out


def test_other_weights_fail_the_bar(cli, model_path):
    result = cli("check", model_path, "--reference", spec("classifier_seed1"))
    assert result.code == 1
    rows = _rows(result.out)
    deployed = [row for row in rows if row[1] != "eager PyTorch"]
    assert deployed and all(row[-1] == "NO" and float(row[4]) > float(row[5]) for row in deployed)
    assert all(row[-1] == "yes" for row in rows if row[1] == "eager PyTorch")  # eager is its own reference
    assert "FAILED" in result.out


def test_weights_option_loads_the_state_dict(cli, tmp_path, seed1_weights):
    weighted = tmp_path / "seed1.onnx"
    assert cli("export", spec("classifier"), "-o", weighted, "--input-shape", "1,3,8,8",
               "--weights", seed1_weights).code == 0
    assert cli("check", weighted, "--reference", spec("classifier"), "--weights", seed1_weights).code == 0
    assert cli("check", weighted, "--reference", spec("classifier")).code == 1


def test_given_inputs_and_input_shape(cli, model_path, sample):
    result = cli("check", model_path, "--reference", spec("classifier"), "--inputs", sample[0],
                 "--random", 1, "--input-shape", "2,3,12,12")
    assert result.code == 0, result.out + result.err
    inputs = {row[0] for row in _rows(result.out)}
    assert inputs == {"random #1", "sample.npy"}


def test_fp16_model_is_held_to_the_float16_bar(cli, fp16_path):
    result = cli("check", fp16_path, "--reference", spec("classifier"), "--random", 1)
    assert result.code == 0, result.out + result.err
    assert {float(row[5]) for row in _rows(result.out)} == {1e-2}


def test_model_without_fallback_checks_the_library_only(cli, static_no_fallback_path):
    result = cli("check", static_no_fallback_path, "--reference", spec("classifier"), "--random", 1)
    assert result.code == 0, result.out + result.err  # exported so on purpose: not a problem
    assert "fallback function: not embedded (exported with fallback=False / --no-fallback)" in result.out
    assert "fallback (no library)" not in _paths(_rows(result.out))
    assert "not checked: fallback (no library): no fallback function: not embedded" in result.out


def test_input_shape_that_does_not_fit_a_static_model(cli, static_no_fallback_path):
    result = cli("check", static_no_fallback_path, "--reference", spec("classifier"), "--input-shape", "2,3,8,8")
    assert "does not fit" in one_line_error(result, "check")


def test_without_reference_only_the_file_is_diagnosed(cli, model_path):
    result = cli("check", model_path)
    assert result.code == 0, result.out + result.err
    assert len(result.out.splitlines()) == 4 and "max abs err" not in result.out


def test_reference_of_another_shape_is_a_one_line_error(cli, model_path):
    result = cli("check", model_path, "--reference", spec("seven_classes"), "--random", 1)
    assert "not its reference" in one_line_error(result, "check")


def test_nothing_to_check(cli, model_path):
    result = cli("check", model_path, "--reference", spec("classifier"), "--random", 0)
    assert "nothing to check" in one_line_error(result, "check")


def _ill_conditioned_model(cli, tmp_path) -> str:
    path = tmp_path / "ill.onnx"
    assert cli("export", spec("ill_conditioned"), "-o", path, "--input-shape", "1,3,8,8").code == 0
    return str(path)


def test_ill_conditioned_network_is_told_apart_from_a_deployment_error(cli, tmp_path):
    """Eager float32 itself misses the bar here; the deployed paths are as close as float32 allows, so
    check passes them against that spread, says so and names the NC layer that amplifies the error."""
    result = cli("check", _ill_conditioned_model(cli, tmp_path), "--reference", spec("ill_conditioned"),
                 "--input-shape", "1,3,8,8")
    assert result.code == 0, result.out + result.err
    rows = _rows(result.out)
    eager = [row for row in rows if row[1] == "eager PyTorch"]
    assert eager and all(row[-1] == "spread" and float(row[4]) > float(row[5]) for row in eager)
    assert all(row[-1] in ("yes", "spread") for row in rows)
    assert "ill-conditioned: eager PyTorch itself is" in result.out
    assert "worst-conditioned layer: 1 (NormalizedConv2d 8->6, 1x1)" in result.out
    assert "parity: every path within the bar, or within the network's own float32 spread" in result.out


def test_deployment_error_on_an_ill_conditioned_network_still_fails(cli, tmp_path):
    """Other weights are wrong by far more than the network's own float32 spread."""
    result = cli("check", _ill_conditioned_model(cli, tmp_path), "--reference", spec("ill_conditioned_seed1"),
                 "--input-shape", "1,3,8,8")
    assert result.code == 1
    rows = _rows(result.out)
    assert all(row[-1] == "NO" for row in rows if row[1] != "eager PyTorch")
    assert "FAILED" in result.out
