"""Where training runs: one device, all local GPUs, or several SLURM nodes.

TensorFlow already distributes training; this only picks the strategy from
`train.gpus` and `train.nodes`, and, on several nodes, reads the cluster from
SLURM's environment with TensorFlow's own SlurmClusterResolver.
"""

from __future__ import annotations

import json
import logging
import os

log = logging.getLogger("tumbletrain.distribute")


def in_slurm_job() -> bool:
    return "SLURM_JOB_ID" in os.environ and "SLURM_PROCID" in os.environ


def slurm_resolver(gpus: int):
    """One task per node, owning all of the node's GPUs.

    TensorFlow's resolver packs tasks by GPU count and finds no task at all
    with zero GPUs, so a CPU-only node counts as one "GPU" here; the
    CUDA_VISIBLE_DEVICES it then sets is harmless on a CPU.
    """
    import tensorflow as tf

    per_node = max(gpus, 1)
    return tf.distribute.cluster_resolver.SlurmClusterResolver(
        gpus_per_node=per_node, gpus_per_task=per_node
    )


def make_strategy(gpus: int, nodes: int):
    """The tf.distribute strategy for this process."""
    import tensorflow as tf

    if nodes > 1 or "TF_CONFIG" in os.environ:
        if "TF_CONFIG" in os.environ:
            resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        elif in_slurm_job():
            resolver = slurm_resolver(gpus)
        else:
            raise RuntimeError(
                f"train.nodes is {nodes} but this process is neither in a SLURM job nor given a "
                "TF_CONFIG; submit training with the slurm profile (one task per node)"
            )
        log.info("multi-worker training: %s", json.dumps(resolver.cluster_spec().as_dict()))
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    found = tf.config.list_physical_devices("GPU")
    if len(found) > 1 and gpus != 1:
        return tf.distribute.MirroredStrategy()
    if found:
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    return tf.distribute.get_strategy()
