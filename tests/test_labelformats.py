"""LabelImg's three formats, written and read by LabelImg's own code (tests/labelimg_files.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from labelimg_files import image, read, save
from tumbletrain import annotations, config, fileio, lists, records, store

CLASSES = ["cup", "ball"]
# Boxes away from the edges: LabelImg's VOC writer marks edge boxes truncated, YOLO cannot.
BOXES = {
    "k0": [("cup", 10, 12, 60, 70), ("ball", 100, 20, 150, 90)],
    "k1": [("ball", 33, 41, 97, 99)],
    "k2": [("cup", 5, 6, 190, 110), ("cup", 20, 30, 40, 50), ("ball", 120, 7, 170, 44)],
}


def validate(folder: Path, outdir: Path) -> tuple[dict, list[lists.ListedImage]]:
    cfg = config.parse({"classes": {"cup": {"annotations_dir": str(folder)}, "ball": {}}})
    summary = annotations.validate_class(cfg, "cup", None, outdir)
    items = [i for s in config.SPLITS for i in lists.read_list(outdir / f"{s}.tsv")]
    return summary, items


def rejected(outdir: Path) -> dict[str, list[str]]:
    reasons: dict[str, list[str]] = {}
    for row in fileio.read_tsv(outdir / "rejected.tsv"):
        reasons.setdefault(Path(row["file"]).name, []).append(row["reason"])
    return reasons


@pytest.fixture(scope="module")
def by_format(tmp_path_factory):
    """The same boxes on the same images, saved by LabelImg in each of its formats."""
    base = tmp_path_factory.mktemp("formats")
    result = {}
    for fmt in ("voc", "yolo", "createml"):
        folder = base / fmt
        for name, boxes in BOXES.items():
            picture = image(folder / f"{name}.jpg")
            path = save(fmt, picture, boxes, list(CLASSES))
            # LabelImg opens what it saved with the boxes it was given.
            assert read(fmt, path, picture) == boxes
        summary, items = validate(folder, base / "lists" / fmt)
        output = base / "records" / f"{fmt}.tfrecord"
        records.write_records(items, output, {"cup": 1, "ball": 2}, 1)
        result[fmt] = (summary, items, output.read_bytes())
    return result


@pytest.mark.parametrize("fmt", ["voc", "yolo", "createml"])
def test_every_format_labelimg_saves_is_kept_without_repair(by_format, fmt):
    summary, items, _ = by_format[fmt]
    assert (summary["kept"], summary["repaired"], summary["rejected_files"]) == (3, 0, 0)
    for item in items:
        boxes = [(o.name, o.xmin, o.ymin, o.xmax, o.ymax) for o in item.objects]
        assert boxes == BOXES[Path(item.image).stem]


@pytest.mark.parametrize("fmt", ["yolo", "createml"])
def test_yolo_and_createml_give_the_records_of_the_voc_of_the_same_boxes(by_format, fmt):
    assert by_format[fmt][2] == by_format["voc"][2]


def test_yolo_and_createml_are_rejected_for_the_reasons_voc_is(tmp_path):
    folder = tmp_path / "mixed"
    save(
        "yolo",
        image(folder / "two.jpg"),
        [("cup", 10, 10, 50, 50), ("ball", 60, 10, 90, 50)],
        CLASSES,
    )
    # The user trimmed the class list after labelling: index 1 is no longer a line of it.
    (folder / "classes.txt").write_text("cup\n")
    save("yolo", image(folder / "wide.jpg"), [("cup", 150, 10, 400, 50)], ["cup"])
    save("yolo", image(folder / "gone.jpg"), [("cup", 10, 10, 50, 50)], ["cup"])
    (folder / "gone.jpg").unlink()
    (folder / "broken.txt").write_text("0 0.5 0.5\n")
    save("createml", image(folder / "far.png", fmt="PNG"), [("cup", 150, 10, 400, 50)])
    save("createml", image(folder / "lost.jpg"), [("ball", 10, 10, 50, 50)])
    (folder / "lost.jpg").unlink()
    (folder / "notes.json").write_text('{"not": "createml"}')
    notes = tmp_path / "plain"
    image(notes / "photo.jpg")
    (notes / "README.txt").write_text("photos from the trip\n")
    save("voc", notes / "photo.jpg", [("cup", 10, 10, 50, 50)])
    cfg = config.parse(
        {"classes": {"cup": {"annotations_dir": str(folder), "folders": [str(notes)]}, "ball": {}}}
    )
    summary = annotations.validate_class(cfg, "cup", None, tmp_path / "out")
    assert rejected(tmp_path / "out") == {
        "two.txt": ["class_index_outside"],
        "wide.txt": ["no_objects", "box_outside"],
        "gone.txt": ["image_not_found"],
        "broken.txt": ["not_yolo"],
        "far.json": ["no_objects", "box_outside"],
        "lost.json": ["image_not_found"],
        "notes.json": ["not_createml"],
    }
    # The other object of two.jpg is kept; README.txt beside no classes.txt is nobody's boxes.
    assert summary["kept"] == 2 and summary["xml_files"] == 8


def test_whole_image_boxes_are_what_labelimg_reads(tmp_path):
    picture = image(tmp_path / "store" / "ab" / "abc.jpg", size=(90, 40))
    manifest = [store.ManifestRow("abc", str(picture), "folder", width=90, height=40)]
    (xml,) = annotations.whole_image_xml(manifest, "cup", tmp_path / "whole")
    assert read("voc", Path(xml), picture) == [("cup", 0, 0, 90, 40)]
