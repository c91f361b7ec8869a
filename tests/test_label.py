"""Labelling as a person does it: the hand-off, a real LabelImg window, the next run.

Each test makes a class of one kind, runs its `label` hand-off, opens LabelImg
as `python -m tumbletrain.label CLASS` does, on an X server (Xvfb), and drives
it with Qt's test input events (tests/labelimg_gui.py): the boxes LabelImg
shows for the first image are the ones saved for it; press `w`, drag a box,
click a class in LabelImg's list, OK, Ctrl+S. Then the annotations stage keeps
exactly the boxes the image had plus the drawn one, with nothing rejected.

Files that exist before are written by LabelImg's own code
(tests/labelimg_files.py), the pre-labels as predict.py writes them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from labelimg_files import image, save
from tumbletrain import annotations, config, demo, harvest, label, labelimg, lists, store, vocxml

HERE = Path(__file__).resolve().parent
# The box drawn, in image pixels, on a 200x120 image.
DRAWN = (40, 30, 150, 100)


@pytest.fixture(scope="session")
def display(tmp_path_factory):
    """An X server (Xvfb) with Qt's xcb libraries, installed as root when missing (as CI
    on a clean machine needs: tests/label_display.sh)."""
    script = HERE / "label_display.sh"
    state = tmp_path_factory.mktemp("xvfb")
    env = {**os.environ, "QT_PACKAGES": " ".join(label.QT_PACKAGES)}
    started = subprocess.run(
        ["bash", str(script), "start", str(state)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    yield started.stdout.strip().splitlines()[-1]
    subprocess.run(["bash", str(script), "stop", str(state)], check=False, timeout=60)


@pytest.fixture
def gui(display, tmp_path, monkeypatch):
    """Run tests/labelimg_gui.py from the project folder (tmp_path): the result as a dict."""
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"  # LabelImg's settings (~/.labelImgSettings.pkl) stay here
    home.mkdir()
    env = {
        **os.environ,
        "DISPLAY": display,
        "HOME": str(home),
        "QT_QPA_PLATFORM": "xcb",
        "PYTHONPATH": os.pathsep.join(
            [str(HERE.parent / "scripts"), str(HERE), os.environ.get("PYTHONPATH", "")]
        ),
    }

    def run(*launcher: str, draw: str | None = None, unpatched=False, screenshot=None):
        result = tmp_path / "gui.json"
        result.unlink(missing_ok=True)
        argv = [sys.executable, str(HERE / "labelimg_gui.py"), str(result)]
        if draw:
            argv += ["--draw", draw, *map(str, DRAWN)]
        if unpatched:
            argv.append("--unpatched")
        if screenshot:
            argv += ["--screenshot", str(screenshot)]
        done = subprocess.run(
            [*argv, "--", *launcher], capture_output=True, text=True, env=env, timeout=120
        )
        return done, (json.loads(result.read_text()) if result.exists() else None)

    return run


def stage(raw: dict, name: str, cls: str) -> config.WorkflowConfig:
    return config.parse(config.stage_config(config.validate(raw), name, cls))


def stage_json(raw: dict, name: str, cls: str) -> str:
    return json.dumps(config.stage_config(config.validate(raw), name, cls))


def hand_off(raw: dict, cls: str, project: Path) -> None:
    """The `label` rule: the class's hand-off in data/{class}."""
    argv = ["--config-json", stage_json(raw, "label", cls), "--class", cls]
    argv += ["--manifest", f"resources/manifests/{cls}.tsv", "--folder", f"data/{cls}"]
    assert labelimg.main(argv) == 0


def harvest_class(raw: dict, cls: str, project: Path, demo_dir: Path | None = None) -> None:
    harvest.harvest_class(
        stage(raw, "harvest", cls),
        cls,
        project / "resources/images",
        project / f"resources/manifests/{cls}.tsv",
        demo_dir=demo_dir,
    )


def validate(raw: dict, cls: str, project: Path) -> dict:
    return annotations.validate_class(
        stage(raw, "annotations", cls),
        cls,
        project / f"resources/manifests/{cls}.tsv",
        project / f"results/lists/{cls}",
        store_root=project / "resources/images",
    )


def kept_boxes(project: Path, cls: str) -> dict[str, tuple[str, list]]:
    """The class's kept images: XML path -> (split, [(name, xmin, ymin, xmax, ymax)])."""
    kept = {}
    for split in config.SPLITS:
        for item in lists.read_list(project / f"results/lists/{cls}/{split}.tsv"):
            boxes = sorted((o.name, o.xmin, o.ymin, o.xmax, o.ymax) for o in item.objects)
            kept[str(Path(item.xml).resolve())] = (split, boxes)
    return kept


def stored_row(project: Path, image_store, data: bytes, i: int) -> store.ManifestRow:
    """`data` stored, and its manifest row as a Tumblr harvest writes it."""
    checked, path = image_store.put(data)
    return store.ManifestRow(
        checked.sha256,
        os.path.relpath(path, project),
        "tumblr",
        blog="someblog",
        post_id=str(100 + i),
        image_url=f"https://64.media.tumblr.com/{i}/tumblr_{i}_1280.jpg",
        width=checked.width,
        height=checked.height,
        bytes=checked.bytes,
    )


def tumblr_rows(project: Path, count: int) -> list[store.ManifestRow]:
    """A Tumblr class's manifest rows and store files, as the harvest writes them."""
    image_store = store.ImageStore(project / "resources/images")
    return [
        stored_row(
            project, image_store, image(project / "downloads" / f"tumblr_{i}.jpg").read_bytes(), i
        )
        for i in range(count)
    ]


def own_flat(project: Path) -> tuple[dict, str, dict]:
    folder = project / "data" / "cup"
    save("voc", image(folder / "cup0.jpg"), [("cup", 10, 10, 60, 60)])
    image(folder / "cup1.jpg")
    return {"classes": {"cup": {}}}, "cup", {"cup0": [("cup", 10, 10, 60, 60)]}


def original(project: Path) -> tuple[dict, str, dict]:
    """The original project's layout: {training,verification}/images/x.jpg, XML one level up."""
    folder = project / "data" / "cup"
    for split, name in (("training", "cup0"), ("verification", "cup1")):
        xml = save("voc", image(folder / split / "images" / f"{name}.jpg"), [("cup", 5, 5, 30, 30)])
        xml.rename(folder / split / xml.name)
    image(folder / "training" / "images" / "cup2.jpg")
    return {"classes": {"cup": {}}}, "cup", {"cup0": [("cup", 5, 5, 30, 30)]}


def folders(project: Path) -> tuple[dict, str, dict]:
    pictures = project / "pictures"
    save("voc", image(pictures / "p0.jpg"), [("cup", 20, 20, 70, 70)])
    image(pictures / "p1.jpg")
    return {"classes": {"cup": {"folders": ["pictures"]}}}, "cup", {"p0": [("cup", 20, 20, 70, 70)]}


def shared(project: Path) -> tuple[dict, str, dict]:
    """One folder of two classes; the box drawn is the other class's."""
    kitchen = project / "data" / "kitchen"
    save("voc", image(kitchen / "k0.jpg"), [("cup", 10, 10, 35, 35)])
    image(kitchen / "k1.jpg")
    raw = {"classes": {c: {"annotations_dir": "data/kitchen"} for c in ("cup", "ball")}}
    return raw, "cup", {"k0": [("cup", 10, 10, 35, 35)]}


def custom_own(project: Path) -> tuple[dict, str, dict]:
    """A LabelImg folder of its own elsewhere (`annotations_dir: ~/...` style)."""
    folder = project / "labelled" / "balls"
    save("voc", image(folder / "b0.jpg"), [("ball", 50, 20, 90, 60)])
    raw = {"classes": {"ball": {"annotations_dir": "labelled/balls"}}}
    return raw, "ball", {"b0": [("ball", 50, 20, 90, 60)]}


LAYOUTS = {
    "own_flat": own_flat,
    "original": original,
    "folders": folders,
    "shared": shared,
    "custom_own": custom_own,
}


def drawn_box(result: dict) -> tuple:
    """The box drawn, as LabelImg saves it (whole pixels, truncated); within a pixel of
    DRAWN (the mouse moves by whole screen pixels at LabelImg's zoom)."""
    name, *box = result["after"][-1]
    assert all(abs(v - d) <= 1 for v, d in zip(box, DRAWN, strict=True)), box
    return (name, *(float(int(v)) for v in box))


def check_round_trip(project: Path, raw: dict, cls: str, result: dict, before: list, drawn_as: str):
    """The annotations stage keeps the first image with its boxes and the drawn one, and
    rejects nothing (no image_outside_sources, no duplicate_annotation)."""
    assert result["picked"] == [drawn_as]
    drawn = drawn_box(result)
    xml = Path(result["save_dir"], Path(result["image"]).stem + ".xml").resolve()
    summaries = {c: validate(raw, c, project) for c in raw["classes"]}
    for name, summary in summaries.items():
        assert summary["rejected_by_reason"] == {}, (name, summary["rejected_by_reason"])
    owner = next(c for c in raw["classes"] if str(xml) in kept_boxes(project, c))
    _, boxes = kept_boxes(project, owner)[str(xml)]
    assert boxes == sorted([*((n, *map(float, b)) for n, *b in before), drawn])
    return owner, kept_boxes(project, owner)[str(xml)][0]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_box_drawn_in_labelimg_is_kept_by_the_next_run(gui, tmp_path, layout):
    raw, cls, existing = LAYOUTS[layout](tmp_path)
    for name in raw["classes"]:
        harvest_class(raw, name, tmp_path)
    hand_off(raw, cls, tmp_path)
    done, result = gui(cls, draw="ball" if layout == "shared" else cls)
    assert done.returncode == 0, done.stderr[-3000:]
    first = Path(result["image"]).stem
    assert first in existing, result["images"]
    before = [(n, *map(float, b)) for n, *b in existing[first]]
    # LabelImg shows the boxes the image already has.
    assert [(n, *map(round, b)) for n, *b in result["shown"]] == [
        (n, *map(round, b)) for n, *b in before
    ]
    assert result["classes"][: len(raw["classes"])] == list(raw["classes"])
    owner, split = check_round_trip(
        tmp_path, raw, cls, result, existing[first], result["picked"][0]
    )
    if layout == "original":
        assert Path(result["save_dir"]) == (tmp_path / "data/cup/training").resolve()
        assert split == "training"  # the folder's split, kept
    if layout == "shared":
        assert owner == "cup"  # the first class in `classes:` with an object in the image
    # The next LabelImg shows what was saved.
    done, again = gui(cls)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [(n, *map(round, b)) for n, *b in again["shown"]] == [
        (n, *map(round, b)) for n, *b in result["after"]
    ]


@pytest.mark.parametrize("annotations_dir", [None, "labels/pose"])
def test_a_tumblr_class_is_labelled_on_copies_of_its_store_images(gui, tmp_path, annotations_dir):
    """The store's images are copied into data/{class}; the XML goes to its annotations_dir
    and names the copies, which the annotations stage reads (no image_outside_sources)."""
    spec = {"tumblr": [{"tag": "pose"}]}
    if annotations_dir:
        spec["annotations_dir"] = annotations_dir
    raw = {"classes": {"pose": spec}}
    rows = tumblr_rows(tmp_path, 2)
    store.write_manifest(tmp_path / "resources/manifests/pose.tsv", rows)
    hand_off(raw, "pose", tmp_path)
    copies = sorted(p.name for p in (tmp_path / "data/pose").glob("*.jpg"))
    assert copies == sorted(f"{r.sha256[:16]}.jpg" for r in rows)
    done, result = gui("pose", draw="pose")
    assert done.returncode == 0, done.stderr[-3000:]
    assert result["shown"] == []
    assert Path(result["save_dir"]) == (tmp_path / (annotations_dir or "data/pose")).resolve()
    check_round_trip(tmp_path, raw, "pose", result, [], "pose")
    (item,) = lists.read_list(tmp_path / "results/lists/pose/training.tsv") + lists.read_list(
        tmp_path / "results/lists/pose/verification.tsv"
    )
    assert item.image.startswith("resources/images/")  # the store's file, by content


def test_a_demo_class_is_labelled_in_the_demo_folder_with_its_boxes_shown(gui, tmp_path):
    raw = {"classes": {"circle": {"demo": {"images": 3}}}}
    demo_dir = tmp_path / "resources/demo/circle"
    argv = ["--config-json", stage_json(raw, "demo", "circle"), "--class", "circle"]
    assert demo.main([*argv, "--output", str(demo_dir)]) == 0
    # As the workflow sets it (config.for_snakemake): the demo's folder is the class's.
    raw["classes"]["circle"]["annotations_dir"] = "resources/demo/circle"
    harvest_class(raw, "circle", tmp_path, demo_dir=Path("resources/demo/circle"))
    hand_off(raw, "circle", tmp_path)
    assert not list((tmp_path / "data/circle").glob("*.jpg"))  # nothing copied
    done, result = gui("circle", draw="circle")
    assert done.returncode == 0, done.stderr[-3000:]
    assert Path(result["save_dir"]) == demo_dir.resolve()
    xml = demo_dir / (Path(result["image"]).stem + ".xml")
    assert result["shown"]  # the demo's boxes
    before = [(n, *map(round, b)) for n, *b in result["shown"]]
    validate(raw, "circle", tmp_path)  # (the demo's own faults are rejected as before)
    kept = kept_boxes(tmp_path, "circle")[str(xml.resolve())][1]
    drawn = drawn_box(result)
    assert drawn in kept and len(kept) == len(before) + 1
    rejected = (tmp_path / "results/lists/circle/rejected.tsv").read_text()
    assert "duplicate_annotation" not in rejected and "image_outside_sources" not in rejected


def test_labelimg_shows_the_pre_labels_predict_writes(gui, tmp_path):
    """predict.py's pre-label XML (vocxml.labelimg_xml, as predict_images calls it), opened
    with `--images FOLDER --save-dir PRELABELS` as a review batch is."""
    pictures, prelabels = tmp_path / "new", tmp_path / "prelabels"
    boxes = {"n0": [("cup", 12, 14, 80, 90), ("ball", 100, 10, 180, 60)], "n1": []}
    for stem, objects in boxes.items():
        path = image(pictures / f"{stem}.jpg")
        xml = vocxml.labelimg_xml(
            folder=path.parent.name,
            filename=path.name,
            path=str(path.resolve()),
            size=(200, 120, 3),
            objects=[vocxml.VocObject(*o) for o in objects],
        )
        prelabels.mkdir(exist_ok=True)
        (prelabels / f"{stem}.xml").write_bytes(xml)
    (tmp_path / "classes.txt").write_text("cup\nball\n")
    argv = ["--images", "new", "--save-dir", "prelabels", "--classes", "classes.txt"]
    done, result = gui(*argv)
    assert done.returncode == 0, done.stderr[-3000:]
    assert Path(result["image"]).name == "n0.jpg"
    assert sorted((n, *map(round, b)) for n, *b in result["shown"]) == sorted(boxes["n0"])


def test_labelimg_1_8_6_crashes_on_the_first_box_without_the_compatibility_layer(gui, tmp_path):
    """The upstream bug `label.patch_labelimg` works around (labelImg issues 811, 872, 885,
    1011): if this fails, LabelImg no longer crashes; remove the layer."""
    own_flat(tmp_path)
    raw = {"classes": {"cup": {}}}
    harvest_class(raw, "cup", tmp_path)
    hand_off(raw, "cup", tmp_path)
    done, result = gui("cup", draw="cup", unpatched=True)
    assert done.returncode != 0 and result is None
    assert "canvas.py" in done.stderr and "unexpected type 'float'" in done.stderr
    assert not (tmp_path / "data/cup/cup0.xml").read_text().count("<object>") > 1


def test_the_screenshot_in_the_docs_is_labelimg_with_the_class_list(gui, tmp_path):
    """docs/labelimg.png: LabelImg on a demo class, after drawing a box (regenerate with
    TT_SCREENSHOT=1)."""
    raw = {"classes": {n: {"demo": {"images": 2}} for n in ("circle", "square", "triangle")}}
    demo_dir = tmp_path / "resources/demo/square"
    argv = ["--config-json", stage_json(raw, "demo", "square"), "--class", "square"]
    assert demo.main([*argv, "--output", str(demo_dir)]) == 0
    raw["classes"]["square"]["annotations_dir"] = "resources/demo/square"
    harvest_class(raw, "square", tmp_path, demo_dir=Path("resources/demo/square"))
    hand_off(raw, "square", tmp_path)
    shot = tmp_path / "labelimg.png"
    done, result = gui("square", draw="square", screenshot=shot)
    assert done.returncode == 0, done.stderr[-3000:]
    assert result["classes"] == ["circle", "square", "triangle"]
    assert shot.stat().st_size > 10_000
    if os.environ.get("TT_SCREENSHOT"):
        shutil.copyfile(shot, HERE.parent / "docs" / "labelimg.png")


def test_the_hand_off_names_the_folders_and_the_one_command(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    raw, cls, _ = original(tmp_path)
    harvest_class(raw, cls, tmp_path)
    hand_off(raw, cls, tmp_path)
    handoff = json.loads((tmp_path / "data/cup" / label.MARKER).read_text())
    assert handoff["labelimg"] == "python -m tumbletrain.label cup"
    assert handoff["folders"] == [
        ["data/cup/training/images", "data/cup/training"],
        ["data/cup/verification/images", "data/cup/verification"],
    ]
    assert capsys.readouterr().out == "cup: python -m tumbletrain.label cup\n"
