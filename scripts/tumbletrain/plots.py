"""Every figure tumbletrain draws: the report's and the evaluation's.

Each function takes what it draws (tables, series, boxes, images already
decoded or their paths) and the PNG to write; reading the stages' files is the
caller's (`report`, `evaluation`). matplotlib is imported when a figure is
drawn: Snakemake imports the stage modules for their config declarations at
every start, and matplotlib costs about 0.3 s there.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import fileio

if TYPE_CHECKING:
    import pandas as pd

    from .lists import ListedImage

log = logging.getLogger("tumbletrain.plots")

# Orbit's train summaries name every loss `*loss`; these three come first.
MAIN_LOSSES = ("total_loss", "cls_loss", "box_loss")
VALIDATION_AP = ("AP", "AP50", "AP75")
# A box drawn on an image: (xmin, ymin, xmax, ymax) in its pixels.
Box = tuple[float, float, float, float]


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> None:
    fig.tight_layout()
    with fileio.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    pyplot().close(fig)


def grid(count: int, size: float, columns: int = 4):
    """A figure of up to `columns` panels a row for `count` images, axes off."""
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    fig, axes = pyplot().subplots(
        rows, columns, figsize=(size * columns, size * rows), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes


def draw_box(ax, box: Box, colour: str, label: str = "", dashed: bool = False, **text) -> None:
    """A box and, at its top left, its label on the box's colour."""
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = box
    ls = "--" if dashed else "-"
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=colour, lw=1.5, ls=ls))
    if label:
        bbox = {"facecolor": colour, "pad": 1, "lw": 0, "alpha": text.pop("alpha", 1.0)}
        ax.text(x0, y0, label, fontsize=text.pop("fontsize", 6), bbox=bbox, **text)


def show_image(ax, path: str | Path, draft: int | None = None) -> bool:
    """An image file, upright, in a panel; a file that cannot be read is a warning
    (a list or summary outlives the image: moved or deleted since)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.seek(0)
            if draft:
                image.draft("RGB", (draft, draft))
            ax.imshow(np.asarray(ImageOps.exif_transpose(image).convert("RGB")))
    except (OSError, UnidentifiedImageError) as error:
        log.warning("cannot show %s: %s", path, error)
        return False
    return True


def plot_counts(counts: pd.DataFrame, path: Path) -> None:
    """Images per class at each step of the pipeline, one bar a column."""
    fig, ax = pyplot().subplots(figsize=(max(6, 1.8 * len(counts)) + 2.5, 4.2))
    counts.plot.bar(ax=ax, rot=0, width=0.85)
    for container in ax.containers:
        ax.bar_label(
            container, fontsize=7, labels=[str(int(v)) if v else "" for v in container.datavalues]
        )
    ax.set(
        ylabel="images",
        xlabel="",
        title="Images per class: harvested, skipped (by reason), unlabelled, rejected, kept",
    )
    # Outside the axes: the legend would hide the tallest bars.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(axis="y", alpha=0.3)
    save(fig, path)


def plot_validation(table: pd.DataFrame, path: Path) -> None:
    """Repairs and rejections by reason (columns), per class (rows)."""
    fig, ax = pyplot().subplots(figsize=(7, max(2.5, 0.5 * max(1, len(table.columns)) + 1.5)))
    if table.empty or table.to_numpy().sum() == 0:
        ax.text(0.5, 0.5, "nothing was repaired or rejected", ha="center", va="center")
        ax.axis("off")
    else:
        table.T.plot.barh(ax=ax, width=0.8)
        ax.set(xlabel="XML files or objects", title="Validation: repairs and rejections by reason")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8)
    save(fig, path)


def plot_samples(items: Sequence[ListedImage], title: str, path: Path) -> None:
    """Listed images with their boxes: is the labelling right, at a glance?"""
    fig, axes = grid(len(items), 2.6)
    for ax, item in zip(axes.flat, items, strict=False):
        if not show_image(ax, item.image):
            ax.text(0.5, 0.5, f"cannot read\n{Path(item.image).name}", ha="center", va="center")
            continue
        for obj in item.objects:
            box = (obj.xmin, obj.ymin, obj.xmax, obj.ymax)
            draw_box(ax, box, "yellow", obj.name, color="black")
    if not items:
        axes.flat[0].text(0.5, 0.5, "no training images", ha="center", va="center")
    fig.suptitle(title, fontsize=9)
    save(fig, path)


def plot_near_duplicates(
    groups: Sequence[Mapping], moved: Mapping[str, int], path: Path, strip: int = 6
) -> None:
    """A strip of thumbnails per near-duplicate group (`size`, `split`, `classes`,
    `images`): one row, one split; `moved` counts the images grouping moved, by split."""
    rows = max(1, len(groups))
    fig, axes = pyplot().subplots(rows, strip, figsize=(1.6 * strip, 1.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for row, group in zip(axes, groups, strict=False):
        row[0].set_title(
            f"{group['size']} images, {group.get('split', '?')} ({', '.join(group['classes'])})",
            fontsize=7,
            loc="left",
        )
        for ax, image_path in zip(row, sorted(group["images"]), strict=False):
            show_image(ax, image_path, draft=160)
    if not groups:
        axes.flat[0].text(0.5, 0.5, "no near-duplicates found", ha="center", va="center")
    fig.suptitle(
        "Largest near-duplicate groups (each kept in one split); grouping moved "
        + ", ".join(f"{n} into {split}" for split, n in moved.items())
        + " against content-hash splits",
        fontsize=8,
    )
    save(fig, path)


Series = Mapping[str, Sequence[tuple[int, float]]]


def plot_series(ax, series: Series, tags) -> list[str]:
    """Plot the tags that were logged; returns them (an empty panel says so)."""
    drawn = [tag for tag in tags if series.get(tag)]
    for tag in drawn:
        steps, values = zip(*sorted(series[tag]), strict=True)
        ax.plot(steps, values, label=tag, marker="o" if len(steps) < 20 else None, ms=3)
    if drawn:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    return drawn


def plot_training(train: Series, validation: Series, path: Path) -> dict[str, list[str]]:
    """Losses and learning rate over steps (TensorBoard's train scalars); validation AP.

    Returns the tags drawn in each panel.
    """
    extra_losses = sorted(t for t in train if t.endswith("loss") and t not in MAIN_LOSSES)
    fig, axes = pyplot().subplots(1, 3, figsize=(12, 3.4))
    drawn = {
        "loss": plot_series(axes[0], train, [*MAIN_LOSSES, *extra_losses]),
        "learning_rate": plot_series(axes[1], train, ["learning_rate"]),
        "validation": plot_series(axes[2], validation, VALIDATION_AP),
    }
    # Log scale shows the fall of a loss best, but only positive values fit on it.
    if drawn["loss"] and all(v > 0 for tag in drawn["loss"] for _, v in train[tag]):
        axes[0].set_yscale("log")
    axes[0].set(title="training loss", xlabel="step")
    axes[1].set(title="learning rate", xlabel="step")
    axes[2].set(title="validation COCO AP", xlabel="step", ylim=(0, 1))
    for ax in axes:
        ax.grid(alpha=0.3)
    save(fig, path)
    return drawn


def plot_ap_per_class(
    ap: Mapping[str, float | None], ap50: Mapping[str, float | None], title: str, path: Path
) -> None:
    """AP and AP50 bars per class; None (no verification object) is said on the bar."""
    fig, ax = pyplot().subplots(figsize=(max(4.5, 1.3 * len(ap)), 3.4))
    if not ap:
        ax.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax.transAxes)
    x = np.arange(len(ap))
    ax.bar(x - 0.2, [v or 0.0 for v in ap.values()], width=0.4, label="AP", color="tab:blue")
    ax.bar(
        x + 0.2,
        [max(0.0, ap50.get(name) or 0.0) for name in ap],
        width=0.4,
        label="AP50",
        color="tab:orange",
    )
    for i, value in enumerate(ap.values()):
        if value is None:
            ax.text(i, 0.02, "no objects", ha="center", fontsize=7, rotation=90)
    ax.set_xticks(x, list(ap))
    ax.set(ylim=(0, 1.15), yticks=np.linspace(0, 1, 6), ylabel="COCO AP", title=title)
    # Above the bars, in the headroom over AP 1.0.
    ax.legend(fontsize=8, ncols=2, loc="upper center")
    ax.grid(axis="y", alpha=0.3)
    save(fig, path)


def plot_pr_curves(curves: Mapping[str, np.ndarray], path: Path) -> None:
    """pycocotools' precision per class ([IoU threshold, 101 recall points]) at IoU 0.5."""
    recall = np.linspace(0, 1, 101)
    fig, ax = pyplot().subplots(figsize=(5, 4))
    for name, precision in curves.items():
        at_50 = precision[0]
        valid = at_50 > -1  # -1: no ground truth at that recall
        ax.plot(recall[valid], at_50[valid], label=name)
    ax.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title="Precision-recall at IoU 0.5",
    )
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(loc="lower left")
    save(fig, path)


def plot_detections(
    images: Mapping[int, np.ndarray],
    truths: Sequence[tuple[int, Box]],
    detections: Sequence[tuple[int, str, float, Box]],
    path: Path,
) -> None:
    """Images (by id, in id order) with their true boxes (green, dashed) and the
    detections (red, labelled with class and score); `truths` and `detections` name
    the image id of each box."""
    fig, axes = grid(len(images), 3)
    for ax, sid in zip(axes.flat, sorted(images), strict=False):
        ax.imshow(images[sid])
        for image_id, box in truths:
            if image_id == sid:
                draw_box(ax, box, "lime", dashed=True)
        for image_id, name, score, box in detections:
            if image_id == sid:
                label = f"{name} {score:.2f}"
                draw_box(ax, box, "red", label, color="white", fontsize=7, alpha=0.6)
    fig.suptitle("verification: true boxes dashed green, detections red", fontsize=9)
    save(fig, path)
