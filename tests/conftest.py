"""Shared fixtures. Stage-specific fixtures live in their own test modules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# TensorFlow logs a screenful on import; the tests read stderr of stage commands.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tool_env() -> dict[str, str]:
    """Environment for subprocesses: the venv's commands first, no Tumblr secrets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUMBLR_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


# Two demo classes, a few images, a model small enough to train a few steps in
# seconds on a CPU. Every stage runs; nothing is downloaded.
# The rules of a full run, in `snakemake -n` and in SLURM's job logs.
WORKFLOW_RULES = (
    "demo",
    "harvest",
    "annotations",
    "records",
    "label_map",
    "train",
    "evaluate",
    "export",
    "report_data",
    "report_samples",
    "report_training",
    "report_evaluation",
    "summary",
)

TINY_CONFIG = {
    "classes": {
        "circle": {"demo": {"images": 8}},
        "square": {"demo": {"images": 8}},
    },
    "demo": {"seed": 3, "min_side": 96, "max_side": 160, "max_objects": 2},
    "split": {"verification_percent": 25},
    "model": {
        "checkpoint": None,
        "input_size": 128,
        "overrides": {
            "task": {
                "model": {
                    "backbone": {"mobilenet": {"filter_size_scale": 0.35}},
                    "decoder": {"fpn": {"num_filters": 16}},
                    "head": {"num_convs": 1, "num_filters": 16},
                }
            }
        },
    },
    "train": {
        "run": "tiny",
        "steps": 4,
        "batch_size": 2,
        "warmup_steps": 1,
        "checkpoint_every": 2,
        "eval_every": 4,
    },
}


def snakemake(project: Path, env: dict, *args: str, timeout: int = 1500):
    return subprocess.run(
        ["snakemake", "-s", str(REPO / "Snakefile"), "-d", str(project), "--cores", "2", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def write_project(project: Path, raw: dict) -> Path:
    (project / "config").mkdir(parents=True, exist_ok=True)
    path = project / "config" / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tool_env):
    """One full run of the tiny project, shared by the tests below."""
    project = tmp_path_factory.mktemp("tiny_project")
    write_project(project, TINY_CONFIG)
    result = snakemake(project, tool_env)
    assert result.returncode == 0, result.stderr[-6000:]
    return project, result
