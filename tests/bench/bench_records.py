"""Records: JPEGs -> TFRecords, against a plain copy and the OD API's per-image method."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import noise_jpegs, profile, report, scaled, target, timed
from PIL import Image
from tumbletrain import lists, records


def make_images(root: Path, count: int) -> tuple[Path, list[Path]]:
    """`count` distinct JPEGs of 50-300 KB and the list the annotations stage would write."""
    rng = np.random.default_rng(0)
    unique = noise_jpegs(min(count, 200), rng)
    items, paths = [], []
    for i in range(count):
        data = unique[i % len(unique)] + i.to_bytes(4, "big")  # distinct bytes after EOI
        path = root / "images" / f"{i:06d}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
        items.append(
            lists.ListedImage(
                str(path),
                hashlib.sha256(data).hexdigest(),
                "jpeg",
                width,
                height,
                1,
                "",
                (lists.ListedObject("pose", 10, 10, width - 10, height - 10),),
            )
        )
        paths.append(path)
    lists.write_list(root / "list.tsv", items)
    return root / "list.tsv", paths


def copy_limit(paths: list[Path], target: Path) -> int:
    """Read the same bytes and write them to one file: the physical limit."""
    total = 0
    with open(target, "wb") as out:
        for path in paths:
            data = path.read_bytes()
            out.write(data)
            total += len(data)
    return total


def record_writer_limit(paths: list[Path], target: Path) -> None:
    """The same bytes through TFRecordWriter, no Example: the record format's own cost."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(target)) as writer:
        for path in paths:
            writer.write(path.read_bytes())


def anchor(paths: list[Path], target: Path) -> None:
    """create_pascal_tf_record.py's dict_to_tf_example per image: PIL open, sha256, one Example.

    The same 16 features it writes (dataset_util's one-Feature-per-call helpers),
    one box per image as in our lists.
    """
    import tensorflow as tf

    def int64s(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    def byteses(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    def floats(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    with tf.io.TFRecordWriter(str(target)) as writer:
        for path in paths:
            with tf.io.gfile.GFile(str(path), "rb") as fid:
                encoded = fid.read()
            image = Image.open(io.BytesIO(encoded))
            if image.format != "JPEG":
                raise ValueError("Image format not JPEG")
            key = hashlib.sha256(encoded).hexdigest()
            width, height = image.size
            name = path.name.encode("utf8")
            feature = {
                "image/height": int64s([height]),
                "image/width": int64s([width]),
                "image/filename": byteses([name]),
                "image/source_id": byteses([name]),
                "image/key/sha256": byteses([key.encode("utf8")]),
                "image/encoded": byteses([encoded]),
                "image/format": byteses([b"jpeg"]),
                "image/object/bbox/xmin": floats([10 / width]),
                "image/object/bbox/xmax": floats([(width - 10) / width]),
                "image/object/bbox/ymin": floats([10 / height]),
                "image/object/bbox/ymax": floats([(height - 10) / height]),
                "image/object/class/text": byteses([b"pose"]),
                "image/object/class/label": int64s([1]),
                "image/object/difficult": int64s([0]),
                "image/object/truncated": int64s([0]),
                "image/object/view": byteses([b"Unspecified"]),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())


def command(list_path: Path, output: Path) -> float:
    """Seconds of the records command itself, start-up included (as Snakemake runs it)."""
    output.unlink(missing_ok=True)  # as Snakemake deletes a job's outputs first
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tumbletrain.records",
            "write",
            "--config-json",
            '{"classes": {"pose": {}}}',
            "--list",
            str(list_path),
            "--output",
            str(output),
            "--stats",
            str(output.with_suffix(".json")),
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def main() -> dict:
    import tensorflow as tf  # noqa: F401  (the anchor's; imported outside its timings)

    count = scaled(20_000)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TT_BENCH_TMP")) as tmp:
        root = Path(tmp)
        list_path, paths = make_images(root, count)
        megabytes = sum(p.stat().st_size for p in paths) / 1e6
        out = root / "out.bin"
        # Each method overwrites the same output: at full size the inputs alone are 3 GB.
        copy_s, _ = timed(lambda: copy_limit(paths, out), repeat=3)
        writer_s, _ = timed(lambda: record_writer_limit(paths, out), repeat=3)
        anchor_s, _ = timed(lambda: anchor(paths, out), repeat=2)
        items = lists.read_list(list_path)

        def ours() -> None:
            # The methods above truncate `out` as they open it, discarding its dirty
            # pages; ours writes a temp file and renames it over `out`, so 3 GB of the
            # previous method's output would still be flushing to disk beside ours
            # (past vm.dirty_ratio: throttled). Snakemake deletes a job's outputs
            # before running it, so in the workflow there is no old file either.
            out.unlink(missing_ok=True)
            records.write_records(items, out, {"pose": 1})

        steady_s, _ = timed(ours, repeat=2)
        profile("records_steady", ours)
        out.unlink()
        command_s, _ = timed(lambda: command(list_path, out), repeat=3)
        # The copy again, right after ours: the load may have changed meanwhile.
        copy_after_s, _ = timed(lambda: copy_limit(paths, out), repeat=3)
    import_s, _ = timed(
        lambda: subprocess.run([sys.executable, "-c", "import tensorflow"], check=True), repeat=2
    )
    copy_before_s = copy_s
    copy_s = (copy_s + copy_after_s) / 2  # the mean of its medians before and after ours
    anchor_command_s = anchor_s + import_s
    rows = [
        {"method": name, "seconds": s, "images_per_s": count / s, "MB_per_s": megabytes / s}
        for name, s in (
            ("copy (limit)", copy_s),
            ("TFRecordWriter of the raw bytes, no Example", writer_s),
            ("OD API per-image (anchor)", anchor_s),
            ("ours, steady state", steady_s),
            ("ours, whole command incl. start-up", command_s),
            ("anchor as a command (+ TF import alone)", anchor_command_s),
        )
    ]
    return report(
        "records",
        rows,
        {
            "images": count,
            "MB": round(megabytes, 1),
            "copy_s (before ours, after ours; their mean is the limit)": [
                round(copy_before_s, 2),
                round(copy_after_s, 2),
            ],
            "ratio_to_copy (steady)": round(copy_s / steady_s, 2),
            "TFRecordWriter_alone_ratio_to_copy": round(copy_s / writer_s, 2),
            "speedup_vs_anchor (steady)": round(anchor_s / steady_s, 2),
            "tensorflow_import_s": round(import_s, 2),
        },
        [
            target("whole command, ratio to the copy", copy_s / command_s, at_least=0.8),
            target(
                "whole command, speed-up over the anchor as a command",
                anchor_command_s / command_s,
                at_least=3,
            ),
        ],
    )


if __name__ == "__main__":
    main()
