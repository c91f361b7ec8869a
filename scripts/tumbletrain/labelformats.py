"""LabelImg's YOLO and CreateML files, read as the Pascal VOC it saves for the same boxes.

LabelImg saves one of three formats (its libs/pascal_voc_io.py, yolo_io.py
and create_ml_io.py), each file named after its image and beside it:
- YOLO `.txt`: a line `class x_center y_center width height` per box, the
  class an index into `classes.txt` beside it, the rest fractions of the image;
- CreateML `.json`: `[{"image": name, "annotations": [{"label": ..., "coordinates":
  {"x", "y", "width", "height"}}]}]`, the box's centre and size in pixels.

Both become the `<annotation>` element of the same boxes, with the image's
name and size, so one validation (image look-up, size, boxes, class names and
their reason codes) serves all three formats.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable

from lxml import etree

from . import fileio, vocxml

YOLO_CLASSES = "classes.txt"
# Text files LabelImg writes that hold no boxes.
NOT_BOXES = frozenset({YOLO_CLASSES, "predefined_classes.txt"})
SUFFIXES = (".xml", ".txt", ".json")

# More boxes than anyone draws on one picture in LabelImg: a file beyond it
# (a 4 MB YOLO file holds 230,000 lines) is rejected before its boxes are built.
MAX_BOXES = 10_000
# Characters XML 1.0 cannot hold (lxml refuses them): a label with one names no class.
NOT_XML_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

REASONS = {
    "too_many_boxes": f"the file holds more than {MAX_BOXES} boxes",
    "label_not_text": "the box's label holds control characters or is not valid Unicode",
    "outside_folders": "the file resolves (after symbolic links) outside the class's "
    "annotation folders: never read",
    "not_yolo": "a line of the YOLO file is not `class x_center y_center width height`, "
    "or its classes.txt is unreadable",
    "not_createml": "the JSON file is not a CreateML list of images and their annotations",
    "class_index_outside": "the YOLO class index is not a line of classes.txt",
}

# (annotation file, image file name or None) -> (image file name, upright width, height),
# or a reason code when no image (or no readable one) is there.
ImageLookup = Callable[[str, str | None], "tuple[str, int, int] | str"]
# Whether a file (symbolic links followed) lies in the class's annotation folders.
Confines = Callable[[str], bool]
Read = tuple[etree._Element, list[tuple[str, str]]] | str


def is_annotation(name: str, yolo_folder: bool) -> bool:
    """Whether a file of a folder is one LabelImg saved boxes in.

    A `.txt` counts only beside a `classes.txt`, which LabelImg writes with
    every YOLO file: elsewhere a text file is someone's notes.
    """
    suffix = os.path.splitext(name)[1].lower()
    if suffix == ".xml":
        return True
    if name.startswith(".") or suffix not in SUFFIXES:
        return False
    return suffix == ".json" or (yolo_folder and name not in NOT_BOXES)


def read_text(path: str) -> str:
    """The file's text; raises fileio.FileProblem (too large, a FIFO, a broken link, ...:
    its reason is the file's) or ValueError (not UTF-8)."""
    return fileio.read_regular(path, vocxml.MAX_XML_BYTES).decode("utf-8")


def shown(text: str) -> str:
    """A label as rejected.tsv shows it: characters XML cannot hold escaped, 40 at most."""
    return NOT_XML_TEXT.sub(lambda m: m.group().encode("unicode_escape").decode(), text[:40])


def as_voc(filename: str, width: int, height: int, objects: list[vocxml.VocObject]):
    data = vocxml.labelimg_xml("", filename, "", (width, height, 3), objects)
    return vocxml.parse(data).getroot()


def read_yolo(path: str, image_of: ImageLookup, confines: Confines) -> Read:
    classes_file = os.path.join(os.path.dirname(path), YOLO_CLASSES)
    if not confines(classes_file):
        return "outside_folders"
    try:
        lines = read_text(path).splitlines()
        # As LabelImg's YoloReader reads it.
        classes = read_text(classes_file).strip("\n").split("\n")
    except fileio.FileProblem as problem:
        return problem.reason
    except ValueError:
        return "bad_encoding"
    boxes = []
    for position, line in enumerate(lines):
        fields = line.split()
        if not fields:
            continue
        try:
            boxes.append((position, fields[0], int(fields[0]), *(float(v) for v in fields[1:])))
        except ValueError:
            return "not_yolo"
        if len(boxes[-1]) != 7:
            return "not_yolo"
        if len(boxes) > MAX_BOXES:
            return "too_many_boxes"
    found = image_of(path, None)
    if isinstance(found, str):
        return found
    name, width, height = found
    objects, dropped = [], []
    for position, text, index, x, y, w, h in boxes:
        if not 0 <= index < len(classes):
            dropped.append((f"{position}:{text[:40]}", "class_index_outside"))
            continue
        if NOT_XML_TEXT.search(classes[index]):
            dropped.append((f"{position}:{shown(classes[index])}", "label_not_text"))
            continue
        objects.append(
            vocxml.VocObject(
                classes[index].strip(),
                (x - w / 2) * width,
                (y - h / 2) * height,
                (x + w / 2) * width,
                (y + h / 2) * height,
            )
        )
    return as_voc(name, width, height, objects), dropped


def createml_entry(entries, path: str) -> dict | None:
    """The entry for the file's image: LabelImg names the file after it."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        return None
    stem = os.path.splitext(os.path.basename(path))[0]
    named = [e for e in entries if os.path.splitext(str(e.get("image", "")))[0] == stem]
    if len(named) == 1:
        return named[0]
    return entries[0] if len(entries) == 1 else None


def read_createml(path: str, image_of: ImageLookup, confines: Confines) -> Read:
    try:
        entry = createml_entry(json.loads(read_text(path)), path)
    except fileio.FileProblem as problem:
        return problem.reason
    except (ValueError, RecursionError):  # RecursionError: nested a thousand deep
        return "not_createml"
    if entry is None or not isinstance(entry.get("annotations"), list):
        return "not_createml"
    if len(entry["annotations"]) > MAX_BOXES:
        return "too_many_boxes"
    found = image_of(path, os.path.basename(str(entry.get("image", ""))) or None)
    if isinstance(found, str):
        return found
    name, width, height = found
    objects, dropped = [], []
    for position, shape in enumerate(entry["annotations"]):
        try:
            box = shape["coordinates"]
            # OverflowError: an integer too large for a float (10**400).
            x, y, w, h = (float(box[k]) for k in ("x", "y", "width", "height"))
            label = str(shape["label"])
        except (KeyError, TypeError, ValueError, OverflowError):
            return "not_createml"
        if not all(map(math.isfinite, (x, y, w, h))):
            return "not_createml"
        if NOT_XML_TEXT.search(label):
            dropped.append((f"{position}:{shown(label)}", "label_not_text"))
            continue
        objects.append(vocxml.VocObject(label, x - w / 2, y - h / 2, x + w / 2, y + h / 2))
    return as_voc(name, width, height, objects), dropped


READERS = {".txt": read_yolo, ".json": read_createml}
