"""Validation of LabelImg XML: a corpus of broken and odd files, each with its exact outcome."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from tumbletrain import annotations, cli, config, fileio, lists, neardup, store, vocxml

W, H = 200, 100
SECRET = "TOP-SECRET-PAYLOAD-42"


def jpeg(path: Path, size=(W, H), orientation: int | None = None) -> Path:
    # Distinct content per file name: the store and duplicate check go by content.
    seed = sum(path.name.encode()) * 7919
    image = Image.new("RGB", size, (seed % 256, (seed // 256) % 256, (seed // 65536) % 256))
    image.putpixel((1, 1), (len(path.name) * 9 % 256, 0, 255))
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", exif=exif.tobytes())
    return path


def voc(filename: str, path: str = "", size=(W, H), objects=None, folder: str = "pose") -> bytes:
    objects = objects if objects is not None else [("pose", 10, 10, 50, 50)]
    return vocxml.labelimg_xml(
        folder,
        filename,
        path,
        (*size, 3) if size is not None else None,
        [vocxml.VocObject(name, *box) for name, *box in objects],
    )


def raw_xml(filename: str, bndbox: str, name: str = "pose") -> bytes:
    return (
        f"<annotation><filename>{filename}</filename><size><width>{W}</width>"
        f"<height>{H}</height></size><object><name>{name}</name><bndbox>{bndbox}"
        "</bndbox></object></annotation>"
    ).encode()


def box(xmin, ymin, xmax, ymax) -> str:
    return f"<xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax>"


def build_corpus(root: Path, elsewhere: Path) -> dict[str, tuple[str, str | None]]:
    """Write the corpus; returns xml name -> (expected outcome, reason or repair)."""
    d = root
    expected: dict[str, tuple[str, str | None]] = {}

    def case(name, data, outcome, code=None, image=None, **image_kwargs):
        if image:
            jpeg(d / image, **image_kwargs)
        (d / name).write_bytes(data)
        expected[name] = (outcome, code)

    case("ok.xml", voc("ok.jpg"), "kept", None, image="ok.jpg")
    case("size_missing.xml", voc("m.jpg", size=None), "repaired", "size_missing", image="m.jpg")
    case("size_zero.xml", voc("z.jpg", size=(0, 0)), "repaired", "size_zero", image="z.jpg")
    case(
        "windows_path.xml",
        voc("win.jpg", path=r"C:\Users\me\Pictures\pose\win.jpg"),
        "kept",
        None,
        image="win.jpg",
    )
    case(
        "absolute_path.xml",
        voc("gone.jpg", path=str(d / "sub" / "absin.jpg")),
        "kept",
        None,
        image="sub/absin.jpg",
    )
    # An XML file names an image outside the annotations folder, the class's
    # folders and the store: absolute, `../` in each of the three fields, a symlink.
    jpeg(elsewhere / "abs.jpg")
    case(
        "outside_absolute.xml",
        voc("gone.jpg", path=str(elsewhere / "abs.jpg")),
        "rejected",
        "image_outside_sources",
    )
    jpeg(elsewhere / "dd1.jpg")
    case(
        "outside_dotdot_path.xml",
        voc("gone.jpg", path="../../elsewhere/dd1.jpg"),
        "rejected",
        "image_outside_sources",
    )
    jpeg(elsewhere / "dd2.jpg")
    case(
        "outside_dotdot_filename.xml",
        voc("../../elsewhere/dd2.jpg"),
        "rejected",
        "image_outside_sources",
    )
    jpeg(elsewhere / "dd3.jpg")
    case(
        "outside_dotdot_folder.xml",
        voc("dd3.jpg", folder="../elsewhere"),
        "rejected",
        "image_outside_sources",
    )
    jpeg(elsewhere / "linked.jpg")
    (d / "link_out.jpg").symlink_to(elsewhere / "linked.jpg")
    case("outside_symlink.xml", voc("link_out.jpg"), "rejected", "image_outside_sources")
    jpeg(d / "sub" / "target.jpg")
    (d / "link_in.jpg").symlink_to(d / "sub" / "target.jpg")
    case("inside_symlink.xml", voc("link_in.jpg"), "kept", None)
    case(
        "inside_dotdot.xml",
        voc("gone.jpg", path="sub/../dotdot_in.jpg"),
        "kept",
        None,
        image="dotdot_in.jpg",
    )
    case("relative_path.xml", voc("x.jpg", path="sub/rel.jpg"), "kept", None, image="sub/rel.jpg")
    case(
        "other_machine.xml",
        voc("other.jpg", path="/home/someone/pose/other.jpg"),
        "kept",
        None,
        image="other.jpg",
    )
    case(
        "resized.xml",
        voc("big.jpg", size=(400, 200), objects=[("pose", 20, 20, 100, 100)]),
        "repaired",
        "size_resized",
        image="big.jpg",
    )
    case(
        "wrong_aspect.xml",
        voc("asp.jpg", size=(300, 300)),
        "rejected",
        "size_mismatch",
        image="asp.jpg",
    )
    case(
        "exif_rotated.xml",
        voc("rot.jpg", size=(H, W), objects=[("pose", 10, 10, 50, 150)]),
        "kept",
        None,
        image="rot.jpg",
        orientation=6,
    )
    case(
        "exif_rotated_stored_size.xml",
        voc("rot2.jpg", size=(W, H)),
        "repaired",
        "size_rotated",
        image="rot2.jpg",
        orientation=6,
    )
    case(
        "float_coords.xml",
        voc("f.jpg", objects=[("pose", 10.5, 10.25, 50.75, 60.0)]),
        "kept",
        None,
        image="f.jpg",
    )
    case(
        "non_numeric.xml",
        raw_xml("nn.jpg", box("ten", 1, 20, 20)),
        "rejected",
        "box_not_numeric",
        image="nn.jpg",
    )
    case(
        "missing_bndbox.xml",
        b"<annotation><filename>mb.jpg</filename><object><name>pose</name></object></annotation>",
        "rejected",
        "box_not_numeric",
        image="mb.jpg",
    )
    case(
        "slightly_outside.xml",
        voc("so.jpg", objects=[("pose", -2, 5, W + 3, 60)]),
        "repaired",
        "box_clipped",
        image="so.jpg",
    )
    case(
        "far_outside.xml",
        voc("fo.jpg", objects=[("pose", 300, 10, 400, 50)]),
        "rejected",
        "box_outside",
        image="fo.jpg",
    )
    case(
        "degenerate.xml",
        voc("dg.jpg", objects=[("pose", 50, 10, 50, 40)]),
        "rejected",
        "box_degenerate",
        image="dg.jpg",
    )
    case(
        "inverted.xml",
        voc("iv.jpg", objects=[("pose", 60, 10, 20, 40)]),
        "rejected",
        "box_degenerate",
        image="iv.jpg",
    )
    case(
        "unknown_class.xml",
        voc("uc.jpg", objects=[("cat", 10, 10, 50, 50)]),
        "rejected",
        "unknown_class",
        image="uc.jpg",
    )
    case(
        "mixed_classes.xml",
        voc("mc.jpg", objects=[("pose", 10, 10, 50, 50), ("cat", 60, 10, 90, 50)]),
        "kept",
        None,
        image="mc.jpg",
    )
    case(
        "case_and_space.xml",
        voc("cs.jpg", objects=[("  Pose ", 10, 10, 50, 50)]),
        "repaired",
        "class_renamed",
        image="cs.jpg",
    )
    case(
        "alias.xml",
        voc("al.jpg", objects=[("figure", 10, 10, 50, 50)]),
        "repaired",
        "class_renamed",
        image="al.jpg",
    )
    case(
        "other_class.xml",
        voc("oc.jpg", objects=[("hand", 10, 10, 50, 50)]),
        "kept",
        None,
        image="oc.jpg",
    )
    case("no_objects.xml", voc("no.jpg", objects=[]), "rejected", "no_objects", image="no.jpg")
    case("empty.xml", b"", "rejected", "empty_file")
    case("whitespace.xml", b"  \n\t ", "rejected", "empty_file")
    case("garbage.xml", bytes(range(256)) * 4, "rejected", "not_xml")
    case("truncated.xml", voc("tr.jpg")[:120], "rejected", "not_xml", image="tr.jpg")
    case(
        "latin1_undeclared.xml",
        "<annotation><filename>caf\xe9.jpg</filename></annotation>".encode("latin-1"),
        "rejected",
        "bad_encoding",
    )
    case(
        "utf16_declared.xml",
        voc("u16.jpg")
        .decode()
        .replace("<annotation>", '<?xml version="1.0" encoding="UTF-16"?><annotation>', 1)
        .encode("utf-16"),
        "kept",
        None,
        image="u16.jpg",
    )
    case("not_voc.xml", b"<svg><rect/></svg>", "rejected", "not_voc")
    case(
        "xxe.xml",
        (
            f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file://{elsewhere}'
            f'/secret.txt">]><annotation><filename>&x;</filename></annotation>'
        ).encode(),
        "rejected",
        "doctype_forbidden",
    )
    case(
        "billion_laughs.xml",
        (
            b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "'
            + SECRET.encode()
            + b'"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;'
            b'&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><annotation><filename>&c;'
            b"</filename></annotation>"
        ),
        "rejected",
        "doctype_forbidden",
    )
    case(
        "image_missing.xml",
        voc("nowhere.jpg", path="/nope/nowhere.jpg"),
        "rejected",
        "image_not_found",
    )
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    case("image_unreadable.xml", voc("broken.jpg"), "rejected", "image_unreadable")
    jpeg(d / "twice.jpg")
    case("dup_a.xml", voc("twice.jpg"), "kept", None)
    case(
        "dup_b.xml",
        voc("twice.jpg", objects=[("pose", 1, 1, 30, 30)]),
        "rejected",
        "duplicate_annotation",
    )
    # The most recently saved annotation of an image wins.
    os.utime(d / "dup_a.xml", (2_000_000_000, 2_000_000_000))
    os.utime(d / "dup_b.xml", (1_000_000_000, 1_000_000_000))
    (elsewhere / "secret.txt").write_text(SECRET)
    return expected


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("corpus")
    root, elsewhere = base / "data" / "pose", base / "elsewhere"
    root.mkdir(parents=True)
    elsewhere.mkdir()
    expected = build_corpus(root, elsewhere)
    (root / "unlabelled.jpg").write_bytes(jpeg(base / "u.jpg").read_bytes())
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    raw = {
        "classes": {
            "pose": {"annotations_dir": str(root), "aliases": ["figure"]},
            "hand": {"folders": []},
        },
        "split": {"verification_percent": 30},
    }
    cfg = config.parse(raw)
    outdir = base / "results" / "lists" / "pose"
    summary = annotations.validate_class(cfg, "pose", None, outdir)
    return {
        "root": root,
        "expected": expected,
        "summary": summary,
        "outdir": outdir,
        "before": before,
        "base": base,
    }


def outcome_of(corpus, name: str):
    outdir = corpus["outdir"]
    kept = {
        Path(item.xml).name: item
        for split in config.SPLITS
        for item in lists.read_list(outdir / f"{split}.tsv")
    }
    rejected = {}
    for row in fileio.read_tsv(outdir / "rejected.tsv"):
        rejected.setdefault(Path(row["file"]).name, []).append(row["reason"])
    return kept.get(name), rejected.get(name, [])


def test_corpus_has_at_least_25_kinds(corpus):
    assert len(corpus["expected"]) >= 25


def test_every_file_has_its_exact_outcome(corpus):
    failures = []
    for name, (outcome, code) in corpus["expected"].items():
        item, reasons = outcome_of(corpus, name)
        if outcome == "rejected":
            whole_file = item is None and code in reasons
            dropped_object = code == "unknown_class" and code in reasons
            if not (whole_file or (dropped_object and item is None)):
                failures.append(f"{name}: expected rejected/{code}, got item={item} {reasons}")
        elif item is None:
            failures.append(f"{name}: expected {outcome}, rejected {reasons}")
    assert not failures, "\n".join(failures)


def test_repairs_are_counted(corpus):
    repairs = corpus["summary"]["repairs_by_kind"]
    for name, (outcome, code) in corpus["expected"].items():
        if outcome == "repaired":
            assert repairs.get(code, 0) >= 1, f"{name}: repair {code} not counted: {repairs}"


def test_boxes_after_repair(corpus):
    resized, _ = outcome_of(corpus, "resized.xml")
    assert (resized.objects[0].xmin, resized.objects[0].xmax) == (10, 50)  # halved
    clipped, _ = outcome_of(corpus, "slightly_outside.xml")
    assert (clipped.objects[0].xmin, clipped.objects[0].xmax) == (0, W)
    rotated, _ = outcome_of(corpus, "exif_rotated.xml")
    assert (rotated.width, rotated.height, rotated.orientation) == (H, W, 6)
    floats, _ = outcome_of(corpus, "float_coords.xml")
    assert floats.objects[0].xmin == 10.5


def test_unknown_objects_are_dropped_and_the_rest_kept(corpus):
    item, reasons = outcome_of(corpus, "mixed_classes.xml")
    assert [o.name for o in item.objects] == ["pose"]
    assert reasons == ["unknown_class"]
    other, _ = outcome_of(corpus, "other_class.xml")
    assert other.objects[0].name == "hand", "objects of other configured classes are kept"


def test_images_are_found_by_each_rule(corpus):
    found = corpus["summary"]["image_found_by"]
    for rule in ("path", "path_relative_to_xml", "beside_xml"):
        assert found.get(rule), f"no image found by {rule}: {found}"


def test_unlabelled_images_are_counted_not_rejected(corpus):
    assert corpus["summary"]["unlabelled_images"] >= 1


def test_no_payload_in_any_output(corpus):
    for path in (corpus["base"] / "results").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_inputs_are_never_changed(corpus):
    after = {p: p.read_bytes() for p in corpus["root"].rglob("*") if p.is_file()}
    assert after == corpus["before"]


def test_lists_are_deterministic(corpus, tmp_path):
    raw = {
        "classes": {
            "pose": {"annotations_dir": str(corpus["root"]), "aliases": ["figure"]},
            "hand": {},
        },
        "split": {"verification_percent": 30},
    }
    annotations.validate_class(config.parse(raw), "pose", None, tmp_path)
    for name in ("training.tsv", "verification.tsv", "rejected.tsv", "summary.json"):
        assert (tmp_path / name).read_bytes() == (corpus["outdir"] / name).read_bytes(), name


def validate_chunk_noting_the_process(paths: list[str]):
    """annotations._validate_chunk, leaving a file named after the process that ran it."""
    (Path(os.environ["TT_TEST_PIDS"]) / str(os.getpid())).touch()
    time.sleep(0.05)  # every worker starts before the chunks run out
    return [annotations.validate_xml(path, annotations._worker_index) for path in paths]


@pytest.mark.parametrize("processes", [2, 3])
def test_lists_are_the_same_from_several_processes(corpus, tmp_path, monkeypatch, processes):
    raw = {
        "classes": {
            "pose": {"annotations_dir": str(corpus["root"]), "aliases": ["figure"]},
            "hand": {},
        },
        "split": {"verification_percent": 30},
    }
    pids = tmp_path / "pids"
    pids.mkdir()
    monkeypatch.setenv("TT_TEST_PIDS", str(pids))
    monkeypatch.setattr(annotations, "MIN_FILES_PER_PROCESS", 1)
    monkeypatch.setattr(annotations, "CHUNK_FILES", 2)
    monkeypatch.setattr(annotations, "_validate_chunk", validate_chunk_noting_the_process)
    out = tmp_path / "out"
    annotations.validate_class(config.parse(raw), "pose", None, out, processes=processes)
    for name in ("training.tsv", "verification.tsv", "rejected.tsv", "summary.json"):
        assert (out / name).read_bytes() == (corpus["outdir"] / name).read_bytes(), name
    workers = {int(p.name) for p in pids.iterdir()}
    assert len(workers) == processes and os.getpid() not in workers


def test_original_layout_keeps_the_users_split(tmp_path):
    root = tmp_path / "data" / "pose"
    for split in config.SPLITS:
        for i in range(3):
            jpeg(root / split / "images" / f"{split}{i}.jpg")
            (root / split / f"{split}{i}.xml").write_bytes(
                voc(f"{split}{i}.jpg", path=rf"C:\old\{split}{i}.jpg")
            )
    cfg = config.parse(
        {"classes": {"pose": {"annotations_dir": str(root)}}, "split": {"verification_percent": 0}}
    )
    summary = annotations.validate_class(cfg, "pose", None, tmp_path / "out")
    assert summary["per_split"] == {"training": 3, "verification": 3}


def test_whole_image_boxes_are_made_under_results(tmp_path):
    store_root = tmp_path / "resources" / "images"
    rows = []
    for i, size in enumerate([(64, 48), (30, 90)]):
        path = jpeg(store_root / f"{i}{i}" / f"{i}{i}abc.jpg", size=size)
        rows.append(
            store.ManifestRow(
                f"{i}{i}abc",
                str(path),
                "folder",
                width=size[0],
                height=size[1],
                bytes=path.stat().st_size,
            )
        )
    manifest = tmp_path / "m.tsv"
    store.write_manifest(manifest, rows)
    cfg = config.parse({"classes": {"pose": {"annotation": "whole_image"}}})
    whole = tmp_path / "results" / "whole_image" / "pose"
    summary = annotations.validate_class(cfg, "pose", manifest, tmp_path / "out", whole)
    assert summary["kept"] == 2 and len(list(whole.glob("*.xml"))) == 2
    items = [i for s in config.SPLITS for i in lists.read_list(tmp_path / "out" / f"{s}.tsv")]
    for item in items:
        (obj,) = item.objects
        assert (obj.xmin, obj.ymin, obj.xmax, obj.ymax) == (0, 0, item.width, item.height)


def test_whole_image_xml_is_flushed_once_and_unchanged_files_are_not_rewritten(tmp_path, flush_log):
    """One flush of the folder, not an fsync per generated file; a re-run writes nothing."""
    rows = [
        store.ManifestRow(
            f"{i}abc", str(jpeg(tmp_path / f"{i}.jpg")), "folder", width=64, height=48
        )
        for i in range(3)
    ]
    whole = tmp_path / "whole_image"
    written = annotations.whole_image_xml(rows, "pose", whole)
    assert flush_log == [f"sync {whole}"] and len(written) == 3
    flush_log.clear()
    assert annotations.whole_image_xml(rows, "pose", whole) == written
    assert flush_log == []


def test_whole_image_boxes_of_exif_rotated_images_are_upright(tmp_path):
    """The store's manifest sizes are the shown (upright) ones, so the box fits the image."""
    image_store = store.ImageStore(tmp_path / "resources" / "images")
    rows = []
    # Stored landscape shown portrait (6: rotate 90 clockwise) and the reverse (8).
    for name, size, orientation in (("a.jpg", (64, 48), 6), ("b.jpg", (30, 90), 8)):
        checked, path = image_store.put(jpeg(tmp_path / name, size, orientation).read_bytes())
        assert (checked.width, checked.height) == (size[1], size[0])
        rows.append(
            store.ManifestRow(
                checked.sha256,
                str(path),
                "folder",
                width=checked.width,
                height=checked.height,
                bytes=checked.bytes,
            )
        )
    manifest = tmp_path / "m.tsv"
    store.write_manifest(manifest, rows)
    cfg = config.parse({"classes": {"pose": {"annotation": "whole_image"}}})
    whole = tmp_path / "results" / "whole_image" / "pose"
    summary = annotations.validate_class(cfg, "pose", manifest, tmp_path / "out", whole)
    assert summary["kept"] == 2, summary
    items = [i for s in config.SPLITS for i in lists.read_list(tmp_path / "out" / f"{s}.tsv")]
    assert sorted((i.width, i.height) for i in items) == [(48, 64), (90, 30)]
    for item in items:
        (obj,) = item.objects
        assert (obj.xmin, obj.ymin, obj.xmax, obj.ymax) == (0, 0, item.width, item.height)


def test_a_class_with_nothing_usable_says_what_to_do(tmp_path):
    root = tmp_path / "data" / "pose"
    root.mkdir(parents=True)
    (root / "bad.xml").write_bytes(b"nope")
    cfg_json = json.dumps({"classes": {"pose": {"annotations_dir": str(root)}}})
    with pytest.raises(cli.UserError, match="whole_image"):
        annotations.main(
            ["--config-json", cfg_json, "--class", "pose", "--outdir", str(tmp_path / "out")]
        )


def test_each_output_goes_where_its_argument_says(tmp_path):
    """The rule passes every file it declares: renamed ones are written as named, the
    others (by hand) into --outdir under their usual names, and neither is an error."""
    root = tmp_path / "data" / "pose"
    for i in range(4):
        image = jpeg(root / f"p{i}.jpg")
        (root / f"p{i}.xml").write_bytes(voc(image.name, str(image)))
    argv = ["--config-json", json.dumps({"classes": {"pose": {"annotations_dir": str(root)}}})]
    argv += ["--class", "pose"]
    renamed = {"training": tmp_path / "a/train.tsv", "summary": tmp_path / "b/counts.json"}
    with pytest.raises(cli.UserError, match="give --verification, --rejected, or --outdir"):
        annotations.main([*argv, "--training", str(renamed["training"]), "--summary", "x"])
    flags = [f"--{name}={path}" for name, path in renamed.items()]
    assert annotations.main([*argv, *flags, "--outdir", str(tmp_path / "rest")]) == 0
    assert json.loads(renamed["summary"].read_text())["kept"] == 4
    assert renamed["training"].is_file()
    rest = sorted(p.name for p in (tmp_path / "rest").iterdir())
    assert rest == ["rejected.tsv", "verification.tsv"]


@given(
    st.floats(-50, 300, allow_nan=False),
    st.floats(-50, 300, allow_nan=False),
    st.floats(-50, 300, allow_nan=False),
    st.floats(-50, 300, allow_nan=False),
)
@settings(max_examples=300, deadline=None)
def test_clipped_boxes_are_inside_and_positive(x0, y0, x1, y1):
    clipped, note = annotations.clip_box((x0, y0, x1, y1), W, H)
    if clipped is None:
        assert note in ("box_degenerate", "box_outside")
        return
    cx0, cy0, cx1, cy1 = clipped
    assert 0 <= cx0 < cx1 <= W and 0 <= cy0 < cy1 <= H
    if (x0, y0, x1, y1) == clipped:
        assert note is None
    else:
        assert note == "box_clipped"
        # Only a small overshoot is clipped; anything more was rejected.
        assert x0 >= -annotations.TOLERANCE_PIXELS * 2 and x1 <= W + 5


@given(
    st.lists(
        st.text("0123456789abcdef", min_size=64, max_size=64), min_size=1, max_size=50, unique=True
    ),
    st.floats(0, 100),
)
@settings(max_examples=100, deadline=None)
def test_split_is_stable_when_images_are_added(hashes, percent):
    split_cfg = config.SplitConfig(
        verification_percent=percent,
        salt="s",
        group_near_duplicates=False,
        near_duplicate_distance=0,
    )
    before = {h: neardup.split_of(h, split_cfg) for h in hashes[: len(hashes) // 2]}
    after = {h: neardup.split_of(h, split_cfg) for h in hashes}
    assert all(after[h] == s for h, s in before.items())
    if percent == 0:
        assert set(after.values()) == {"training"}


def test_exif_header_is_read_without_decoding(tmp_path):
    path = jpeg(tmp_path / "r.jpg", size=(40, 20), orientation=8)
    info = annotations.read_image_info(path)
    assert (info.width, info.height, info.orientation, info.format) == (20, 40, 8, "jpeg")
    assert Image.open(io.BytesIO(path.read_bytes())).size == (40, 20)


def test_images_may_come_from_the_folders_and_the_store_only(tmp_path):
    """`folders:` and the store are sources too; a sibling folder sharing a prefix is not."""
    root, folder, store_root = tmp_path / "data" / "pose", tmp_path / "pics", tmp_path / "store"
    sibling = tmp_path / "data" / "poser"
    named = {
        "from_folder.xml": jpeg(folder / "f.jpg"),
        "from_store.xml": jpeg(store_root / "ab" / "abcd.jpg"),
        "from_sibling.xml": jpeg(sibling / "s.jpg"),
    }
    root.mkdir(parents=True)
    for xml, image in named.items():
        (root / xml).write_bytes(voc("gone.jpg", path=str(image)))
    cfg = config.parse(
        {"classes": {"pose": {"annotations_dir": str(root), "folders": [str(folder)]}}}
    )
    out = tmp_path / "out"
    annotations.validate_class(cfg, "pose", None, out, store_root=store_root)
    kept = {Path(i.xml).name for s in config.SPLITS for i in lists.read_list(out / f"{s}.tsv")}
    assert kept == {"from_folder.xml", "from_store.xml"}
    rejected = {(Path(r["file"]).name, r["reason"]) for r in fileio.read_tsv(out / "rejected.tsv")}
    assert rejected == {("from_sibling.xml", "image_outside_sources")}
