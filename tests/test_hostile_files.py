"""Files users give (issue #27): a hostile file costs only itself, and annotation
files are read only inside the class's annotation folders.

The annotations stage runs in-process through its `main([...])`, as the rule
runs it; a traceback would fail the test.
"""

from __future__ import annotations

import html
import json
import re
import tempfile
from collections import Counter
from pathlib import Path

import hostile_files as hf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tumbletrain import annotations, config, fileio, harvest, vocxml

GOOD_BOX = {"x": 20, "y": 15, "width": 10, "height": 8}


def run_annotations(data: Path, out: Path) -> int:
    raw = {"classes": {"cat": {"annotations_dir": str(data)}}}
    return annotations.main(
        ["--config-json", json.dumps(raw), "--class", "cat", "--outdir", str(out)]
    )


def voc_bytes(image: str, /, **replace: str) -> bytes:
    """LabelImg's XML for a 40x30 `image` with one `cat` box; `replace`: tag -> raw text."""
    data = vocxml.labelimg_xml(
        "cat", image, image, (40, 30, 3), [vocxml.VocObject("cat", 5, 5, 30, 25)]
    ).decode()
    for tag, text in replace.items():
        new = f"<{tag}>{html.escape(text, quote=False)}</{tag}>"
        data = re.sub(f"<{tag}>[^<]*</{tag}>", lambda _, new=new: new, data, count=1)
    return data.encode("utf-8", "surrogatepass")


def createml_text(image: str, label: str = "cat", coordinates: dict | None = None) -> str:
    """CreateML JSON; coordinate values are written as given (raw JSON numbers)."""
    box = coordinates or {k: str(v) for k, v in GOOD_BOX.items()}
    raw_box = "{" + ", ".join(f'"{k}": {v}' for k, v in box.items()) + "}"
    return (
        f'[{{"image": {json.dumps(image)}, "annotations": '
        f'[{{"label": {json.dumps(label)}, "coordinates": {raw_box}}}]}}]'
    )


class Folder:
    """A class's annotation folder; each file in a subfolder of its own, with its image."""

    def __init__(self, root: Path):
        self.data = root / "data" / "cat"
        self.count = 0

    def place(self, name: str, annotation: bytes, image: bytes) -> str:
        self.count += 1
        folder = self.data / f"f{self.count:03d}"
        folder.mkdir(parents=True)
        suffix = ".jpg" if image.startswith(b"\xff\xd8") else ".png"
        (folder / f"{Path(name).stem}{suffix}").write_bytes(image)
        (folder / name).write_bytes(annotation)
        return str(folder / name)

    def voc(self, name: str, image: bytes | None = None, /, **replace: str) -> str:
        image = image or hf.picture(self.count + 1)
        suffix = ".jpg" if image.startswith(b"\xff\xd8") else ".png"
        return self.place(f"{name}.xml", voc_bytes(name + suffix, **replace), image)

    def yolo(self, name: str, line: str, classes: str = "cat\n") -> str:
        path = self.place(
            f"{name}.txt", line.encode("utf-8", "surrogatepass"), hf.picture(self.count + 1)
        )
        (Path(path).parent / "classes.txt").write_bytes(classes.encode("utf-8", "surrogatepass"))
        return path

    def createml(self, name: str, text: str) -> str:
        data = text.encode("utf-8", "surrogatepass")
        return self.place(f"{name}.json", data, hf.picture(self.count + 1))


def outcomes(out: Path) -> tuple[set[str], Counter[str], list[dict]]:
    """The annotation files kept, the file-level reasons per file, and every rejected row."""
    kept = {row["xml"] for split in config.SPLITS for row in fileio.read_tsv(out / f"{split}.tsv")}
    rejected = fileio.read_tsv(out / "rejected.tsv")
    return kept, Counter(r["file"] for r in rejected if not r["object"]), rejected


def test_the_issues_hostile_files_each_cost_only_themselves(tmp_path):
    folder = Folder(tmp_path)
    good = [
        folder.voc("good"),
        folder.yolo("good_yolo", "0 0.5 0.5 0.25 0.25"),
        folder.createml("good_createml", createml_text("good_createml.png")),
    ]
    # A size that is no number is a missing size (the image's is taken, as for a word).
    repaired = [folder.voc(f"width_{w}", width=w) for w in ("nan", "inf", "1e400")]
    repaired.append(folder.voc("difficult_inf", difficult="inf"))
    bad = {
        folder.yolo("control_in_classes", "0 0.5 0.5 0.2 0.2", "c\x01at\n"): "label_not_text",
        folder.createml("control_label", createml_text("control_label.png", "c\x07at")): (
            "label_not_text"
        ),
        folder.createml("surrogate", createml_text("surrogate.png", "\ud800cat")): "label_not_text",
        folder.createml(
            "huge",
            createml_text(
                "huge.png",
                coordinates={"x": "1" + "0" * 400, "y": "1", "width": "1", "height": "1"},
            ),
        ): "not_createml",
        folder.createml("deep", "[" * 1000 + "]" * 1000): "not_createml",
        folder.voc("exif_text", hf.picture(99, "JPEG", hf.TEXT_ORIENTATION)): "bad_orientation",
        folder.yolo("many", "0 0.5 0.5 0.2 0.2\n" * 200_000): "too_many_boxes",
    }
    assert run_annotations(folder.data, tmp_path / "out") == 0
    kept, reasons, rejected = outcomes(tmp_path / "out")
    assert kept == {*good, *repaired}
    file_reasons = {r["file"]: r["reason"] for r in rejected}
    assert {f: file_reasons[f] for f in bad} == bad
    # The label that no XML can hold is shown escaped, its file's other reason is no_objects.
    shown = {r["object"] for r in rejected if r["reason"] == "label_not_text"}
    assert shown == {"0:c\\x01at", "0:c\\x07at", "0:\\ud800cat"}
    for path in bad:
        assert reasons[path] == 1


def test_annotation_files_linked_outside_the_folder_are_never_read(tmp_path):
    """classes.txt -> a credentials file put the key into rejected.tsv, a line a box."""
    secret = tmp_path / "credentials"
    secret.write_text("[default]\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG\n")
    folder = Folder(tmp_path)
    good = folder.voc("good")
    yolo = folder.yolo("boxes", "1 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2")
    classes = Path(yolo).parent / "classes.txt"
    classes.unlink()
    classes.symlink_to(secret)
    linked = {}
    for suffix in (".xml", ".txt", ".json"):
        path = Path(yolo).parent / f"linked{suffix}"
        path.symlink_to(secret)
        linked[str(path)] = "outside_folders"
    # A link that stays inside the folders is read as before.
    original = folder.voc("original")
    inside = Path(original).parent / "alias.xml"
    inside.symlink_to(original)
    assert run_annotations(folder.data, tmp_path / "out") == 0
    kept, reasons, rejected = outcomes(tmp_path / "out")
    assert good in kept
    # The link inside: read, and found to annotate the image its target does.
    assert len(kept & {original, str(inside)}) == 1
    assert {r["reason"] for r in rejected if r["file"] in (original, str(inside))} == {
        "duplicate_annotation"
    }
    assert {r["file"]: r["reason"] for r in rejected if r["file"] in linked} == linked
    assert {r["reason"] for r in rejected if r["file"] == yolo} == {"outside_folders"}
    written = "".join(p.read_text() for p in (tmp_path / "out").iterdir() if p.is_file())
    assert "wJalrXUtnFEMI" not in written and "aws_secret" not in written


def test_an_exif_orientation_stored_as_text_is_skipped_by_the_harvest(tmp_path):
    """store.check_image caught OSError only: every re-run crashed on the same image."""
    images = tmp_path / "in"
    images.mkdir()
    (images / "good.jpg").write_bytes(hf.picture(1, "JPEG"))
    (images / "exif.jpg").write_bytes(hf.picture(2, "JPEG", hf.TEXT_ORIENTATION))
    raw = {"classes": {"cat": {"folders": [str(images)]}}}
    manifest = tmp_path / "manifests" / "cat.tsv"
    result = harvest.harvest_class(config.parse(raw), "cat", tmp_path / "store", manifest)
    assert result == {"class": "cat", "images": 1, "skipped": 1}
    skipped = fileio.read_tsv(manifest.with_suffix(".skipped.tsv"))
    assert [(Path(r["image_url"]).name, r["reason"]) for r in skipped] == [
        ("exif.jpg", "bad_orientation")
    ]


# Numbers as hostile files write them: not numbers, not finite, beyond a float.
NUMBERS = st.one_of(
    st.sampled_from(
        ["nan", "NaN", "inf", "-inf", "1e400", "-1e400", "1e-400", "9" * 5000, "0x1A", "", " "]
        + ["1_0", "\u0661\u0662", "--1", "1e", "Infinity"]
    ),
    st.floats().map(repr),
    st.integers(-(10**600), 10**600).map(str),
)
# Text with control characters, lone surrogates and noncharacters among the rest.
TEXT = st.one_of(
    st.text(st.characters(exclude_categories=[]), max_size=12),
    st.sampled_from(["c\x07at", "\ud800cat", "\x00", "cat\n", "\ufffe", "cat"]),
)
VOC_TAGS = ("width", "height", "depth", "xmin", "ymin", "xmax", "ymax", "difficult", "truncated")
VOC = st.one_of(
    st.tuples(st.sampled_from(VOC_TAGS), st.one_of(NUMBERS, TEXT)),
    st.tuples(st.sampled_from(("name", "pose", "filename", "path")), TEXT),
)
YOLO = st.tuples(
    st.lists(st.one_of(NUMBERS, st.sampled_from(["0", "1", "0.5"])), min_size=0, max_size=7),
    st.lists(TEXT, min_size=1, max_size=3),
)
JSON_NUMBERS = st.one_of(
    NUMBERS.filter(lambda n: n.strip() and n.lstrip("-").replace(".", "").isdigit()),
    st.sampled_from(["1" + "0" * 400, "1e400", "NaN", "-Infinity", '"5"', "null", "[]", "true"]),
)
CREATEML = st.tuples(
    st.one_of(TEXT, st.integers().map(lambda _: 10**400), st.none()),
    st.fixed_dictionaries({k: JSON_NUMBERS for k in ("x", "y", "width", "height")}),
    st.sampled_from([0, 1, 50, 1000, 3000]),
)
EXIF = st.lists(
    st.tuples(
        st.sampled_from([hf.ORIENTATION, hf.ORIENTATION, 0x8769, 0x0100]),
        st.integers(0, 13),
        st.integers(0, 2**32 - 1),
        st.binary(min_size=0, max_size=12),
    ),
    min_size=1,
    max_size=3,
)
HOSTILE = st.lists(
    st.one_of(
        st.tuples(st.just("voc"), VOC),
        st.tuples(st.just("yolo"), YOLO),
        st.tuples(st.just("createml"), CREATEML),
        st.tuples(st.just("exif"), EXIF),
    ),
    min_size=1,
    max_size=4,
)


def make_hostile(folder: Folder, number: int, kind: str, case) -> str:
    name = f"hostile{number}"
    if kind == "voc":
        tag, text = case
        return folder.voc(name, **{tag: text})
    if kind == "yolo":
        fields, classes = case
        return folder.yolo(name, " ".join(fields), "\n".join(classes))
    if kind == "createml":
        label, box, depth = case
        text = createml_text(f"{name}.png", "cat", box).replace('"cat"', json.dumps(label), 1)
        return folder.createml(name, "[" * depth + text + "]" * depth)
    block = hf.exif_block([(tag, kind_, count, value) for tag, kind_, count, value in case])
    return folder.voc(name, hf.picture(folder.count + 500, "JPEG", block))


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(HOSTILE)
def test_generated_hostile_files_cost_only_themselves(cases):
    """Every file is accounted for once: kept, or one file-level reason; the good are kept."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = Folder(root)
        good = [
            folder.voc("good"),
            folder.yolo("good_yolo", "0 0.5 0.5 0.25 0.25"),
            folder.createml("good_createml", createml_text("good_createml.png")),
        ]
        hostile = [make_hostile(folder, n, kind, case) for n, (kind, case) in enumerate(cases)]
        assert run_annotations(folder.data, root / "out") == 0
        kept, reasons, _ = outcomes(root / "out")
        assert set(good) <= kept
        for path in hostile:
            assert (path in kept) + reasons[path] == 1, path
