"""Annotation files written and read by LabelImg's own code (labelImg 1.8.6 from PyPI).

`save` calls `libs.labelFile.LabelFile.save_{pascal_voc,yolo,create_ml}_format`,
what LabelImg's Save calls (labelImg.py `save_labels`), with the file name it
uses: the image's name with `.xml`, `.txt` or `.json`, beside the image. YOLO
files get `classes.txt` beside them, written by LabelImg from its class list
(`predefined_classes.txt` first, as LabelImg's `label_hist`). The readers are
LabelImg's own `PascalVocReader`, `YoloReader` and `CreateMLReader`.

LabelImg's libs need PyQt5 only for `QImage`, which reads an image's size
without a QGuiApplication: no display and no Qt platform plugin are needed.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from libs.create_ml_io import CreateMLReader
from libs.labelFile import LabelFile
from libs.pascal_voc_io import PascalVocReader
from libs.yolo_io import YoloReader
from PIL import Image
from PyQt5.QtGui import QImage

SUFFIX = {"voc": ".xml", "yolo": ".txt", "createml": ".json"}

Box = tuple[str, int, int, int, int]  # name, xmin, ymin, xmax, ymax


def image(path: Path, size: tuple[int, int] = (200, 120), fmt: str | None = None) -> Path:
    """An image whose content depends on its file name (the checks go by content)."""
    seed = zlib.crc32(path.name.encode())
    picture = Image.new("RGB", size, (seed % 256, (seed >> 8) % 256, (seed >> 16) % 256))
    picture.putpixel((1, 1), ((seed >> 24) % 256, 7, 200))
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, fmt)
    return path


def save(fmt: str, picture: Path, boxes: list[Box], class_list: list[str] | None = None) -> Path:
    """Save boxes for an image as LabelImg's Save does, beside the image; returns the file."""
    target = picture.with_suffix(SUFFIX[fmt])
    shapes = [
        {
            "label": name,
            "points": [(x0, y0), (x1, y0), (x1, y1), (x0, y1)],
            "difficult": False,
        }
        for name, x0, y0, x1, y1 in boxes
    ]
    label_file = LabelFile()
    if fmt == "voc":
        label_file.save_pascal_voc_format(str(target), shapes, str(picture), None)
    elif fmt == "yolo":
        label_file.save_yolo_format(str(target), shapes, str(picture), None, list(class_list))
    else:
        label_file.save_create_ml_format(str(target), shapes, str(picture), None, class_list)
    return target


def read(fmt: str, path: Path, picture: Path) -> list[Box]:
    """The boxes LabelImg shows when it opens `path` for `picture`."""
    if fmt == "voc":
        reader = PascalVocReader(str(path))
    elif fmt == "yolo":
        qimage = QImage()
        assert qimage.load(str(picture)), picture
        reader = YoloReader(str(path), qimage)
    else:
        reader = CreateMLReader(str(path), str(picture))
    return [(label, *points[0], *points[2]) for label, points, *_ in reader.get_shapes()]
