"""SavedModel and TFLite export with the Model Garden's own export libraries.

The SavedModel has two signatures: `serving_default` takes a batch of uint8
images of any size (`image_tensor`), `serve_image_bytes` takes encoded
JPEG/PNG strings. The TFLite models follow the Model Garden's recipe (a
SavedModel with the TFLite detection post-processing op, converted in float
and with int8 post-training quantisation calibrated on training images), laid
out as TFLite detectors are (`TFLite_Detection_PostProcess`: boxes, classes,
scores, count) and carrying TFLite Model Metadata, so MediaPipe Tasks' and
LiteRT's clients run them as they are. `client_interface` is what export.json
tells a client about each file.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
import warnings
from pathlib import Path

import numpy as np

from . import cli, fileio, modelclasses, records

log = logging.getLogger("tumbletrain.export")

SIGNATURES = {"image_tensor": "serving_default", "image_bytes": "serve_image_bytes"}
# What an export writes, by its usual name (`--outdir` by hand; export.json names the
# TFLite models by theirs).
OUTPUTS = {
    "summary": modelclasses.EXPORT_SUMMARY,
    "saved_model": "saved_model",
    "tflite_float": "model_float.tflite",
    "tflite_int8": "model_int8.tflite",
    "labels": modelclasses.LABELS_FILE,
    "label_map": modelclasses.LABEL_MAP_FILE,
}
QUANTISATION = {"tflite_float": None, "tflite_int8": "int8"}
# Training images that calibrate the int8 model's activation ranges.
CALIBRATION_IMAGES = 100


def export_saved_model(params, checkpoint: str, export_dir: Path) -> Path:
    from official.vision.serving import export_saved_model_lib

    size = params.task.model.input_size[:2]
    with fileio.atomic_dir(export_dir) as staging:
        export_saved_model_lib.export_inference_graph(
            input_type="image_tensor",
            batch_size=None,
            input_image_size=size,
            params=params,
            checkpoint_path=checkpoint,
            export_dir=str(staging),
            function_keys=SIGNATURES,
        )
    return export_dir


# The TFLite models' input, as MediaPipe Tasks and most TFLite clients feed a detector:
# the RGB image stretched to the input size (bilinear), as float32 0..255. MediaPipe
# normalises with one mean and one std for every channel ("Per-channel image
# normalization is not available", image_preprocessing_graph.cc), so the Model Garden's
# per-channel normalisation is done inside the model, and the metadata says mean 0, std 1.
CLIENT_NORMALISATION = {"mean": [0.0], "std": [1.0]}
# TFLite_Detection_PostProcess's outputs, in order, as the TFLite detection convention
# (and MediaPipe's metadata writer) names them.
TFLITE_OUTPUTS = ("location", "category", "score", "number of detections")


def tflite_params(params):
    """The experiment with the TFLite post-processing op, laid out as TFLite clients read it.

    One class per detection (the best one), so the first `count` entries are the
    detections; anchors normalised, so boxes are fractions of the input, which
    MediaPipe maps back to the image.
    """
    tflite = copy.deepcopy(params)
    tflite.override(
        {
            "task": {
                "model": {
                    "detection_generator": {
                        "nms_version": "tflite",
                        "tflite_post_processing": {
                            "max_classes_per_detection": 1,
                            "normalize_anchor_coordinates": True,
                        },
                    }
                }
            }
        },
        is_strict=False,
    )
    return tflite


def client_module(params, size: list[int]):
    """The Model Garden's TFLite DetectionModule, normalising its 0..255 input itself."""
    import tensorflow as tf
    from official.vision.ops import preprocess_ops
    from official.vision.serving import detection

    class ClientInput(detection.DetectionModule):
        def serve(self, images):
            mean = tf.constant(preprocess_ops.MEAN_RGB, tf.float32)
            std = tf.constant(preprocess_ops.STDDEV_RGB, tf.float32)
            return super().serve((images - mean) / std)

    return ClientInput(params=params, batch_size=1, input_image_size=size, input_type="tflite")


def detection_layout(model: bytes, classes: int) -> bytes:
    """The converted model laid out as TFLite detectors are, for their clients.

    - TFLite_Detection_PostProcess is told that the scores hold `classes` classes
      after the background. The op skips the first `columns - num_classes` score
      columns (its label offset); the Model Garden gives it every column,
      background included, so the background was reported as a class (the issue
      saw it on 31 of 68 images). Now class i of the output is label id i + 1.
    - The model's outputs in the op's order (boxes, classes, scores, count), which
      the metadata names by position; the converter put count first.
    """
    from ai_edge_litert.tools import flatbuffer_utils
    from flatbuffers import flexbuffers

    tree = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    (subgraph,) = tree.subgraphs
    (op,) = [
        op
        for op in subgraph.operators
        if tree.operatorCodes[op.opcodeIndex].customCode == b"TFLite_Detection_PostProcess"
    ]
    options = flexbuffers.Loads(bytes(op.customOptions))
    options["num_classes"] = classes
    op.customOptions = list(flexbuffers.Dumps(options))
    if sorted(subgraph.outputs) != sorted(op.outputs):
        raise RuntimeError("the model's outputs are not TFLite_Detection_PostProcess's")
    subgraph.outputs = list(op.outputs)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(tree))


def _metadata_version_module():
    """MediaPipe 1.2.x wheels lack the compiled module its metadata populator imports
    (`mediapipe.tasks.cc.metadata.python._pywrap_metadata_version`), used only to stamp
    the metadata's minimum parser version. Give it the schema's own version, which every
    parser of this MediaPipe release reads (an older parser may refuse what it could read)."""
    import re
    import sys
    import types
    from importlib import resources

    name = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
    if name in sys.modules:
        return
    try:
        __import__(name)
        return
    except ImportError:
        pass
    schema = resources.files("mediapipe.tasks.metadata").joinpath("metadata_schema.fbs")
    version = re.search(r"Schema Semantic version: (\S+)", schema.read_text())[1]
    module = types.ModuleType(name)
    module.GetMinimumMetadataParserVersion = lambda _buffer: version
    for parent in ("mediapipe.tasks.cc", "mediapipe.tasks.cc.metadata", name.rsplit(".", 1)[0]):
        sys.modules.setdefault(parent, types.ModuleType(parent))
    sys.modules[name] = module


def with_metadata(model: bytes, labels: list[str]) -> bytes:
    """TFLite Model Metadata by MediaPipe's object detector writer: the input's
    normalisation, the label file, the outputs' names and box layout."""
    _metadata_version_module()
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer, object_detector

    names = metadata_writer.Labels()
    names.add(labels)
    writer = object_detector.MetadataWriter.create_for_models_with_nms(
        bytearray(model),
        input_norm_mean=CLIENT_NORMALISATION["mean"],
        input_norm_std=CLIENT_NORMALISATION["std"],
        labels=names,
    )
    written, _ = writer.populate()
    # Its temporary folder goes now, not at interpreter exit, when its __del__ fails.
    del writer
    return bytes(written)


def client_images(images: list, size: list[int]) -> list:
    """Decoded images as the TFLite models take them: stretched to the input size, bilinear,
    float32 0..255, a batch of one."""
    import tensorflow as tf

    return [
        tf.image.resize(tf.cast(pixels, tf.float32)[None], size, method="bilinear").numpy()
        for pixels in images
    ]


def export_tflite(
    params,
    checkpoint: str,
    outputs: dict[str, Path],
    labels: list[str],
    calibration: list,
    seconds: dict[str, float],
) -> dict[str, Path]:
    """Float and int8 TFLite models (at `outputs`' paths of `QUANTISATION`'s keys, by
    their usual names) with their metadata; int8 is calibrated on `calibration`
    (client inputs of training images). Each step's time is added to `seconds`."""
    import tensorflow as tf
    from official.vision.serving import export_saved_model_lib

    tflite = tflite_params(params)
    size = list(tflite.task.model.input_size[:2])
    work = outputs["tflite_float"].parent / ".tflite_saved_model"
    shutil.rmtree(work, ignore_errors=True)
    started = time.monotonic()
    export_saved_model_lib.export_inference_graph(
        input_type="tflite",
        batch_size=1,
        input_image_size=size,
        params=tflite,
        checkpoint_path=checkpoint,
        export_dir=str(work),
        export_module=client_module(tflite, size),
    )
    seconds["tflite_saved_model_s"] = time.monotonic() - started
    written = {}
    for key, quant in QUANTISATION.items():
        started = time.monotonic()
        converter = tf.lite.TFLiteConverter.from_saved_model(str(work))
        if quant == "int8":
            # The Model Garden's `int8` (export_tflite_lib.convert_tflite_model): integer
            # kernels with float fallback, float input and output; calibrated on the
            # images as clients feed them (its own calibration feeds normalised ones).
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([image] for image in calibration)
        data = detection_layout(converter.convert(), len(labels))
        fileio.write_bytes(outputs[key], with_metadata(data, labels))
        written[OUTPUTS[key]] = outputs[key]
        seconds[f"{key}_s"] = time.monotonic() - started
    shutil.rmtree(work, ignore_errors=True)
    return written


def first_record_images(input_path: str, count: int) -> list:
    """The first images of the records, decoded as the Model Garden's decoder does."""
    import tensorflow as tf
    from official.vision.dataloaders import tf_example_decoder

    decoder = tf_example_decoder.TfExampleDecoder()
    dataset = tf.data.TFRecordDataset(input_path.split(",")).take(count)
    return [decoder.decode(serialized)["image"].numpy() for serialized in dataset]


def network_outputs(params, model, images):
    """Box encodings and class scores for every anchor, as the TFLite op receives them,
    for client inputs (0..255, already at the input size)."""
    import tensorflow as tf
    from official.vision.ops import preprocess_ops

    normalised = (images - np.array(preprocess_ops.MEAN_RGB)) / np.array(preprocess_ops.STDDEV_RGB)
    size = tf.constant([list(params.task.model.input_size[:2])], tf.float32)
    out = model(tf.constant(normalised, tf.float32), image_shape=size, training=False)
    levels = sorted(out["cls_outputs"], key=int)
    classes = params.task.model.num_classes
    scores = [tf.reshape(out["cls_outputs"][level], [1, -1, classes]) for level in levels]
    boxes = [tf.reshape(out["box_outputs"][level], [1, -1, 4]) for level in levels]
    return tf.concat(boxes, 1).numpy(), tf.sigmoid(tf.concat(scores, 1)).numpy()


def tflite_network_outputs(path: Path, images):
    """The inputs of the TFLite model's post-processing op: its network's outputs."""
    import tensorflow as tf

    with warnings.catch_warnings():
        # It warns that keeping every tensor costs memory: here that is the point.
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(
            model_path=str(path), experimental_preserve_all_tensors=True
        )
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
    interpreter.invoke()
    # The interpreter has no public way to find an op's input tensors.
    (op,) = [
        op
        for op in interpreter._get_ops_details()
        if op["op_name"] == "TFLite_Detection_PostProcess"
    ]
    boxes, scores, _anchors = (interpreter.get_tensor(index) for index in op["inputs"])
    return boxes, scores


def tflite_agreement(params, checkpoint: str, tflite: dict[str, Path], images: list) -> dict:
    """How far each TFLite network's outputs are from the checkpoint's, on the same
    client inputs (`client_images`).

    The largest absolute differences of the box encodings and the class scores
    over every anchor, beside the range of the checkpoint's values: float
    models agree to rounding, int8 ones within their quantisation. The
    post-processing after these outputs (decoding, NMS) is TFLite's own op.
    """
    from .experiment import restore_model

    _, model = restore_model(params, checkpoint)
    errors = {name: {"box_encoding": 0.0, "score": 0.0} for name in tflite}
    spread = {"box_encoding": 0.0, "score": 0.0}
    for tensor in images:
        boxes, scores = network_outputs(params, model, tensor)
        spread["box_encoding"] = max(spread["box_encoding"], float(boxes.max() - boxes.min()))
        spread["score"] = max(spread["score"], float(scores.max() - scores.min()))
        for name, path in tflite.items():
            lite_boxes, lite_scores = tflite_network_outputs(path, tensor)
            worst = errors[name]
            worst["box_encoding"] = max(worst["box_encoding"], float(abs(lite_boxes - boxes).max()))
            worst["score"] = max(worst["score"], float(abs(lite_scores - scores).max()))
    return {"images": len(images), "max_abs_difference": errors, "checkpoint_range": spread}


def client_interface(params, classes) -> dict:
    """What a program needs to run each exported file: its input and its outputs."""
    height, width = (int(v) for v in params.task.model.input_size[:2])
    labels = [c.name for c in sorted(classes, key=lambda c: c.label_id)]
    tflite = {
        "input": {
            "shape": [1, height, width, 3],
            "dtype": "float32",
            "pixels": "RGB 0..255 (no normalisation by the caller: the model normalises "
            "per channel inside, and its metadata says mean 0, std 1)",
            "resize": f"the whole image stretched to {width}x{height}, bilinear, no padding",
        },
        # A list: the outputs' order is the interface (export.json's keys are sorted).
        "outputs": [
            {"name": name, "is": meaning}
            for name, meaning in zip(
                TFLITE_OUTPUTS,
                (
                    "float32 [1, N, 4]: ymin, xmin, ymax, xmax as fractions (0..1) of the "
                    "input, which are fractions of the image",
                    f"float32 [1, N]: class index i, the line i of {modelclasses.LABELS_FILE} "
                    "(label id i + 1)",
                    "float32 [1, N]: 0..1, sorted, one class per detection",
                    "float32 [1]: count, the first `count` entries are valid",
                ),
                strict=True,
            )
        ],
        "metadata": "TFLite Model Metadata (MediaPipe's object detector writer): labels, "
        "input normalisation (mean 0, std 1), output names",
        "labels": labels,
    }
    saved_model = {
        "signatures": {
            "serving_default": "inputs: uint8 [batch, H, W, 3] RGB of any size",
            "serve_image_bytes": "inputs: string [batch], encoded JPEG or PNG",
        },
        "preprocessing": f"inside: the image scaled to fit {width}x{height} keeping its "
        "aspect ratio, padded at the bottom and right, normalised per channel with the "
        "ImageNet mean and std of official.vision.ops.preprocess_ops",
        "outputs": {
            "detection_boxes": "float32 [batch, 100, 4]: ymin, xmin, ymax, xmax in pixels of "
            "the scaled image; divide by image_info[:, 2] (the y and x scale) for image pixels",
            "detection_classes": "int [batch, 100]: label id (1..N, the classes above)",
            "detection_scores": "float32 [batch, 100]",
            "num_detections": "int [batch]: the first num_detections entries are valid",
            "image_info": "[batch, 4, 2]: original size, scaled size, scale, offset",
        },
    }
    return {"tflite": tflite, "saved_model": saved_model}


def export(
    params,
    checkpoint: str,
    classes,
    outputs: dict[str, Path],
    calibration_images: int = CALIBRATION_IMAGES,
    check_images: int = 4,
) -> dict:
    """The SavedModel, the TFLite models, the class files and export.json at `outputs`'
    paths (`OUTPUTS`)."""
    for path in outputs.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    labels = modelclasses.labels_txt(classes)
    size = list(params.task.model.input_size[:2])
    # Minutes of conversion in three calls: a line after each says where it is.
    timings = {}
    with cli.Progress("export", 3, "parts", log, every_s=0) as progress:
        started = time.monotonic()
        saved_model = export_saved_model(params, checkpoint, outputs["saved_model"])
        timings["saved_model_s"] = time.monotonic() - started
        progress.update(done="SavedModel")
        started = time.monotonic()
        images = first_record_images(
            params.task.train_data.input_path, max(calibration_images, check_images)
        )
        inputs = client_images(images, size)
        timings["read_images_s"] = time.monotonic() - started
        tflite = export_tflite(
            params, checkpoint, outputs, labels.splitlines(), inputs[:calibration_images], timings
        )
        progress.update(done="TFLite float and int8")
        started = time.monotonic()
        agreement = tflite_agreement(params, checkpoint, tflite, inputs[:check_images])
        timings["check_s"] = time.monotonic() - started
        progress.update(done="TFLite checked against the checkpoint")
    fileio.write_text(outputs["labels"], labels)
    fileio.write_text(outputs["label_map"], records.label_map_pbtxt(classes))
    summary = {
        "checkpoint": checkpoint,
        "classes": modelclasses.record(classes),
        "saved_model": str(saved_model),
        "signatures": SIGNATURES,
        "input_size": size,
        "tflite": {
            name: {"path": str(path), "bytes": path.stat().st_size} for name, path in tflite.items()
        },
        "labels": str(outputs["labels"]),
        "label_map": str(outputs["label_map"]),
        "clients": client_interface(params, classes),
        "calibration_images": len(inputs[:calibration_images]),
        "tflite_agreement_with_checkpoint": agreement,
        "seconds": {key: round(value, 1) for key, value in timings.items()},
    }
    fileio.write_json(outputs["summary"], summary)
    return summary
