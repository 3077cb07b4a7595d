"""--help on the main command and on every subcommand: exit 0 and the options it takes."""

from __future__ import annotations

import pytest

from ncnn_onnx.cli import COMMANDS

OPTIONS = {
    "export": ["spec", "--output", "--input-shape", "--weights", "--fp16", "--no-fallback",
               "--static"],
    "run": ["inputs", "--provider", "{cpu,cuda}", "--no-library", "--output-dir", "--top-k", "--threads"],
    "check": ["--reference", "--weights", "--inputs", "--input-shape", "--random"],
    "bench": ["--input-shape", "--threads", "--repeats", "--warmup", "--json"],
    "info": ["--debug"],
    "repair": ["model", "--output"],
    "optimize": ["--output", "--level", "{basic,extended,all}"],
    "infer-shapes": ["--output", "--auto-merge", "--guess-output-rank"],
    "quant-pre-process": ["--output", "--skip-optimization", "--skip-symbolic-shape", "--auto-merge"],
}


def test_main_help_lists_every_subcommand(cli):
    result = cli("--help")
    assert result.code == 0
    assert "--debug" in result.out
    for name in COMMANDS:
        assert name in result.out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_subcommand_help(cli, command):
    result = cli(command, "--help")
    assert result.code == 0
    assert result.out.startswith(f"usage: ncnn-onnx {command}")
    assert COMMANDS[command] in " ".join(result.out.split())  # the summary, however argparse wraps it
    for option in OPTIONS[command]:
        assert option in result.out, option
