"""The frozen-backbone feature cache (train.feature_cache): its store, and training on it."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from test_model import LEARN_CLASSES, learn_raw, make_records, model_cli, train_args
from tumbletrain import cli, config, experiment, features, training

# Square demo images: the parser pads nothing, so a flipped image is the unflipped one mirrored.
SQUARE = {"min_side": 128, "max_side": 128}


def cached_raw(**train) -> dict:
    """A frozen backbone: train.feature_cache's default (auto) then uses the cache."""
    raw = learn_raw(**train)
    raw["model"]["freeze_backbone"] = True
    return raw


@pytest.fixture(scope="module")
def square_records(tmp_path_factory):
    base = tmp_path_factory.mktemp("square")
    raw = cached_raw()
    raw["demo"].update(SQUARE)
    for spec in raw["classes"].values():
        spec["demo"]["images"] = 6
    make_records(base, raw)
    return base, raw


def built(base: Path, raw: dict):
    """The task and a model, training on one record file (an order the Model Garden keeps)."""
    from official.core import task_factory

    cfg = config.parse(raw)
    split = training.data_split(sorted(base.glob("results/records/*_training.json"))[:1])
    params = experiment.build_experiment(cfg.model, cfg.train, len(cfg.classes), split, None)
    task = task_factory.get_task(params.task)
    return params, task, task.build_model(), split


def unaugmented_batch(task, params, images: int):
    """The Model Garden's own training input, its random flip and scale jitter off, in order."""
    data = params.task.train_data.replace(
        global_batch_size=images,
        shuffle_buffer_size=1,
        cycle_length=1,
        parser={"aug_rand_hflip": False, "aug_scale_min": 1.0, "aug_scale_max": 1.0},
    )
    return next(iter(task.build_inputs(data)))


def test_cached_features_are_the_backbones_forward(square_records, tmp_path, caplog):
    import tensorflow as tf

    base, raw = square_records
    params, task, model, split = built(base, raw)
    digest = features.backbone_digest(model.backbone, 128)
    store = features.Store(tmp_path, digest)
    data = params.task.train_data
    with caplog.at_level(logging.INFO, logger="tumbletrain.features"):
        cached, labels = features.compute(params.task, data, split.files, model.backbone, store)
    assert f"0 images read from it, {split.images} computed" in caplog.text
    assert all(len(v) == 2 * split.images for v in cached.values())
    # The memory cap's figure, from the config and the backbone's shapes alone.
    arrays = [*cached.values(), *tf.nest.flatten(labels)]
    assert features.held_bytes(params.task.model, split.images) == sum(a.nbytes for a in arrays)
    assert len(list(tmp_path.rglob("*.npz"))) == split.images

    images, mg_labels = unaugmented_batch(task, params, split.images)
    forward = model.backbone(images, training=False)
    mirrored = model.backbone(tf.image.flip_left_right(images), training=False)
    for level, value in ((k, v) for k, v in forward.items() if k in cached):
        # Rows 0, 2, 4...: the images as the records hold them; 1, 3, 5...: mirrored.
        np.testing.assert_allclose(cached[level][0::2], value.numpy(), rtol=0.02, atol=0.02)
        np.testing.assert_allclose(cached[level][1::2], mirrored[level].numpy(), atol=0.05)
    for key in features.LOSS_LABELS:
        for ours, theirs in zip(
            tf.nest.flatten(labels[key]), tf.nest.flatten(mg_labels[key]), strict=True
        ):
            np.testing.assert_allclose(ours[0::2], theirs.numpy(), atol=1e-5)
    # The FPN reads only the levels kept; the finer ones are zeros in training.
    specs = model.backbone.output_specs
    assert set(cached) == {k for k in specs if int(k) >= params.task.model.min_level}
    unused = {k: v for k, v in forward.items() if k in specs and k not in cached}
    assert unused, "MobileNetV2 has a level below the FPN's"
    zeros = {k: tf.zeros_like(v) for k, v in unused.items()}
    kept = {k: tf.constant(v[0::2], tf.float32) for k, v in cached.items()}
    for ours, theirs in zip(
        tf.nest.flatten(model.decoder({**kept, **zeros})),
        tf.nest.flatten(model.decoder(forward)),
        strict=True,
    ):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=0.05)

    # A second run reads every image from the store and gets the same arrays.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tumbletrain.features"):
        again, _ = features.compute(params.task, data, split.files, model.backbone, store)
    assert f"{split.images} images read from it, 0 computed" in caplog.text
    for level in cached:
        np.testing.assert_array_equal(again[level], cached[level])

    # Other backbone weights: another digest, so another folder.
    _, _, other, _ = built(base, raw)
    assert features.backbone_digest(other.backbone, 128) != digest
    # The same weights in a model built later (Keras numbers its names on): the same.
    assert other.backbone.weights[0].name != model.backbone.weights[0].name
    other.backbone.set_weights(model.backbone.get_weights())
    assert features.backbone_digest(other.backbone, 128) == digest


def test_feature_cache_auto_uses_it_where_it_can_and_true_insists(caplog):
    held = 1.5e9  # bytes the cache would hold; the default cap is 2 GB

    def use(raw, folder=Path("cache")):
        return training.use_feature_cache(config.parse(raw), folder, lambda: held)

    assert config.parse(cached_raw()).train.feature_cache == "auto"
    with caplog.at_level(logging.INFO, logger="tumbletrain.training"):
        assert use(cached_raw()) is True
    assert "train.feature_cache auto: on (1.5 GB in memory)" in caplog.text
    trained = cached_raw()
    trained["model"]["freeze_backbone"] = False
    capped = cached_raw()
    capped["train"]["feature_cache_max_gb"] = 1
    cases = [
        (trained, Path("cache"), "the backbone trains", "model.freeze_backbone: true"),
        (cached_raw(workers=2), Path("cache"), "several workers train", "one worker"),
        (cached_raw(), None, "no --feature-cache folder", "no --feature-cache folder was given"),
        (
            capped,
            Path("cache"),
            "its 1.5 GB would pass train.feature_cache_max_gb, 1",
            "would hold 1.5 GB in memory, above train.feature_cache_max_gb (1)",
        ),
    ]
    for raw, folder, why, fix in cases:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="tumbletrain.training"):
            assert use(raw, folder) is False, why
        assert f"train.feature_cache auto: off ({why})" in caplog.text
        raw["train"]["feature_cache"] = True
        # The config refuses what it can see, before any job; the rest, the command.
        refused_by_config = why in ("the backbone trains", "several workers train")
        with pytest.raises(config.ConfigError if refused_by_config else cli.UserError) as error:
            use(raw, folder)
        assert fix in str(error.value)
        raw["train"]["feature_cache"] = False
        assert use(raw, folder) is False
    off = cached_raw()
    off["train"]["feature_cache"] = False
    assert use(off) is False


PRETRAIN_STEPS = 300
CACHED_STEPS = 300


@pytest.mark.slow
def test_training_on_cached_features_learns(tmp_path):
    """A fresh FPN and head, trained on the cached outputs of a trained, frozen backbone, detect.

    The backbone comes from a full training of the same data (a random frozen
    backbone's features do not separate the shapes: AP50 0.0 in 300 steps).
    """
    schedule = {"checkpoint_every": PRETRAIN_STEPS, "eval_every": PRETRAIN_STEPS}
    pretrain = learn_raw(run="pretrain", steps=PRETRAIN_STEPS, **schedule)
    make_records(tmp_path, pretrain)
    model_cli(tmp_path, pretrain, *train_args("pretrain", classes=LEARN_CLASSES))
    prefix = tmp_path / f"results/train/pretrain/ckpt-{PRETRAIN_STEPS}"
    (tmp_path / "checkpoint.json").write_text(json.dumps({"prefix": str(prefix)}))

    raw = cached_raw(steps=CACHED_STEPS, checkpoint_every=CACHED_STEPS, eval_every=CACHED_STEPS)
    raw["model"]["init_modules"] = ["backbone"]
    extra = ["--checkpoint-json", "checkpoint.json", "--feature-cache", "features"]
    result = model_cli(tmp_path, raw, *train_args("learn", extra, LEARN_CLASSES))
    assert "train.feature_cache auto: on" in result.stderr, result.stderr[-3000:]
    assert re.search(r"0 images read from it, \d+ computed", result.stderr), result.stderr[-3000:]
    final = json.loads((tmp_path / "results/train/learn/final.json").read_text())
    assert final["step"] == CACHED_STEPS and final["freeze_backbone"] is True
    assert final["start"]["modules"] == ["backbone"]
    validation = training.scalar_summaries(tmp_path / "results/train/learn/validation")
    # A fresh head detects nothing (AP50 0.0); one run: 0.59, the backbone's own training 0.47.
    assert validation["AP50"][-1][1] >= 0.4, validation["AP50"]


def test_the_feature_cache_is_part_of_the_fingerprint_only_when_on(square_records):
    base, raw = square_records
    split = training.data_split(sorted(base.glob("results/records/*_training.json")))
    inputs = training.TrainInputs(split, None, None)
    on = training.fingerprint(config.parse(raw), inputs, False, cached=True)
    off = training.fingerprint(config.parse(raw), inputs, False, cached=False)
    assert on["fingerprint"] != off["fingerprint"]
    # Runs made before the option keep their fingerprint (no new key when off).
    assert "feature_cache" not in off["parts"]["train"]


def test_a_damaged_cache_file_is_computed_again_and_leftovers_and_stale_folders_go(
    tmp_path, dead_writer, caplog
):
    """A truncated .npz crashed training with a traceback naming no file; a killed
    run's temporary files and old backbones' folders stayed for ever (issue #27)."""
    import os
    import time

    store = features.Store(tmp_path, "ab" * 32)
    sha = "cd" * 32
    store.put(sha, {"3": np.ones((2, 4, 4, 8), np.float32)})
    path = store.path(sha)
    path.write_bytes(path.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="tumbletrain.features"):
        assert store.get(sha) is None
    assert str(path) in caplog.text and "damaged" in caplog.text
    assert not path.exists(), "removed, so the next run computes it"
    leftover = path.with_name(f".{sha}.npz.{dead_writer}.0a1b2c3d.tmp")
    leftover.write_bytes(b"partial")
    old, recent = tmp_path / ("ef" * 8), tmp_path / ("01" * 8)
    for folder in (old, recent):
        (folder / "00").mkdir(parents=True)
    stale = time.time() - (features.STALE_DAYS + 1) * 86400
    os.utime(old, (stale, stale))
    mine = tmp_path / "notes"  # not a backbone's folder: never touched
    mine.mkdir()
    os.utime(mine, (stale, stale))
    store.tidy()
    assert not leftover.exists() and not old.exists()
    assert recent.is_dir() and mine.is_dir() and store.folder.is_dir()


def test_a_damaged_run_json_is_one_error_naming_it(tmp_path):
    (tmp_path / training.RUN_JSON).write_text('{"fingerprint": "ab')
    with pytest.raises(cli.UserError, match=re.escape(str(tmp_path / training.RUN_JSON))):
        training.read_run(tmp_path)
