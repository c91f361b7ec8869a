"""The exported detector over a folder: detections, drawn images and LabelImg pre-labels.

The XML pre-labels are what LabelImg itself would save, so a user opens the
folder in LabelImg, corrects the model's boxes instead of drawing them from
nothing, and feeds them back as annotations.
"""

from __future__ import annotations

import io
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from . import fileio, store, vocxml

log = logging.getLogger("tumbletrain.predict")


@dataclass(frozen=True)
class Detection:
    name: str
    score: float
    xmin: float
    ymin: float
    xmax: float
    ymax: float


def scan_images(folder: Path) -> tuple[list[Path], list[tuple[Path, fileio.FileProblem]]]:
    """The folder's image files, and those that must not be read, with the reason:
    FIFOs, devices, broken or looping links, unreadable files, links out of the folder."""
    images, skipped = [], []
    roots = fileio.real_roots([folder])
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in store.IMAGE_SUFFIXES or (
            path.is_dir() and not path.is_symlink()
        ):
            continue
        problem = fileio.file_problem(path)
        if problem is None and not fileio.inside(os.path.realpath(path), roots):
            problem = fileio.FileProblem(
                "image_outside_sources", f"{path} links to {os.path.realpath(path)}"
            )
        if problem is None:
            images.append(path)
        else:
            skipped.append((path, problem))
    return images, skipped


def output_stems(relatives: list[Path]) -> dict[Path, Path]:
    """Each image's output name without suffix: `a` for a.jpg, but `a.jpg` and `a.png`
    when both are in one folder, so no two images share a pre-label."""
    stems = Counter(r.with_suffix("") for r in relatives)
    return {r: r.with_suffix("") if stems[r.with_suffix("")] == 1 else r for r in relatives}


def load_upright(path: Path) -> np.ndarray:
    """RGB pixels as LabelImg shows them (EXIF orientation applied); a regular file only,
    within Pillow's decompression-bomb limit (else FileProblem or RejectedImage)."""
    data = fileio.read_regular(path)
    with store.pixel_limit(), Image.open(io.BytesIO(data)) as image:
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
    paths, skipped = scan_images(folder)
    stems = output_stems([path.relative_to(folder) for path in paths])
    for path, problem in skipped:
        log.warning("skipping %s: %s (%s)", path, problem.reason, problem)
    for path in paths:
        try:
            pixels = load_upright(path)
        except (fileio.FileProblem, store.RejectedImage) as problem:
            skipped.append((path, problem))
            log.warning("skipping %s: %s (%s)", path, problem.reason, problem)
            continue
        except OSError as error:
            skipped.append((path, fileio.FileProblem("image_unreadable", str(error))))
            log.warning("skipping %s: image_unreadable (%s)", path, error)
            continue
        images += 1
        detections = detect(serve, pixels, names, min_score)
        relative = path.relative_to(folder)
        stem = stems[relative]
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
        fileio.write_bytes(outdir / "prelabels" / stem.parent / f"{stem.name}.xml", xml)
        with fileio.atomic_path(
            outdir / "images" / stem.parent / f"{stem.name}.jpg", suffix=".jpg"
        ) as tmp:
            draw(pixels, detections).save(tmp, "JPEG", quality=90)
    fileio.write_csv(
        outdir / "detections.csv", ("image", "class", "score", "xmin", "ymin", "xmax", "ymax"), rows
    )
    reasons = Counter(problem.reason for _, problem in skipped)
    return {"images": images, "detections": len(rows), "skipped": dict(sorted(reasons.items()))}
