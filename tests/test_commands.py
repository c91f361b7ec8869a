"""Every stage is also a command that runs without Snakemake."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tumbletrain import config

# The stage commands, as the config module knows them.
STAGES = list(config.STAGE_MODULES)
COMMANDS = [*STAGES, "neardup", "config", "distribute", "label"]


@pytest.mark.parametrize("stage", COMMANDS)
def test_command_has_help(stage, tool_env):
    result = subprocess.run(
        [sys.executable, "-m", f"tumbletrain.{stage}", "--help"],
        capture_output=True,
        text=True,
        env=tool_env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"python -m tumbletrain.{stage}" in result.stdout
    if stage in STAGES:
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
            "--manifest",
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


def test_every_command_has_one_entry_shape(repo):
    """`main(argv) -> int` run by `cli.run`: one clear ERROR line, output routed alike."""
    commands = []
    for module in sorted((repo / "scripts" / "tumbletrain").glob("*.py")):
        text = module.read_text()
        # `tumbletrain` (runner) is Snakemake with checks in front, not a stage
        # command: Snakemake's own output and exit code are the user's.
        if "__main__" in text and module.stem != "runner":
            commands.append(module.stem)
            assert "\ndef main(argv: list[str] | None = None) -> int:\n" in text, module.name
            assert text.endswith('\n\nif __name__ == "__main__":\n    cli.run(main)\n'), module.name
        if module.name != "cli.py":  # cli.parser names every command as it is run
            assert "ArgumentParser(" not in text, module.name
    assert sorted(commands) == sorted(COMMANDS)


def test_the_config_reference_goes_to_stdout_with_stderr_in_a_log(tmp_path, tool_env):

    with open(tmp_path / "log", "w") as log:
        result = subprocess.run(
            [sys.executable, "-m", "tumbletrain.config", "reference"],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=tool_env,
            timeout=120,
        )
    assert result.returncode == 0 and result.stdout == config.reference()


@pytest.mark.parametrize(
    ("argv", "label"),
    [
        (["evaluate", "--final", "results/train/tiny/final.json", "--metrics", "m.json"], "tiny"),
        (["--config-json", "{}", "--class", "circle", "--summary", "s.json"], "circle"),
        (["--model", "x/saved_model", "--detections", "results/predict/tiny/d.csv"], "tiny"),
        (["checkpoint", "--output-dir", "resources/checkpoints/ssd"], "ssd"),
    ],
)
def test_a_jobs_terminal_lines_name_its_class_or_run(argv, label, monkeypatch):
    """Outputs are passed file by file: the job is still named by its class or run."""
    from tumbletrain import cli

    monkeypatch.setattr(sys, "argv", ["/x/model.py"])
    assert cli.job_label(argv).split()[-1] == label
