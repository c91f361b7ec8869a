"""Shared fixtures. Stage-specific fixtures live in their own test modules."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
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
def dead_writer() -> str:
    """`host-pid` of a process that has exited, as a killed writer leaves it in the names
    of its temporary files (fileio.writer): what fileio.remove_leftovers removes."""
    from tumbletrain import fileio

    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return f"{fileio.host()}-{done.stdout.strip()}"


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


@pytest.fixture
def flush_log(monkeypatch) -> list[str]:
    """What reaches the disk, in order: `fsync <file>` per file, `sync <folder>` per batch."""
    events: list[str] = []
    from tumbletrain import fileio

    fsync, sync_folders = os.fsync, fileio.sync_folders

    def logged_fsync(fd):
        # A temporary file, .{name}.{host}-{pid}.{token}.tmp, renamed to {name} after it.
        temporary = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        events.append("fsync " + ".".join(temporary[1:].split(".")[:-3]))
        fsync(fd)

    def logged_sync(folders):
        folders = list(folders)
        events.extend(f"sync {folder}" for folder in folders)
        sync_folders(folders)

    monkeypatch.setattr(os, "fsync", logged_fsync)
    monkeypatch.setattr(fileio, "sync_folders", logged_sync)
    return events


def snakemake_command(project: Path, *args: str) -> list[str]:
    return ["snakemake", "-s", str(REPO / "Snakefile"), "-d", str(project), "--cores", "2", *args]


def snakemake(project: Path, env: dict, *args: str, timeout: int = 1500):
    return subprocess.run(
        snakemake_command(project, *args),
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


@dataclass(frozen=True)
class SlurmCluster:
    started: bool
    detail: str  # start_cluster.sh's output, or why no cluster could be started


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """A one-node SLURM cluster on this machine, started once for the session."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return SlurmCluster(False, "a local SLURM cluster needs root and apt-get to install it")
    result = subprocess.run(
        ["bash", str(REPO / "tests" / "slurm" / "start_cluster.sh")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        return SlurmCluster(False, f"SLURM could not be started here: {result.stderr[-500:]}")
    return SlurmCluster(True, result.stdout)


@pytest.fixture(scope="session")
def cluster(slurm_cluster) -> SlurmCluster:
    if not slurm_cluster.started:
        pytest.skip(slurm_cluster.detail)
    return slurm_cluster


# Through SLURM, train.gpus: 1 makes train, evaluate and export request a GPU,
# which the test cluster has (simulated with gres); TensorFlow runs on the CPU.
SLURM_ARGS = (
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
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tiny run's users last but the SLURM trainings of their own; otherwise file order.

    The tiny run starts with the session (tiny_run_started) and mostly waits:
    its first user, early in file order (test_config), used to block on it for
    four minutes with nothing else running. The SLURM tests with projects of
    their own go after it, so their jobs do not queue behind its jobs.
    """

    def phase(item: pytest.Item) -> int:
        if "tiny_run" in item.fixturenames:
            return 1
        return 2 if item.get_closest_marker("slurm") else 0

    items.sort(key=phase)  # stable: file order within each phase


@pytest.fixture(scope="session", autouse=True)
def tiny_run_started(request, tmp_path_factory, tool_env):
    """Starts the tiny run in the background as soon as the session starts, if a test needs it.

    Through SLURM the run mostly waits (job start-up, status polls), so the
    other tests run meanwhile instead of after it.
    """
    if not any("tiny_run" in item.fixturenames for item in request.session.items):
        yield None
        return
    slurm_cluster = request.getfixturevalue("slurm_cluster")
    project = tmp_path_factory.mktemp("tiny_project")
    if slurm_cluster.started:
        write_project(project, {**TINY_CONFIG, "train": {**TINY_CONFIG["train"], "gpus": 1}})
        args = SLURM_ARGS
    else:
        write_project(project, TINY_CONFIG)
        args = ()
    output = project.parent / f"{project.name}.out"
    with open(output, "w") as out:
        process = subprocess.Popen(
            snakemake_command(project, *args), stdout=out, stderr=subprocess.STDOUT, env=tool_env
        )
    yield project, process, output
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=120)


@pytest.fixture(scope="session")
def tiny_run(tiny_run_started):
    """One full run of the tiny project, shared by the workflow, report and SLURM tests.

    Where a local SLURM cluster runs, every rule is a SLURM job (tests/test_slurm.py
    checks that); elsewhere the same run is local. One run instead of two keeps
    `make test` short: the workflow's outputs do not depend on the executor, and
    test_slurm.py compares them with a local run's.
    """
    project, process, output = tiny_run_started
    process.wait(timeout=1800)
    log = output.read_text()
    assert process.returncode == 0, log[-6000:]
    return project, log


# The tiny model, trained and exported once a session for every test that needs one
# (test_model, test_review): defined here so that pytest makes each once.
@pytest.fixture(scope="session")
def tiny_records(tmp_path_factory):
    """Demo images -> lists -> records, in-process, for every model test."""
    from test_model import make_records, tiny_raw

    base = tmp_path_factory.mktemp("model_data")
    make_records(base, tiny_raw())
    return base


@pytest.fixture(scope="session")
def trained(tiny_records):
    import json

    from test_model import model_cli, tiny_raw, train_args

    model_cli(tiny_records, tiny_raw(), *train_args("tiny"))
    return tiny_records, json.loads((tiny_records / "results/train/tiny/final.json").read_text())


@pytest.fixture(scope="session")
def exported(trained):
    from test_model import model_cli, tiny_raw

    base, _ = trained
    model_cli(
        base,
        tiny_raw(),
        "export",
        "--final",
        "results/train/tiny/final.json",
        "--outdir",
        "results/export/tiny",
        "--calibration-images",
        "8",
    )
    return base
