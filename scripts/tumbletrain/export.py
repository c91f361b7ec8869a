"""SavedModel and TFLite export with the Model Garden's own export libraries.

The SavedModel has two signatures: `serving_default` takes a batch of uint8
images of any size (`image_tensor`), `serve_image_bytes` takes encoded
JPEG/PNG strings. The TFLite models follow the Model Garden's recipe: a
SavedModel with the TFLite detection post-processing op, converted in float
and with int8 post-training quantisation calibrated on the training records.
"""

from __future__ import annotations

import copy
import logging
import shutil
import warnings
from pathlib import Path

from . import cli, fileio

log = logging.getLogger("tumbletrain.export")

SIGNATURES = {"image_tensor": "serving_default", "image_bytes": "serve_image_bytes"}
# What an export writes, by its usual name (`--outdir` by hand; export.json names the
# TFLite models by theirs).
OUTPUTS = {
    "summary": "export.json",
    "saved_model": "saved_model",
    "tflite_float": "model_float.tflite",
    "tflite_int8": "model_int8.tflite",
}
QUANTISATION = {"tflite_float": None, "tflite_int8": "int8"}


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


def tflite_params(params, calibration_files: str):
    tflite = copy.deepcopy(params)
    post = params.task.model.detection_generator.tflite_post_processing
    tflite.override(
        {
            "task": {
                "model": {
                    "detection_generator": {
                        "nms_version": "tflite",
                        # TFLite_Detection_PostProcess lays out max_classes_per_detection
                        # entries per box but writes one per class: with fewer classes
                        # (the Model Garden's default is 5) the first num_detections
                        # entries hold unwritten memory (scores of -0.5 or 1.4 were read).
                        "tflite_post_processing": {
                            "max_classes_per_detection": min(
                                post.max_classes_per_detection, params.task.model.num_classes
                            )
                        },
                    }
                },
                "train_data": {"input_path": calibration_files, "global_batch_size": 1},
            }
        },
        is_strict=False,
    )
    return tflite


def export_tflite(
    params, checkpoint: str, outputs: dict[str, Path], calibration_steps: int
) -> dict[str, Path]:
    """Float and int8 TFLite models (at `outputs`' paths of `QUANTISATION`'s keys, by
    their usual names); int8 is calibrated on the training images."""
    from official.vision.serving import export_saved_model_lib, export_tflite_lib

    tflite = tflite_params(params, params.task.train_data.input_path)
    size = tflite.task.model.input_size[:2]
    work = outputs["tflite_float"].parent / ".tflite_saved_model"
    shutil.rmtree(work, ignore_errors=True)
    export_saved_model_lib.export_inference_graph(
        input_type="tflite",
        batch_size=1,
        input_image_size=size,
        params=tflite,
        checkpoint_path=checkpoint,
        export_dir=str(work),
    )
    written = {}
    for key, quant in QUANTISATION.items():
        data = export_tflite_lib.convert_tflite_model(
            saved_model_dir=str(work),
            quant_type=quant,
            params=copy.deepcopy(tflite),
            calibration_steps=calibration_steps,
        )
        fileio.write_bytes(outputs[key], data)
        written[OUTPUTS[key]] = outputs[key]
    shutil.rmtree(work, ignore_errors=True)
    return written


def tflite_input(params, pixels):
    """A uint8 RGB image as the TFLite models take it: resized, padded and normalised.

    The TFLite models leave preprocessing to the caller (so it can be done
    on-device); this is the Model Garden's own, as the SavedModel applies it.
    """
    import tensorflow as tf
    from official.vision.serving import detection

    size = list(params.task.model.input_size[:2])
    module = detection.DetectionModule(
        params=params, batch_size=1, input_image_size=size, input_type="image_tensor"
    )
    images, _, image_info = module.preprocess(tf.constant(pixels[None], dtype=tf.uint8))
    return images.numpy(), image_info.numpy()


def first_record_images(input_path: str, count: int) -> list:
    """The first images of the records, decoded as the Model Garden's decoder does."""
    import tensorflow as tf
    from official.vision.dataloaders import tf_example_decoder

    decoder = tf_example_decoder.TfExampleDecoder()
    dataset = tf.data.TFRecordDataset(input_path.split(",")).take(count)
    return [decoder.decode(serialized)["image"].numpy() for serialized in dataset]


def network_outputs(params, model, images, image_info):
    """Box encodings and class scores for every anchor, as the TFLite op receives them."""
    import tensorflow as tf

    out = model(tf.constant(images), image_shape=tf.constant(image_info[:, 1, :]), training=False)
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
    """How far each TFLite network's outputs are from the checkpoint's, on the same images.

    The largest absolute differences of the box encodings and the class scores
    over every anchor, beside the range of the checkpoint's values: float
    models agree to rounding, int8 ones within their quantisation. The
    post-processing after these outputs (decoding, NMS) is TFLite's own op.
    """
    from .experiment import restore_model

    _, model = restore_model(params, checkpoint)
    errors = {name: {"box_encoding": 0.0, "score": 0.0} for name in tflite}
    spread = {"box_encoding": 0.0, "score": 0.0}
    for pixels in images:
        tensor, image_info = tflite_input(params, pixels)
        boxes, scores = network_outputs(params, model, tensor, image_info)
        spread["box_encoding"] = max(spread["box_encoding"], float(boxes.max() - boxes.min()))
        spread["score"] = max(spread["score"], float(scores.max() - scores.min()))
        for name, path in tflite.items():
            lite_boxes, lite_scores = tflite_network_outputs(path, tensor)
            worst = errors[name]
            worst["box_encoding"] = max(worst["box_encoding"], float(abs(lite_boxes - boxes).max()))
            worst["score"] = max(worst["score"], float(abs(lite_scores - scores).max()))
    return {"images": len(images), "max_abs_difference": errors, "checkpoint_range": spread}


def export(
    params,
    checkpoint: str,
    outputs: dict[str, Path],
    calibration_steps: int = 100,
    check_images: int = 4,
) -> dict:
    """The SavedModel, the TFLite models and export.json at `outputs`' paths (`OUTPUTS`)."""
    for path in outputs.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    # Minutes of conversion in three calls: a line after each says where it is.
    with cli.Progress("export", 3, "parts", log, every_s=0) as progress:
        saved_model = export_saved_model(params, checkpoint, outputs["saved_model"])
        progress.update(done="SavedModel")
        tflite = export_tflite(params, checkpoint, outputs, calibration_steps)
        progress.update(done="TFLite float and int8")
        images = first_record_images(params.task.train_data.input_path, check_images)
        agreement = tflite_agreement(params, checkpoint, tflite, images)
        progress.update(done="TFLite checked against the checkpoint")
    summary = {
        "checkpoint": checkpoint,
        "saved_model": str(saved_model),
        "signatures": SIGNATURES,
        "input_size": list(params.task.model.input_size[:2]),
        "tflite": {
            name: {"path": str(path), "bytes": path.stat().st_size} for name, path in tflite.items()
        },
        "tflite_input": "float32 [1, H, W, 3]: resized, padded and normalised as "
        "tumbletrain.export.tflite_input does (the Model Garden's own preprocessing)",
        "tflite_output": "boxes [ymin, xmin, ymax, xmax] in input pixels, not clipped; "
        "classes (0 is the background); scores; count",
        "tflite_agreement_with_checkpoint": agreement,
    }
    fileio.write_json(outputs["summary"], summary)
    return summary
