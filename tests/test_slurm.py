"""The same workflow on a real, one-node SLURM cluster started on this machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, TINY_CONFIG, WORKFLOW_RULES, snakemake, write_project

START = REPO / "tests" / "slurm" / "start_cluster.sh"

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("a local SLURM cluster needs root and apt-get to install slurmctld/slurmd")
    result = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.skip(f"SLURM could not be started here: {result.stderr[-500:]}")
    return result.stdout


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory, tool_env):
    project = tmp_path_factory.mktemp("slurm_project")
    # train.gpus: 1 makes train, evaluate and export request a GPU, which the
    # cluster has (simulated with gres); TensorFlow then runs on the CPU.
    raw = {**TINY_CONFIG, "train": {**TINY_CONFIG["train"], "gpus": 1}}
    write_project(project, raw)
    result = snakemake(
        project,
        tool_env,
        "--workflow-profile",
        str(REPO / "config" / "profiles" / "slurm"),
        "--jobs",
        "2",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-keep-successful-logs",
        "--default-resources",
        "slurm_partition=main",
        "mem_mb=1500",
        "runtime=30",
        timeout=1800,
    )
    assert result.returncode == 0, (result.stdout[-4000:], result.stderr[-4000:])
    return project, result


def test_every_rule_ran_as_a_slurm_job(slurm_run):
    project, result = slurm_run
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


def test_outputs_equal_a_local_run(slurm_run, tiny_run):
    project, _ = slurm_run
    local, _ = tiny_run
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
