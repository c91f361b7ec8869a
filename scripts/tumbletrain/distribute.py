"""Where training runs: one device, the node's GPUs, or several SLURM tasks.

TensorFlow already distributes training; this picks the strategy from
`train.gpus`, `train.nodes` and `train.workers`, and, for several workers,
reads the cluster from a TF_CONFIG or from SLURM's environment with
TensorFlow's own SlurmClusterResolver.

Several workers run as one SLURM job of `nodes x workers` tasks: the train
rule submits it with the executor plugin's `tasks` and `mpi` resources
(`slurm_resources`), and inside the job `python -m tumbletrain.distribute
launch -- srun ...` (`launch_prefix`) starts one training process per task
and turns a failed task into one `ERROR:` line. The chief (task 0) writes the
checkpoints, summaries and final.json; every other worker writes into a
scratch directory that is removed (`worker_dir`), restoring from the chief's
checkpoints. TensorFlow is imported lazily, as in the other stage modules, so
that `--help` stays fast.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from . import cli
from . import config as tt_config

log = logging.getLogger("tumbletrain.distribute")


# Every worker must create the strategy (join the cluster) within this time;
# a worker that never starts would otherwise leave the others waiting forever.
STARTUP_TIMEOUT_S = float(os.environ.get("TUMBLETRAIN_WORKER_STARTUP_TIMEOUT_S", 300))

# Where the launcher's workers make their scratch directories (`scratch_dir`):
# a directory the launcher removes when srun ends, so that a killed worker,
# whose own clean-up never runs, leaves nothing behind on the launcher's node.
SCRATCH_ROOT_ENV = "TUMBLETRAIN_WORKER_SCRATCH"

# gRPC reads these names in lower case only.
GRPC_NO_PROXY = "no_grpc_proxy"
NO_PROXY = "no_proxy"


def worker_count(train: tt_config.TrainConfig) -> int:
    return train.nodes * train.workers


def gpus_per_worker(train: tt_config.TrainConfig) -> int:
    """`train.gpus` are per node, shared out among that node's workers."""
    if train.gpus % train.workers:
        raise cli.UserError(
            f"train.gpus ({train.gpus} per node) does not divide among train.workers "
            f"({train.workers} per node); use a multiple of {train.workers}"
        )
    return train.gpus // train.workers


def slurm_resources(train: tt_config.TrainConfig) -> dict:
    """The train rule's resources for the SLURM executor plugin.

    One worker: `gpu` (the plugin's --gpus). Several: `nodes`, `tasks` and
    `mpi` (the plugin then runs the rule's command once, which starts the
    tasks with srun), and --ntasks-per-node and --gpus-per-node through
    `slurm_extra`, as the plugin has no resource for them.
    """
    if worker_count(train) == 1:
        return {"gpu": train.gpus} if train.gpus else {}
    gpus_per_worker(train)
    extra = f"--ntasks-per-node={train.workers}"
    if train.gpus:
        extra += f" --gpus-per-node={train.gpus}"
    return {
        "nodes": train.nodes,
        "tasks": worker_count(train),
        "mpi": "srun",
        "slurm_extra": extra,
    }


def launch_prefix(train: tt_config.TrainConfig, starter: str | None, model_dir: str) -> str:
    """What the train rule's command starts with: nothing for one worker, else the launcher."""
    if worker_count(train) == 1:
        return ""
    step = [
        f"--nodes={train.nodes}",
        f"--ntasks={worker_count(train)}",
        f"--ntasks-per-node={train.workers}",
        f"--cpus-per-task={train.threads}",
        # One task that fails ends the others at once instead of leaving them
        # waiting in a collective; --label tells the launcher whose line is whose.
        "--kill-on-bad-exit=1",
        "--label",
    ]
    if train.gpus:
        step.append(f"--gpus-per-task={gpus_per_worker(train)}")
    launcher = ["python", "-m", "tumbletrain.distribute", "launch", "--model-dir", model_dir]
    return shlex.join([*launcher, "--", *shlex.split(starter or "srun"), *step]) + " "


LABEL = re.compile(r"^\s*(\d+): ?(.*)$")
TASK_FAILED = re.compile(r"^srun: error: (\S+): tasks? ([\d,-]+): (.+)$")


def launch(command: list[str], model_dir: Path) -> None:
    """Run srun (`command`), relabel its tasks' lines, and end a failure with one ERROR line.

    The chief's lines pass as they are, another worker's get `worker N: `; the
    workers' own ERROR lines are held back so that the log ends with one. The
    workers' scratch directories on this node are removed, a killed one's too.
    """
    scratch = tempfile.mkdtemp(prefix="tumbletrain-workers-")
    try:
        code, errors, failed = run_tasks(command, {**os.environ, SCRATCH_ROOT_ENV: scratch})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if code == 0:
        return
    if errors:
        raise cli.UserError(errors[0].removeprefix("ERROR: "))
    import tensorflow as tf

    last = tf.train.latest_checkpoint(str(model_dir))
    resume = f"a re-run resumes from {last}" if last else "no checkpoint was written yet; re-run"
    # The first failure is the cause: srun ends the other tasks after it.
    what = failed[0] if failed else f"srun exited with {code}"
    raise cli.UserError(f"a training worker failed ({what}), so the job failed; {resume}")


def run_tasks(command: list[str], env: dict[str, str]) -> tuple[int, list[str], list[str]]:
    """Run srun and relabel its lines: its exit code, the tasks' ERROR lines, the failed tasks.

    The tasks' stdout holds only the lines they mean for the terminal
    (cli.route_output): those go on to this job's terminal without srun's label.
    """
    errors: list[str] = []
    failed: list[str] = []
    try:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, env=env
        )
    except FileNotFoundError:
        raise cli.UserError(
            f"{command[0]} not found: several training workers run as SLURM tasks; "
            "submit the train rule with --workflow-profile config/profiles/slurm"
        ) from None
    terminal = threading.Thread(target=tell_unlabelled, args=(process.stdout,))
    terminal.start()
    for line in process.stderr:
        line = line.rstrip("\n")
        label = LABEL.match(line)
        if label:
            task, text = int(label[1]), label[2]
            if text.startswith("ERROR: "):
                errors.append(text if task == 0 else f"worker {task}: {text[7:]}")
                continue
            line = text if task == 0 else f"worker {task}: {text}"
        elif TASK_FAILED.match(line):
            node, tasks, how = TASK_FAILED.match(line).groups()
            failed.append(f"task {tasks} on {node}: {how}")
        print(line, file=sys.stderr, flush=True)
    terminal.join()
    return process.wait(), errors, failed


def tell_unlabelled(stream) -> None:
    for line in stream:
        label = LABEL.match(line.rstrip("\n"))
        cli.tell(label[2] if label else line.rstrip("\n"))


def in_slurm_job() -> bool:
    return "SLURM_JOB_ID" in os.environ and "SLURM_PROCID" in os.environ


def slurm_tasks() -> int:
    """Tasks of this job step (srun's), else of the job."""
    return int(os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS") or 1)


# The workers' gRPC ports: a block per job, so that they are not the well-known
# 8888 of TensorFlow's SlurmClusterResolver, nor the same from one job to the
# next. Below Linux's ephemeral range (32768-60999, where outgoing connections
# take their ports) and above the registered services most nodes run.
PORT_LOW, PORT_HIGH = 10000, 32768
PORTS_PER_JOB = 64  # a node's tasks take consecutive ports from the block's first


def port_base(environ=os.environ) -> int:
    """The first port of this job step's block, the same in every one of its tasks.

    Derived from SLURM's job and step ids, which every task sees and no one
    outside the job chooses; not a secret (gRPC has no authentication here: see
    SECURITY.md), only not fixed.
    """
    job = f"{environ.get('SLURM_JOB_ID', '')}.{environ.get('SLURM_STEP_ID', '')}"
    blocks = (PORT_HIGH - PORT_LOW) // PORTS_PER_JOB
    digest = int.from_bytes(hashlib.sha256(job.encode()).digest()[:8], "big")
    return PORT_LOW + (digest % blocks) * PORTS_PER_JOB


def slurm_resolver(gpus: int):
    """TensorFlow's SlurmClusterResolver, for tasks that each own `gpus` GPUs (0: CPU).

    TensorFlow's resolver hands tasks out by GPU slots, so a node without GPUs
    gets no task at all; and MultiWorkerMirroredStrategy asks it how many GPUs
    a task has and would place replicas on a GPU that does not exist. So every
    task gets one nominal slot, and the strategy is told the real GPU count.
    The resolver must not set CUDA_VISIBLE_DEVICES either: SLURM has already set
    it to the GPUs it allocated, which need not be the node's first ones.
    """
    import tensorflow as tf

    class Resolver(tf.distribute.cluster_resolver.SlurmClusterResolver):
        def num_accelerators(self, task_type=None, task_id=None, config_proto=None):
            return {"GPU": gpus} if gpus else {}

    slot = max(gpus, 1)
    return Resolver(
        port_base=port_base(),
        gpus_per_node=slot * slurm_tasks(),
        gpus_per_task=slot,
        auto_set_gpu=False,
    )


def cluster_resolver(gpus: int, workers: int):
    """The resolver for several workers, or a UserError that says how to start them."""
    import tensorflow as tf

    if "TF_CONFIG" in os.environ:
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if not in_slurm_job():
        raise cli.UserError(
            f"training asks for {workers} workers (train.nodes x train.workers) but this "
            "process is neither in a SLURM job nor given a TF_CONFIG; submit training with "
            "the slurm profile"
        )
    if slurm_tasks() != workers:
        raise cli.UserError(
            f"training asks for {workers} workers (train.nodes x train.workers) but this SLURM "
            f"job step has {slurm_tasks()} task(s); submit train with tasks={workers} and "
            "start it with srun"
        )
    return slurm_resolver(gpus)


# One process, so that killing it leaves nothing behind: a shell's `sleep` child
# would outlive it holding the worker's stderr open, and whoever reads that
# (srun, a pipe) would wait for the sleep to end. It also ends when the worker does.
WATCHDOG = """
import os, sys, time
worker, deadline, message = int(sys.argv[1]), time.monotonic() + float(sys.argv[2]), sys.argv[3]
while time.monotonic() < deadline:
    if os.getppid() != worker:
        sys.exit()
    time.sleep(1)
print(message, file=sys.stderr, flush=True)
os.kill(worker, 9)
"""


def startup_watchdog(task: int, workers: int, timeout_s: float) -> subprocess.Popen:
    """A process that ends this one with one ERROR line unless it is killed in time.

    A process, not a thread: while TensorFlow waits for the other workers it
    holds the GIL and ignores SIGTERM, so only SIGKILL from outside ends it.
    """
    message = (
        f"ERROR: worker {task} waited {timeout_s:.0f} s for all {workers} training workers "
        "to join and gave up; a worker did not start (see its lines above)"
    )
    return subprocess.Popen(
        [sys.executable, "-I", "-c", WATCHDOG, str(os.getpid()), str(timeout_s), message],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )


def bypass_proxy(cluster: dict) -> None:
    """Let the workers reach one another directly, whatever web proxy the environment sets.

    gRPC, which carries the workers' traffic, honours `grpc_proxy`, `https_proxy`
    and `http_proxy` (grpc/grpc's doc/environment_variables.md), which clusters
    often set for their way out to the web: the workers would then call one
    another through that proxy, which cannot reach them, and never join.
    `no_grpc_proxy` is read by gRPC alone and, when set, instead of `no_proxy`:
    the user's `no_proxy` entries are carried into it, and other programs'
    proxy settings stay as they were.
    """
    hosts = {address.rsplit(":", 1)[0] for tasks in cluster.values() for address in tasks}
    current = os.environ.get(GRPC_NO_PROXY, os.environ.get(NO_PROXY, ""))
    entries = [entry for entry in current.split(",") if entry.strip()]
    os.environ[GRPC_NO_PROXY] = ",".join(entries + sorted(hosts - set(entries)))


def multi_worker_strategy(gpus: int, workers: int, timeout_s: float = STARTUP_TIMEOUT_S):
    """MultiWorkerMirroredStrategy over every worker, or an ERROR if one does not join in time.

    Other workers than the chief log only warnings: their progress would repeat the chief's.
    """
    import tensorflow as tf

    found = len(tf.config.list_physical_devices("GPU"))
    if gpus > found:
        log.warning("%d GPU(s) per worker asked for, TensorFlow sees %d; using those", gpus, found)
        gpus = found
    resolver = cluster_resolver(gpus, workers)
    spec = resolver.cluster_spec()  # SLURM's resolver knows its task only after this
    task = resolver.task_id
    bypass_proxy(spec.as_dict())
    watchdog = startup_watchdog(task, workers, timeout_s)
    if gpus:
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.NCCL
        )
    else:
        options = None
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=resolver, communication_options=options
    )
    watchdog.kill()
    watchdog.wait()
    log.info(
        "worker %d of %d joined: %d replica(s) in sync over %s",
        task,
        workers,
        strategy.num_replicas_in_sync,
        json.dumps(spec.as_dict()),
    )
    if not is_chief(strategy):
        logging.getLogger("tumbletrain").setLevel(logging.WARNING)
    return strategy


def barrier(strategy) -> None:
    """Every worker waits here for the others (an all-reduce); one process passes at once."""
    import tensorflow as tf

    if strategy.num_replicas_in_sync == 1 or not isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy
    ):
        return
    ones = strategy.run(tf.function(lambda: tf.constant(1.0)))
    strategy.reduce("SUM", ones, axis=None)


def chief_first(strategy, fn, *args):
    """`fn(*args)` on the chief, then on the other workers, which see what it wrote."""
    if is_chief(strategy):
        result = fn(*args)
        barrier(strategy)
        return result
    barrier(strategy)
    return fn(*args)


def check_batch(batch_size: int, replicas: int) -> None:
    """The global batch is split evenly among the replicas, or the Model Garden fails late."""
    if batch_size % replicas:
        raise cli.UserError(
            f"train.batch_size {batch_size} does not split among {replicas} replicas "
            f"(workers x GPUs per worker); use a multiple of {replicas}"
        )


def is_chief(strategy) -> bool:
    return strategy.extended.should_checkpoint


def worker_dir(strategy, model_dir: Path) -> Path:
    """Where this process writes: model_dir on the chief, a scratch directory elsewhere."""
    return model_dir if is_chief(strategy) else scratch_dir(model_dir)


def scratch_dir(model_dir: Path) -> Path:
    """A worker's own model_dir, removed when the process exits.

    It starts with a checkpoint state that names the chief's latest
    checkpoint, so a resumed run restores every worker from the same step
    (see `run_experiment`).
    """
    import tensorflow as tf

    root = os.environ.get(SCRATCH_ROOT_ENV)
    if root:  # the launcher's, or its path on another node, made here
        os.makedirs(root, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="tumbletrain-worker-", dir=root))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    latest = tf.train.latest_checkpoint(str(model_dir))
    if latest:
        # No paths to keep: the worker's CheckpointManager never deletes the chief's files.
        tf.compat.v1.train.update_checkpoint_state(
            str(scratch), os.path.abspath(latest), all_model_checkpoint_paths=[]
        )
    return scratch


def run_experiment(**kwargs):
    """`train_lib.run_experiment`, with each worker checkpointing into its own model_dir.

    The Model Garden gives a non-chief worker a fresh temporary checkpoint
    directory that is never removed and never restored from, so on a resumed
    run the chief restores its step and the others start at 0, and their
    loops no longer meet in the collectives.
    """
    import tensorflow as tf
    from official.core import train_lib

    class Runner(train_lib.OrbitExperimentRunner):
        def _maybe_build_checkpoint_manager(self):
            if not self.trainer.checkpoint or is_chief(self.strategy):
                return super()._maybe_build_checkpoint_manager()
            return tf.train.CheckpointManager(
                self.trainer.checkpoint,
                directory=self.model_dir,
                max_to_keep=1,
                step_counter=self.trainer.global_step,
                checkpoint_interval=self.params.trainer.checkpoint_interval,
                init_fn=self.trainer.initialize,
            )

    return Runner(**kwargs).run()


def make_strategy(train: tt_config.TrainConfig):
    """The tf.distribute strategy for this process; call it before any other TensorFlow op."""
    import tensorflow as tf

    workers = worker_count(train)
    if workers > 1 or "TF_CONFIG" in os.environ:
        strategy = multi_worker_strategy(gpus_per_worker(train), workers)
        check_batch(train.batch_size, strategy.num_replicas_in_sync)
        return strategy
    gpus = train.gpus
    found = len(tf.config.list_physical_devices("GPU"))
    if gpus > found:
        log.warning("train.gpus is %d but TensorFlow sees %d GPU(s); using those", gpus, found)
    # gpus 0 means "whatever the machine has", so a GPU is never left idle.
    use = found if gpus == 0 else min(gpus, found)
    if use > 1:
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(use)])
    if use == 1:
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    return tf.distribute.get_strategy()


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(
        "distribute", "Start several training workers as the SLURM tasks of one job."
    )
    sub = cli.subcommands(parser)
    p = sub.add_parser("launch", help="run `srun ... python -m tumbletrain.model train ...`")
    p.add_argument("--model-dir", type=Path, required=True, help="the chief's model_dir")
    p.add_argument("srun", nargs=argparse.REMAINDER, help="-- srun [options] command ...")
    args = parser.parse_args(argv)
    command = args.srun[1:] if args.srun[:1] == ["--"] else args.srun
    if not command:
        parser.error("no command after --")
    launch(command, args.model_dir)
    return 0


if __name__ == "__main__":
    cli.run(main)
