"""Our config becomes a Model Garden experiment: RetinaNet with a MobileNet and a separable FPN.

The default architecture is exactly the one the Model Garden's COCO
`mobilenetv2_ssd` checkpoint was trained with
(official/vision/configs/experiments/retinanet/coco_mobilenetv2_tpu.yaml), so
that checkpoint restores into it. The experiment is written as `params.yaml`
beside the checkpoints and can be re-run with `official/vision/train.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import cli
from . import config as tt_config

EXPERIMENT = "retinanet_mobile_coco"

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


def build_experiment(
    model: tt_config.ModelConfig,
    train: tt_config.TrainConfig,
    num_classes: int,
    training: DataSplit,
    validation: DataSplit | None,
    init_checkpoint: str | None = None,
    mixed_precision: bool = False,
):
    """The ExperimentConfig for our classes, records and schedule."""
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
            "init_checkpoint_modules": list(model.init_modules)
            if "all" not in model.init_modules
            else "all",
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
