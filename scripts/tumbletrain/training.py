"""Fine-tuning (or training from scratch) through the Model Garden's own trainer.

`train_lib.run_experiment` owns the loop, the checkpoints and the TensorBoard
summaries. Checkpoints are never Snakemake outputs: Snakemake would delete
them when a run fails.

A run directory holds one training and its `run.json`, which records the
fingerprint of what the training learned from: the records' content, the
label map and the config that shapes the model. Its checkpoints are resumed
only under the same fingerprint (an interrupted run continues; a finished one
has nothing left to do). Under another fingerprint the directory's training
moves to `history/` and a new one starts, from the previous finished model
(`train.warm_start: previous`), from `model.checkpoint`, or from nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import cli, distribute, experiment, fileio, modelclasses
from . import config as tt_config

log = logging.getLogger("tumbletrain.training")


RUN_JSON = "run.json"
HISTORY = "history"
# The train settings that change what a run learns; the others (where it runs,
# how often it saves, which checkpoint is picked) do not start a new run.
FINGERPRINT_TRAIN_KEYS = (
    "steps",
    "batch_size",
    "learning_rate",
    "warmup_steps",
    "warm_start",
    "warm_start_steps",
)

# The share of train.steps a warm start trains when train.warm_start_steps is
# unset. A fresh classifier layer must learn every class again from the
# restored features: on the learning test's demo a quarter of the steps left
# one old class at AP50 0.49, half kept every class above 0.5.
WARM_START_SHARE = 0.25
WARM_START_SHARE_NEW_CLASSIFIER = 0.5


@dataclass(frozen=True)
class TrainInputs:
    training: experiment.DataSplit
    validation: experiment.DataSplit | None
    init_checkpoint: str | None


@dataclass(frozen=True)
class Start:
    """Where a new training starts: which checkpoint gives which modules, for how many steps."""

    source: str  # previous | checkpoint | none
    checkpoint: str | None
    modules: tuple[str, ...]
    steps: int

    def describe(self) -> str:
        if not self.checkpoint or not self.modules:
            return "every module starts from random weights"
        fresh = [m for m in experiment.MODULES if m not in self.modules]
        text = f"{', '.join(self.modules)} restored from {self.checkpoint}"
        return text + (f"; {', '.join(fresh)} start from random weights" if fresh else "")


def file_digest(path: str | Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def fingerprint(
    cfg: tt_config.WorkflowConfig, inputs: TrainInputs, mixed: bool, cached: bool
) -> dict:
    """What defines a run, and its sha256: records' content, label map, model-shaping config."""
    splits = [split for split in (inputs.training, inputs.validation) if split]
    parts = {
        "records": {Path(f).name: file_digest(f) for split in splits for f in sorted(split.files)},
        "label_map": [[c.label_id, c.name] for c in cfg.classes],
        "model": dataclasses.asdict(cfg.model),
        "train": {
            **{key: getattr(cfg.train, key) for key in FINGERPRINT_TRAIN_KEYS},
            "mixed_precision": mixed,
            # Training on cached features drops the scale jitter: another run.
            # Only when on, so that the runs made before the option keep their fingerprint.
            **({"feature_cache": True} if cached else {}),
        },
    }
    text = json.dumps(parts, sort_keys=True)
    # The parts as run.json stores them (lists, not the config's tuples), so that
    # `changes` compares a stored fingerprint with a new one like for like.
    return {"fingerprint": hashlib.sha256(text.encode()).hexdigest(), "parts": json.loads(text)}


def changes(old: dict, new: dict) -> str:
    """What differs between two fingerprints' parts, for the log."""
    if "parts" not in old:
        return "its checkpoints have no fingerprint (made before tumbletrain recorded one)"
    before, after = old["parts"], new["parts"]
    said = []
    records = sorted(
        name
        for name in set(before["records"]) | set(after["records"])
        if before["records"].get(name) != after["records"].get(name)
    )
    if records:
        shown = ", ".join(records[:5]) + (
            f" and {len(records) - 5} more" if len(records) > 5 else ""
        )
        said.append(f"records changed: {shown}")
    if before["label_map"] != after["label_map"]:
        said.append("classes changed")
    said += [f"{key} config changed" for key in ("model", "train") if before[key] != after[key]]
    return "; ".join(said) or "its fingerprint differs"


def architecture(params) -> dict:
    """The model's config except what a warm start can change: the classes and post-processing."""
    model = params.task.model.as_dict()
    for key in ("num_classes", "detection_generator"):
        model.pop(key, None)
    return json.loads(json.dumps(model))


def read_run(folder: Path) -> dict | None:
    path = folder / RUN_JSON
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as error:  # truncated (a full disk, a copy cut short), not UTF-8
        raise cli.UserError(
            f"{path} is damaged ({error}); move {folder} aside to start the run afresh"
        ) from None


def archive(model_dir: Path) -> Path:
    """Move the run directory's training (everything but its history) into history/NNNN."""
    history = model_dir / HISTORY
    history.mkdir(exist_ok=True)
    numbers = [int(p.name) for p in history.iterdir() if p.name.isdigit()]
    target = history / f"{max(numbers, default=0) + 1:04d}"
    target.mkdir()
    for entry in model_dir.iterdir():
        if entry.name != HISTORY:
            entry.rename(target / entry.name)
    return target


def prune_history(model_dir: Path, keep: int) -> None:
    history = model_dir / HISTORY
    if not history.is_dir():
        return
    runs = sorted((p for p in history.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    for old in runs[: max(len(runs) - keep, 0)]:
        log.info("removing %s (train.keep_runs: %d)", old, keep)
        shutil.rmtree(old)


def previous_run(model_dir: Path) -> tuple[Path, dict] | None:
    """The newest finished run in the history, and its run.json."""
    history = model_dir / HISTORY
    if not history.is_dir():
        return None
    runs = sorted((p for p in history.iterdir() if p.name.isdigit()), key=lambda p: -int(p.name))
    for folder in runs:
        state = read_run(folder)
        if state and state.get("finished"):
            return folder, state
    return None


def plan_start(
    cfg: tt_config.WorkflowConfig,
    inputs: TrainInputs,
    model_dir: Path,
    current: dict,
    arch: dict,
) -> Start:
    """Where a new training starts, as train.warm_start asks and the previous run allows."""
    if inputs.init_checkpoint and cfg.train.warm_start != "none":
        base = Start(
            "checkpoint",
            inputs.init_checkpoint,
            experiment.expand_modules(cfg.model.init_modules),
            cfg.train.steps,
        )
    else:
        base = Start("none", None, (), cfg.train.steps)
    if cfg.train.warm_start != "previous":
        return base
    found = previous_run(model_dir)
    if found is None:
        log.info("no finished earlier training of this run to warm-start from")
        return base
    folder, state = found
    if state.get("architecture") != arch:
        log.warning(
            "the architecture changed since %s (model config: backbone, input size or layers); "
            "warm start from %s instead",
            folder,
            "model.checkpoint" if base.checkpoint else "random weights",
        )
        return base
    modules = experiment.MODULES
    share = WARM_START_SHARE
    if state["parts"]["label_map"] != current["parts"]["label_map"]:
        log.info(
            "classes changed from %s to %s: the classifier layer starts fresh",
            [name for _, name in state["parts"]["label_map"]],
            [name for _, name in current["parts"]["label_map"]],
        )
        modules = tuple(m for m in modules if m != "classifier")
        share = WARM_START_SHARE_NEW_CLASSIFIER
    steps = cfg.train.warm_start_steps or max(1, int(cfg.train.steps * share))
    return Start("previous", str(folder / state["finished"]["checkpoint"]), modules, steps)


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
    """An Orbit train action that counts steps into cli.Progress, with the loop's loss.

    Orbit calls train actions after every `steps_per_loop` steps, with the
    loop's losses; the step is counted here rather than read from the trainer,
    which `run_experiment` creates out of reach.
    """

    def __init__(
        self, start: int, total: int, steps_per_loop: int, every_s: float = cli.PROGRESS_EVERY_S
    ):
        self.total = total
        self.steps_per_loop = steps_per_loop
        self.bar = cli.Progress(
            "train", total=total, unit="steps", logger=log, every_s=every_s, initial=start
        )

    def __call__(self, output: dict) -> None:
        done = min(self.steps_per_loop, self.total - self.bar.done)
        self.bar.update(done, total_loss=float(output.get("total_loss", float("nan"))))

    def close(self) -> None:
        self.bar.close()


def use_feature_cache(
    cfg: tt_config.WorkflowConfig, feature_cache: Path | None, held: Callable[[], int]
) -> bool:
    """Whether this run trains on cached backbone outputs (train.feature_cache).

    `auto` uses the cache whenever it can: a frozen backbone, one worker, a
    folder to keep it in, and its arrays (`held()` bytes, computed only then)
    within train.feature_cache_max_gb. `true` asks for it: the config refuses
    it without the first two (`WorkflowConfig.feature_cache_unmet`), this
    without a folder or above the cap.
    """
    wanted = cfg.train.feature_cache
    unmet = [why for why, _ in cfg.feature_cache_unmet()]
    if feature_cache is None:
        if wanted is True:
            raise cli.UserError("train.feature_cache is on but no --feature-cache folder was given")
        unmet.append("no --feature-cache folder")
    gb = 0.0
    if wanted is not False and not unmet:
        gb, cap = held() / 1e9, cfg.train.feature_cache_max_gb
        if gb > cap:
            if wanted is True:
                raise cli.UserError(
                    f"train.feature_cache would hold {gb:.3g} GB in memory, above "
                    f"train.feature_cache_max_gb ({cap:g}); raise it if the machine has the "
                    "memory, or set train.feature_cache: false"
                )
            unmet.append(f"its {gb:.3g} GB would pass train.feature_cache_max_gb, {cap:g}")
    used = wanted is not False and not unmet
    if wanted == "auto":
        log.info(
            "train.feature_cache auto: %s",
            f"off ({unmet[0]})" if unmet else f"on ({gb:.3g} GB in memory)",
        )
    return used


def restore_start(start: Start, model) -> None:
    """The trainer's initialisation of a new run (it is not called when resuming)."""
    if start.checkpoint and start.modules:
        experiment.restore_modules(model, start.checkpoint, start.modules)
    log.info("%s start: %s", start.source, start.describe())


def verify_restore(params, start: Start) -> None:
    """Build the model and restore the start now: a mismatch fails before any step."""
    import tensorflow as tf
    from official.core import task_factory

    model = task_factory.get_task(params.task).build_model()
    try:
        experiment.restore_modules(model, start.checkpoint, start.modules)
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        detail = str(error).splitlines()[0][:300]
        # Let TensorFlow report the unmatched values now, so the error below
        # stays the last line of the log.
        del model
        gc.collect()
        raise cli.UserError(
            f"checkpoint {start.checkpoint} does not match the model "
            f"(backbone {params.task.model.backbone.mobilenet.model_id}, "
            f"modules {list(start.modules)}): {detail}; "
            "use a checkpoint of the same architecture or change model.init_modules"
        ) from None


def selected_checkpoint(model_dir: Path, select: str) -> dict:
    """The last checkpoint, the best one (by validation AP), and which of them is used."""
    import tensorflow as tf

    last_path = tf.train.latest_checkpoint(str(model_dir))
    last = {"step": checkpoint_step(last_path), "checkpoint": Path(last_path).name}
    best = None
    info = model_dir / experiment.BEST_SUBDIR / "info.json"
    best_path = tf.train.latest_checkpoint(str(model_dir / experiment.BEST_SUBDIR))
    if info.exists() and best_path:
        logs = json.loads(info.read_text())
        best = {
            "step": int(logs["best_ckpt_global_step"]),
            "checkpoint": f"{experiment.BEST_SUBDIR}/{Path(best_path).name}",
            experiment.BEST_METRIC: float(logs[experiment.BEST_METRIC]),
        }
    # AP 0 at every validation (nothing found yet) makes the first check "best":
    # the last checkpoint has trained longer and is no worse.
    useful = best is not None and best[experiment.BEST_METRIC] > 0
    chosen = best if select == "best" and useful else last
    return {"select": "best" if chosen is best else "last", "last": last, "best": best, **chosen}


def finish(
    cfg: tt_config.WorkflowConfig,
    inputs: TrainInputs,
    model_dir: Path,
    state: dict,
    mixed: bool,
) -> dict:
    """final.json's content, from what the run directory holds."""
    chosen = selected_checkpoint(model_dir, cfg.train.select)
    losses = {
        tag: values[-1][1]
        for tag, values in scalar_summaries(model_dir / "train").items()
        if values and "loss" in tag
    }
    start = state["start"]
    return {
        "step": chosen["last"]["step"],
        "checkpoint": os.path.relpath(model_dir / chosen["checkpoint"]),
        "selected": {
            "select": chosen["select"],
            "step": chosen["step"],
            experiment.BEST_METRIC: chosen.get(experiment.BEST_METRIC),
        },
        "last": chosen["last"],
        "best": chosen["best"],
        "fingerprint": state["fingerprint"],
        "start": start,
        "params": os.path.relpath(model_dir / "params.yaml"),
        # The classes it was trained on: what every reader of the model names them by.
        "classes": modelclasses.record(cfg.classes),
        "losses": losses,
        "training_images": inputs.training.images,
        "init_checkpoint": start["checkpoint"],
        "freeze_backbone": cfg.model.effective_freeze_backbone,
        "mixed_precision": mixed,
    }


def write_if_changed(path: Path, data: dict) -> None:
    """An unchanged re-run rewrites nothing."""
    if path.exists() and json.loads(path.read_text()) == data:
        return
    fileio.write_json(path, data)


def prepare_run(
    cfg: tt_config.WorkflowConfig,
    inputs: TrainInputs,
    model_dir: Path,
    current: dict,
    arch: dict,
) -> tuple[dict, Start, str | None]:
    """The run's state, where it starts, and the checkpoint it resumes (None: a new training)."""
    import tensorflow as tf

    state = read_run(model_dir)
    resuming = tf.train.latest_checkpoint(str(model_dir))
    if state and state["fingerprint"] == current["fingerprint"] and resuming:
        start = Start(**{**state["start"], "modules": tuple(state["start"]["modules"])})
        return state, start, resuming
    # A run killed before its first checkpoint left nothing worth keeping.
    if resuming or (state and state["fingerprint"] != current["fingerprint"]):
        moved = archive(model_dir)
        log.info(
            "the inputs changed since the training in %s (%s): it is kept in %s "
            "and training starts again",
            model_dir,
            changes(state or {}, current),
            moved,
        )
    start = plan_start(cfg, inputs, model_dir, current, arch)
    state = {**current, "architecture": arch, "start": dataclasses.asdict(start), "finished": None}
    return state, start, None


def train(
    cfg: tt_config.WorkflowConfig,
    inputs: TrainInputs,
    model_dir: Path,
    final_json: Path,
    feature_cache: Path | None = None,
) -> dict:
    import tensorflow as tf
    from official.core import task_factory, train_utils

    from . import features

    if inputs.training.images == 0:
        raise cli.UserError(
            "there are no training images; check each class's summary.json of the annotations stage"
        )
    tf.config.threading.set_inter_op_parallelism_threads(cfg.train.threads)
    tf.config.threading.set_intra_op_parallelism_threads(cfg.train.threads)
    # Before any other op: several workers must join their cluster at start-up.
    strategy = distribute.make_strategy(cfg.train)
    mixed = mixed_precision_wanted(cfg.train)

    def experiment_for(steps: int, start: Start | None = None):
        return experiment.build_experiment(
            cfg.model,
            dataclasses.replace(cfg.train, steps=steps),
            len(cfg.classes),
            inputs.training,
            inputs.validation,
            start.checkpoint if start else None,
            mixed_precision=mixed,
            init_modules=start.modules if start else None,
        )

    planned = experiment_for(cfg.train.steps)
    cached = use_feature_cache(
        cfg,
        feature_cache,
        lambda: features.held_bytes(planned.task.model, inputs.training.images),
    )
    current = fingerprint(cfg, inputs, mixed, cached)
    model_dir.mkdir(parents=True, exist_ok=True)
    # The chief archives a finished run first; the other workers then plan from what it left.
    state, start, resuming = distribute.chief_first(
        strategy,
        prepare_run,
        cfg,
        inputs,
        model_dir,
        current,
        architecture(planned),
    )
    work_dir = distribute.worker_dir(strategy, model_dir)
    if resuming and checkpoint_step(resuming) >= start.steps and state["finished"]:
        if not distribute.is_chief(strategy):
            return {}  # the chief writes final.json
        log.info(
            "already trained to step %d on these inputs (fingerprint %s): nothing to train",
            checkpoint_step(resuming),
            current["fingerprint"][:12],
        )
        result = finish(cfg, inputs, model_dir, state, mixed)
        write_if_changed(final_json, result)
        return result
    if resuming:
        log.info("resuming from %s (same fingerprint %s)", resuming, current["fingerprint"][:12])
    params = experiment_for(start.steps, start)
    if not resuming and start.checkpoint:
        verify_restore(params, start)
    train_utils.serialize_config(params, str(work_dir))
    fileio.write_json(work_dir / RUN_JSON, state)
    if mixed:
        tf.keras.mixed_precision.set_global_policy("mixed_float16")
    with strategy.scope():
        task = task_factory.get_task(params.task, logging_dir=str(work_dir))
    # The trainer calls task.initialize for a new run only; ours restores the
    # planned modules (the Model Garden's stops at backbone and decoder).
    task.initialize = functools.partial(restore_start, start)
    if cached:
        backbone = "backbone" in start.modules and start.checkpoint
        features.attach(task, params, feature_cache, resuming or backbone or None)
    mode = "train_and_eval" if inputs.validation and inputs.validation.images else "train"
    progress = TrainingProgress(
        checkpoint_step(resuming), start.steps, params.trainer.steps_per_loop
    )
    try:
        distribute.run_experiment(
            distribution_strategy=strategy,
            task=task,
            mode=mode,
            params=params,
            model_dir=str(work_dir),
            train_actions=[progress],
        )
    finally:
        progress.close()
    if not distribute.is_chief(strategy):
        return {}  # the chief writes final.json
    chosen = selected_checkpoint(model_dir, cfg.train.select)
    state["finished"] = {"step": chosen["last"]["step"], "checkpoint": chosen["checkpoint"]}
    fileio.write_json(model_dir / RUN_JSON, state)
    result = finish(cfg, inputs, model_dir, state, mixed)
    write_if_changed(final_json, result)
    prune_history(model_dir, cfg.train.keep_runs)
    return result
