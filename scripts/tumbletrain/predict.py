"""The exported detector over images: detections, drawn images and LabelImg pre-labels.

    python -m tumbletrain.predict --model EXPORT_FOLDER PATH...

takes image files and folders (searched recursively; `predict.input` when
none is named). The XML pre-labels are what LabelImg itself would save, so a
user opens the folder in LabelImg, corrects the model's boxes instead of
drawing them from nothing, and feeds them back as annotations.
"""

from __future__ import annotations

import io
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from . import cli, fileio, store, vocxml
from . import config as tt_config

log = logging.getLogger("tumbletrain.predict")
CONFIG = tt_config.stage("predict", "predict", classes="names")
# What predicting writes, by its usual name (`--outdir`): the detections, and folders of
# drawn images and of LabelImg pre-labels.
OUTPUTS = {"detections": "detections.csv", "images": "images", "prelabels": "prelabels"}
Skipped = list[tuple[Path, fileio.FileProblem]]


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


def collect_images(paths: Sequence[Path]) -> tuple[list[tuple[Path, Path]], Skipped]:
    """Every image to predict with the name its outputs get, and those skipped (`scan_images`).

    A folder's images are named by their path inside it, a file by its name.
    """
    named: dict[Path, Path] = {}
    skipped: Skipped = []
    for given in paths:
        if given.is_dir():
            images, problems = scan_images(given)
            found = [(path, path.relative_to(given)) for path in images]
            skipped += problems
        elif given.exists() or given.is_symlink():
            problem = fileio.file_problem(given)
            found = [] if problem else [(given, Path(given.name))]
            skipped += [(given, problem)] if problem else []
        else:
            raise cli.UserError(
                f"{given} does not exist; name image files or folders (or set predict.input)"
            )
        for path, name in found:
            if named.setdefault(name, path) != path:
                raise cli.UserError(
                    f"{named[name]} and {path} would both be written as {name}; "
                    "predict them in separate runs with separate --outdir"
                )
    images = sorted(((path, name) for name, path in named.items()), key=lambda item: item[1])
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
    """A folder's images, with the outputs in `outdir` under their usual names."""
    outputs = cli.in_folder(OUTPUTS, outdir)
    return predict_images(saved_model, *collect_images([folder]), outputs, names, min_score)


def predict_images(
    saved_model: Path,
    images: list[tuple[Path, Path]],
    skipped: Skipped,
    outputs: dict[str, Path],
    names: dict[int, str],
    min_score: float,
) -> dict:
    """Detections, a drawn image and a pre-label for each (image, name) of `collect_images`,
    at `outputs`' paths of `OUTPUTS`."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    # Both folders even when no image is predicted: they are the predict rule's outputs.
    for folder in ("images", "prelabels"):
        outputs[folder].mkdir(parents=True, exist_ok=True)
    rows = []
    done = 0
    stems = output_stems([relative for _, relative in images])
    for path, problem in skipped:
        log.warning("skipping %s: %s (%s)", path, problem.reason, problem)
    for path, relative in images:
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
        done += 1
        detections = detect(serve, pixels, names, min_score)
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
        fileio.write_bytes(outputs["prelabels"] / stem.parent / f"{stem.name}.xml", xml)
        with fileio.atomic_path(
            outputs["images"] / stem.parent / f"{stem.name}.jpg", suffix=".jpg"
        ) as tmp:
            draw(pixels, detections).save(tmp, "JPEG", quality=90)
    fileio.write_csv(
        outputs["detections"], ("image", "class", "score", "xmin", "ymin", "xmax", "ymax"), rows
    )
    reasons = Counter(problem.reason for _, problem in skipped)
    return {"images": done, "detections": len(rows), "skipped": dict(sorted(reasons.items()))}


def saved_model_of(model: Path) -> Path:
    """An export folder (the export rule's) or its saved_model/ itself."""
    for candidate in (model / "saved_model", model):
        if (candidate / "saved_model.pb").is_file():
            return candidate
    raise cli.UserError(
        f"{model} holds no SavedModel; give --model the folder the export rule writes "
        "(the one holding export.json)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = tt_config.command_parser(
        "predict",
        "Detections, drawn images and LabelImg pre-labels for image files and "
        "folders, with an exported model.",
    )
    parser.add_argument(
        "--model", type=Path, required=True, help="the export rule's folder (or its saved_model/)"
    )
    parser.add_argument(
        "paths", type=Path, nargs="*", help="image files and folders (default: predict.input)"
    )
    cli.add_outputs(parser, **OUTPUTS)
    parser.add_argument("--min-score", type=float, help="default: predict.min_score")
    args = parser.parse_args(argv)
    cfg = tt_config.from_arguments(args, CONFIG)
    outputs = cli.outputs(args)
    paths = args.paths or ([Path(cfg.predict.input).expanduser()] if cfg.predict.input else [])
    if not paths:
        raise cli.UserError("name image files or folders to predict, or set predict.input")
    saved_model = saved_model_of(args.model)
    images, skipped = collect_images(paths)
    min_score = cfg.predict.min_score if args.min_score is None else args.min_score
    names = {c.label_id: c.name for c in cfg.classes}
    result = predict_images(saved_model, images, skipped, outputs, names, min_score)
    log.info(
        "%d detections on %d images (skipped: %s); LabelImg pre-labels in %s",
        result["detections"],
        result["images"],
        result["skipped"] or "none",
        outputs["prelabels"],
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
