"""Every stage is also a command that runs without Snakemake."""

from __future__ import annotations

import subprocess
import sys

import pytest

STAGES = ["demo", "harvest", "labelimg", "annotations", "records", "model", "predict", "report"]


@pytest.mark.parametrize("stage", STAGES)
def test_stage_has_help(stage, tool_env):
    result = subprocess.run(
        [sys.executable, "-m", f"tumbletrain.{stage}", "--help"],
        capture_output=True,
        text=True,
        env=tool_env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"python -m tumbletrain.{stage}" in result.stdout
    assert "--config" in result.stdout or "{" in result.stdout


def test_bad_input_ends_with_one_actionable_line(tmp_path, tool_env):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tumbletrain.harvest",
            "--config-json",
            '{"classes": {"pose": {"tumblr": [{"tag": "pose"}]}}}',
            "--class",
            "pose",
            "--store",
            str(tmp_path / "s"),
            "--manifests",
            str(tmp_path / "m"),
        ],
        capture_output=True,
        text=True,
        env=tool_env,
        timeout=120,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ERROR: TUMBLR_CONSUMER_KEY is not set")
    assert "Traceback" not in result.stderr
