"""Our config becomes a Model Garden experiment: RetinaNet with a MobileNet and a separable FPN.

The default architecture is exactly the one the Model Garden's COCO
`mobilenetv2_ssd` checkpoint was trained with
(official/vision/configs/experiments/retinanet/coco_mobilenetv2_tpu.yaml), so
that checkpoint restores into it. The experiment is written as `params.yaml`
beside the checkpoints and can be re-run with `official/vision/train.py`.

Loading a trained model and restoring parts of a checkpoint into a new one
live here too, next to the config that builds the model.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import cli
from . import config as tt_config

EXPERIMENT = "retinanet_mobile_coco"
# What a checkpoint can give a new model. `head` is the head without its
# classifier layer (the towers and the box regressor), which does not depend on
# the classes, so it restores across a change of classes; `classifier` is the
# last layer, whose outputs are the classes.
MODULES = ("backbone", "decoder", "head", "classifier")
# The head's layers that do not depend on the number of classes
# (RetinaNetHead's attributes, as MediaPipe Model Maker restores them).
HEAD_CLASS_FREE = ("_cls_convs", "_cls_norms", "_box_convs", "_box_norms", "_box_regressor")
# The validation metric that picks the best checkpoint.
BEST_METRIC = "AP"
BEST_SUBDIR = "best"

# coco_mobilenetv2_tpu.yaml's model, which mobilenetv2_ssd_i256_ckpt was trained with.
DEFAULT_ARCHITECTURE = {
    "task": {
        "losses": {"l2_weight_decay": 3.0e-05},
        "model": {
            "anchor": {"anchor_size": 3, "aspect_ratios": [0.5, 1.0, 2.0], "num_scales": 3},
            "backbone": {
                "type": "mobilenet",
                "mobilenet": {"model_id": "MobileNetV2", "filter_size_scale": 1.0},
            },
            "decoder": {
                "type": "fpn",
                "fpn": {"num_filters": 128, "use_separable_conv": True, "use_keras_layer": True},
            },
            "head": {"num_convs": 4, "num_filters": 128, "use_separable_conv": True},
            "input_size": [256, 256, 3],
            "min_level": 3,
            "max_level": 7,
            "norm_activation": {
                "activation": "relu6",
                "norm_epsilon": 0.001,
                "norm_momentum": 0.99,
                "use_sync_bn": False,
            },
        },
    }
}


@dataclass(frozen=True)
class DataSplit:
    files: tuple[str, ...]
    images: int


def deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def steps_per_loop(train: tt_config.TrainConfig) -> int:
    """Orbit runs this many steps per call; checkpoints and evals fall on its multiples."""
    return math.gcd(train.steps, train.checkpoint_every, train.eval_every, 50)


def expand_modules(modules: Collection[str]) -> tuple[str, ...]:
    """The modules named, in MODULES' order; `all` is every one."""
    return MODULES if "all" in modules else tuple(m for m in MODULES if m in modules)


def init_modules_param(modules: Collection[str]) -> str | list[str]:
    """`init_checkpoint_modules` as the Model Garden's own trainer reads it from params.yaml.

    Its trainer restores `backbone` and `decoder` from such a list and ignores
    the rest; `all` restores everything.
    """
    modules = expand_modules(modules)
    return "all" if modules == MODULES else list(modules)


def build_experiment(
    model: tt_config.ModelConfig,
    train: tt_config.TrainConfig,
    num_classes: int,
    training: DataSplit,
    validation: DataSplit | None,
    init_checkpoint: str | None = None,
    mixed_precision: bool = False,
    init_modules: Collection[str] | None = None,
):
    """The ExperimentConfig for our classes, records and schedule.

    `init_modules` (default: model.init_modules) says what `init_checkpoint`
    gives the model; `train.steps` is the length of this run.
    """
    from official.core import exp_factory
    from official.vision import registry_imports  # noqa: F401  (registers the experiments)

    params = exp_factory.get_exp_config(EXPERIMENT)
    params.override(DEFAULT_ARCHITECTURE, is_strict=False)
    dtype = "float16" if mixed_precision else "float32"
    loop = steps_per_loop(train)
    eval_batch = max(1, min(8, validation.images if validation else 8))
    ours = {
        "runtime": {"mixed_precision_dtype": dtype},
        "task": {
            "annotation_file": None,
            "per_category_metrics": True,
            "init_checkpoint": init_checkpoint,
            "init_checkpoint_modules": init_modules_param(
                model.init_modules if init_modules is None else init_modules
            ),
            "freeze_backbone": model.effective_freeze_backbone,
            "model": {
                # Label 0 is the background, so ids 1..N need N + 1 outputs.
                "num_classes": num_classes + 1,
                "input_size": [model.input_size, model.input_size, 3],
                "backbone": {"mobilenet": {"model_id": model.backbone}},
            },
            "train_data": {
                "input_path": ",".join(training.files),
                "global_batch_size": train.batch_size,
                "dtype": dtype,
                "is_training": True,
                "shuffle_buffer_size": max(64, min(training.images, 2000)),
                "parser": {"aug_rand_hflip": True, "aug_scale_min": 0.8, "aug_scale_max": 1.2},
            },
            "validation_data": {
                "input_path": ",".join(validation.files) if validation else "",
                "global_batch_size": eval_batch,
                "dtype": dtype,
                "is_training": False,
                "drop_remainder": False,
            },
        },
        "trainer": {
            "train_steps": train.steps,
            "steps_per_loop": loop,
            "summary_interval": loop,
            "checkpoint_interval": train.checkpoint_every,
            "validation_interval": train.eval_every,
            "validation_steps": math.ceil(validation.images / eval_batch) if validation else 0,
            "max_to_keep": 3,
            # The Model Garden keeps the checkpoint with the best validation
            # metric in its own folder, with the metrics in info.json.
            "best_checkpoint_export_subdir": BEST_SUBDIR if validation else "",
            "best_checkpoint_eval_metric": BEST_METRIC if validation else "",
            "best_checkpoint_metric_comp": "higher",
            "optimizer_config": {
                "optimizer": {"type": "sgd", "sgd": {"momentum": 0.9}},
                "learning_rate": {
                    "type": "cosine",
                    "cosine": {
                        "initial_learning_rate": train.learning_rate,
                        "decay_steps": train.steps,
                    },
                },
                "warmup": {
                    "type": "linear",
                    "linear": {
                        "warmup_steps": min(train.warmup_steps, max(train.steps - 1, 0)),
                        "warmup_learning_rate": train.learning_rate / 10,
                    },
                },
            },
        },
    }
    params.override(ours, is_strict=False)
    if model.overrides:
        params.override(model.overrides, is_strict=False)
    check(params)
    params.validate()
    params.lock()
    return params


def check(params) -> None:
    """Refuse, before any work, what the Model Garden would fail on late or silently."""
    task = params.task.model
    side = 2**task.max_level
    size = task.input_size[0]
    if size % side:
        raise cli.UserError(
            f"model.input_size {size} is not a multiple of 2**max_level = {side}; "
            f"use {max(side, round(size / side) * side)}"
        )


def load_params(params_yaml: Path, files: Sequence[str], images: int):
    """A training run's experiment, pointed at other records (for evaluation or export)."""
    import yaml
    from official.core import exp_factory
    from official.vision import registry_imports  # noqa: F401

    params = exp_factory.get_exp_config(EXPERIMENT)
    params.override(yaml.safe_load(Path(params_yaml).read_text()), is_strict=False)
    batch = max(1, min(8, images))
    params.override(
        {
            "task": {
                "validation_data": {
                    "input_path": ",".join(files),
                    "global_batch_size": batch,
                    "drop_remainder": False,
                },
                "init_checkpoint": None,
            },
            "trainer": {"validation_steps": math.ceil(images / batch)},
        },
        is_strict=False,
    )
    return params


def restore_model(params, checkpoint: str):
    """The task and its model with every variable of a trained checkpoint."""
    from official.core import task_factory

    task = task_factory.get_task(params.task)
    model = task.build_model()
    restore_modules(model, checkpoint, MODULES)
    return task, model


def module_items(model, modules: Collection[str]) -> dict:
    """The parts of a built RetinaNet model to restore, keyed as its checkpoints key them.

    The model's checkpoints (the trainer's and the published COCO one) hold
    `backbone`, `decoder` and `head` at their root. Without `classifier`, the
    head gives everything but its last layer; of a separable classifier the
    depthwise kernel, which does not depend on the classes, is kept too.
    """
    import tensorflow as tf

    modules = expand_modules(modules)
    items = {name: getattr(model, name) for name in ("backbone", "decoder") if name in modules}
    head = model.head
    if "head" in modules and "classifier" in modules:
        items["head"] = head
    elif "head" in modules:
        parts = {name: getattr(head, name) for name in HEAD_CLASS_FREE}
        classifier = head._classifier
        if hasattr(classifier, "depthwise_kernel"):
            parts["_classifier"] = tf.train.Checkpoint(depthwise_kernel=classifier.depthwise_kernel)
        items["head"] = tf.train.Checkpoint(**parts)
    elif "classifier" in modules:
        items["head"] = tf.train.Checkpoint(_classifier=head._classifier)
    return items


def restore_modules(model, checkpoint: str, modules: Collection[str]) -> None:
    """Restore the named modules of a checkpoint into a built model; all of them must match."""
    import tensorflow as tf

    items = module_items(model, modules)
    if items:
        tf.train.Checkpoint(**items).read(
            checkpoint
        ).expect_partial().assert_existing_objects_matched()
