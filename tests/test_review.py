"""The review queue and its pre-labels: only a person's label counts as a person's.

Pre-labels are written by `prelabels.write` (as `review` writes them) and read,
re-saved, verified and edited with LabelImg's own `PascalVocReader` and
`LabelFile` (labelImg 1.8.6: what its Open, Save and space bar call), then
validated by the annotations stage.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from labelimg_files import image
from libs.labelFile import LabelFile
from libs.pascal_voc_io import PascalVocReader
from PIL import Image
from test_label import hand_off, stored_row, validate
from tumbletrain import (
    annotations,
    config,
    fileio,
    label,
    lists,
    neardup,
    predict,
    prelabels,
    pseudo,
    report,
    review,
    store,
)

PRELABEL = [("pose", 0.4, 12.6, 80.2, 90.9)]  # as the model gives it: floats, a 0 edge
AS_SAVED = [("pose", 1, 12, 80, 90)]  # as LabelImg saves and shows it


def rows_of(project: Path, cls: str, count: int, prefix: str = "") -> list[store.ManifestRow]:
    """A Tumblr class's manifest rows and store files, as the harvest writes them."""
    image_store = store.ImageStore(project / "resources/images")
    rows = []
    for i in range(count):
        picture = image(project / "downloads" / f"{prefix or cls}_{i}.jpg")
        rows.append(stored_row(project, image_store, picture.read_bytes(), i))
    return rows


def tumblr_class(project: Path, cls: str, count: int) -> tuple[dict, list[store.ManifestRow]]:
    raw = {"classes": {cls: {"tumblr": [{"tag": cls}]}}}
    rows = rows_of(project, cls, count)
    store.write_manifest(project / f"resources/manifests/{cls}.tsv", rows)
    hand_off(raw, cls, project)
    return raw, rows


def copy_of(project: Path, row: store.ManifestRow) -> Path:
    """The hand-off's copy of a store image in data/{class}, which LabelImg opens."""
    return (project / "data/pose" / f"{row.sha256[:16]}.jpg").resolve()


def labelimg_save(xml: Path, picture: Path, boxes, verified: bool = False) -> None:
    """What LabelImg's Save (and the space bar, which re-saves) writes for these boxes."""
    shapes = [
        {"label": n, "points": [(a, b), (c, b), (c, d), (a, d)], "difficult": False}
        for n, a, b, c, d in boxes
    ]
    label_file = LabelFile()
    label_file.verified = verified
    label_file.save_pascal_voc_format(str(xml), shapes, str(picture), None)


def shown(xml: Path) -> tuple[list, bool]:
    """The boxes LabelImg shows for a file, and whether it marks it verified."""
    reader = PascalVocReader(str(xml))
    boxes = [(name, *points[0], *points[2]) for name, points, *_ in reader.get_shapes()]
    return boxes, reader.verified


def listed(project: Path, cls: str = "pose") -> dict[str, str]:
    """The class's listed images: XML file name -> label source."""
    return {
        Path(item.xml).name: item.source
        for split in config.SPLITS
        for item in lists.read_list(project / f"results/lists/{cls}/{split}.tsv")
    }


@pytest.fixture
def prelabelled(tmp_path, monkeypatch):
    """A Tumblr class of three images, each with a review pre-label in data/pose."""
    monkeypatch.chdir(tmp_path)
    raw, rows = tumblr_class(tmp_path, "pose", 3)
    ledger: dict = {}
    xmls = []
    for row in rows:
        picture = copy_of(tmp_path, row)
        xml = picture.with_suffix(".xml")
        prelabels.write(xml, picture, (200, 120), PRELABEL, ledger)
        xmls.append(xml)
    prelabels.write_ledger(tmp_path / "data/pose", ledger)
    return raw, rows, xmls


def test_labelimg_reads_a_prelabel_unverified_with_the_models_boxes(prelabelled):
    _, _, xmls = prelabelled
    assert shown(xmls[0]) == (AS_SAVED, False)


def test_untouched_prelabels_never_enter_the_lists(prelabelled, tmp_path):
    raw, rows, xmls = prelabelled
    # Opened and saved again unchanged (LabelImg's autosave, Ctrl+S): still the model's.
    boxes, _ = shown(xmls[1])
    labelimg_save(xmls[1], copy_of(tmp_path, rows[1]), boxes)
    summary = validate(raw, "pose", tmp_path)
    assert listed(tmp_path) == {}
    assert summary["rejected_by_reason"] == {"prelabel_unreviewed": 3}
    assert summary["unlabelled_images"] == 3


def test_a_verified_or_edited_prelabel_is_a_persons_label(prelabelled, tmp_path):
    raw, rows, xmls = prelabelled
    boxes, _ = shown(xmls[0])
    labelimg_save(xmls[0], copy_of(tmp_path, rows[0]), boxes, verified=True)  # space bar
    labelimg_save(xmls[1], copy_of(tmp_path, rows[1]), [("pose", 5, 12, 80, 90)])  # moved
    summary = validate(raw, "pose", tmp_path)
    assert listed(tmp_path) == {xmls[0].name: "human", xmls[1].name: "human"}
    assert summary["rejected_by_reason"] == {"prelabel_unreviewed": 1}
    assert not prelabels.untouched(xmls[0]) and prelabels.untouched(xmls[2])


def test_an_xml_without_a_ledger_entry_is_a_persons(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw, rows = tumblr_class(tmp_path, "pose", 1)
    picture = copy_of(tmp_path, rows[0])
    labelimg_save(picture.with_suffix(".xml"), picture, AS_SAVED)
    validate(raw, "pose", tmp_path)
    assert listed(tmp_path) == {picture.with_suffix(".xml").name: "human"}


def test_a_review_stopped_after_writing_a_prelabel_leaves_it_the_models(tmp_path, monkeypatch):
    """The ledger names a pre-label before the file exists: killed right after the XML is
    written (before the ledger gets its size and time), it still counts as the model's."""
    picture = image(tmp_path / "a.jpg")
    write_bytes = fileio.write_bytes

    def written_then_killed(path, data, sync=True):
        write_bytes(path, data, sync)
        if Path(path).suffix == ".xml":
            raise KeyboardInterrupt

    monkeypatch.setattr(fileio, "write_bytes", written_then_killed)
    with pytest.raises(KeyboardInterrupt):
        prelabels.write(picture.with_suffix(".xml"), picture, (200, 120), PRELABEL, {})
    assert prelabels.untouched(picture.with_suffix(".xml"))
    assert not prelabels.untouched(tmp_path / "b.xml")


def test_whole_image_lists_say_so_and_old_lists_read_as_human(tmp_path):
    item = lists.ListedImage("a.jpg", "ab" * 32, "jpeg", 4, 3, source="whole_image")
    lists.write_list(tmp_path / "new.tsv", [item])
    assert lists.read_list(tmp_path / "new.tsv") == [item]
    old = [c for c in lists.COLUMNS if c != "source"]
    fileio.write_tsv(tmp_path / "old.tsv", old, [item.row()[: len(old)]])
    assert lists.read_list(tmp_path / "old.tsv")[0].source == "human"


def test_the_account_counts_waiting_prelabels_apart_from_rejected_files(prelabelled, tmp_path):
    """Three pre-labels waiting and one verified: no "rejected" warning, the counts said."""
    raw, rows, xmls = prelabelled
    labelimg_save(xmls[0], copy_of(tmp_path, rows[0]), shown(xmls[0])[0], verified=True)
    ledger = prelabels.read_ledger(tmp_path / "data/pose")
    picture = image(tmp_path / "data/pose/extra.jpg")
    prelabels.write(picture.with_suffix(".xml"), picture, (200, 120), PRELABEL, ledger)
    prelabels.write_ledger(tmp_path / "data/pose", ledger)
    summary = validate(raw, "pose", tmp_path)
    files = report.ClassFiles("pose", tmp_path / "results/lists/pose")
    line, warnings = report.class_lines(files, summary)
    assert "1 annotation files: 1 kept (0 repaired), 0 rejected" in line  # a person's
    assert "labels: 1 human" in line and "3 review pre-labels waiting for a person" in line
    assert not [w for w in warnings if "rejected" in w]


def test_a_pseudo_label_holds_the_models_boxes_of_the_class_only():
    info = annotations.ImageInfo("a.jpg", "jpeg", 200, 120, 1)
    boxes = [
        ("pose", 0.9, -3.0, 10.0, 80.0, 130.0),  # past the edges: clipped
        ("pose", 0.4, 5.0, 5.0, 20.0, 20.0),  # under the threshold
        ("cup", 0.95, 5.0, 5.0, 50.0, 50.0),  # another class's
    ]
    item = pseudo.listed("store/a.jpg", "ab" * 32, info, "pose", 0.5, boxes)
    assert item.source == "pseudo" and item.image == "store/a.jpg"
    assert [(o.name, o.xmin, o.ymin, o.xmax, o.ymax) for o in item.objects] == [
        ("pose", 0.0, 10.0, 80.0, 120.0)
    ]
    assert pseudo.listed("store/a.jpg", "ab" * 32, info, "pose", 0.95, boxes) is None


@pytest.mark.parametrize("setting", [None, 0.5])
def test_pseudo_labels_train_only_and_only_where_no_person_labelled(tmp_path, monkeypatch, setting):
    """With `pseudo_labels` set, the class's training list takes the review's pseudo-labels
    of training-split images no person labelled; verification never does. Off by default."""
    monkeypatch.chdir(tmp_path)
    _, rows = tumblr_class(tmp_path, "pose", 12)
    raw = {
        "classes": {"pose": {"tumblr": [{"tag": "pose"}], "pseudo_labels": setting}},
        "split": {"verification_percent": 50},
    }
    person = copy_of(tmp_path, rows[0])
    labelimg_save(person.with_suffix(".xml"), person, AS_SAVED)
    info = annotations.read_image_info(person)
    made = [
        pseudo.listed(r.file, r.sha256, info, "pose", 0.5, [("pose", 0.8, 5, 5, 50, 50)])
        for r in rows
    ]
    pseudo.write(tmp_path / "resources/pseudo/pose.tsv", made)
    summary = annotations.validate_class(
        config.parse(config.stage_config(config.validate(raw), "annotations", "pose")),
        "pose",
        tmp_path / "resources/manifests/pose.tsv",
        tmp_path / "results/lists/pose",
        store_root=tmp_path / "resources/images",
        pseudo_list=tmp_path / "resources/pseudo/pose.tsv",
    )
    split = {s: lists.read_list(tmp_path / f"results/lists/pose/{s}.tsv") for s in config.SPLITS}
    assert {i.source for i in split["verification"]} <= {"human"}
    taken = {i.sha256 for i in split["training"] if i.source == "pseudo"}
    if setting is None:
        assert taken == set() and summary["labels_by_source"] == {"human": 1}
        return
    cfg = config.parse(raw)
    expected = {r.sha256 for r in rows[1:] if neardup.split_of(r.sha256, cfg.split) == "training"}
    assert taken == expected and 0 < len(expected) < 11
    assert summary["labels_by_source"] == {"human": 1, "pseudo": len(expected)}


# --- ranking and batching, on given detections -------------------------------------


def ranked(sha: str, group: str, *scores: float, name: str = "pose") -> review.Ranked:
    found = tuple(predict.Detection(name, s, 0, 0, 10, 10) for s in scores)
    candidate = review.Candidate(sha, Path(f"{sha}.jpg"), Path(f"{sha}.xml"), group)
    return review.Ranked(candidate, review.uncertainty("pose", found), found)


def test_the_least_sure_images_come_first_one_per_near_duplicate_group():
    items = [
        ranked("a", "a", 0.9),
        ranked("b", "g", 0.2),
        ranked("c", "g", 0.1),  # b's near-duplicate, less sure: it takes the group's place
        ranked("d", "d"),  # nothing found: the tag says it is there
        ranked("e", "e", 0.95, name="other"),  # only another class's box
        ranked("f", "f", 0.6, 0.3),
    ]
    queued = review.batch(items, 4)
    assert [r.candidate.sha256 for r in queued] == ["d", "e", "c", "f"]
    assert [round(r.score, 2) for r in queued] == [1.0, 1.0, 0.9, 0.4]
    assert review.batch(list(reversed(items)), 4) == queued  # ties by content hash


def test_near_duplicates_share_a_group(tmp_path, monkeypatch):
    """A re-encoded copy is in its original's group; another picture is not."""
    monkeypatch.chdir(tmp_path)
    image_store = store.ImageStore(tmp_path / "store")
    original = image(tmp_path / "a.jpg", (160, 120)).read_bytes()
    copy = io.BytesIO()
    Image.open(io.BytesIO(original)).save(copy, "JPEG", quality=40)
    other = image(tmp_path / "zz.jpg", (160, 120)).read_bytes()
    rows = [
        stored_row(tmp_path, image_store, d, i)
        for i, d in enumerate([original, copy.getvalue(), other])
    ]
    neardup.write_members(tmp_path / "sig.tsv", neardup.class_signatures(rows, {}))
    found = [review.Candidate(r.sha256, Path(r.file), Path("x.xml"), r.sha256) for r in rows]
    cfg = config.parse({"classes": {"pose": {}}})
    groups = [c.group for c in review.grouped(found, cfg.split, [tmp_path / "sig.tsv"])]
    assert groups[0] == groups[1] != groups[2]
    # Once a person labelled the original, its near copy is no longer worth queueing.
    left = review.grouped(found[1:], cfg.split, [tmp_path / "sig.tsv"], {rows[0].sha256})
    assert [c.sha256 for c in left] == [rows[2].sha256]


def test_the_command_opens_the_batch_in_labelimg_saving_where_the_stage_reads(tmp_path):
    items = [ranked("a", "a"), ranked("b", "b")]
    command = review.open_command(items, Path("data/pose") / label.CLASSES_FILE)
    args = label.parse(command.split()[3:])
    assert args.images == [Path("a.jpg"), Path("b.jpg")]
    assert args.save_dir == Path(".") and args.classes == Path("data/pose/predefined_classes.txt")


# --- the queue, with a tiny trained and exported model -----------------------------


def two_classes(project: Path, demo_images: Path, new: int = 0) -> dict:
    """Tumblr classes `apple` (four demo pictures and a re-encoded copy of the first: a
    near-duplicate pair) and `book` (two), each with its `label` hand-off."""
    image_store = store.ImageStore(project / "resources/images")
    pictures = sorted(demo_images.glob("*.jpg"))
    copy = io.BytesIO()
    Image.open(pictures[0]).save(copy, "JPEG", quality=50)
    data = {
        "apple": [p.read_bytes() for p in pictures[: 4 + new]] + [copy.getvalue()],
        "book": [p.read_bytes() for p in pictures[-2:]],
    }
    raw = {
        "classes": {name: {"tumblr": [{"tag": name}]} for name in data},
        # apple's images train on the model's apples; book's do not (the default).
        "predict": {"min_score": 0.0},  # every box in the pre-label, however unsure
    }
    raw["classes"]["apple"]["pseudo_labels"] = 0.0
    for name, images in data.items():
        rows = [stored_row(project, image_store, d, i) for i, d in enumerate(images)]
        store.write_manifest(project / f"resources/manifests/{name}.tsv", rows)
        neardup.write_members(
            project / f"results/signatures/{name}.tsv", neardup.class_signatures(rows, {})
        )
        hand_off(raw, name, project)
    return raw


def run_review(project: Path, raw: dict, saved_model: Path) -> dict[str, list[dict]]:
    """`review` as its rule runs it; each class's queue rows."""
    classes = list(raw["classes"])
    argv = ["--config-json", json.dumps(config.stage_config(config.validate(raw), "review"))]
    argv += ["--model", str(saved_model)]
    argv += ["--manifests", *(f"resources/manifests/{c}.tsv" for c in classes)]
    argv += ["--lists", *(f"results/lists/{c}/{s}.tsv" for c in classes for s in config.SPLITS)]
    argv += ["--signatures", *(f"results/signatures/{c}.tsv" for c in classes)]
    argv += ["--labelling", *(f"data/{c}" for c in classes)]
    argv += ["--queues", *(f"results/review/{c}/queue.tsv" for c in classes)]
    argv += ["--pseudo", *(f"resources/pseudo/{c}.tsv" for c in classes)]
    assert review.main(argv) == 0
    return {c: fileio.read_tsv(project / f"results/review/{c}/queue.tsv") for c in classes}


def groups_of(project: Path, cls: str, shas) -> list[str]:
    members = neardup.read_members(project / f"results/signatures/{cls}.tsv")
    split = config.parse({"classes": {cls: {}}}).split
    placed = neardup.place(members, split, split.near_duplicate_distance)
    return [placed[sha].group for sha in shas]


@pytest.mark.slow
def test_the_review_queue_and_the_round_after_it(exported, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    saved_model = exported / "results/export/tiny/saved_model"
    raw = two_classes(tmp_path, exported / "data/apple")
    queues = run_review(tmp_path, raw, saved_model)
    apple = queues["apple"]
    # Five unlabelled images, one near-duplicate pair: four queued, one of the pair.
    assert [int(r["rank"]) for r in apple] == [1, 2, 3, 4]
    groups = groups_of(tmp_path, "apple", [r["sha256"] for r in apple])
    assert len(set(groups)) == 4
    scores = [float(r["score"]) for r in apple]
    assert scores == sorted(scores, reverse=True)
    for row in apple + queues["book"]:
        boxes = json.loads(row["boxes"])
        assert boxes, "the model gives boxes at any score"
        cls = "apple" if row in apple else "book"
        top = max((b["score"] for b in boxes if b["name"] == cls), default=0)
        assert float(row["score"]) == pytest.approx(1 - top, abs=1e-3)
        # LabelImg shows the queue's boxes (whole pixels; the queue has tenths), unverified.
        found, verified = shown(Path(row["xml"]))
        assert verified is False and len(found) == len(boxes)
        for name, *box in found:
            assert any(
                b["name"] == name
                and all(
                    abs(v - e) <= 1
                    for v, e in zip(
                        box,
                        prelabels.labelimg_box(*(b[k] for k in prelabels.BOX_TAGS)),
                        strict=True,
                    )
                )
                for b in boxes
            ), (name, box)
        assert Path(row["xml"]).parent == (tmp_path / "data" / cls).resolve()
    # The one command per class that opens the batch in LabelImg, saving where it is read.
    told = [line for line in capsys.readouterr().out.splitlines() if "--images" in line]
    assert [line.split()[:3] for line in told] == [
        ["apple", "(4", "images):"],
        ["book", "(2", "images):"],
    ]
    args = label.parse(told[0].split(": ", 1)[1].split()[3:])
    assert [str(p) for p in args.images] == [r["image"] for r in apple]
    assert args.save_dir == (tmp_path / "data/apple").resolve()
    # Pseudo-labels: for apple only, of the model's apples, every unlabelled image.
    assert not (tmp_path / "resources/pseudo/book.tsv").exists()
    made = {i.sha256: i for i in lists.read_list(tmp_path / "resources/pseudo/apple.tsv")}
    assert all(
        i.source == "pseudo" and {o.name for o in i.objects} == {"apple"} for i in made.values()
    )
    for row in apple:  # the queue lists every box the model gave
        boxes = json.loads(row["boxes"])
        sides = [
            min(b["xmax"] - b["xmin"], b["ymax"] - b["ymin"]) for b in boxes if b["name"] == "apple"
        ]
        if any(side >= 1.2 for side in sides):  # whole pixels either side of the tenths
            assert row["sha256"] in made, row
        elif all(side < 0.8 for side in sides):
            assert row["sha256"] not in made, row
    # Same model and data, same queue and files.
    before = {r["xml"]: Path(r["xml"]).read_bytes() for r in apple}
    assert run_review(tmp_path, raw, saved_model) == queues
    assert {x: Path(x).read_bytes() for x in before} == before
    # The person verifies the first, edits the second, leaves the rest: only those two
    # become labels, and a new image arrives.
    first, second = (Path(r["xml"]) for r in apple[:2])
    labelimg_save(first, Path(apple[0]["image"]), shown(first)[0], verified=True)
    labelimg_save(second, Path(apple[1]["image"]), [("apple", 5, 5, 40, 40)])
    touched = {x: x.read_bytes() for x in (first, second)}
    raw = two_classes(tmp_path, exported / "data/apple", new=1)
    raw["classes"]["apple"]["pseudo_labels"] = None  # pseudo-labels: test_pseudo_labels_*
    summary = validate(raw, "apple", tmp_path)
    assert listed(tmp_path, "apple") == {first.name: "human", second.name: "human"}
    assert summary["rejected_by_reason"]["prelabel_unreviewed"] == 2
    again = run_review(tmp_path, raw, saved_model)["apple"]
    assert {x: x.read_bytes() for x in touched} == touched
    queued = {r["sha256"] for r in again}
    assert not queued & {apple[0]["sha256"], apple[1]["sha256"]}
    new_sha = {r.sha256 for r in store.read_manifest(tmp_path / "resources/manifests/apple.tsv")}
    assert len(again) == 3 and queued <= new_sha - {apple[0]["sha256"], apple[1]["sha256"]}


@pytest.mark.slow
def test_writing_prelabels_reruns_nothing_and_a_persons_save_reruns_the_class(tmp_path, tool_env):
    """Snakemake's params trigger: untouched pre-labels leave the class's annotation
    state as it was (no annotations, records or training re-run); a verify re-runs it."""
    from conftest import snakemake, write_project
    from test_own_data import dry_run_jobs

    folder = tmp_path / "data/pose"
    labelimg_save(folder / "p0.xml", image(folder / "p0.jpg"), [("pose", 10, 10, 60, 60)])
    pictures = [image(folder / f"p{i}.jpg") for i in (1, 2)]
    write_project(tmp_path, {"classes": {"pose": {}}})
    target = "results/lists/pose/summary.json"
    done = snakemake(tmp_path, tool_env, target)
    assert done.returncode == 0, done.stderr[-3000:]
    ledger: dict = {}
    for picture in pictures:
        prelabels.write(picture.with_suffix(".xml"), picture, (200, 120), PRELABEL, ledger)
    prelabels.write_ledger(folder, ledger)
    assert dry_run_jobs(tmp_path, tool_env, target) == set()
    labelimg_save(pictures[0].with_suffix(".xml"), pictures[0], AS_SAVED, verified=True)
    assert ("annotations", "pose") in dry_run_jobs(tmp_path, tool_env, target)
