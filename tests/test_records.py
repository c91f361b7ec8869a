"""TFRecords that the Model Garden and the Object Detection API read as they are."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tumbletrain import config, lists, records

# What the Object Detection API's training input (TfExampleDecoder in
# object_detection/data_decoders/tf_example_decoder.py) reads, with its dtypes.
OD_API_KEYS = {
    "image/encoded": tf.string,
    "image/format": tf.string,
    "image/filename": tf.string,
    "image/key/sha256": tf.string,
    "image/source_id": tf.string,
    "image/height": tf.int64,
    "image/width": tf.int64,
    "image/object/bbox/xmin": tf.float32,
    "image/object/bbox/xmax": tf.float32,
    "image/object/bbox/ymin": tf.float32,
    "image/object/bbox/ymax": tf.float32,
    "image/object/class/label": tf.int64,
    "image/object/class/text": tf.string,
    "image/object/area": tf.float32,
    "image/object/is_crowd": tf.int64,
    "image/object/difficult": tf.int64,
    "image/object/group_of": None,  # optional in the OD API, not written
    "image/object/truncated": tf.int64,
    "image/object/view": tf.string,
}

CLASSES = {"classes": {"circle": {}, "square": {}}}


def write_image(path: Path, fmt: str, size=(80, 60), orientation=None) -> str:
    image = Image.new("RGB", size, (10, 200, 30))
    image.paste((250, 0, 0), (5, 5, 40, 30))
    kwargs = {}
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **kwargs)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def item(path: Path, fmt: str, sha: str, width=80, height=60, orientation=1, objects=None):
    objects = objects or (
        lists.ListedObject("circle", 5, 5, 40, 30, difficult=1),
        lists.ListedObject("square", 40, 20, 80, 60, truncated=1, pose="Left"),
    )
    return lists.ListedImage(str(path), sha, fmt, width, height, orientation, "x.xml", objects)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    base = tmp_path_factory.mktemp("records")
    items = []
    for name, fmt, kind in (
        ("a.jpg", "JPEG", "jpeg"),
        ("b.png", "PNG", "png"),
        ("c.gif", "GIF", "gif"),
        ("d.webp", "WEBP", "webp"),
        ("e.bmp", "BMP", "bmp"),
    ):
        sha = write_image(base / name, fmt)
        items.append(item(base / name, kind, sha))
    sha = write_image(base / "r.jpg", "JPEG", size=(60, 80), orientation=6)
    items.append(item(base / "r.jpg", "jpeg", sha, width=80, height=60, orientation=6))
    lists.write_list(base / "list.tsv", items)
    cfg = config.parse(CLASSES)
    label_ids = {c.name: c.label_id for c in cfg.classes}
    stats = records.write_records(
        lists.read_list(base / "list.tsv"), base / "out.tfrecord", label_ids
    )
    (base / "label_map.csv").write_text(records.label_map_csv(cfg.classes))
    return base, items, stats


def examples(path: Path) -> list[tf.train.Example]:
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]


def test_round_trip_through_the_model_gardens_decoders(written):
    from official.vision.dataloaders import tf_example_decoder, tf_example_label_map_decoder

    base, items, _ = written
    by_sha = {i.sha256: i for i in items}
    plain = tf_example_decoder.TfExampleDecoder()
    mapped = tf_example_label_map_decoder.TfExampleDecoderLabelMap(str(base / "label_map.csv"))
    count = 0
    for raw in tf.data.TFRecordDataset(str(base / "out.tfrecord")):
        for decoder in (plain, mapped):
            decoded = decoder.decode(raw)
            example = tf.train.Example.FromString(raw.numpy())
            sha = example.features.feature["image/key/sha256"].bytes_list.value[0].decode()
            listed = by_sha.get(sha)
            if listed is None:  # re-encoded: find it by file name
                name = example.features.feature["image/filename"].bytes_list.value[0].decode()
                listed = next(i for i in items if Path(i.image).name == name)
            h, w = int(decoded["height"]), int(decoded["width"])
            assert (w, h) == (listed.width, listed.height)
            assert decoded["image"].shape[:2] == (h, w), "pixels are upright"
            expected = np.array(
                [[o.ymin / h, o.xmin / w, o.ymax / h, o.xmax / w] for o in listed.objects],
                np.float32,
            )
            np.testing.assert_allclose(decoded["groundtruth_boxes"].numpy(), expected, atol=1e-6)
            assert list(decoded["groundtruth_classes"].numpy()) == [1, 2]
            int(decoded["source_id"].numpy())  # the COCO evaluator parses it as int64
        count += 1
    assert count == len(items)


def test_every_od_api_key_is_present_with_its_dtype(written):
    base, _, _ = written
    for example in examples(base / "out.tfrecord"):
        features = example.features.feature
        for key, dtype in OD_API_KEYS.items():
            if dtype is None:
                continue
            assert key in features, key
            kind = features[key].WhichOneof("kind")
            assert (
                kind
                == {tf.string: "bytes_list", tf.int64: "int64_list", tf.float32: "float_list"}[
                    dtype
                ]
            ), (key, kind)


def test_jpeg_and_png_are_copied_others_reencoded_upright(written):
    base, items, _ = written
    encoded = {}
    for example in examples(base / "out.tfrecord"):
        f = example.features.feature
        name = f["image/filename"].bytes_list.value[0].decode()
        encoded[name] = (
            f["image/encoded"].bytes_list.value[0],
            f["image/format"].bytes_list.value[0].decode(),
        )
    assert encoded["a.jpg"][0] == (base / "a.jpg").read_bytes()
    assert encoded["b.png"][0] == (base / "b.png").read_bytes()
    for name in ("c.gif", "d.webp", "e.bmp", "r.jpg"):
        data, fmt = encoded[name]
        assert fmt == "jpeg"
        assert Image.open(io.BytesIO(data)).format == "JPEG"
    assert Image.open(io.BytesIO(encoded["r.jpg"][0])).size == (80, 60), "EXIF rotation applied"


def test_stats_count_images_objects_bytes(written):
    base, items, stats = written
    assert stats["images"] == len(items)
    assert stats["objects"] == 2 * len(items)
    assert stats["bytes"] == (base / "out.tfrecord").stat().st_size
    assert stats["objects_per_class"] == {"circle": len(items), "square": len(items)}


def test_records_are_byte_identical_across_processes(written, tmp_path):
    base, items, _ = written
    outputs = []
    for run in ("a", "b"):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "tumbletrain.records",
                "write",
                "--config-json",
                json.dumps(CLASSES),
                "--list",
                str(base / "list.tsv"),
                "--output",
                str(tmp_path / f"{run}.tfrecord"),
                "--stats",
                str(tmp_path / "s.json"),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        outputs.append((tmp_path / f"{run}.tfrecord").read_bytes())
        # Not a terminal: progress is plain log lines, no bar.
        log = result.stderr.decode()
        assert f"{run}.tfrecord: {len(items)}/{len(items)} images in" in log
        assert "\r" not in log
    assert outputs[0] == outputs[1]


def test_records_are_deterministic_and_shardable(written, tmp_path, monkeypatch):
    base, _, _ = written
    items = lists.read_list(base / "list.tsv")
    ids = {"circle": 1, "square": 2}
    records.write_records(items, tmp_path / "again.tfrecord", ids)
    assert (tmp_path / "again.tfrecord").read_bytes() == (base / "out.tfrecord").read_bytes()
    # A fresh Example for every image gives the same bytes as one refilled.
    monkeypatch.setattr(records, "BUILDER_IMAGES", 1)
    records.write_records(items, tmp_path / "fresh.tfrecord", ids)
    assert (tmp_path / "fresh.tfrecord").read_bytes() == (base / "out.tfrecord").read_bytes()
    stats = records.write_records(items, tmp_path / "s.tfrecord", ids, shards=3)
    assert stats["files"] == [f"s.tfrecord-0000{i}-of-00003" for i in range(3)]
    assert sum(len(examples(tmp_path / f)) for f in stats["files"]) == len(items)


def tensorflows_records(path: Path) -> bytes:
    """What TFRecordWriter writes for the Examples of `path`, each as tf.train.Example holds it."""
    out = path.with_name(f"{path.name}.tf")
    with tf.io.TFRecordWriter(str(out)) as writer:
        for example in examples(path):
            writer.write(example.SerializeToString(deterministic=True))
    return out.read_bytes()


def test_records_are_what_tensorflow_writes(written):
    base, _, _ = written
    ours = (base / "out.tfrecord").read_bytes()
    assert ours == tensorflows_records(base / "out.tfrecord")


def box(rng: np.random.Generator, width: int, height: int) -> tuple[float, ...]:
    """xmin, ymin, xmax, ymax in pixels, as a list holds them: ordered, inside, 2 decimals."""
    xs = np.sort(rng.uniform(0, width, size=2)).round(2)
    ys = np.sort(rng.uniform(0, height, size=2)).round(2)
    return float(xs[0]), float(ys[0]), float(xs[1]) + 0.01, float(ys[1]) + 0.01


def varied_items(base: Path, count: int) -> list[lists.ListedImage]:
    """Image bytes of lengths on each side of every varint boundary up to 4 bytes, and
    objects of every kind: none, many, non-ASCII names and poses, flags, any box."""
    rng = np.random.default_rng(7)
    lengths = [0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21]
    lengths += [int(n) for n in rng.integers(0, 300_000, size=count - len(lengths))]
    names = ["circle", "sq\u00fcare \u732b", "c" * 200]
    items = []
    for i, length in enumerate(lengths):
        path = base / f"{i:04d} \u00e9.{'png' if i % 3 else 'jpg'}"
        path.write_bytes(rng.bytes(length))  # copied as they are, never decoded
        width, height = (int(v) for v in rng.integers(1, 5000, size=2))
        objects = tuple(
            lists.ListedObject(
                names[int(rng.integers(3))],
                *box(rng, width, height),
                difficult=int(rng.integers(2)),
                truncated=int(rng.integers(2)),
                pose=["Unspecified", "Left", "\u00e0 gauche"][int(rng.integers(3))],
            )
            for _ in range(int(rng.integers(0, 12)))
        )
        sha = hashlib.sha256(str(i).encode()).hexdigest()
        fmt = "png" if i % 3 else "jpeg"
        items.append(lists.ListedImage(str(path), sha, fmt, width, height, 1, "", objects))
    return items


def test_records_of_varied_images_are_what_tensorflow_writes(tmp_path):
    items = varied_items(tmp_path, 300)
    label_ids = {"circle": 1, "sq\u00fcare \u732b": 2, "c" * 200: 3}
    records.write_records(items, tmp_path / "v.tfrecord", label_ids)
    ours = (tmp_path / "v.tfrecord").read_bytes()
    assert ours == tensorflows_records(tmp_path / "v.tfrecord")
    written = examples(tmp_path / "v.tfrecord")
    assert len(written) == len(items)
    for item, example in zip(items, written, strict=True):
        features = example.features.feature
        assert features["image/encoded"].bytes_list.value == [Path(item.image).read_bytes()]
        assert list(features["image/object/class/text"].bytes_list.value) == [
            o.name.encode() for o in item.objects
        ]
        assert len(features["image/object/bbox/xmin"].float_list.value) == len(item.objects)


@pytest.mark.parametrize("count", [0, 1, 2, 3, 10, 1001])
def test_box_side_quantiles_are_numpys_percentiles(count):
    sides = list(np.random.default_rng(count).random(count))
    expected = {
        f"p{q}": round(float(np.percentile(sides, q)), 4) if sides else None
        for q in (5, 25, 50, 75, 95)
    }
    assert records.box_side_quantiles(sides) == expected


def test_label_maps():
    cfg = config.parse({"classes": {"pose": {}, "hand": {}}})
    assert records.label_map_pbtxt(cfg.classes) == (
        "item {\n  id: 1\n  name: 'pose'\n}\nitem {\n  id: 2\n  name: 'hand'\n}\n"
    )
    assert records.label_map_csv(cfg.classes) == "1,pose\n2,hand\n"


def test_an_unknown_class_in_a_list_is_a_clear_error(written, tmp_path):
    base, _, _ = written
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tumbletrain.records",
            "write",
            "--config-json",
            '{"classes": {"circle": {}}}',
            "--list",
            str(base / "list.tsv"),
            "--output",
            str(tmp_path / "x.tfrecord"),
            "--stats",
            str(tmp_path / "x.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ERROR:") and "square" in last and "classes:" in last
    assert not (tmp_path / "x.tfrecord").exists()


def test_5000_boxes_and_odd_text_go_from_xml_through_lists_into_records(tmp_path):
    """Tabs, carriage returns, newlines and quotes in file names, class names and a
    300 KB <pose>; 5,000 boxes on one image (a 500 KB list cell) reach the record."""
    from tumbletrain import annotations, fileio, vocxml

    root = tmp_path / "data" / "circle"
    name = 'odd\tname "q"\rcr\n.jpg'
    write_image(root / name, "JPEG", size=(1000, 1000))
    pose = 'Left\r\n\t"quoted"' + "p" * 300_000
    objects = [
        vocxml.VocObject("circle", x, y, x + 9, y + 9, pose=pose if x == y == 0 else "Front")
        for x in range(0, 1000, 10)
        for y in range(0, 500, 10)
    ]
    objects.append(vocxml.VocObject("ca\rt", 1, 1, 20, 20))
    assert len(objects) == 5001
    xml = root / "odd\tname\r.xml"
    xml.write_bytes(vocxml.labelimg_xml("circle", name, "", (1000, 1000, 3), objects))
    cfg = config.parse(
        {
            "classes": {"circle": {"annotations_dir": str(root)}, "square": {}},
            "split": {"verification_percent": 0},
        }
    )
    outdir = tmp_path / "lists"
    summary = annotations.validate_class(cfg, "circle", None, outdir)
    assert summary["objects_kept"] == 5000
    (listed,) = lists.read_list(outdir / "training.tsv")
    assert (listed.image, listed.xml) == (str(root / name), str(xml))
    assert listed.objects[0].pose == pose.strip()
    rejected = fileio.read_tsv(outdir / "rejected.tsv")
    assert [(r["file"], r["object"], r["reason"]) for r in rejected] == [
        (str(xml), "5000:ca\rt", "unknown_class")
    ]
    stats = records.write_records([listed], tmp_path / "c.tfrecord", {"circle": 1, "square": 2})
    assert stats["objects"] == 5000
    (example,) = examples(tmp_path / "c.tfrecord")
    feature = example.features.feature
    assert len(feature["image/object/bbox/xmin"].float_list.value) == 5000
    assert feature["image/object/view"].bytes_list.value[0] == pose.strip().encode()
    assert feature["image/filename"].bytes_list.value[0] == name.encode()


def test_a_full_disk_is_one_error_line_and_leaves_no_record(tmp_path):
    """ENOSPC ended the job in an OSError traceback (issue #27). The disk: a 64 KiB
    tmpfs in a mount namespace of its own (util-linux `unshare`, no privileges)."""
    if subprocess.run(["unshare", "--mount", "--map-root-user", "true"]).returncode:
        pytest.skip("no unprivileged mount namespace here to make a small disk in")
    rng = np.random.default_rng(0)
    items = []
    for i in range(3):
        path = tmp_path / f"noise{i}.png"
        Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(path)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        items.append(item(path, "png", sha, 200, 200))
    lists.write_list(tmp_path / "list.tsv", items)
    disk = tmp_path / "disk"
    disk.mkdir()
    command = [
        sys.executable, "-m", "tumbletrain.records", "write", "--config-json",
        json.dumps(CLASSES), "--list", str(tmp_path / "list.tsv"),
        "--output", str(disk / "x.tfrecord"), "--stats", str(disk / "x.json"),
    ]  # fmt: skip
    script = f'mount -t tmpfs -o size=64k tmpfs {disk} && "$@"; echo "rc=$?"; ls -A {disk}'
    result = subprocess.run(
        ["unshare", "--mount", "--map-root-user", "sh", "-c", script, "sh", *command],
        capture_output=True,
        text=True,
        timeout=120,
    )
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ERROR: no space left on the disk of "), last
    # After the exit status, `ls -A` of the disk: nothing, not even a temporary file.
    assert result.stdout.splitlines()[-1] == "rc=1", result.stdout
