"""COCO evaluation of a checkpoint on the verification records, with pictures.

The metrics come from the Model Garden's own COCO evaluator (the task's
`validation_step` / `aggregate_logs` / `reduce_aggregated_logs`, as in
training). Precision-recall curves come from the same pycocotools evaluation
the Model Garden wraps, run on the detections collected here.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cli, fileio, lists, plots, records
from .experiment import load_params, restore_model

log = logging.getLogger("tumbletrain.evaluation")

SUMMARY_METRICS = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "ARmax1",
    "ARmax10",
    "ARmax100",
    "ARs",
    "ARm",
    "ARl",
)
DETECTION_COLUMNS = ("image", "source_id", "class", "score", "xmin", "ymin", "xmax", "ymax")


@dataclass
class Collected:
    """Ground truth and detections per image, in original image pixels."""

    detections: list[tuple[int, int, float, float, float, float, float]]
    truths: list[tuple[int, int, float, float, float, float]]
    sizes: dict[int, tuple[int, int]]


def collect(gt: dict, out: dict, into: Collected) -> None:
    """Detections back to original pixels ([y, x] scale in image_info row 2)."""
    source_ids = out["source_id"].numpy()
    scales = out["image_info"][:, 2, :].numpy()
    originals = out["image_info"][:, 0, :].numpy()
    boxes = out["detection_boxes"].numpy()
    scores = out["detection_scores"].numpy()
    classes = out["detection_classes"].numpy()
    counts = out["num_detections"].numpy()
    gt_boxes = gt["boxes"].numpy()
    gt_classes = gt["classes"].numpy()
    gt_counts = gt["num_detections"].numpy()
    for i, sid in enumerate(source_ids):
        sid = int(sid)
        into.sizes[sid] = (int(originals[i][1]), int(originals[i][0]))
        y_scale, x_scale = scales[i]
        for j in range(int(counts[i])):
            ymin, xmin, ymax, xmax = boxes[i][j]
            into.detections.append(
                (
                    sid,
                    int(classes[i][j]),
                    float(scores[i][j]),
                    float(xmin / x_scale),
                    float(ymin / y_scale),
                    float(xmax / x_scale),
                    float(ymax / y_scale),
                )
            )
        for j in range(int(gt_counts[i])):
            ymin, xmin, ymax, xmax = gt_boxes[i][j]
            if gt_classes[i][j] > 0:
                into.truths.append(
                    (sid, int(gt_classes[i][j]), float(xmin), float(ymin), float(xmax), float(ymax))
                )


def run_evaluation(params, checkpoint: str):
    """The Model Garden's COCO metrics, and everything needed to draw them."""
    task, model = restore_model(params, checkpoint)
    metrics = task.build_metrics(training=False)
    dataset = task.build_inputs(params.task.validation_data)
    collected = Collected([], [], {})
    state = None
    # The dataset's own cardinality is unknown; the experiment counts the batches.
    batches = params.trainer.validation_steps or None
    for inputs in cli.progress(dataset, "verification", batches, "batches", log):
        logs = task.validation_step(inputs, model, metrics)
        state = task.aggregate_logs(state, logs)
        gt, out = logs[task.coco_metric.name]
        collect(gt, out, collected)
    results = task.reduce_aggregated_logs(state)
    losses = {m.name: float(m.result().numpy()) for m in metrics}
    return {k: float(np.asarray(v)) for k, v in results.items()}, losses, collected


def coco_precision(collected: Collected, names: dict[int, str]) -> dict[str, np.ndarray]:
    """pycocotools' precision array per class: [IoU threshold, 101 recall points].

    The Model Garden's per-category metrics need a patched pycocotools
    (`category_stats`) that PyPI's does not have, so per-class AP is read from
    the standard array here, as COCO defines it.
    """
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images = [{"id": sid, "width": w, "height": h} for sid, (w, h) in collected.sizes.items()]
    categories = [{"id": i, "name": n} for i, n in names.items()]
    truth = COCO()
    truth.dataset = {
        "images": images,
        "categories": categories,
        "annotations": [
            {
                "id": k + 1,
                "image_id": sid,
                "category_id": c,
                "iscrowd": 0,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0),
            }
            for k, (sid, c, x0, y0, x1, y1) in enumerate(collected.truths)
        ],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        truth.createIndex()
        if not collected.detections:
            return {name: np.zeros((10, 101)) for name in names.values()}
        found = truth.loadRes(
            np.array(
                [
                    [sid, x0, y0, x1 - x0, y1 - y0, s, c]
                    for sid, c, s, x0, y0, x1, y1 in collected.detections
                ]
            )
        )
        coco_eval = COCOeval(truth, found, "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
    precision = coco_eval.eval["precision"]  # [IoU, recall, class, area, max dets]
    order = coco_eval.params.catIds
    return {names[c]: precision[:, :, k, 0, -1] for k, c in enumerate(order)}


def mean_precision(curves: np.ndarray) -> float:
    """COCO's AP: the mean over the points that have a value (-1 means no ground truth)."""
    valid = curves[curves > -1]
    return float(valid.mean()) if valid.size else -1.0


def images_by_source(list_files: Sequence[Path]) -> dict[int, str]:
    """Each verification image's file as the lists name it, by the records' source id."""
    found: dict[int, str] = {}
    for path in list_files:
        for item in lists.read_list(path):
            found.setdefault(int(records.source_id(item.sha256)), item.image)
    return found


def images_by_source_id(files: Sequence[str], wanted: set[int]) -> dict[int, np.ndarray]:
    """Decode the images with the given source ids from record files."""
    import tensorflow as tf

    found = {}
    spec = {
        "image/encoded": tf.io.FixedLenFeature((), tf.string),
        "image/source_id": tf.io.FixedLenFeature((), tf.string),
    }
    for raw in tf.data.TFRecordDataset(list(files)):
        example = tf.io.parse_single_example(raw, spec)
        sid = int(example["image/source_id"].numpy())
        if sid in wanted:
            found[sid] = tf.io.decode_image(
                example["image/encoded"], channels=3, expand_animations=False
            ).numpy()
            if len(found) == len(wanted):
                break
    return found


def detection_grid(
    collected: Collected,
    files: Sequence[str],
    names: dict[int, str],
    min_score: float,
    count: int,
    path: Path,
) -> None:
    """The first `count` verification images (by source id) with their true boxes and
    the detections scoring at least `min_score`."""
    chosen = sorted(collected.sizes)[:count]
    found = images_by_source_id(files, set(chosen))
    plots.plot_detections(
        {sid: found.get(sid, np.zeros((8, 8, 3), np.uint8)) for sid in chosen},
        [(sid, (x0, y0, x1, y1)) for sid, _, x0, y0, x1, y1 in collected.truths],
        [
            (sid, names.get(c, str(c)), score, (x0, y0, x1, y1))
            for sid, c, score, x0, y0, x1, y1 in collected.detections
            if score >= min_score
        ],
        path,
    )


def evaluate(
    params_yaml: Path,
    checkpoint: str,
    files: Sequence[str],
    images: int,
    names: dict[int, str],
    image_files: dict[int, str],
    outputs: dict[str, Path],
    min_score: float,
    grid_images: int,
) -> dict:
    """COCO metrics of the checkpoint on the verification records, written to the paths of
    `model.EVALUATE_OUTPUTS` in `outputs`."""
    params = load_params(params_yaml, files, images)
    results, losses, collected = run_evaluation(copy.deepcopy(params), checkpoint)
    metrics = {
        "checkpoint": checkpoint,
        "images": images,
        "objects": len(collected.truths),
        "detections": len(collected.detections),
        **{key: results.get(key) for key in SUMMARY_METRICS},
        "losses": losses,
    }
    curves = coco_precision(collected, names)
    metrics["AP_per_class"] = {name: mean_precision(c) for name, c in sorted(curves.items())}
    metrics["AP50_per_class"] = {name: mean_precision(c[0]) for name, c in sorted(curves.items())}
    fileio.write_csv(
        outputs["detections"],
        DETECTION_COLUMNS,
        (
            [
                image_files.get(sid, ""),
                sid,
                names.get(c, c),
                f"{s:.4f}",
                f"{x0:.1f}",
                f"{y0:.1f}",
                f"{x1:.1f}",
                f"{y1:.1f}",
            ]
            for sid, c, s, x0, y0, x1, y1 in sorted(collected.detections)
        ),
    )
    plots.plot_pr_curves(curves, outputs["pr_curves"])
    detection_grid(collected, files, names, min_score, grid_images, outputs["grid"])
    fileio.write_json(outputs["metrics"], metrics)
    return metrics
