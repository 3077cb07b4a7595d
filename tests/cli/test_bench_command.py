"""`ncnn-onnx bench model.onnx`: one latency/throughput row per deployed path."""

from __future__ import annotations

import json

import pytest

from cli_helpers import one_line_error


def _table(out: str) -> dict[str, tuple[float, float]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "latency ms" in line)
    table = {}
    for line in lines[start + 1:]:
        if line.startswith("not measured:"):
            break
        label, latency, throughput, _ratio = line.rsplit(None, 3)
        table[label.strip()] = (float(latency), float(throughput))
    return table


def test_latency_and_throughput_per_path(cli, model_path):
    result = cli("bench", model_path, "--repeats", 3, "--warmup", 1, "--input-shape", "2,3,8,8", "--threads", 1)
    assert result.code == 0, result.err
    assert "input (2, 3, 8, 8), 3 interleaved rounds" in result.out
    header = next(line for line in result.out.splitlines() if "latency ms" in line)
    assert "samples/s" in header
    table = _table(result.out)
    assert set(table) >= {"library CPU", "fallback (no library)"}
    # The table is rounded for reading: only its structure is checked here, its figures via --json.
    for latency_ms, throughput in table.values():
        assert latency_ms >= 0 and throughput > 0


def test_json_report_has_unrounded_figures(cli, model_path):
    result = cli("bench", model_path, "--repeats", 3, "--warmup", 1, "--input-shape", "2,3,8,8", "--threads", 1,
                 "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert (report["input_shape"], report["batch"], report["rounds"]) == ([2, 3, 8, 8], 2, 3)
    paths = report["paths"]
    assert set(paths) >= {"library CPU", "fallback (no library)"}
    assert not set(paths) & set(report["not_measured"])
    first = next(iter(paths.values()))
    assert first["vs_first"] == 1.0
    for row in paths.values():
        assert row["latency_ms"] > 0
        # Both figures come from the same median: they agree to float rounding, not to printed digits.
        assert row["samples_per_s"] == pytest.approx(2 / (row["latency_ms"] / 1e3), rel=1e-9)
        assert row["vs_first"] == pytest.approx(row["latency_ms"] / first["latency_ms"], rel=1e-9)


def test_paths_that_cannot_run_are_named(cli, static_no_fallback_path):
    result = cli("bench", static_no_fallback_path, "--repeats", 2, "--warmup", 0)
    assert result.code == 0, result.err
    assert set(_table(result.out)) >= {"library CPU"} and "fallback (no library)" not in _table(result.out)
    assert "not measured: fallback (no library)" in result.out
    report = json.loads(cli("bench", static_no_fallback_path, "--repeats", 1, "--warmup", 0, "--json").out)
    assert "fallback (no library)" in report["not_measured"] and "fallback (no library)" not in report["paths"]


def test_bad_input_shape(cli, model_path):
    assert "input shape" in one_line_error(cli("bench", model_path, "--input-shape", "1,3"), "bench")


def test_progress_bar_on_a_terminal_only(model_path, monkeypatch, capsys):
    import io

    from ncnn_onnx.cli import main

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert main(["bench", model_path, "--repeats", "3", "--warmup", "0"]) == 0
    assert "bench" in terminal.getvalue() and "round" in terminal.getvalue()
    assert "bench:" not in capsys.readouterr().out
