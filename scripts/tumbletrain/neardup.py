"""Near-duplicate images: perceptual signatures, groups, and one split per group.

Tumblr is full of the same picture posted again, re-encoded, resized, cropped or
watermarked. Splitting by the bytes' sha256 puts such copies in training and
verification alike, and the verification AP then measures memory. Every image
gets a signature (a DCT hash and a gradient hash of its luminance, and a 4x4
colour layout, all of the upright image); two images are near-duplicates when
either hash is within `split.near_duplicate_distance` bits and most of their
colour layouts agree (the hashes see only luminance), or when their colour
layouts agree everywhere (see `near_pairs`). Connected near-duplicates form a group, and a
group goes to one split as a whole.

The signatures of a class's images are computed once per image by the
`signatures` rule and cached by sha256; every class's annotations job reads all
classes' signature tables, so a group that spans classes gets the same split in
each of them.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tumbletrain import cli, fileio
from tumbletrain import config as tt_config

log = logging.getLogger("tumbletrain.neardup")

SIGNATURE_COLUMNS = ("sha256", "timestamp", "phash", "dhash", "colour")
# Colour layouts compared channel by channel (0-255). Chosen on the constructed
# variants of tests/neardup_corpus.py (figures in BENCHMARKS.md): every half-size,
# JPEG-40, 5%-cropped and 10%-watermarked copy of demo, noise and real photos
# matches, and 2 of 7,140 pairs of distinct gradients do.
COLOUR_MEDIAN = 8.0
COLOUR_MEAN = 3.0
# Rows compared at once: CHUNK x N 64-bit distances in memory.
CHUNK = 256


@dataclass(frozen=True)
class Signature:
    phash: int
    dhash: int
    colour: bytes  # 4x4 RGB block means, 48 bytes


@dataclass(frozen=True)
class Member:
    """An image taking part in grouping: its content hash, age and signature."""

    sha256: str
    timestamp: float  # the post's time; 0 when unknown (folders, demo)
    signature: Signature


def _bits(image_hash) -> int:
    return int.from_bytes(np.packbits(image_hash.hash.flatten()).tobytes(), "big")


def signature_of(path: str | Path) -> Signature:
    """The signature of an image file, of its upright pixels, decoded at low resolution."""
    import imagehash  # scipy's import is paid only by the jobs that hash

    with Image.open(path) as image:
        # JPEG decodes at 1/2 to 1/8 scale in its DCT: the hashes need 32x32 pixels.
        image.draft("RGB", (128, 128))
        upright = ImageOps.exif_transpose(image).convert("RGB")
    colour = upright.resize((4, 4), Image.Resampling.BOX).tobytes()
    return Signature(_bits(imagehash.phash(upright)), _bits(imagehash.dhash(upright)), colour)


def signature_row(sha256: str, timestamp: float, signature: Signature) -> list[str]:
    return [
        sha256,
        f"{timestamp:g}",
        f"{signature.phash:016x}",
        f"{signature.dhash:016x}",
        signature.colour.hex(),
    ]


def read_members(path: str | Path) -> list[Member]:
    return [
        Member(
            row["sha256"],
            float(row["timestamp"] or 0),
            Signature(int(row["phash"], 16), int(row["dhash"], 16), bytes.fromhex(row["colour"])),
        )
        for row in fileio.read_tsv(path)
    ]


def write_members(path: str | Path, members: Iterable[Member]) -> None:
    rows = sorted(signature_row(m.sha256, m.timestamp, m.signature) for m in members)
    fileio.write_tsv(path, SIGNATURE_COLUMNS, rows)


def post_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def class_signatures(manifest: Sequence[dict[str, str]], cache: dict[str, Member]) -> list[Member]:
    """One member per image of the manifest; signatures come from the cache when known."""
    members, failed = {}, 0
    rows = {row["sha256"]: row for row in manifest}
    for sha, row in cli.progress(sorted(rows.items()), "signatures", len(rows), "images", log):
        timestamp = post_time(row.get("timestamp", ""))
        known = cache.get(sha)
        if known is not None:
            members[sha] = Member(sha, timestamp, known.signature)
            continue
        try:
            members[sha] = Member(sha, timestamp, signature_of(row["file"]))
        except (OSError, ValueError) as error:
            failed += 1
            log.warning("no signature for %s (%s): %s", sha, row["file"], error)
    if failed:
        log.warning("%d images have no signature and are split by their content alone", failed)
    return list(members.values())


def near_pairs(members: Sequence[Member], distance: int) -> set[tuple[int, int]]:
    """Index pairs (i < j) of near-duplicate members.

    Near: a luminance hash within `distance` bits and half the colour layout
    within COLOUR_MEDIAN (a watermark band or a crop changes only part of it),
    or the whole colour layout within COLOUR_MEAN (smooth images, gradients and
    skies, whose hash bits are noise).
    """
    pairs: set[tuple[int, int]] = set()
    if len(members) < 2:
        return pairs
    phash = np.array([m.signature.phash for m in members], dtype=np.uint64)
    dhash = np.array([m.signature.dhash for m in members], dtype=np.uint64)
    colour = np.frombuffer(b"".join(m.signature.colour for m in members), dtype=np.uint8)
    colour = colour.reshape(len(members), -1).astype(np.int16)
    for start in range(0, len(members), CHUNK):
        rows = slice(start, min(start + CHUNK, len(members)))
        bits = np.minimum(
            np.bitwise_count(phash[rows, None] ^ phash[None, :]),
            np.bitwise_count(dhash[rows, None] ^ dhash[None, :]),
        )
        first, second = np.nonzero(bits <= distance)
        first += start
        keep = second > first
        first, second = first[keep], second[keep]
        apart = np.median(np.abs(colour[first] - colour[second]), axis=1)
        close = apart <= COLOUR_MEDIAN
        pairs.update(zip(first[close].tolist(), second[close].tolist(), strict=True))
    # The mean colour of two images differs by at most their layouts' mean
    # difference, so only neighbours in mean colour can match.
    means = colour.mean(axis=1)
    order = np.argsort(means, kind="stable")
    ends = np.searchsorted(means[order], means[order] + COLOUR_MEAN, side="right")
    for position, i in enumerate(order.tolist()):
        others = order[position + 1 : ends[position]]
        if not len(others):
            continue
        apart = np.abs(colour[others] - colour[i]).mean(axis=1)
        for j in others[apart <= COLOUR_MEAN].tolist():
            pairs.add((min(i, j), max(i, j)))
    return pairs


def groups(members: Sequence[Member], distance: int) -> list[list[int]]:
    """Connected components of the near-duplicate relation, as index lists."""
    parent = list(range(len(members)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in near_pairs(members, distance):
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    components: dict[int, list[int]] = {}
    for i in range(len(members)):
        components.setdefault(root(i), []).append(i)
    return list(components.values())


def split_of(sha256: str, split: tt_config.SplitConfig) -> str:
    """A stable split from the content hash: adding images never moves another."""
    digest = hashlib.sha256(f"{split.salt}:{sha256}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64 * 100
    return "verification" if bucket < split.verification_percent else "training"


@dataclass(frozen=True)
class Placement:
    split: str
    group: str  # the anchor's sha256: the group's name
    size: int


def anchor_key(member: Member) -> tuple[float, str]:
    # The oldest post anchors its group, so new posts joining a group never move
    # it; only a new image linking two groups moves the younger group.
    return (member.timestamp, member.sha256)


def place(
    members: Sequence[Member], split: tt_config.SplitConfig, distance: int
) -> dict[str, Placement]:
    """Each member's split: its group's anchor's content split (the same in every class)."""
    unique: dict[str, Member] = {}
    for member in members:
        known = unique.get(member.sha256)
        if known is None or member.timestamp < known.timestamp:
            unique[member.sha256] = member
    ordered = sorted(unique.values(), key=lambda m: m.sha256)
    placements = {}
    for component in groups(ordered, distance):
        anchor = min((ordered[i] for i in component), key=anchor_key)
        where = split_of(anchor.sha256, split)
        for i in component:
            placements[ordered[i].sha256] = Placement(where, anchor.sha256, len(component))
    return placements


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tumbletrain.neardup",
        description="Compute the perceptual signatures of one class's images (cached by sha256).",
    )
    parser.add_argument("--manifest", type=Path, required=True, help="the class's manifest TSV")
    parser.add_argument("--output", type=Path, required=True, help="the signature table to write")
    parser.add_argument(
        "--cache", type=Path, required=True, help="signatures kept between runs (read and updated)"
    )
    args = parser.parse_args(argv)
    fileio.remove_leftovers(args.cache.parent) if args.cache.parent.is_dir() else None
    cache = {}
    if args.cache.is_file():
        cache = {m.sha256: m for m in read_members(args.cache)}
    members = class_signatures(fileio.read_tsv(args.manifest), cache)
    cached = {m.sha256: m for m in members} | cache
    write_members(args.cache, cached.values())
    write_members(args.output, members)
    log.info("%d signatures (%d computed)", len(members), len(set(cached) - set(cache)))
    return 0


if __name__ == "__main__":
    cli.run(main)
