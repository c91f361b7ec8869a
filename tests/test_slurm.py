"""The same workflow on a real, one-node SLURM cluster started on this machine."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    SLURM_ARGS,
    TINY_CONFIG,
    WORKFLOW_RULES,
    snakemake,
    snakemake_command,
    write_project,
)

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


def scontrol_job(job_id: str) -> str:
    return subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True
    ).stdout


def queued_from(folder: Path) -> list[str]:
    """The ids of the jobs SLURM still holds that were submitted from `folder`."""
    listed = subprocess.run(
        ["squeue", "--noheader", "--format=%i %Z"], capture_output=True, text=True, check=True
    ).stdout
    rows = (line.split(maxsplit=1) for line in listed.splitlines())
    return [job for job, workdir in rows if Path(workdir) == folder]


def slurm_project(local_data_run, tmp_path, **train) -> Path:
    """A copy of the project whose data stages ran, with other training settings."""
    project = tmp_path / "project"
    shutil.copytree(local_data_run, project, symlinks=True)
    write_project(project, {**TINY_CONFIG, "train": {**TINY_CONFIG["train"], **train}})
    return project


# Two workers on the test cluster's one node of 2 CPUs: one CPU each.
TWO_WORKERS = {"workers": 2, "threads": 1}


def own_tmpdir(tmp_path: Path, env: dict) -> tuple[Path, dict]:
    """A TMPDIR for this run's jobs alone (Snakemake's `tmpdir` resource follows it), so that
    the workers' scratch directories it holds are told apart from other runs' in /tmp."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return tmp, {**env, "TMPDIR": str(tmp)}


def worker_scratch(tmp: Path) -> list[Path]:
    """The workers' scratch directories (distribute.scratch_dir) and the launcher's root of them."""
    return [*tmp.glob("tumbletrain-worker-*"), *tmp.glob("tumbletrain-workers-*")]


def error_lines(log: str) -> list[str]:
    """tumbletrain's ERROR lines (TensorFlow's own `E ...` lines say ERROR too, about CUDA)."""
    return [line for line in log.splitlines() if line.startswith("ERROR:")]


def test_two_workers_train_collectively_as_one_slurm_job(
    cluster, local_data_run, tmp_path, tool_env
):
    project = slurm_project(local_data_run, tmp_path, **TWO_WORKERS)
    tmp, env = own_tmpdir(tmp_path, tool_env)
    result = snakemake(project, env, "results/eval/tiny/metrics.json", *SLURM_ARGS)
    log = (project / "logs/train/tiny.log").read_text()
    assert result.returncode == 0, result.stderr[-3000:] + log[-3000:]
    job_log = next((project / ".snakemake/slurm_logs/rule_train").rglob("*.log"))
    assert "NumTasks=2" in scontrol_job(job_log.stem)
    # Both tasks joined one cluster of two replicas: the global batch of 2 is
    # split into one image per replica.
    assert "worker 0 of 2 joined: 2 replica(s) in sync" in log
    assert "worker 1: " in log and "worker 1 of 2 joined: 2 replica(s) in sync" in log
    assert "global_batch_size: 2" in (project / "results/train/tiny/params.yaml").read_text()
    final = json.loads((project / "results/train/tiny/final.json").read_text())
    assert final["last"]["step"] == TINY_CONFIG["train"]["steps"]
    # Only the chief wrote summaries; the worker's scratch directory is gone.
    events = list((project / "results/train/tiny/train").glob("events.out.*"))
    assert len(events) == 1, events
    assert not worker_scratch(tmp)
    metrics = json.loads((project / "results/eval/tiny/metrics.json").read_text())
    assert 0 <= metrics["AP50"] <= 1, "evaluate restored the checkpoint two workers wrote"
    assert not error_lines(log)
    # The job's own output (Snakemake's terminal on SLURM): the chief's progress only.
    terminal = job_log.read_text()
    assert re.search(r"^model train tiny: train: 4/4 steps in ", terminal, re.M), terminal
    assert len(re.findall(r"model train tiny: train: 4/4 steps in ", terminal)) == 1, terminal


def training_task(project: Path, task: int) -> int | None:
    """The pid of SLURM task `task` of the training in `project`, read from /proc."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
            cwd = (proc / "cwd").resolve()
        except OSError:  # not a process, or it has just exited
            continue
        if (
            b"tumbletrain.model" in argv
            and f"SLURM_PROCID={task}".encode() in environ
            and cwd == project.resolve()
        ):
            return int(proc.name)
    return None


def wait_for(what: str, found, run: subprocess.Popen, timeout_s: float = 600):
    deadline = time.monotonic() + timeout_s
    while not (result := found()):
        assert run.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} in {timeout_s:.0f} s"
        time.sleep(0.2)
    return result


def test_a_killed_worker_fails_the_job_and_a_rerun_resumes(
    cluster, local_data_run, tmp_path, tool_env
):
    steps = 10
    project = slurm_project(local_data_run, tmp_path, **TWO_WORKERS, steps=steps)
    model_dir = project / "results/train/tiny"
    target = "results/train/tiny/final.json"
    tmp, env = own_tmpdir(tmp_path, tool_env)
    run = subprocess.Popen(
        snakemake_command(project, target, *SLURM_ARGS),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        # The chief's first checkpoint (its state file is written last), then worker 1 dies.
        wait_for("checkpoint", (model_dir / "checkpoint").exists, run)
        worker = wait_for("worker 1", lambda: training_task(project, 1), run)
        environ = Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
        os.kill(worker, signal.SIGKILL)
        output = run.communicate(timeout=600)[0]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode != 0, output[-3000:]
    log = (project / "logs/train/tiny.log").read_text().strip().splitlines()
    assert error_lines("\n".join(log)) == [log[-1]], log[-20:]
    failed = re.fullmatch(
        r"ERROR: a training worker failed \(task 1 on \S+: Killed\), so the job failed; "
        r"a re-run resumes from (results/train/tiny/ckpt-(\d+))",
        log[-1],
    )
    assert failed, log[-1]
    assert 0 < int(failed[2]) < steps, "killed mid-run"
    # The worker made its scratch directory in this TMPDIR, and the launcher removed it.
    assert f"TMPDIR={tmp}".encode() in environ
    assert not worker_scratch(tmp), "the killed worker's scratch directory is left"

    rerun = snakemake(project, env, target, *SLURM_ARGS)
    log = (project / "logs/train/tiny.log").read_text()
    assert rerun.returncode == 0, rerun.stderr[-3000:] + log[-3000:]
    assert f"resuming from {failed[1]} (same fingerprint" in log
    assert "worker 1 of 2 joined" in log
    final = json.loads((model_dir / "final.json").read_text())
    assert final["last"]["step"] == steps
    assert not error_lines(log)


def test_the_plugin_submits_nodes_tasks_and_gpus_per_node(
    cluster, local_data_run, tmp_path, tool_env
):
    """Snakemake's own view of a 2-node job: its dry run, the plugin's sbatch call, SLURM's job.

    The one-node cluster cannot run it; SLURM queues it, and it is cancelled.
    """
    project = slurm_project(local_data_run, tmp_path, nodes=2, gpus=4)
    target = "results/train/tiny/final.json"
    dry = snakemake(project, tool_env, "-n", target, *SLURM_ARGS)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert re.search(r"resources: .*nodes=2, tasks=2, mpi=srun", dry.stdout + dry.stderr)
    assert "slurm_extra=--ntasks-per-node=1 --gpus-per-node=4" in dry.stdout + dry.stderr

    command = snakemake_command(project, "--verbose", target, *SLURM_ARGS)
    run = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=tool_env
    )
    call = job_id = shown = None
    try:
        for line in run.stdout:
            call = call or re.search(r"sbatch call: (.*)", line)
            submitted = re.search(r"submitted with SLURM jobid (\d+)", line)
            if submitted:
                job_id = submitted[1]
                shown = scontrol_job(job_id)
                break
    finally:
        run.kill()  # Snakemake would wait for the job's status before it stops
        run.wait(timeout=60)
        # Every job queued from the project, not only the one seen: one the plugin
        # submitted beside it would stay queued for good on this one-node cluster
        # (two were left by full runs).
        leftover = queued_from(project)
        if leftover:
            subprocess.run(["scancel", *leftover], check=False)
    assert call and job_id
    for flag in ("--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--gpus-per-node=4"):
        assert flag in call[1].split(), call[1]
    assert "NumNodes=2" in shown and "NumTasks=2" in shown, shown
    assert "TresPerNode=gres:gpu:4" in shown, shown
