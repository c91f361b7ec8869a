"""Distribution strategies: SLURM's environment read by TensorFlow, two workers on localhost."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

WORKER = """
import json, os, sys
import tensorflow as tf
from tumbletrain.distribute import make_strategy
strategy = make_strategy(gpus=0, nodes=2)
@tf.function
def step():
    ctx = tf.distribute.get_replica_context()
    return ctx.all_reduce("sum", tf.constant(float(os.environ["WORKER_VALUE"])))
result = strategy.run(step)
print("RESULT", json.dumps({"replicas": strategy.num_replicas_in_sync,
                            "sum": float(strategy.experimental_local_results(result)[0])}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SLURM_TWO_NODES = {
    "SLURM_JOB_ID": "7",
    "SLURM_PROCID": "1",
    "SLURM_STEP_NUM_TASKS": "2",
    "SLURM_STEP_NODELIST": "node[01-02]",
    "SLURM_STEP_TASKS_PER_NODE": "1(x2)",
    "SLURM_NTASKS": "2",
    "SLURM_JOB_NODELIST": "node[01-02]",
    "SLURM_TASKS_PER_NODE": "1(x2)",
}

# SLURM's scontrol expands node lists; the test cluster's install brings it.
needs_scontrol = pytest.mark.usefixtures("cluster")


def set_env(monkeypatch, env):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


@needs_scontrol
def test_slurm_environment_gives_the_cluster_spec(monkeypatch):
    from tumbletrain.distribute import slurm_resolver

    set_env(monkeypatch, SLURM_TWO_NODES)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    resolver = slurm_resolver(gpus=2)
    spec = resolver.cluster_spec().as_dict()
    assert [address.split(":")[0] for address in spec["worker"]] == ["node01", "node02"]
    assert (resolver.task_type, resolver.task_id) == ("worker", 1)
    assert resolver.num_accelerators() == {"GPU": 2}
    # SLURM chose the GPUs; the resolver must not renumber them.
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"


@needs_scontrol
def test_cpu_tasks_share_a_node_and_use_the_cpu(monkeypatch):
    from tumbletrain.distribute import slurm_resolver

    set_env(
        monkeypatch,
        {
            **SLURM_TWO_NODES,
            "SLURM_PROCID": "3",
            "SLURM_STEP_NUM_TASKS": "4",
            "SLURM_NTASKS": "4",
            "SLURM_STEP_TASKS_PER_NODE": "3,1",
        },
    )
    resolver = slurm_resolver(gpus=0)
    workers = resolver.cluster_spec().as_dict()["worker"]
    assert workers == ["node01:8888", "node01:8889", "node01:8890", "node02:8888"]
    assert (resolver.task_type, resolver.task_id) == ("worker", 3)
    # Any GPU count here would make MultiWorkerMirroredStrategy place replicas on a GPU.
    assert resolver.num_accelerators() == {}


def test_a_tf_config_wins_over_slurm(monkeypatch):
    import tensorflow as tf
    from tumbletrain.distribute import cluster_resolver

    set_env(monkeypatch, SLURM_TWO_NODES)
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})
    )
    resolver = cluster_resolver(gpus=0, nodes=2)
    assert isinstance(resolver, tf.distribute.cluster_resolver.TFConfigClusterResolver)
    assert resolver.cluster_spec().as_dict() == cluster


def test_a_job_with_fewer_tasks_than_nodes_is_a_clear_error(monkeypatch):
    from tumbletrain import cli
    from tumbletrain.distribute import make_strategy

    set_env(monkeypatch, {**SLURM_TWO_NODES, "SLURM_STEP_NUM_TASKS": "1", "SLURM_NTASKS": "1"})
    with pytest.raises(cli.UserError, match="tasks=2 and start it with srun"):
        make_strategy(gpus=0, nodes=2)


def test_single_process_uses_the_default_strategy(monkeypatch):
    import tensorflow as tf
    from tumbletrain.distribute import make_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    for gpus in (0, 2):
        strategy = make_strategy(gpus=gpus, nodes=1)
        assert strategy.num_replicas_in_sync == 1
        assert not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def test_nodes_without_a_cluster_is_a_clear_error(monkeypatch):
    from tumbletrain import cli
    from tumbletrain.distribute import make_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(cli.UserError, match="slurm profile"):
        make_strategy(gpus=0, nodes=2)


@pytest.mark.slow
def test_two_workers_on_localhost_reduce_together(tmp_path):
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    processes = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "WORKER_VALUE": str(index + 1),
            "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for process in processes:
        out, err = process.communicate(timeout=240)
        assert process.returncode == 0, err[-3000:]
        line = next(x for x in out.splitlines() if x.startswith("RESULT "))
        results.append(json.loads(line.removeprefix("RESULT ")))
    assert results == [{"replicas": 2, "sum": 3.0}] * 2
