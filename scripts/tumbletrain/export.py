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
import os
import shutil
from pathlib import Path

from . import fileio

log = logging.getLogger("tumbletrain.export")

SIGNATURES = {"image_tensor": "serving_default", "image_bytes": "serve_image_bytes"}


def replace_dir(staging: Path, target: Path) -> None:
    """Swap a finished directory into place, so the target is never half-written."""
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)


def export_saved_model(params, checkpoint: str, export_dir: Path) -> Path:
    from official.vision.serving import export_saved_model_lib

    size = params.task.model.input_size[:2]
    staging = export_dir.with_name(f".{export_dir.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    export_saved_model_lib.export_inference_graph(
        input_type="image_tensor",
        batch_size=None,
        input_image_size=size,
        params=params,
        checkpoint_path=checkpoint,
        export_dir=str(staging),
        function_keys=SIGNATURES,
    )
    replace_dir(staging, export_dir)
    return export_dir


def tflite_params(params, calibration_files: str):
    tflite = copy.deepcopy(params)
    tflite.override(
        {
            "task": {
                "model": {"detection_generator": {"nms_version": "tflite"}},
                "train_data": {"input_path": calibration_files, "global_batch_size": 1},
            }
        },
        is_strict=False,
    )
    return tflite


def export_tflite(params, checkpoint: str, outdir: Path, calibration_steps: int) -> dict[str, Path]:
    """Float and int8 TFLite models; int8 is calibrated on the training images."""
    from official.vision.serving import export_saved_model_lib, export_tflite_lib

    tflite = tflite_params(params, params.task.train_data.input_path)
    size = tflite.task.model.input_size[:2]
    work = outdir / ".tflite_saved_model"
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
    for name, quant in (("model_float.tflite", None), ("model_int8.tflite", "int8")):
        data = export_tflite_lib.convert_tflite_model(
            saved_model_dir=str(work),
            quant_type=quant,
            params=copy.deepcopy(tflite),
            calibration_steps=calibration_steps,
        )
        fileio.write_bytes(outdir / name, data)
        written[name] = outdir / name
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


def export(params, checkpoint: str, outdir: Path, calibration_steps: int = 100) -> dict:
    outdir.mkdir(parents=True, exist_ok=True)
    saved_model = export_saved_model(params, checkpoint, outdir / "saved_model")
    tflite = export_tflite(params, checkpoint, outdir, calibration_steps)
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
    }
    fileio.write_json(outdir / "export.json", summary)
    return summary
