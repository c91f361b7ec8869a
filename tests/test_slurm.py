"""The same workflow on a real, one-node SLURM cluster started on this machine."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import TINY_CONFIG, WORKFLOW_RULES, snakemake, write_project

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def slurm_run(cluster, tiny_run):
    """The shared tiny run, which went through SLURM because a cluster runs."""
    return tiny_run


@pytest.fixture(scope="module")
def local_data_run(tmp_path_factory, tool_env):
    """The data stages of the same project, run locally, to compare byte for byte."""
    project = tmp_path_factory.mktemp("local_data")
    write_project(project, TINY_CONFIG)
    targets = [
        f"results/records/{cls}_{split}.json"
        for cls in TINY_CONFIG["classes"]
        for split in ("training", "verification")
    ]
    result = snakemake(project, tool_env, *targets, "results/label_map.pbtxt")
    assert result.returncode == 0, result.stderr[-4000:]
    return project


def test_every_rule_ran_as_a_slurm_job(slurm_run):
    project, _ = slurm_run
    logs = project / ".snakemake" / "slurm_logs"
    ran = {p.name.removeprefix("rule_") for p in logs.iterdir() if p.is_dir()}
    expected = set(WORKFLOW_RULES)
    assert expected <= ran, f"not run through SLURM: {expected - ran}"
    for rule in expected:
        assert list((logs / f"rule_{rule}").rglob("*.log")), rule


def test_the_training_job_got_a_gpu(slurm_run):
    project, _ = slurm_run
    logs = sorted((project / ".snakemake" / "slurm_logs" / "rule_train").rglob("*.log"))
    assert logs, "the train rule left no SLURM log"
    job_id = logs[-1].stem
    shown = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True
    ).stdout
    assert "gres:gpu:1" in shown or "gres/gpu=1" in shown, shown


def test_outputs_equal_a_local_run(slurm_run, local_data_run):
    project, _ = slurm_run
    local = local_data_run
    for cls in TINY_CONFIG["classes"]:
        for name in (
            f"resources/manifests/{cls}.tsv",
            f"results/lists/{cls}/training.tsv",
            f"results/lists/{cls}/verification.tsv",
            f"results/lists/{cls}/rejected.tsv",
            f"results/records/{cls}_training.tfrecord",
            f"results/records/{cls}_verification.tfrecord",
        ):
            assert (project / name).read_bytes() == (local / name).read_bytes(), name
    assert (project / "results/label_map.pbtxt").read_bytes() == (
        local / "results/label_map.pbtxt"
    ).read_bytes()
    for name in (
        "results/train/tiny/final.json",
        "results/eval/tiny/metrics.json",
        "results/export/tiny/export.json",
        "results/summary.md",
    ):
        assert Path(project / name).exists(), name
