"""The exported detector over images: detections, drawn images and LabelImg pre-labels.

    python -m tumbletrain.predict --model EXPORT_FOLDER PATH...

takes image files and folders (searched recursively; `predict.input` when
none is named). The XML pre-labels are what LabelImg itself would save, so a
user opens the folder in LabelImg, corrects the model's boxes instead of
drawing them from nothing, and feeds them back as annotations.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from . import cli, fileio, modelclasses, store, vocxml
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


def load_upright(path: Path, max_bytes: int | None = None) -> np.ndarray:
    """RGB pixels as LabelImg shows them (EXIF orientation applied); a regular file only,
    of at most `max_bytes` (its size checked before it is read), within Pillow's
    decompression-bomb limit (else FileProblem or RejectedImage)."""
    data = fileio.read_regular(path, max_bytes)
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
    model: Path,
    folder: Path,
    outdir: Path,
    min_score: float,
    max_bytes: int | None = None,
) -> dict:
    """A folder's images, with the outputs in `outdir` under their usual names and the
    model's class names."""
    outputs = cli.in_folder(OUTPUTS, outdir)
    return predict_images(
        model, *collect_images([folder]), outputs, min_score=min_score, max_bytes=max_bytes
    )


def predict_images(
    model: Path,
    images: list[tuple[Path, Path]],
    skipped: Skipped,
    outputs: dict[str, Path],
    min_score: float,
    max_bytes: int | None = None,
) -> dict:
    """Detections, a drawn image and a pre-label for each (image, name) of `collect_images`,
    at `outputs`' paths of `OUTPUTS`, by the exported `model` (its folder or saved_model/),
    with its classes' names."""
    import tensorflow as tf

    names = modelclasses.names(modelclasses.of_export(model))
    serve = tf.saved_model.load(str(saved_model_of(model))).signatures["serving_default"]
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
            pixels = load_upright(path, max_bytes)
        except (fileio.FileProblem, store.RejectedImage) as problem:
            skipped.append((path, problem))
            log.warning("skipping %s: %s (%s)", path, problem.reason, problem)
            continue
        except OSError as error:
            skipped.append((path, fileio.FileProblem("image_unreadable", str(error))))
            log.warning("skipping %s: image_unreadable (%s)", path, error)
            continue
        detections = detect(serve, pixels, names, min_score)
        height, width = pixels.shape[:2]
        try:
            xml = vocxml.labelimg_xml(
                folder=path.parent.name,
                filename=path.name,
                path=str(path.resolve()),
                size=(width, height, 3),
                objects=[
                    vocxml.VocObject(
                        d.name, round(d.xmin), round(d.ymin), round(d.xmax), round(d.ymax)
                    )
                    for d in detections
                ],
            )
        except ValueError as error:
            # lxml refuses control characters, which a file name may hold and XML may not.
            problem = fileio.FileProblem("name_not_xml", f"{str(path)!r}: {error}")
            skipped.append((path, problem))
            log.warning("skipping %r: %s (%s)", str(path), problem.reason, problem)
            continue
        done += 1
        stem = stems[relative]
        rows += [
            [
                str(relative),
                d.name,
                f"{d.score:.4f}",
                f"{d.xmin:.1f}",
                f"{d.ymin:.1f}",
                f"{d.xmax:.1f}",
                f"{d.ymax:.1f}",
            ]
            for d in detections
        ]
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


def leftover_folders(outputs: dict[str, Path]) -> list[Path]:
    """Where a killed run of predict left temporary files: its two folders, and the folder
    of detections.csv when it holds them (--outdir, the rule's), not a folder the user
    named for the CSV alone (the project itself, whose whole tree would be walked)."""
    folders = {outputs["images"], outputs["prelabels"]}
    if outputs["detections"].parent in {folder.parent for folder in folders}:
        folders = {outputs["detections"].parent}
    return sorted(folders)


def config_for(args, classes) -> tt_config.WorkflowConfig:
    """The predict settings: of --config or --config-json, whose classes must be the
    model's; without either, of config/config.yaml when it exists (its classes may be
    another model's, as the demo's are), else the defaults."""
    if args.config is not None or args.config_json:
        cfg = tt_config.from_arguments(args, CONFIG)
        source = "--config-json" if args.config_json else str(args.config)
        modelclasses.check_config(classes, cfg.classes, f"{args.model}, not {source}")
        return cfg
    if tt_config.DEFAULT_CONFIG.exists():
        args.config = tt_config.DEFAULT_CONFIG
        return tt_config.from_arguments(args, CONFIG)
    args.config_json = json.dumps({"classes": {c.name: {} for c in classes}})
    return tt_config.from_arguments(args, CONFIG)


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
    # The classes come from the model; a config given is checked against them.
    parser.set_defaults(config=None)
    args = parser.parse_args(argv)
    outputs = cli.outputs(args)
    saved_model_of(args.model)
    classes = modelclasses.of_export(args.model)
    cfg = config_for(args, classes)
    fileio.clean_leftovers(*leftover_folders(outputs), logger=log)
    paths = args.paths or ([Path(cfg.predict.input).expanduser()] if cfg.predict.input else [])
    if not paths:
        raise cli.UserError("name image files or folders to predict, or set predict.input")
    images, skipped = collect_images(paths)
    min_score = cfg.predict.min_score if args.min_score is None else args.min_score
    max_bytes = int(cfg.predict.max_image_mb * 1e6)
    result = predict_images(
        args.model, images, skipped, outputs, min_score=min_score, max_bytes=max_bytes
    )
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
