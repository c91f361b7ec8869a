"""Lists become TFRecords and a label map that the TensorFlow detection tools read as they are.

The features are the union of what the Object Detection API's
`create_pascal_tf_record.py` writes and what the Model Garden's
`TfExampleDecoder` reads. JPEG and PNG bytes are copied untouched (no decode);
only formats the decoders cannot read (GIF, WebP, BMP) and EXIF-rotated images
are re-encoded, once, upright, as JPEG.

`image/source_id` is a decimal number derived from the image's sha256, because
the Model Garden's COCO evaluation parses source ids as int64.

Nothing here imports TensorFlow (see tfrecord.py): the records jobs start in
a fraction of a second.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import statistics
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import cli, fileio, lists, tfrecord
from . import config as tt_config

log = logging.getLogger("tumbletrain.records")
# The config each command reads; its rule passes exactly this.
RECORDS = tt_config.stage("records", classes="names")
LABEL_MAP = tt_config.stage("label_map", classes="names")

COPIED_FORMATS = {"jpeg", "png"}
# Images one ExampleBuilder serves before it is replaced (see write_shard).
BUILDER_IMAGES = 4096


@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    format: str
    sha256: str


def source_id(sha256: str) -> str:
    """48 bits of the content hash as a decimal string: unique enough, fits int64."""
    return str(int(sha256[:12], 16))


def encoded_image(item: lists.ListedImage) -> EncodedImage:
    """The image bytes to store: the file itself when a decoder can read it upright."""
    data = Path(item.image).read_bytes()
    fmt = item.format.lower().replace("jpg", "jpeg")
    if fmt in COPIED_FORMATS and item.orientation == 1:
        sha = item.sha256 or hashlib.sha256(data).hexdigest()
        return EncodedImage(data, fmt, sha)
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as image:
        image.seek(0)  # the first frame of an animation
        upright = ImageOps.exif_transpose(image.convert("RGB"))
    buffer = io.BytesIO()
    upright.save(buffer, "JPEG", quality=95)
    data = buffer.getvalue()
    return EncodedImage(data, "jpeg", hashlib.sha256(data).hexdigest())


# The features of every Example, each with its kind of list. Every record sets
# all of them, lists of objects possibly empty. The image's own bytes are added
# at serialisation (tfrecord.example_parts), under a key sorting before the rest.
ENCODED_FEATURE = "image/encoded"
BYTES_FEATURES = (
    "image/format",
    "image/filename",
    "image/source_id",
    "image/key/sha256",
    "image/object/class/text",
    "image/object/view",
)
INT_FEATURES = (
    "image/height",
    "image/width",
    "image/object/class/label",
    "image/object/difficult",
    "image/object/truncated",
    "image/object/is_crowd",
)
FLOAT_FEATURES = (
    "image/object/bbox/xmin",
    "image/object/bbox/xmax",
    "image/object/bbox/ymin",
    "image/object/bbox/ymax",
    "image/object/area",
)


class ExampleBuilder:
    """One tf.train.Example reused for every image, its lists refilled in place.

    Building a fresh Example per image (a Feature, a list message and a map
    entry per key) cost more than serialising it; refilling the same message
    gives the same bytes at a fraction of the cost.
    """

    def __init__(self, label_ids: dict[str, int]):
        self.label_ids = label_ids
        self.example = tfrecord.Example()
        features = self.example.features.feature
        self.values = {}
        for keys, kind in (
            (BYTES_FEATURES, "bytes_list"),
            (INT_FEATURES, "int64_list"),
            (FLOAT_FEATURES, "float_list"),
        ):
            for key in keys:
                values = getattr(features[key], kind)
                # An empty list must still be serialised as present, as a fresh one was.
                values.SetInParent()
                self.values[key] = values.value
        if min(self.values) <= ENCODED_FEATURE:
            raise ValueError(f"{ENCODED_FEATURE} must sort before every other feature")

    def record(self, item: lists.ListedImage, encoded: EncodedImage) -> tuple[bytes, ...]:
        """The serialised Example of one image, boxes normalised, in parts to join."""
        v = self.values
        width, height = item.width, item.height
        objects = item.objects
        xmin = [min(max(o.xmin / width, 0.0), 1.0) for o in objects]
        xmax = [min(max(o.xmax / width, 0.0), 1.0) for o in objects]
        ymin = [min(max(o.ymin / height, 0.0), 1.0) for o in objects]
        ymax = [min(max(o.ymax / height, 0.0), 1.0) for o in objects]
        v["image/format"][:] = [encoded.format.encode()]
        v["image/height"][:] = [height]
        v["image/width"][:] = [width]
        v["image/filename"][:] = [os.path.basename(item.image).encode()]
        v["image/source_id"][:] = [source_id(encoded.sha256).encode()]
        v["image/key/sha256"][:] = [encoded.sha256.encode()]
        v["image/object/bbox/xmin"][:] = xmin
        v["image/object/bbox/xmax"][:] = xmax
        v["image/object/bbox/ymin"][:] = ymin
        v["image/object/bbox/ymax"][:] = ymax
        v["image/object/class/text"][:] = [o.name.encode() for o in objects]
        v["image/object/class/label"][:] = [self.label_ids[o.name] for o in objects]
        v["image/object/difficult"][:] = [int(o.difficult) for o in objects]
        v["image/object/truncated"][:] = [int(o.truncated) for o in objects]
        v["image/object/view"][:] = [o.pose.encode() for o in objects]
        v["image/object/is_crowd"][:] = [0] * len(objects)
        v["image/object/area"][:] = [
            (x1 - x0) * (y1 - y0) * width * height
            for x0, x1, y0, y1 in zip(xmin, xmax, ymin, ymax, strict=True)
        ]
        return tfrecord.example_parts(self.example, ENCODED_FEATURE, encoded.data)


def shard_paths(output: Path, shards: int) -> list[Path]:
    """The names of `shards` record files (the workflow's rules name them with this too)."""
    if shards == 1:
        return [output]
    return [output.with_name(f"{output.name}-{i:05d}-of-{shards:05d}") for i in range(shards)]


def write_shard(
    path: Path, items: list[lists.ListedImage], label_ids: dict[str, int], position: int = 0
) -> dict:
    """Write one record file atomically; returns its counts."""
    box_sides: list[float] = []
    objects = 0
    # One thread: with the image bytes no longer copied through the message, a
    # second thread for the checksum and the write only added GIL hand-offs
    # (measured 2x slower on 4,000 images).
    with fileio.atomic_path(path) as tmp, open(tmp, "wb") as handle:
        for done, item in enumerate(
            cli.progress(
                items, path.name, total=len(items), unit="images", logger=log, position=position
            )
        ):
            # upb keeps every value a refill replaces in the message's arena until the
            # message is freed: a fresh builder now and then bounds that memory.
            if done % BUILDER_IMAGES == 0:
                builder = ExampleBuilder(label_ids)
            tfrecord.write_record(handle, *builder.record(item, encoded_image(item)))
            objects += len(item.objects)
            area = item.width * item.height
            box_sides += [
                math.sqrt((o.xmax - o.xmin) * (o.ymax - o.ymin) / area) for o in item.objects
            ]
    return {
        "images": len(items),
        "objects": objects,
        "bytes": path.stat().st_size,
        "relative_box_sides": box_sides,
    }


def write_records(
    items: list[lists.ListedImage], output: Path, label_ids: dict[str, int], shards: int = 1
) -> dict:
    """Write the items into `shards` files named after `output` (shard_paths)."""
    return write_record_files(items, shard_paths(output, shards), label_ids)


def write_record_files(
    items: list[lists.ListedImage], paths: list[Path], label_ids: dict[str, int]
) -> dict:
    """Write the items round-robin into these files, in parallel when there are several."""
    shards = len(paths)
    # Round-robin keeps every shard a sample of the whole class.
    parts = [items[i::shards] for i in range(shards)]
    if shards == 1:
        results = [write_shard(paths[0], parts[0], label_ids)]
    else:
        workers = min(shards, os.cpu_count() or 1)
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(write_shard, paths, parts, [label_ids] * shards, range(shards)))
    sides = [s for r in results for s in r["relative_box_sides"]]
    return {
        "files": [p.name for p in paths],
        "images": sum(r["images"] for r in results),
        "objects": sum(r["objects"] for r in results),
        "bytes": sum(r["bytes"] for r in results),
        "box_side_relative": box_side_quantiles(sides),
        "objects_per_class": _objects_per_class(items),
    }


def box_side_quantiles(sides: list[float]) -> dict[str, float | None]:
    """Percentiles 5 to 95 of the boxes' relative sides (numpy's linear method), None if none.

    statistics rather than numpy: numpy's import was a third of the job's start-up.
    """
    quantiles = (5, 25, 50, 75, 95)
    if not sides:
        return {f"p{q}": None for q in quantiles}
    # quantiles() needs two points; one box is every percentile of itself.
    cuts = statistics.quantiles(sides, n=100, method="inclusive") if sides[1:] else sides * 99
    return {f"p{q}": round(cuts[q - 1], 4) for q in quantiles}


def _objects_per_class(items: list[lists.ListedImage]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        for obj in item.objects:
            counts[obj.name] = counts.get(obj.name, 0) + 1
    return dict(sorted(counts.items()))


def label_map_pbtxt(classes: Sequence[tt_config.ClassConfig]) -> str:
    """The Object Detection API's StringIntLabelMap text format."""
    return "".join(f"item {{\n  id: {c.label_id}\n  name: '{c.name}'\n}}\n" for c in classes)


def label_map_csv(classes: Sequence[tt_config.ClassConfig]) -> str:
    """`id,name` rows, no header: the Model Garden's TfExampleDecoderLabelMap reads every row."""
    return "".join(f"{c.label_id},{c.name}\n" for c in classes)


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("records", "Write per-class, per-split TFRecords and the label map.")
    sub = cli.subcommands(parser)
    write = sub.add_parser("write", help="one list -> one record file (or shards)")
    tt_config.add_config_arguments(write)
    write.add_argument("--list", type=Path, required=True, help="the annotations stage's list")
    write.add_argument(
        "--output",
        type=Path,
        nargs="+",
        required=True,
        help="the record files to write: one, or the shards (the images go round-robin)",
    )
    write.add_argument("--stats", type=Path, required=True, help="JSON counts to write")
    labels = sub.add_parser("label-map", help="write label_map.pbtxt and label_map.csv")
    tt_config.add_config_arguments(labels)
    labels.add_argument("--pbtxt", type=Path, required=True)
    labels.add_argument("--csv", type=Path, required=True)
    args = parser.parse_args(argv)
    cfg = tt_config.from_arguments(args, LABEL_MAP if args.command == "label-map" else RECORDS)
    outputs = [args.pbtxt, args.csv] if args.command == "label-map" else [*args.output, args.stats]
    fileio.clean_leftovers(*{path.parent for path in outputs}, logger=log)

    if args.command == "label-map":
        fileio.write_text(args.pbtxt, label_map_pbtxt(cfg.classes))
        fileio.write_text(args.csv, label_map_csv(cfg.classes))
        log.info("label map: %s", ", ".join(f"{c.label_id}={c.name}" for c in cfg.classes))
        return 0

    if not args.list.exists():
        raise cli.UserError(f"list {args.list} does not exist; run the annotations stage first")
    items = lists.read_list(args.list)
    label_ids = {c.name: c.label_id for c in cfg.classes}
    unknown = sorted({o.name for i in items for o in i.objects} - set(label_ids))
    if unknown:
        raise cli.UserError(
            f"{args.list} has objects of classes {unknown} that are not in the config "
            f"({sorted(label_ids)}); add them under `classes:` or re-run the annotations stage"
        )
    # A full disk is cli.run's one ERROR line; the writes are atomic.
    stats = write_record_files(items, args.output, label_ids)
    stats["list"] = str(args.list)
    fileio.write_json(args.stats, stats)
    log.info(
        "%s: %d images, %d objects, %.1f MB in %d file(s)",
        args.output[0],
        stats["images"],
        stats["objects"],
        stats["bytes"] / 1e6,
        len(stats["files"]),
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
