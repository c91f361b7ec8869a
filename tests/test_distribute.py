"""Distribution strategies: SLURM's environment read by TensorFlow, two workers on localhost."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from tumbletrain import cli, config
from tumbletrain.distribute import PORT_HIGH, PORT_LOW, PORTS_PER_JOB, port_base


def train_config(**train) -> config.TrainConfig:
    return config.parse({"classes": {"a": {}}, "model": {"checkpoint": None}, "train": train}).train


WORKER = """
import json, os, sys
import tensorflow as tf
from tumbletrain import config
from tumbletrain.distribute import make_strategy
strategy = make_strategy(config.parse({"classes": {"a": {}}, "train": {"nodes": 2}}).train)
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
    base = port_base({"SLURM_JOB_ID": "7"})
    assert base != 8888  # TensorFlow's fixed default, which anyone can guess
    assert workers == [
        f"node01:{base}",
        f"node01:{base + 1}",
        f"node01:{base + 2}",
        f"node02:{base}",
    ]
    assert (resolver.task_type, resolver.task_id) == ("worker", 3)
    # Any GPU count here would make MultiWorkerMirroredStrategy place replicas on a GPU.
    assert resolver.num_accelerators() == {}


def test_each_job_has_its_own_ports_and_every_task_of_it_the_same():
    bases = {
        port_base({"SLURM_JOB_ID": str(job), "SLURM_STEP_ID": "0"}) for job in range(1000, 1200)
    }
    # 200 jobs in 354 blocks: a fixed base would give one.
    assert len(bases) > 100
    assert all(b >= PORT_LOW and b + PORTS_PER_JOB <= PORT_HIGH for b in bases)
    tasks = [
        {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "1", "SLURM_PROCID": str(i)} for i in range(4)
    ]
    assert len({port_base(env) for env in tasks}) == 1
    assert port_base(tasks[0]) != port_base({**tasks[0], "SLURM_STEP_ID": "2"})


def test_tensorflows_grpc_server_listens_on_every_interface():
    """What SECURITY.md says TensorFlow cannot narrow: a worker's server binds the wildcard
    address whatever host the cluster spec names (here 127.0.0.1), with no authentication.
    If a TensorFlow release ever binds the named address, this fails: update SECURITY.md."""
    import tensorflow as tf

    port = free_port()
    spec = tf.train.ClusterSpec({"worker": [f"127.0.0.1:{port}"]})
    server = tf.distribute.Server(spec, job_name="worker", task_index=0, start=True)
    assert server.target == f"grpc://127.0.0.1:{port}"
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                listening.add(address)
    # All zeros: INADDR_ANY or in6addr_any, every interface of the node.
    assert listening and all(set(address) == {"0"} for address in listening), listening


def test_a_tf_config_wins_over_slurm(monkeypatch):
    import tensorflow as tf
    from tumbletrain.distribute import cluster_resolver

    set_env(monkeypatch, SLURM_TWO_NODES)
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})
    )
    resolver = cluster_resolver(gpus=0, workers=2)
    assert isinstance(resolver, tf.distribute.cluster_resolver.TFConfigClusterResolver)
    assert resolver.cluster_spec().as_dict() == cluster


def test_a_job_with_fewer_tasks_than_workers_is_a_clear_error(monkeypatch):
    from tumbletrain.distribute import make_strategy

    set_env(monkeypatch, {**SLURM_TWO_NODES, "SLURM_STEP_NUM_TASKS": "1", "SLURM_NTASKS": "1"})
    with pytest.raises(cli.UserError, match="tasks=2 and start it with srun"):
        make_strategy(train_config(nodes=2))


def test_single_process_uses_the_default_strategy(monkeypatch):
    import tensorflow as tf
    from tumbletrain.distribute import make_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    for gpus in (0, 2):
        strategy = make_strategy(train_config(gpus=gpus))
        assert strategy.num_replicas_in_sync == 1
        assert not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def test_workers_without_a_cluster_is_a_clear_error(monkeypatch):
    from tumbletrain.distribute import make_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(cli.UserError, match="slurm profile"):
        make_strategy(train_config(workers=2))


def dead_proxy() -> dict[str, str]:
    """A web proxy as clusters set one for the way out, here one that nothing answers
    (the port of a socket just closed): gRPC would send the workers' traffic to it."""
    url = f"http://127.0.0.1:{free_port()}"
    return {"http_proxy": url, "https_proxy": url, "grpc_proxy": url, "no_proxy": ""}


@pytest.mark.slow
@pytest.mark.parametrize("proxy", [False, True], ids=["direct", "behind_a_web_proxy"])
def test_two_workers_on_localhost_reduce_together(proxy):
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    proxy_env = dead_proxy() if proxy else {}
    processes = []
    for index in range(2):
        env = {
            **os.environ,
            **proxy_env,
            # Without the bypass the workers never join: fail in two minutes, not five
            # (the other worker's TensorFlow import alone can take a minute under load).
            "TUMBLETRAIN_WORKER_STARTUP_TIMEOUT_S": "120",
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


def test_one_worker_asks_slurm_for_its_gpus_only():
    from tumbletrain.distribute import launch_prefix, slurm_resources

    assert slurm_resources(train_config()) == {}
    assert slurm_resources(train_config(gpus=2)) == {"gpu": 2}
    assert launch_prefix(train_config(gpus=2), "srun", "results/train/x") == ""


def test_several_nodes_are_one_job_of_one_task_per_node_with_their_gpus():
    from tumbletrain.distribute import launch_prefix, slurm_resources

    train = train_config(nodes=2, gpus=4, threads=8)
    assert slurm_resources(train) == {
        "nodes": 2,
        "tasks": 2,
        "mpi": "srun",
        "slurm_extra": "--ntasks-per-node=1 --gpus-per-node=4",
    }
    prefix = launch_prefix(train, "srun --mpi=none", "results/train/x")
    launcher, step = prefix.split(" -- ")
    assert launcher == "python -m tumbletrain.distribute launch --model-dir results/train/x"
    assert step.split() == [
        "srun",
        "--mpi=none",
        "--nodes=2",
        "--ntasks=2",
        "--ntasks-per-node=1",
        "--cpus-per-task=8",
        "--kill-on-bad-exit=1",
        "--label",
        "--gpus-per-task=4",
    ]


def test_workers_on_a_node_share_its_gpus_evenly():
    from tumbletrain.distribute import launch_prefix, slurm_resources

    train = train_config(workers=2, gpus=4)
    assert slurm_resources(train)["tasks"] == 2
    assert "--gpus-per-task=2" in launch_prefix(train, "srun", "m")
    with pytest.raises(cli.UserError, match="does not divide"):
        slurm_resources(train_config(workers=2, gpus=3))


# Task 1 leaves a file in its scratch directory, as a training worker would, and is killed.
TASK_1_DIES = (
    'if [ "$SLURM_PROCID" = 1 ]; then mkdir -p "$TUMBLETRAIN_WORKER_SCRATCH/tumbletrain-worker-1"'
    ' && echo "scratch $TUMBLETRAIN_WORKER_SCRATCH" >&2 && kill -9 $$; fi;'
    ' echo "chief line" >&2; echo "chief progress"; sleep 60'
)


@needs_scontrol
def test_a_dead_task_ends_the_step_with_one_error_line(tmp_path, tool_env):
    """Real srun: task 1 is killed, the other is ended at once, and the log says so once."""
    srun = ["srun", "--ntasks=2", "--kill-on-bad-exit=1", "--label", "sh", "-c", TASK_1_DIES]
    result = subprocess.run(
        [sys.executable, "-m", "tumbletrain.distribute", "launch", "--model-dir", str(tmp_path)]
        + ["--", *srun],
        capture_output=True,
        text=True,
        env=tool_env,
        timeout=120,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert "chief line" in lines, "task 0's lines pass unlabelled"
    assert result.stdout.splitlines() == ["chief progress"], "the terminal's, unlabelled"
    assert [x for x in lines if x.startswith("ERROR:")] == [lines[-1]]
    assert "a training worker failed (task 1 on " in lines[-1], lines[-1]
    assert "no checkpoint was written yet" in lines[-1]
    scratch = next(x for x in lines if x.startswith("worker 1: scratch ")).split()[-1]
    assert not os.path.exists(scratch), "the killed worker's scratch directory was left behind"


def test_launching_without_srun_says_how_to_submit(tmp_path, tool_env):
    result = subprocess.run(
        [sys.executable, "-m", "tumbletrain.distribute", "launch", "--model-dir", str(tmp_path)]
        + ["--", "no-such-srun", "python"],
        capture_output=True,
        text=True,
        env=tool_env,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("ERROR: no-such-srun not found")


@pytest.mark.slow
def test_a_worker_that_never_joins_ends_the_others_with_an_error(tool_env):
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    env = {
        **tool_env,
        "WORKER_VALUE": "1",
        "TUMBLETRAIN_WORKER_STARTUP_TIMEOUT_S": "5",
        "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}),
    }
    result = subprocess.run(
        [sys.executable, "-c", WORKER], capture_output=True, text=True, env=env, timeout=240
    )
    assert result.returncode == -9, "killed: TensorFlow ignores SIGTERM while it waits"
    assert result.stderr.strip().splitlines()[-1] == (
        "ERROR: worker 0 waited 5 s for all 2 training workers to join and gave up; "
        "a worker did not start (see its lines above)"
    )


def test_a_worker_restores_the_chiefs_checkpoint_and_never_deletes_it(tmp_path):
    import tensorflow as tf
    from tumbletrain.distribute import scratch_dir

    chief = tf.train.Checkpoint(step=tf.Variable(7))
    saved = tf.train.CheckpointManager(chief, tmp_path, max_to_keep=3).save()
    scratch = scratch_dir(tmp_path)
    worker = tf.train.Checkpoint(step=tf.Variable(0))
    manager = tf.train.CheckpointManager(worker, scratch, max_to_keep=1)
    manager.restore_or_initialize()
    assert int(worker.step) == 7
    for _ in range(3):
        manager.save()
    assert tf.train.latest_checkpoint(str(tmp_path)) == saved
    assert tf.io.gfile.glob(saved + ".*"), "the worker deleted the chief's checkpoint"
    assert str(scratch).startswith(tempfile.gettempdir())


def test_the_workers_bypass_the_proxy_and_the_users_no_proxy_stays(monkeypatch):
    from tumbletrain.distribute import GRPC_NO_PROXY, NO_PROXY, bypass_proxy

    monkeypatch.delenv(GRPC_NO_PROXY, raising=False)
    monkeypatch.setenv(NO_PROXY, "localhost,.example.org")
    bypass_proxy({"worker": ["node01:8888", "node02:8888", "localhost:8889"]})
    assert os.environ[GRPC_NO_PROXY] == "localhost,.example.org,node01,node02"
    assert os.environ[NO_PROXY] == "localhost,.example.org", "the harvest's own setting"
    monkeypatch.setenv(GRPC_NO_PROXY, "grpc.example.org")
    bypass_proxy({"chief": ["10.0.0.1:2222"], "worker": ["10.0.0.2:2222"]})
    assert os.environ[GRPC_NO_PROXY] == "grpc.example.org,10.0.0.1,10.0.0.2"


def test_a_global_batch_that_does_not_split_among_replicas_is_a_clear_error():
    from tumbletrain.distribute import check_batch

    check_batch(16, 4)
    with pytest.raises(cli.UserError, match="batch_size 6 does not split among 4 replicas"):
        check_batch(6, 4)
