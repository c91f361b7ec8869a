"""Lists become TFRecords and a label map that the TensorFlow detection tools read as they are.

The features are the union of what the Object Detection API's
`create_pascal_tf_record.py` writes and what the Model Garden's
`TfExampleDecoder` reads. JPEG and PNG bytes are copied untouched (no decode);
only formats the decoders cannot read (GIF, WebP, BMP) and EXIF-rotated images
are re-encoded, once, upright, as JPEG.

`image/source_id` is a decimal number derived from the image's sha256, because
the Model Garden's COCO evaluation parses source ids as int64.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cli, fileio, lists
from . import config as tt_config

log = logging.getLogger("tumbletrain.records")

COPIED_FORMATS = {"jpeg", "png"}


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


def _bytes(values: Sequence[bytes]):
    import tensorflow as tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _ints(values: Sequence[int]):
    import tensorflow as tf

    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _floats(values: Sequence[float]):
    import tensorflow as tf

    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def build_example(item: lists.ListedImage, encoded: EncodedImage, label_ids: dict[str, int]):
    """One tf.train.Example with normalised boxes and pixel areas."""
    import tensorflow as tf

    width, height = item.width, item.height
    objects = item.objects
    xmin = [min(max(o.xmin / width, 0.0), 1.0) for o in objects]
    xmax = [min(max(o.xmax / width, 0.0), 1.0) for o in objects]
    ymin = [min(max(o.ymin / height, 0.0), 1.0) for o in objects]
    ymax = [min(max(o.ymax / height, 0.0), 1.0) for o in objects]
    areas = [
        (x1 - x0) * (y1 - y0) * width * height
        for x0, x1, y0, y1 in zip(xmin, xmax, ymin, ymax, strict=True)
    ]
    feature = {
        "image/encoded": _bytes([encoded.data]),
        "image/format": _bytes([encoded.format.encode()]),
        "image/height": _ints([height]),
        "image/width": _ints([width]),
        "image/filename": _bytes([Path(item.image).name.encode()]),
        "image/source_id": _bytes([source_id(encoded.sha256).encode()]),
        "image/key/sha256": _bytes([encoded.sha256.encode()]),
        "image/object/bbox/xmin": _floats(xmin),
        "image/object/bbox/xmax": _floats(xmax),
        "image/object/bbox/ymin": _floats(ymin),
        "image/object/bbox/ymax": _floats(ymax),
        "image/object/class/text": _bytes([o.name.encode() for o in objects]),
        "image/object/class/label": _ints([label_ids[o.name] for o in objects]),
        "image/object/difficult": _ints([int(o.difficult) for o in objects]),
        "image/object/truncated": _ints([int(o.truncated) for o in objects]),
        "image/object/view": _bytes([o.pose.encode() for o in objects]),
        "image/object/is_crowd": _ints([0] * len(objects)),
        "image/object/area": _floats(areas),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def shard_paths(output: Path, shards: int) -> list[Path]:
    if shards == 1:
        return [output]
    return [output.with_name(f"{output.name}-{i:05d}-of-{shards:05d}") for i in range(shards)]


def write_shard(path: Path, items: list[lists.ListedImage], label_ids: dict[str, int]) -> dict:
    """Write one record file atomically; returns its counts."""
    import tensorflow as tf

    box_sides: list[float] = []
    objects = 0
    with fileio.atomic_path(path) as tmp, tf.io.TFRecordWriter(str(tmp)) as writer:
        for item in items:
            encoded = encoded_image(item)
            # Features is a map: without `deterministic` its order changes between processes.
            example = build_example(item, encoded, label_ids)
            writer.write(example.SerializeToString(deterministic=True))
            objects += len(item.objects)
            box_sides += [
                float(np.sqrt((o.xmax - o.xmin) * (o.ymax - o.ymin) / (item.width * item.height)))
                for o in item.objects
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
    """Write the items round-robin into `shards` files, in parallel when there are several."""
    paths = shard_paths(output, shards)
    # Round-robin keeps every shard a sample of the whole class.
    parts = [items[i::shards] for i in range(shards)]
    if shards == 1:
        results = [write_shard(paths[0], parts[0], label_ids)]
    else:
        workers = min(shards, os.cpu_count() or 1)
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(write_shard, paths, parts, [label_ids] * shards))
    sides = np.array([s for r in results for s in r["relative_box_sides"]] or [np.nan])
    quantiles = {
        f"p{q}": round(float(np.nanpercentile(sides, q)), 4) if sides.size else None
        for q in (5, 25, 50, 75, 95)
    }
    return {
        "files": [p.name for p in paths],
        "images": sum(r["images"] for r in results),
        "objects": sum(r["objects"] for r in results),
        "bytes": sum(r["bytes"] for r in results),
        "box_side_relative": quantiles,
        "objects_per_class": _objects_per_class(items),
    }


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
    parser = argparse.ArgumentParser(
        prog="python -m tumbletrain.records",
        description="Write per-class, per-split TFRecords and the label map.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write", help="one list -> one record file (or shards)")
    tt_config.add_config_arguments(write)
    write.add_argument("--list", type=Path, required=True, help="results/lists/{class}/{split}.tsv")
    write.add_argument("--output", type=Path, required=True, help="record file to write")
    write.add_argument("--stats", type=Path, required=True, help="JSON counts to write")
    labels = sub.add_parser("label-map", help="write label_map.pbtxt and label_map.csv")
    tt_config.add_config_arguments(labels)
    labels.add_argument("--pbtxt", type=Path, required=True)
    labels.add_argument("--csv", type=Path, required=True)
    args = parser.parse_args(argv)
    cfg = tt_config.from_arguments(args)

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
    stats = write_records(items, args.output, label_ids, cfg.records.shards)
    stats["list"] = str(args.list)
    fileio.write_json(args.stats, stats)
    log.info(
        "%s: %d images, %d objects, %.1f MB in %d file(s)",
        args.output,
        stats["images"],
        stats["objects"],
        stats["bytes"] / 1e6,
        len(stats["files"]),
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
