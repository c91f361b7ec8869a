"""The exported detector over a folder: detections, drawn images and LabelImg pre-labels.

The XML pre-labels are what LabelImg itself would save, so a user opens the
folder in LabelImg, corrects the model's boxes instead of drawing them from
nothing, and feeds them back as annotations.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from . import fileio, vocxml

log = logging.getLogger("tumbletrain.predict")

SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp"}


@dataclass(frozen=True)
class Detection:
    name: str
    score: float
    xmin: float
    ymin: float
    xmax: float
    ymax: float


def iter_images(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in SUFFIXES and path.is_file():
            yield path


def load_upright(path: Path) -> np.ndarray:
    """RGB pixels as LabelImg shows them (EXIF orientation applied)."""
    with Image.open(path) as image:
        image.seek(0)
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def detect(serve, pixels: np.ndarray, names: dict[int, str], min_score: float) -> list[Detection]:
    """Run the SavedModel's image_tensor signature; boxes are returned in image pixels.

    The Model Garden's serving gives boxes in the resized model input, with
    `image_info` (row 2: the y and x scale) to take them back to the image.
    """
    import tensorflow as tf

    outputs = serve(inputs=tf.constant(pixels[None, ...], dtype=tf.uint8))
    count = int(outputs["num_detections"][0])
    y_scale, x_scale = outputs["image_info"][0][2].numpy()
    boxes = outputs["detection_boxes"][0].numpy() / [y_scale, x_scale, y_scale, x_scale]
    scores = outputs["detection_scores"][0].numpy()
    classes = outputs["detection_classes"][0].numpy().astype(int)
    found = []
    for i in range(count):
        if scores[i] < min_score or classes[i] not in names:
            continue
        ymin, xmin, ymax, xmax = (float(v) for v in boxes[i])
        found.append(Detection(names[classes[i]], float(scores[i]), xmin, ymin, xmax, ymax))
    return found


def draw(pixels: np.ndarray, detections: list[Detection]) -> Image.Image:
    image = Image.fromarray(pixels)
    pen = ImageDraw.Draw(image)
    for d in detections:
        pen.rectangle([d.xmin, d.ymin, d.xmax, d.ymax], outline=(255, 0, 0), width=2)
        pen.text((d.xmin + 2, d.ymin + 1), f"{d.name} {d.score:.2f}", fill=(255, 255, 0))
    return image


def predict_folder(
    saved_model: Path, folder: Path, outdir: Path, names: dict[int, str], min_score: float
) -> dict:
    import tensorflow as tf

    serve = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    rows = []
    images = 0
    for path in iter_images(folder):
        try:
            pixels = load_upright(path)
        except OSError as error:
            log.warning("skipping %s: %s", path, error)
            continue
        images += 1
        detections = detect(serve, pixels, names, min_score)
        relative = path.relative_to(folder)
        for d in detections:
            rows.append(
                [
                    str(relative),
                    d.name,
                    f"{d.score:.4f}",
                    f"{d.xmin:.1f}",
                    f"{d.ymin:.1f}",
                    f"{d.xmax:.1f}",
                    f"{d.ymax:.1f}",
                ]
            )
        height, width = pixels.shape[:2]
        xml = vocxml.labelimg_xml(
            folder=path.parent.name,
            filename=path.name,
            path=str(path.resolve()),
            size=(width, height, 3),
            objects=[
                vocxml.VocObject(d.name, round(d.xmin), round(d.ymin), round(d.xmax), round(d.ymax))
                for d in detections
            ],
        )
        fileio.write_bytes(outdir / "prelabels" / relative.with_suffix(".xml"), xml)
        with fileio.atomic_path(
            outdir / "images" / relative.with_suffix(".jpg"), suffix=".jpg"
        ) as tmp:
            draw(pixels, detections).save(tmp, "JPEG", quality=90)
    fileio.write_csv(
        outdir / "detections.csv", ("image", "class", "score", "xmin", "ymin", "xmax", "ymax"), rows
    )
    return {"images": images, "detections": len(rows)}
