"""The image store cannot be changed from data/{class}, the folder users edit."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from fake_tumblr import image_bytes
from PIL import Image
from tumbletrain import annotations, config, harvest, labelimg, lists, store, vocxml


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def harvest_and_label(tmp_path: Path) -> tuple[config.WorkflowConfig, dict, Path]:
    folder = tmp_path / "pics"
    folder.mkdir()
    for i in (1, 2):
        (folder / f"{i}.jpg").write_bytes(image_bytes(i, size=(60, 40)))
    data = tmp_path / "data" / "pose"
    pose = {"folders": [str(folder)], "annotations_dir": str(data)}
    cfg = config.parse({"classes": {"pose": pose}})
    harvest.harvest_class(cfg, "pose", tmp_path / "images", tmp_path / "manifests" / "pose.tsv")
    rows = {r.sha256: r for r in store.read_manifest(tmp_path / "manifests" / "pose.tsv")}
    labelimg.materialise(list(rows.values()), data, ["pose"])
    return cfg, rows, data


def test_an_image_edited_in_data_is_a_new_image_and_the_store_is_untouched(tmp_path):
    cfg, rows, data = harvest_and_label(tmp_path)
    edited_sha, kept_sha = sorted(rows)
    edited = data / f"{edited_sha[:16]}.jpg"
    # An editor writing in place, as GIMP's "overwrite" or a script does.
    Image.new("RGB", (60, 40), (1, 2, 3)).save(edited, "JPEG")
    store_file = Path(rows[edited_sha].file)
    assert sha(store_file) == edited_sha, "the store file changed with the copy in data/"
    assert not os.path.samefile(store_file, edited)
    for image in data.glob("*.jpg"):
        box = vocxml.VocObject("pose", 2, 2, 30, 30)
        xml = vocxml.labelimg_xml("pose", image.name, "", (60, 40, 3), [box])
        image.with_suffix(".xml").write_bytes(xml)
    annotations.validate_class(
        cfg,
        "pose",
        tmp_path / "manifests" / "pose.tsv",
        tmp_path / "out",
        None,
        tmp_path / "images",
    )
    listed = {
        i.sha256: i for s in config.SPLITS for i in lists.read_list(tmp_path / "out" / f"{s}.tsv")
    }
    new_sha = sha(edited)
    assert set(listed) == {new_sha, kept_sha}
    assert listed[new_sha].image == str(edited), "the edited image is its own, new image"
    assert listed[kept_sha].image == rows[kept_sha].file, "an unedited copy is the store's"


def test_a_hard_link_an_older_version_made_is_replaced_by_a_copy(tmp_path):
    _, rows, data = harvest_and_label(tmp_path)
    first = sorted(rows)[0]
    target = data / f"{first[:16]}.jpg"
    target.unlink()
    os.link(rows[first].file, target)
    counts = labelimg.materialise(list(rows.values()), data, ["pose"])
    assert counts == {"copied": 0, "present": 1, "unlinked": 1, "removed": 0}
    assert not os.path.samefile(rows[first].file, target)
    assert target.read_bytes() == Path(rows[first].file).read_bytes()


def test_a_store_file_changed_through_an_old_link_is_restored_by_the_harvest(tmp_path):
    cfg, rows, _ = harvest_and_label(tmp_path)
    first = sorted(rows)[0]
    store_file = Path(rows[first].file)
    store_file.write_bytes(store_file.read_bytes() + b"edited")
    harvest.harvest_class(cfg, "pose", tmp_path / "images", tmp_path / "manifests" / "pose.tsv")
    assert sha(store_file) == first
