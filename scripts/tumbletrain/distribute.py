"""Where training runs: one device, the node's GPUs, or several SLURM tasks.

TensorFlow already distributes training; this only picks the strategy from
`train.gpus` and `train.nodes`, and, for several workers, reads the cluster
from a TF_CONFIG or from SLURM's environment with TensorFlow's own
SlurmClusterResolver. TensorFlow is imported lazily, as in the other stage
modules, so that `--help` stays fast.
"""

from __future__ import annotations

import json
import logging
import os

from . import cli

log = logging.getLogger("tumbletrain.distribute")


def in_slurm_job() -> bool:
    return "SLURM_JOB_ID" in os.environ and "SLURM_PROCID" in os.environ


def slurm_tasks() -> int:
    """Tasks of this job step (srun's), else of the job."""
    return int(os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS") or 1)


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
    return Resolver(gpus_per_node=slot * slurm_tasks(), gpus_per_task=slot, auto_set_gpu=False)


def cluster_resolver(gpus: int, nodes: int):
    """The resolver for several workers, or a UserError that says how to start them."""
    import tensorflow as tf

    if "TF_CONFIG" in os.environ:
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if not in_slurm_job():
        raise cli.UserError(
            f"train.nodes is {nodes} but this process is neither in a SLURM job nor given a "
            "TF_CONFIG; submit training with the slurm profile (one task per node)"
        )
    if slurm_tasks() != nodes:
        raise cli.UserError(
            f"train.nodes is {nodes} but this SLURM job step has {slurm_tasks()} task(s); "
            f"submit train with nodes={nodes} and tasks={nodes} and start it with srun"
        )
    return slurm_resolver(gpus)


def make_strategy(gpus: int, nodes: int):
    """The tf.distribute strategy for this process."""
    import tensorflow as tf

    if nodes > 1 or "TF_CONFIG" in os.environ:
        resolver = cluster_resolver(gpus, nodes)
        log.info("multi-worker training: %s", json.dumps(resolver.cluster_spec().as_dict()))
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
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
