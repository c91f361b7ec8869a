"""Review pre-labels: the model's boxes written for a person to check, never a person's label.

`review` writes an image's pre-label as LabelImg XML where LabelImg opens and
saves that image's boxes, unverified. LabelImg keeps nothing of a file it
re-saves but the boxes, the names and its own `verified="yes"` (its
`PascalVocWriter` writes folder, filename, path, a `source` of "Unknown", the
size and the objects): a marker inside the XML would be lost on the first
save. So each folder of pre-labels has a ledger, `LEDGER`, naming each file
written and the digest of its boxes as written. A file counts as a person's
once LabelImg's `verified="yes"` is set (the space bar) or its boxes differ
from that digest; a file the user opened and LabelImg saved again unchanged is
still the model's.

Boxes are written as LabelImg saves them (`LabelFile.convert_points_to_bnd_box`:
whole pixels, the top-left at least 1), so an untouched re-save keeps the digest.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from lxml import etree

from . import fileio, vocxml

# The ledger of the pre-labels written into a folder (a hidden TSV: no annotation format).
LEDGER = ".tumbletrain-prelabels.tsv"
LEDGER_COLUMNS = ("xml", "boxes", "size", "mtime_ns")
BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")
REASONS = {
    "prelabel_unreviewed": "a review pre-label no person has verified (space bar in LabelImg) "
    "or edited: the model's boxes, not a label",
}


def labelimg_box(xmin: float, ymin: float, xmax: float, ymax: float) -> tuple[int, ...]:
    """A box as LabelImg saves it: whole pixels, the top-left at least 1."""
    return int(max(1, xmin)), int(max(1, ymin)), int(xmax), int(ymax)


def boxes_digest(objects: Iterable[tuple[str, float, float, float, float]]) -> str:
    """The digest of (name, xmin, ymin, xmax, ymax) boxes, in any order, in whole pixels."""
    canonical = sorted((name, *(int(float(v)) for v in box)) for name, *box in objects)
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()


def xml_boxes(root: etree._Element) -> list[tuple[str, str, str, str, str]]:
    """The boxes of a Pascal VOC root, as written (`boxes_digest` reads them as numbers)."""
    return [
        (
            (obj.findtext("name") or "").strip(),
            *((obj.findtext(f"bndbox/{tag}") or "nan").strip() for tag in BOX_TAGS),
        )
        for obj in root.iter("object")
    ]


def read_ledger(folder: str | Path) -> dict[str, dict[str, str]]:
    """The folder's ledger by XML file name; empty when it has none."""
    path = Path(folder) / LEDGER
    if not path.is_file():
        return {}
    return {row["xml"]: row for row in fileio.read_tsv(path)}


@functools.lru_cache(maxsize=64)
def _ledger(folder: str, version: tuple[int, int] | None) -> dict[str, dict[str, str]]:
    return read_ledger(folder)


def _cached_ledger(folder: str) -> dict[str, dict[str, str]]:
    """The folder's ledger, read again only when it changed (a stat per call)."""
    try:
        stat = os.stat(os.path.join(folder, LEDGER))
    except OSError:
        return {}
    return _ledger(folder, (stat.st_mtime_ns, stat.st_ino))


def write_ledger(folder: str | Path, rows: dict[str, dict[str, str]]) -> None:
    fileio.write_tsv(
        Path(folder) / LEDGER,
        LEDGER_COLUMNS,
        ([row[c] for c in LEDGER_COLUMNS] for _, row in sorted(rows.items())),
    )


def untouched(xml_path: str | Path, ledger: dict[str, dict[str, str]] | None = None) -> bool:
    """Whether the file is a pre-label as `review` wrote it: unverified, the same boxes.

    `ledger` is the folder's (read once per folder and change when not given).
    """
    folder, name = os.path.split(os.path.abspath(xml_path))
    entry = (_cached_ledger(folder) if ledger is None else ledger).get(name)
    if entry is None:
        return False
    try:
        stat = os.stat(xml_path)
        if (str(stat.st_size), str(stat.st_mtime_ns)) == (entry["size"], entry["mtime_ns"]):
            return True  # as written: no need to parse it
        root = vocxml.parse(fileio.read_regular(xml_path, vocxml.MAX_XML_BYTES)).getroot()
        return root.get("verified") != "yes" and boxes_digest(xml_boxes(root)) == entry["boxes"]
    except (OSError, fileio.FileProblem, etree.XMLSyntaxError, ValueError):
        return False  # unreadable or damaged: the annotations stage says why


def touched(xml_path: str | Path, ledger: dict[str, dict[str, str]] | None = None) -> bool:
    """Whether a person's file is there: one that exists and is not an untouched pre-label."""
    return os.path.lexists(xml_path) and not untouched(xml_path, ledger)


def write(
    xml_path: Path,
    image: Path,
    size: tuple[int, int],
    boxes: Sequence[tuple[str, float, float, float, float]],
    ledger: dict[str, dict[str, str]],
) -> None:
    """An unverified pre-label of `image` (width, height) at `xml_path`, entered in `ledger`,
    the folder's (written here when the entry is new; the file's size and time, which
    spare parsing it, by the caller with `write_ledger`)."""
    objects = [vocxml.VocObject(name, *labelimg_box(*box)) for name, *box in boxes]
    data = vocxml.labelimg_xml(
        folder=image.parent.name,
        filename=image.name,
        path=str(image.resolve()),
        size=(*size, 3),
        objects=objects,
    )
    digest = boxes_digest((o.name, o.xmin, o.ymin, o.xmax, o.ymax) for o in objects)
    if ledger.get(xml_path.name, {}).get("boxes") != digest:
        # The ledger first: a run stopped between the two must not leave a pre-label
        # that no ledger names, which would count as a person's.
        ledger[xml_path.name] = {"xml": xml_path.name, "boxes": digest, "size": "", "mtime_ns": ""}
        write_ledger(xml_path.parent, ledger)
    if not (xml_path.is_file() and xml_path.read_bytes() == data):
        fileio.write_bytes(xml_path, data)
    stat = xml_path.stat()
    ledger[xml_path.name].update(size=str(stat.st_size), mtime_ns=str(stat.st_mtime_ns))
