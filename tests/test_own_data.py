"""Users' own LabelImg folders as they bring them: layouts, shared folders, the hand-off.

Every annotation file here is written by LabelImg's own code (tests/labelimg_files.py).
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest
from labelimg_files import image, save
from tumbletrain import annotations, config, harvest, labelimg, lists, store

CUP_AND_BALL = ["cup", "ball"]


def stage(raw: dict, stage_name: str, cls: str) -> config.WorkflowConfig:
    """The config a rule gives a stage command (its part only)."""
    return config.parse(config.stage_config(config.validate(raw), stage_name, cls))


def harvest_class(raw: dict, cls: str, base: Path) -> None:
    harvest.harvest_class(
        stage(raw, "harvest", cls),
        cls,
        base / "resources/images",
        base / f"resources/manifests/{cls}.tsv",
    )


def run_class(raw: dict, cls: str, base: Path) -> dict:
    """Harvest and validate one class as the rules do, from `base` as the working directory."""
    harvest_class(raw, cls, base)
    return annotations.validate_class(
        stage(raw, "annotations", cls),
        cls,
        base / f"resources/manifests/{cls}.tsv",
        base / f"results/lists/{cls}",
    )


def listed(base: Path, cls: str) -> dict[str, tuple[str, lists.ListedImage]]:
    """The class's kept images and their split, by the name of their annotation file."""
    return {
        Path(item.xml).stem: (split, item)
        for split in config.SPLITS
        for item in lists.read_list(base / f"results/lists/{cls}/{split}.tsv")
    }


def voc_folder(folder: Path) -> dict[str, list]:
    """A Pascal-VOC-style folder: images holding cups, balls or both, XML beside them."""
    boxes = {
        "both1": [("cup", 10, 10, 60, 60), ("ball", 100, 20, 150, 70)],
        "both2": [("ball", 5, 5, 40, 40), ("cup", 120, 30, 190, 100)],
        "cup1": [("cup", 20, 20, 90, 90)],
        "ball1": [("ball", 30, 30, 80, 80)],
        "ball2": [("ball", 50, 10, 120, 60)],
    }
    for name, objects in boxes.items():
        save("voc", image(folder / f"{name}.jpg"), objects)
    image(folder / "unlabelled.jpg")
    return boxes


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("layout", ["flat", "original"])
def test_a_labelimg_folder_is_the_image_source_of_a_class_with_no_other(project, layout):
    folder = project / "data" / "cup"
    splits = {}
    for i in range(4):
        split = config.SPLITS[i % 2]
        here = folder if layout == "flat" else folder / split / "images"
        picture = image(here / f"cup{i}.jpg")
        xml = save("voc", picture, [("cup", 10, 10, 80, 80)])
        if layout == "original":  # the XML one level up from images/, as that project kept it
            xml.rename(folder / split / xml.name)
        splits[f"cup{i}"] = split
    raw = {"classes": {"cup": {}}, "split": {"verification_percent": 0}}
    summary = run_class(raw, "cup", project)
    rows = store.read_manifest(project / "resources/manifests/cup.tsv")
    assert len(rows) == 4 and {r.source for r in rows} == {"folder"}
    assert summary["kept"] == 4 and summary["unlabelled_images"] == 0
    kept = listed(project, "cup")
    if layout == "original":
        assert {name: split for name, (split, _) in kept.items()} == splits
    for _, item in kept.values():
        assert item.image.startswith("resources/images/"), item.image


def test_a_class_with_no_source_and_no_folder_says_where_to_put_it(project):
    from tumbletrain import cli

    with pytest.raises(cli.UserError, match=r"data/cup \(`annotations_dir:`\)"):
        run_class({"classes": {"cup": {}}}, "cup", project)


@pytest.mark.parametrize("key", ["annotations_dir", "folders"])
def test_a_folder_shared_by_two_classes_lists_each_image_once(project, key):
    boxes = voc_folder(project / "data" / "voc")
    place = "data/voc" if key == "annotations_dir" else ["data/voc"]
    raw = {"classes": {c: {key: place} for c in CUP_AND_BALL}, "split": {"salt": "x"}}
    summaries = {cls: run_class(raw, cls, project) for cls in CUP_AND_BALL}
    cups, balls = listed(project, "cup"), listed(project, "ball")
    # The first class in `classes:` order with an object in the image lists it.
    assert sorted(cups) == ["both1", "both2", "cup1"]
    assert sorted(balls) == ["ball1", "ball2"]
    for name, (_, item) in {**cups, **balls}.items():
        kept = [(o.name, o.xmin, o.ymin, o.xmax, o.ymax) for o in item.objects]
        assert kept == boxes[name], name
    assert summaries["ball"]["shared_folders"] == {
        "with": ["cup"],
        "rule": annotations.sources.OWNER_RULE,
        "listed_by_other_classes": {"cup": 3},
    }
    assert summaries["cup"]["shared_folders"]["listed_by_other_classes"] == {"ball": 2}
    # The image nobody labelled is unlabelled in each class; labelled ones in neither.
    assert summaries["cup"]["unlabelled_images"] == summaries["ball"]["unlabelled_images"] == 1


def test_the_owner_of_a_shared_image_follows_the_class_order(project):
    voc_folder(project / "data" / "voc")
    raw = {"classes": {c: {"annotations_dir": "data/voc"} for c in ["ball", "cup"]}}
    for cls in ("ball", "cup"):
        run_class(raw, cls, project)
    assert sorted(listed(project, "ball")) == ["ball1", "ball2", "both1", "both2"]
    assert sorted(listed(project, "cup")) == ["cup1"]


def test_a_class_with_every_image_listed_by_another_is_not_an_error(project):
    folder = project / "data" / "voc"
    save("voc", image(folder / "a.jpg"), [("cup", 1, 1, 50, 50), ("ball", 60, 1, 99, 50)])
    raw = {"classes": {c: {"annotations_dir": "data/voc"} for c in CUP_AND_BALL}}
    run_class(raw, "cup", project)
    cfg_json = json.dumps(config.stage_config(config.validate(raw), "annotations", "ball"))
    argv = ["--config-json", cfg_json, "--class", "ball", "--outdir", "results/lists/ball"]
    assert annotations.main(argv) == 0
    assert listed(project, "ball") == {} and list(listed(project, "cup")) == ["a"]


def test_only_classes_that_share_a_folder_see_each_others_folders():
    raw = config.validate(
        {
            "classes": {
                "cup": {"annotations_dir": "data/voc"},
                "ball": {"folders": ["data/voc/balls"]},
                "pose": {"folders": ["elsewhere"]},
            }
        }
    )
    part = config.stage_config(raw, "annotations", "cup")
    assert part["classes"]["ball"]["folders"] == ["data/voc/balls"]
    assert "folders" not in part["classes"]["pose"]


def test_label_adds_no_file_to_a_folder_that_is_already_a_source(project, capsys):
    folder = project / "data" / "cup"
    voc_folder(folder)
    raw = {"classes": {"cup": {}, "ball": {}}}
    run_class(raw, "cup", project)
    before = sorted(p.name for p in folder.iterdir())
    cfg_json = json.dumps(config.stage_config(config.validate(raw), "annotations", "cup"))
    manifest = "resources/manifests/cup.tsv"
    argv = ["--config-json", cfg_json, "--class", "cup", "--manifest", manifest]
    assert labelimg.main([*argv, "--folder", "data/cup"]) == 0
    added = sorted(set(p.name for p in folder.iterdir()) - set(before))
    assert added == [labelimg.MARKER, "predefined_classes.txt"]
    assert (folder / "predefined_classes.txt").read_text() == "cup\nball\n"
    command = "python -m tumbletrain.label cup"
    assert capsys.readouterr().out == f"cup: {command}\n"
    handoff = json.loads((folder / labelimg.MARKER).read_text())
    assert handoff["labelimg"] == command
    assert handoff["folders"] == [["data/cup", "data/cup"]]  # labelled in place


def test_label_opens_a_folders_class_in_place_and_copies_no_image(project):
    """Its folders are annotation folders: LabelImg saves beside their images, where
    the XML already there is (tests/test_label.py drives the window)."""
    source = project / "pictures"
    for i in range(3):
        image(source / f"p{i}.jpg")
    raw = {"classes": {"cup": {"folders": ["pictures"]}}}
    harvest_class(raw, "cup", project)
    cfg_json = json.dumps(config.stage_config(config.validate(raw), "annotations", "cup"))
    argv = ["--config-json", cfg_json, "--class", "cup"]
    argv += ["--manifest", "resources/manifests/cup.tsv", "--folder", "data/cup"]
    assert labelimg.main(argv) == 0
    assert not list((project / "data" / "cup").glob("*.jpg"))
    handoff = json.loads((project / "data" / "cup" / labelimg.MARKER).read_text())
    assert handoff["folders"] == [["pictures", "pictures"]]


def readme_block(after: str, language: str) -> str:
    """The first code block in docs/your-labels.md after the line containing `after`."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "your-labels.md").read_text()
    rest = text[text.index(after) :]
    start = rest.index(f"```{language}\n") + len(language) + 4
    return textwrap.dedent(rest[start : rest.index("```", start)]).strip()


@pytest.mark.slow
def test_the_readme_recipe_for_one_folder_of_two_classes(tmp_path, tool_env):
    """docs/your-labels.md, step 2 to 4, as a new user runs it."""
    import tensorflow as tf
    import yaml
    from conftest import snakemake, write_project

    raw = yaml.safe_load(readme_block("One folder whose images each hold", "yaml"))
    folder = tmp_path / raw["classes"]["cup"]["annotations_dir"]
    boxes = voc_folder(folder)
    write_project(tmp_path, raw)
    targets = [f"results/records/{c}_{s}.tfrecord" for c in CUP_AND_BALL for s in config.SPLITS]
    result = snakemake(tmp_path, tool_env, *targets)
    assert result.returncode == 0, result.stderr[-3000:]
    images = []
    for path in targets:
        for record in tf.data.TFRecordDataset(str(tmp_path / path)):
            example = tf.train.Example.FromString(record.numpy())
            features = example.features.feature
            names = [n.decode() for n in features["image/object/class/text"].bytes_list.value]
            images.append((features["image/source_id"].bytes_list.value[0], sorted(names)))
    assert len(images) == len({source for source, _ in images}) == len(boxes)
    assert sorted(names for _, names in images) == sorted(
        sorted(name for name, *_ in objects) for objects in boxes.values()
    )
    before = sorted(p.name for p in folder.iterdir())
    result = snakemake(tmp_path, tool_env, "label_all")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in folder.iterdir()) == before
    for cls in CUP_AND_BALL:
        assert f"{cls}: python -m tumbletrain.label {cls}\n" in result.stdout
        assert sorted(p.name for p in (tmp_path / "data" / cls).iterdir()) == [
            labelimg.MARKER,
            "predefined_classes.txt",
        ]


def dry_run_jobs(project: Path, env: dict, *targets: str) -> set[tuple[str, str]]:
    """(rule, class) of every job `snakemake -n` would run."""
    from conftest import snakemake

    result = snakemake(project, env, "-n", *targets)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs, rule = set(), None
    for line in result.stdout.splitlines():
        line = line.strip()
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.startswith("wildcards:") and rule:
            jobs.add((rule, line.split("cls=")[1].split(",")[0]))
    return jobs


@pytest.mark.slow
def test_files_added_changed_or_removed_rebuild_only_their_class(tmp_path, tool_env):
    from conftest import snakemake, write_project

    for cls in CUP_AND_BALL:
        for i in range(3):
            save("voc", image(tmp_path / "data" / cls / f"{cls}{i}.jpg"), [(cls, 9, 9, 80, 80)])
    # Near-duplicate grouping on (the default): another class's signatures are
    # read, but their change does not re-run this class.
    write_project(tmp_path, {"classes": {c: {} for c in CUP_AND_BALL}})
    targets = [f"results/lists/{c}/summary.json" for c in CUP_AND_BALL]
    result = snakemake(tmp_path, tool_env, *targets)
    assert result.returncode == 0, result.stderr[-3000:]
    cup = tmp_path / "data" / "cup"
    chain = {("harvest", "cup"), ("signatures", "cup"), ("annotations", "cup")}
    changes = {
        "image added": lambda: image(cup / "new.png", fmt="PNG"),
        "image changed": lambda: image(cup / "new.png", size=(64, 64), fmt="PNG"),
        "YOLO file added": lambda: save("yolo", cup / "new.png", [("cup", 1, 1, 30, 30)], ["cup"]),
        "image removed": lambda: (cup / "new.png").unlink(),
    }
    for change, apply in changes.items():
        time.sleep(1.1)  # a new modification time
        apply()
        jobs = dry_run_jobs(tmp_path, tool_env, *targets)
        expected = {("annotations", "cup")} if "YOLO" in change else chain
        assert jobs == expected, change
        result = snakemake(tmp_path, tool_env, *targets)
        assert result.returncode == 0, f"{change}: {result.stderr[-3000:]}"
    assert dry_run_jobs(tmp_path, tool_env, *targets) == set()


def test_images_converted_after_labelling_are_found_in_every_layout(project):
    """`x.png` in the XML, `x.jpg` on disk at the same size: as a real dataset has it."""
    root = project / "data" / "cup"
    layouts = {
        "beside_xml": (root / "flat", root / "flat"),
        "images_folder": (root / "training", root / "training" / "images"),
        "folder_filename": (root / "annotations", root / "images"),
    }
    for rule, (xml_folder, image_folder) in layouts.items():
        png = image(image_folder / f"{rule}.png", fmt="PNG")
        xml = save("voc", png, [("cup", 10, 10, 80, 80)])
        xml_folder.mkdir(parents=True, exist_ok=True)
        xml.rename(xml_folder / xml.name)
        image(image_folder / f"{rule}.jpg")  # converted: the same stem, size and picture
        png.unlink()
    # Another suffix at another size is another picture: the XML does not describe it.
    small = image(root / "flat" / "small.png", size=(50, 40), fmt="PNG")
    save("voc", small, [("cup", 1, 1, 30, 30)])
    image(root / "flat" / "small.jpg", size=(60, 40))
    small.unlink()
    raw = {"classes": {"cup": {}}}
    summary = run_class(raw, "cup", project)
    assert summary["image_found_by"] == {f"{rule}_other_suffix": 1 for rule in layouts}
    assert summary["rejected_by_reason"] == {"size_mismatch": 1}
    assert summary["unlabelled_images"] == 1  # small.jpg


def test_a_picture_labelled_twice_under_two_names_is_not_unlabelled(project):
    """Real datasets hold the same image under two names, each labelled."""
    folder = project / "data" / "cup"
    first = image(folder / "a.jpg")
    (folder / "b.jpg").write_bytes(first.read_bytes())
    save("voc", first, [("cup", 10, 10, 80, 80)])
    save("voc", folder / "b.jpg", [("cup", 12, 12, 70, 70)])
    image(folder / "c.jpg")
    (folder / "d.jpg").write_bytes((folder / "c.jpg").read_bytes())
    image(folder / "e.jpg")
    summary = run_class({"classes": {"cup": {}}}, "cup", project)
    assert summary["rejected_by_reason"] == {"duplicate_annotation": 1}
    # c.jpg and d.jpg are one picture, e.jpg another: two unlabelled images.
    assert summary["unlabelled_images"] == 2


def test_predict_takes_files_and_folders(tmp_path):
    from tumbletrain import cli, predict

    folder = tmp_path / "new"
    for name in ("a.jpg", "deeper/b.png"):
        image(folder / name)
    single = image(tmp_path / "elsewhere" / "c.jpg")
    found, skipped = predict.collect_images([folder, single])
    assert skipped == []
    assert [(str(path), str(name)) for path, name in found] == [
        (str(folder / "a.jpg"), "a.jpg"),
        (str(single), "c.jpg"),
        (str(folder / "deeper/b.png"), "deeper/b.png"),
    ]
    with pytest.raises(cli.UserError, match="would both be written as a.jpg"):
        predict.collect_images([folder, image(tmp_path / "other" / "a.jpg")])
    with pytest.raises(cli.UserError, match="missing.jpg does not exist"):
        predict.collect_images([tmp_path / "missing.jpg"])
    # Where the outputs go is the caller's to say: no default under some workflow layout.
    with pytest.raises(
        cli.UserError, match="give --detections, --images, --prelabels, or --outdir"
    ):
        predict.main(["--model", str(tmp_path), str(folder)])
    with pytest.raises(cli.UserError, match="holds no SavedModel"):
        predict.main(["--model", str(tmp_path), "--outdir", str(tmp_path / "out"), str(folder)])


def test_the_predict_rule_reruns_when_its_images_change(tmp_path, tool_env):
    from conftest import TINY_CONFIG, write_project

    write_project(tmp_path, {**TINY_CONFIG, "predict": {"input": "new"}})
    image(tmp_path / "new" / "a.jpg")
    run = TINY_CONFIG["train"]["run"]
    export, detections = (
        tmp_path / f"results/export/{run}/export.json",
        tmp_path / f"results/predict/{run}/detections.csv",
    )
    for done in (export, detections):
        done.parent.mkdir(parents=True)
        done.write_text("")
        if done == export:  # the predict rule's other input
            (export.parent / "saved_model").mkdir()
        time.sleep(1.1)
    for folder in ("images", "prelabels"):  # the predict rule's other outputs
        (detections.parent / folder).mkdir()
    target = [str(detections.relative_to(tmp_path)), "--allowed-rules", "predict"]
    assert dry_run_predict(tmp_path, tool_env, target) is None
    image(tmp_path / "new" / "deeper" / "b.png")
    assert dry_run_predict(tmp_path, tool_env, target) == "new/deeper/b.png"


def dry_run_predict(project: Path, env: dict, args: list[str]) -> str | None:
    """The updated input that makes `snakemake -n` run predict, or None if it would not."""
    from conftest import snakemake

    result = snakemake(project, env, "-n", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    for line in result.stdout.splitlines():
        if "reason: Updated input files:" in line:
            return line.split(":", 2)[2].strip()
    assert "Nothing to be done" in result.stdout, result.stdout[-3000:]
    return None
