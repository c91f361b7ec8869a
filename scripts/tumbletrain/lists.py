"""The per-class, per-split list: the contract between validation and records.

A split's list (`{split}.tsv`, one per class and split) has one row per kept image. Boxes are in
pixels of the upright image (EXIF orientation applied, as LabelImg shows it);
`width`/`height` are that upright image's size, read from the image itself.
`source` says whose boxes they are (`SOURCES`); a list written before it had the
column reads as `human`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import fileio
from .vocxml import VocObject

COLUMNS = (
    "image",
    "sha256",
    "format",
    "width",
    "height",
    "orientation",
    "xml",
    "objects",
    "source",
)
# Whose boxes an image's are: a person's (LabelImg; a review pre-label once verified or
# edited), the generated whole-image box of a `whole_image` class, or the model's.
SOURCES = ("human", "whole_image", "pseudo")
# A class's rejected.tsv: one row per rejected file or object.
REJECTED_COLUMNS = ("file", "object", "reason", "message")


# An object in a list is exactly what LabelImg's XML describes.
ListedObject = VocObject


@dataclass(frozen=True)
class ListedImage:
    image: str
    sha256: str
    format: str
    width: int
    height: int
    orientation: int = 1
    xml: str = ""
    objects: tuple[ListedObject, ...] = field(default_factory=tuple)
    source: str = "human"

    def row(self) -> list:
        # vars() rather than asdict(): asdict deep-copies, and this runs per object.
        objects = json.dumps([vars(o) for o in self.objects], separators=(",", ":"))
        return [
            self.image,
            self.sha256,
            self.format,
            self.width,
            self.height,
            self.orientation,
            self.xml,
            objects,
            self.source,
        ]


def write_list(path, images: Iterable[ListedImage]) -> None:
    """Sorted by content hash, so the same images always give the same bytes."""
    ordered = sorted(images, key=lambda item: (item.sha256, item.image))
    fileio.write_tsv(path, COLUMNS, (item.row() for item in ordered))


def read_list(path) -> list[ListedImage]:
    images = []
    for row in fileio.read_tsv(path):
        objects = tuple(ListedObject(**o) for o in json.loads(row["objects"]))
        images.append(
            ListedImage(
                image=row["image"],
                sha256=row["sha256"],
                format=row["format"],
                width=int(row["width"]),
                height=int(row["height"]),
                orientation=int(row["orientation"] or 1),
                xml=row["xml"],
                objects=objects,
                source=row.get("source") or "human",
            )
        )
    return images
