"""Fine-tuning (or training from scratch) through the Model Garden's own trainer.

`train_lib.run_experiment` owns the loop, the checkpoints and the TensorBoard
summaries; a re-run with the same `model_dir` resumes from the last
checkpoint it finds there. Checkpoints are therefore never Snakemake outputs:
Snakemake would delete them when a run fails.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from tqdm import tqdm

from . import cli, distribute, experiment, fileio
from . import config as tt_config

log = logging.getLogger("tumbletrain.training")


@dataclass(frozen=True)
class TrainInputs:
    training: experiment.DataSplit
    validation: experiment.DataSplit | None
    init_checkpoint: str | None


def data_split(stats_files: list[Path]) -> experiment.DataSplit:
    """Record files and image counts from the records stage's JSON."""
    files: list[str] = []
    images = 0
    for path in stats_files:
        if not Path(path).exists():
            raise cli.UserError(f"{path} does not exist; run the records rule first")
        stats = json.loads(Path(path).read_text())
        files += [str(Path(path).parent / name) for name in stats["files"]]
        images += stats["images"]
    return experiment.DataSplit(tuple(files), images)


def gpu_count() -> int:
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def mixed_precision_wanted(train: tt_config.TrainConfig) -> bool:
    if train.mixed_precision is not None:
        return train.mixed_precision
    return gpu_count() > 0


def scalar_summaries(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of the TensorBoard event files under a directory."""
    from tensorboard.backend.event_processing import event_accumulator

    if not logdir.is_dir():
        return {}
    accumulator = event_accumulator.EventAccumulator(
        str(logdir), size_guidance={event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0}
    )
    accumulator.Reload()
    series: dict[str, list[tuple[int, float]]] = {}
    for tag in accumulator.Tags().get("tensors", []):
        import tensorflow as tf

        series[tag] = [
            (e.step, float(tf.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)
        ]
    for tag in accumulator.Tags().get("scalars", []):
        series[tag] = [(e.step, float(e.value)) for e in accumulator.Scalars(tag)]
    return series


def checkpoint_step(checkpoint: str | None) -> int:
    """The step in a checkpoint's name (`ckpt-1000`); 0 when there is none."""
    return int(checkpoint.rsplit("-", 1)[1]) if checkpoint else 0


class TrainingProgress:
    """An Orbit train action: a progress bar in a terminal, a line per loop in a log.

    Orbit calls train actions after every `steps_per_loop` steps, with the
    loop's losses; the step is counted here rather than read from the trainer,
    which `run_experiment` creates out of reach.
    """

    def __init__(self, start: int, total: int, steps_per_loop: int):
        self.start = self.step = start
        self.total = total
        self.steps_per_loop = steps_per_loop
        self.started = time.monotonic()
        self.bar = tqdm(total=total, initial=start, desc="train", unit="step", disable=None)

    def __call__(self, output: dict) -> None:
        done = min(self.steps_per_loop, self.total - self.step)
        self.step += done
        loss = float(output.get("total_loss", float("nan")))
        if not self.bar.disable:
            self.bar.update(done)
            self.bar.set_postfix(loss=f"{loss:.3f}")
            return
        rate = (self.step - self.start) / max(time.monotonic() - self.started, 1e-9)
        eta = timedelta(seconds=round((self.total - self.step) / rate)) if rate else "?"
        log.info(
            "step %d/%d (%d%%), %.2f steps/s, ETA %s, total loss %.4f",
            self.step,
            self.total,
            100 * self.step // self.total,
            rate,
            eta,
            loss,
        )

    def close(self) -> None:
        self.bar.close()


def verify_restore(params, init_checkpoint: str) -> None:
    """Build the model and restore the checkpoint now: a mismatch fails before any step."""
    import tensorflow as tf
    from official.core import task_factory

    task = task_factory.get_task(params.task)
    model = task.build_model()
    try:
        task.initialize(model)
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        detail = str(error).splitlines()[0][:300]
        # Let TensorFlow report the unmatched values now, so the error below
        # stays the last line of the log.
        del task, model
        gc.collect()
        raise cli.UserError(
            f"checkpoint {init_checkpoint} does not match the model "
            f"(backbone {params.task.model.backbone.mobilenet.model_id}, "
            f"modules {params.task.init_checkpoint_modules}): {detail}; "
            "use a checkpoint of the same architecture or change model.init_modules"
        ) from None


def train(
    cfg: tt_config.WorkflowConfig,
    inputs: TrainInputs,
    model_dir: Path,
    final_json: Path,
) -> dict:
    import tensorflow as tf
    from official.core import task_factory, train_lib, train_utils

    if inputs.training.images == 0:
        raise cli.UserError("there are no training images; check results/lists/*/summary.json")
    tf.config.threading.set_inter_op_parallelism_threads(cfg.train.threads)
    tf.config.threading.set_intra_op_parallelism_threads(cfg.train.threads)
    mixed = mixed_precision_wanted(cfg.train)
    params = experiment.build_experiment(
        cfg.model,
        cfg.train,
        len(cfg.classes),
        inputs.training,
        inputs.validation,
        inputs.init_checkpoint,
        mixed_precision=mixed,
    )
    model_dir.mkdir(parents=True, exist_ok=True)
    train_utils.serialize_config(params, str(model_dir))
    resuming = tf.train.latest_checkpoint(str(model_dir))
    if inputs.init_checkpoint and not resuming:
        verify_restore(params, inputs.init_checkpoint)
    if resuming:
        log.info("resuming from %s", resuming)
    if mixed:
        tf.keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = distribute.make_strategy(cfg.train.gpus, cfg.train.nodes)
    with strategy.scope():
        task = task_factory.get_task(params.task, logging_dir=str(model_dir))
    mode = "train_and_eval" if inputs.validation and inputs.validation.images else "train"
    progress = TrainingProgress(
        checkpoint_step(resuming), cfg.train.steps, params.trainer.steps_per_loop
    )
    try:
        train_lib.run_experiment(
            distribution_strategy=strategy,
            task=task,
            mode=mode,
            params=params,
            model_dir=str(model_dir),
            train_actions=[progress],
        )
    finally:
        progress.close()
    final_checkpoint = tf.train.latest_checkpoint(str(model_dir))
    losses = {
        tag: values[-1][1]
        for tag, values in scalar_summaries(model_dir / "train").items()
        if values and "loss" in tag
    }
    result = {
        "step": checkpoint_step(final_checkpoint),
        "checkpoint": os.path.relpath(final_checkpoint) if final_checkpoint else None,
        "params": os.path.relpath(model_dir / "params.yaml"),
        "losses": losses,
        "training_images": inputs.training.images,
        "init_checkpoint": inputs.init_checkpoint,
        "freeze_backbone": cfg.model.effective_freeze_backbone,
        "mixed_precision": mixed,
    }
    fileio.write_json(final_json, result)
    return result
