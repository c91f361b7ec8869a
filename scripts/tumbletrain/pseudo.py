"""Pseudo-labels: the model's boxes of a class, on its images no person labelled.

A class with `pseudo_labels: SCORE` gets, from each `review` round, a list
(`lists.py` format, source `pseudo`) of its unlabelled images on which the
model found a box of that class at or above SCORE, with those boxes only (the
tag says which class the picture shows; another class's box there is more
likely the model's mistake). The annotations stage adds them to the training
list, never to verification: an image whose split (its near-duplicate group's)
is verification stays out, as does any image a person labelled, so the
verification figures stay human-labelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from . import config as tt_config
from . import lists, neardup


def listed(
    image: str,
    sha256: str,
    info,
    class_name: str,
    threshold: float,
    boxes: Sequence[tuple[str, float, float, float, float, float]],
) -> lists.ListedImage | None:
    """The image's pseudo-label: its boxes (name, score, xmin, ymin, xmax, ymax) of the class
    at or above the threshold, clipped to the image; None when it has none."""
    objects = tuple(
        lists.ListedObject(
            class_name,
            round(max(0.0, xmin), 2),
            round(max(0.0, ymin), 2),
            round(min(float(info.width), xmax), 2),
            round(min(float(info.height), ymax), 2),
        )
        for name, score, xmin, ymin, xmax, ymax in boxes
        if name == class_name and score >= threshold
    )
    objects = tuple(o for o in objects if o.xmax - o.xmin >= 1 and o.ymax - o.ymin >= 1)
    if not objects:
        return None
    return lists.ListedImage(
        image, sha256, info.format, info.width, info.height, info.orientation, "", objects, "pseudo"
    )


def write(path: Path, items: Sequence[lists.ListedImage]) -> None:
    """The class's pseudo-label list; left as it is when unchanged (the annotations rule
    re-runs when the file changes)."""
    ordered = sorted(items, key=lambda item: (item.sha256, item.image))
    if not (path.is_file() and lists.read_list(path) == ordered):
        lists.write_list(path, ordered)


def training_items(
    path: Path, split: tt_config.SplitConfig, labelled: set[str], tables: Sequence[Path]
) -> list[lists.ListedImage]:
    """The pseudo-labels the training list takes: of images no person labelled, whose
    split is training (their near-duplicate group's, when grouping is on)."""
    items = [i for i in lists.read_list(path) if i.sha256 not in labelled]
    placements = {}
    if split.group_near_duplicates and items:
        members = [m for table in tables for m in neardup.read_members(table)]
        placements = neardup.place(
            members, split, split.near_duplicate_distance, [i.sha256 for i in items]
        )

    def split_of(sha256: str) -> str:
        placed = placements.get(sha256)
        return placed.split if placed else neardup.split_of(sha256, split)

    return [i for i in items if split_of(i.sha256) == "training"]
