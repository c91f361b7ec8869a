"""The frozen-backbone feature cache (`train.feature_cache`).

With `freeze_backbone` the backbone is a fixed function of its input image:
its multi-level outputs are computed once per training image and per
horizontal flip, stored by the image's content, and the FPN and head train on
them, as the TensorFlow retraining example trained its top layer on cached
"bottlenecks". The random flip stays (both flips are cached, and an epoch
shows each); the random scale jitter does not (each scale would be another
backbone pass), so every image is seen at its one scale.

The store is a folder the rule names (`--feature-cache`): one `.npz` per image
under a folder named by the digest of the backbone's weights and the input
size, so that a new checkpoint or size never reads another's features, and a
re-run after new images computes only theirs.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import fileio

log = logging.getLogger("tumbletrain.features")

FLIPS = (False, True)
# The targets RetinaNetTask.build_losses reads; the parser's other labels are
# for evaluation.
LOSS_LABELS = ("cls_targets", "box_targets", "cls_weights", "box_weights")
SHA_KEY = "image/key/sha256"
STORE_DTYPE = np.float16
# A backbone's folder unused this long goes when another backbone's is used: a
# new checkpoint or input size makes a new folder, and the old ones were kept
# for ever (a gigabyte per 1,000 images at 256 px).
STALE_DAYS = 30
DIGEST_FOLDER = re.compile(r"[0-9a-f]{16}")


def backbone_digest(backbone, input_size: int) -> str:
    """sha256 of the backbone's weights and the input size: what its outputs depend on.

    The weights in the order the architecture creates them, by shape and value:
    not by name, since Keras numbers the names of every model a process builds
    (a second model's `conv2d_53` is the first one's `conv2d`).
    """
    digest = hashlib.sha256(f"input_size={input_size}".encode())
    for variable in backbone.weights:
        digest.update(str(tuple(variable.shape)).encode())
        digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Store:
    """Per-image backbone outputs (both flips) under `root/<backbone digest>/`."""

    root: Path
    digest: str

    def path(self, sha256: str) -> Path:
        return self.root / self.digest[:16] / sha256[:2] / f"{sha256}.npz"

    @property
    def folder(self) -> Path:
        return self.root / self.digest[:16]

    def get(self, sha256: str) -> dict[str, np.ndarray] | None:
        """The stored outputs, or None: not there, or damaged (then removed, computed again)."""
        path = self.path(sha256)
        if not path.exists():
            return None
        try:
            with np.load(path) as stored:
                return {level: stored[level] for level in stored.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
            log.warning("feature cache file %s is damaged (%s): computed again", path, error)
            path.unlink(missing_ok=True)
            return None

    def tidy(self) -> None:
        """Before use: remove what killed writers left in this backbone's folder, and the
        folders of other backbones unused for STALE_DAYS; mark this one used."""
        self.folder.mkdir(parents=True, exist_ok=True)
        os.utime(self.folder)
        fileio.clean_leftovers(self.folder, logger=log)
        stale = time.time() - STALE_DAYS * 86400
        for other in self.root.iterdir():
            if (
                other != self.folder
                and DIGEST_FOLDER.fullmatch(other.name)
                and other.is_dir()
                and not other.is_symlink()
                and other.stat().st_mtime < stale
            ):
                log.info(
                    "removing %s: another backbone's features, unused for %d days",
                    other,
                    STALE_DAYS,
                )
                shutil.rmtree(other, ignore_errors=True)

    def put(self, sha256: str, features: dict[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **{level: value.astype(STORE_DTYPE) for level, value in features.items()})
        fileio.write_bytes(self.path(sha256), buffer.getvalue())


def fixed_parser(task_config, data_config):
    """The task's training parser without its random augmentation: deterministic labels."""
    from official.vision.dataloaders import retinanet_input

    model = task_config.model
    return retinanet_input.Parser(
        output_size=model.input_size[:2],
        min_level=model.min_level,
        max_level=model.max_level,
        num_scales=model.anchor.num_scales,
        aspect_ratios=model.anchor.aspect_ratios,
        anchor_size=model.anchor.anchor_size,
        dtype="float32",
        match_threshold=data_config.parser.match_threshold,
        unmatched_threshold=data_config.parser.unmatched_threshold,
        box_coder_weights=model.detection_generator.box_coder_weights,
        skip_crowd_during_training=data_config.parser.skip_crowd_during_training,
        max_num_instances=data_config.parser.max_num_instances,
        pad=data_config.parser.pad,
        keep_aspect_ratio=data_config.parser.keep_aspect_ratio,
    )


def parsed_records(task_config, data_config, files, batch_size: int):
    """Every record once, as (sha256, images [flips, ...], loss labels [flips, ...]), batched."""
    import tensorflow as tf
    from official.vision.dataloaders import tf_example_decoder
    from official.vision.ops import preprocess_ops

    decoder = tf_example_decoder.TfExampleDecoder()
    parser = fixed_parser(task_config, data_config)

    def parse(serialized):
        sha = tf.io.parse_single_example(
            serialized, {SHA_KEY: tf.io.FixedLenFeature([], tf.string)}
        )
        data = decoder.decode(serialized)
        images, labels = [], []
        for flip in FLIPS:
            flipped = dict(data)
            if flip:
                flipped["image"], flipped["groundtruth_boxes"], _ = (
                    preprocess_ops.random_horizontal_flip(
                        data["image"], data["groundtruth_boxes"], prob=1.0
                    )
                )
            image, label = parser._parse_train_data(flipped)
            images.append(image)
            labels.append({key: label[key] for key in LOSS_LABELS})
        stacked = tf.nest.map_structure(lambda *flips: tf.stack(flips), *labels)
        return sha[SHA_KEY], tf.stack(images), stacked

    dataset = tf.data.TFRecordDataset(list(files))
    return dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(1)


def decoder_levels(backbone, min_level: int) -> set[str]:
    """The backbone outputs the FPN reads: its inputs from min_level up.

    The FPN's finer inputs are left unconnected (see `dataset`), and the
    backbone returns a coarser endpoint the FPN does not take.
    """
    return {level for level in backbone.output_specs if int(level) >= min_level}


def held_bytes(model_config, images: int) -> int:
    """The bytes `compute` returns for `images` images, and training then holds in memory.

    Per image and flip: the levels the FPN reads, in the store's dtype, and the
    loss labels of every anchor (a class target, four box targets, two
    weights). From the config and the backbone's output shapes: a backbone is
    built, no image is read.
    """
    import tf_keras
    from official.vision.modeling import backbones

    backbone = backbones.factory.build_backbone(
        input_specs=tf_keras.layers.InputSpec(shape=[None, *model_config.input_size]),
        backbone_config=model_config.backbone,
        norm_activation_config=model_config.norm_activation,
    )
    levels = decoder_levels(backbone, model_config.min_level)
    feature = sum(int(np.prod(backbone.output_specs[level][1:])) for level in levels)
    height, width = model_config.input_size[:2]
    anchor = model_config.anchor
    anchors = (
        len(anchor.aspect_ratios)
        * anchor.num_scales
        * sum(
            (height // 2**level) * (width // 2**level)
            for level in range(model_config.min_level, model_config.max_level + 1)
        )
    )
    # The parser's class targets are int64; box targets and both weights float32.
    per_flip = feature * np.dtype(STORE_DTYPE).itemsize + anchors * (8 + 4 * 4 + 2 * 4)
    return images * len(FLIPS) * per_flip


def compute(task_config, data_config, files, backbone, store: Store, batch_size: int = 16):
    """Backbone outputs and loss labels of every (image, flip), from the store or computed.

    Returns numpy arrays with the flips laid out as separate examples
    (2 x images), features in the store's dtype.
    """
    import tensorflow as tf

    levels = decoder_levels(backbone, task_config.model.min_level)
    # Only the levels kept: the graph then skips the work of the others.
    forward = tf.function(
        lambda images: {k: v for k, v in backbone(images, training=False).items() if k in levels}
    )
    started = time.perf_counter()
    features: list[dict] = []
    labels: list[dict] = []
    misses = 0
    for shas, images, label in parsed_records(task_config, data_config, files, batch_size):
        shas = [s.decode() for s in shas.numpy()]
        # An entry of other levels (another model.min_level) is computed again.
        stored = [
            entry if entry and levels <= entry.keys() else None for entry in map(store.get, shas)
        ]
        if any(entry is None for entry in stored):
            flat = tf.reshape(images, [-1, *images.shape[2:]])
            out = {k: v.numpy() for k, v in forward(flat).items()}
            for i, sha in enumerate(shas):
                if stored[i] is None:
                    stored[i] = {k: v[2 * i : 2 * i + 2] for k, v in out.items()}
                    store.put(sha, stored[i])
                    misses += 1
        features += [{k: v.astype(STORE_DTYPE) for k, v in entry.items()} for entry in stored]
        labels.append(tf.nest.map_structure(lambda t: t.numpy(), label))
    log.info(
        "feature cache %s: %d images read from it, %d computed in %.1f s",
        store.root,
        len(features) - misses,
        misses,
        time.perf_counter() - started,
    )
    stacked_features = {k: np.concatenate([f[k] for f in features]) for k in features[0]}
    stacked_labels = tf.nest.map_structure(
        lambda *parts: np.concatenate([p.reshape(-1, *p.shape[2:]) for p in parts]), *labels
    )
    return stacked_features, stacked_labels


def dataset(features: dict, labels: dict, batch_size: int, dtype: str, unused: dict):
    """Shuffled batches of (features, loss labels), every (image, flip) once per epoch.

    The arrays are held once; each batch gathers its rows (a shuffle buffer of
    the examples themselves would hold a second copy). The backbone levels the
    FPN does not read (`unused`: level -> shape) are zeros.
    """
    import tensorflow as tf

    count = len(next(iter(features.values())))
    features = {k: tf.convert_to_tensor(v) for k, v in features.items()}
    labels = tf.nest.map_structure(tf.convert_to_tensor, labels)

    def gather(indices):
        batch = {k: tf.cast(tf.gather(v, indices), dtype) for k, v in features.items()}
        batch.update({k: tf.zeros([batch_size, *shape[1:]], dtype) for k, shape in unused.items()})
        return batch, tf.nest.map_structure(lambda t: tf.gather(t, indices), labels)

    indices = tf.data.Dataset.range(count).shuffle(count, reshuffle_each_iteration=True)
    indices = indices.repeat().batch(batch_size, drop_remainder=True)
    return indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


class TopLayers:
    """The model above its backbone (FPN and head), as RetinaNetTask.train_step uses a model.

    The backbone is frozen, so its regularisation loss is a constant with no
    gradient: the losses here are the FPN's and head's.
    """

    def __init__(self, model):
        self.decoder = model.decoder
        self.head = model.head

    def __call__(self, features, training=None):
        scores, boxes, attributes = self.head(
            self.decoder(features, training=training), training=training
        )
        outputs = {"cls_outputs": scores, "box_outputs": boxes}
        if attributes:
            outputs["attribute_outputs"] = attributes
        return outputs

    @property
    def losses(self):
        return self.decoder.losses + self.head.losses

    @property
    def trainable_variables(self):
        return self.decoder.trainable_variables + self.head.trainable_variables


def attach(task, params, root: Path, backbone_checkpoint: str | None) -> None:
    """Make `task` train its FPN and head on cached backbone outputs.

    The backbone's weights come from `backbone_checkpoint` (the start or the
    resumed run), else they are the random ones of a model built here, which
    a new run's initialisation then copies into the trained model, so that
    the features and the model's backbone are the same function.
    """
    import tensorflow as tf

    from . import experiment

    built = task.build_model()
    if backbone_checkpoint:
        experiment.restore_modules(built, backbone_checkpoint, ("backbone",))
    data = params.task.train_data
    store = Store(Path(root), backbone_digest(built.backbone, params.task.model.input_size[0]))
    store.tidy()
    arrays = compute(params.task, data, data.input_path.split(","), built.backbone, store)
    # As tensors once, the arrays let go: training holds one copy, not two.
    features, labels = tf.nest.map_structure(tf.convert_to_tensor, arrays)
    del arrays
    weights = built.backbone.get_weights()
    unused = {k: v for k, v in built.backbone.output_specs.items() if k not in features}
    build_inputs, train_step, initialize = task.build_inputs, task.train_step, task.initialize

    def cached_inputs(data_config, input_context=None):
        if not data_config.is_training:
            return build_inputs(data_config, input_context)
        return dataset(features, labels, data_config.global_batch_size, data_config.dtype, unused)

    def cached_step(inputs, model, optimizer, metrics=None):
        return train_step(inputs, TopLayers(model), optimizer, metrics)

    def same_backbone(model):
        initialize(model)
        model.backbone.set_weights(weights)

    task.build_inputs, task.train_step, task.initialize = cached_inputs, cached_step, same_backbone
