"""Near-duplicate images: perceptual signatures, groups, and one split per group.

Tumblr is full of the same picture posted again, re-encoded, resized, cropped or
watermarked. Splitting by the bytes' sha256 puts such copies in training and
verification alike, and the verification AP then measures memory. Every image
gets a signature (a DCT hash and a gradient hash of its luminance, and a 4x4
colour layout, all of the upright image); two images are near-duplicates when
either hash is within `split.near_duplicate_distance` bits and most of their
colour layouts agree (the hashes see only luminance), or when either is smooth
and their colour layouts agree everywhere (see `SignatureIndex`). Connected
near-duplicates form a group, and a group goes to one split as a whole.

The signatures of a class's images are computed once per image by the
`signatures` rule and cached by sha256; every class's annotations job reads all
classes' signature tables, so a group that spans classes gets the same split in
each of them.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tumbletrain import cli, fileio, store
from tumbletrain import config as tt_config

log = logging.getLogger("tumbletrain.neardup")

SIGNATURE_COLUMNS = ("sha256", "timestamp", "phash", "dhash", "colour")
# Colour layouts compared channel by channel (0-255). Chosen on the constructed
# variants of tests/neardup_corpus.py (figures in BENCHMARKS.md): every half-size,
# JPEG-40, 5%-cropped and 10%-watermarked copy of demo, noise and real photos
# matches, and 2 of 7,140 pairs of distinct gradients do (the 4x4 layout cannot
# tell apart two smooth gradients of nearly the same colours).
COLOUR_MEDIAN = 8.0
COLOUR_CELLS = 16  # a 4x4 layout
COLOUR_BYTES = COLOUR_CELLS * 3
COLOUR_MEAN = 3.0


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
    colour = upright.resize((4, 4), Image.Resampling.BOX).tobytes()  # COLOUR_CELLS
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


def class_signatures(
    manifest: Sequence[store.ManifestRow], cache: dict[str, Member]
) -> list[Member]:
    """One member per image of the manifest; signatures come from the cache when known."""
    rows = {row.sha256: row for row in manifest}
    members = {
        sha: Member(sha, post_time(row.timestamp), cache[sha].signature)
        for sha, row in rows.items()
        if sha in cache
    }
    new = sorted(set(rows) - set(members))
    failed = 0
    for sha in cli.progress(new, "signatures", len(new), "images", log):
        row = rows[sha]
        try:
            members[sha] = Member(sha, post_time(row.timestamp), signature_of(row.file))
        except (OSError, ValueError) as error:
            failed += 1
            log.warning("no signature for %s (%s): %s", sha, row.file, error)
    if failed:
        log.warning("%d images have no signature and are split by their content alone", failed)
    return [members[sha] for sha in sorted(members)]


# Hashes are searched by locality-sensitive keys: KEY_BITS of the 64 bits, drawn
# at random (fixed seed) for each of KEY_TABLES tables per hash. A pair d bits
# apart shares a key in some table with probability 1 - (1 - C(64-d, K)/C(64, K))^L:
# 0.84 at 12 bits, 0.99 at 9, 1.00 at 6; a row meets about N * L / 2^K others
# (150 at 50,000 images, against 1,560 for the eight 8-bit bands of before).
KEY_BITS = 14
KEY_TABLES = 48
KEY_MASKS = np.array(
    [
        sum(1 << int(bit) for bit in np.random.default_rng(table).permutation(64)[:KEY_BITS])
        for table in range(KEY_TABLES)
    ],
    dtype=np.uint64,
)
# Masked values are scattered into 2^KEY_BITS buckets by a multiplicative hash
# (Knuth's golden ratio constant); colliding values only add candidates.
KEY_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
KEY_SHIFT = np.uint64(64 - KEY_BITS)
# Rows searched at once.
QUERY_ROWS = 8192
# A colour layout whose luminance varies less than this (standard deviation of
# its 16 cells, 0-255) has too little structure for stable hash bits: only such
# images are searched by colour alone. Every copy in tests/neardup_corpus.py that
# only the colour clause finds is a gradient of at most 6.0; distinct random
# pictures (the benchmark's) are above it 99% of the time.
SMOOTH_LUMA = 10.0
LUMA = np.array([0.299, 0.587, 0.114])


class Buckets:
    """Rows by an integer key below `size`, looked up for many queries at once."""

    def __init__(self, keys: np.ndarray, size: int):
        self.order = np.argsort(keys, kind="stable").astype(np.int32)
        self.count = np.bincount(keys, minlength=size).astype(np.int32)
        self.first = (np.cumsum(self.count) - self.count).astype(np.int32)

    def lookup(self, queries: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query, row) for every row whose key equals the query's key."""
        count = self.count[keys]
        # Each query's run of rows, laid end to end: position in the run + run start.
        start = np.repeat(self.first[keys] - (np.cumsum(count) - count), count)
        start += np.arange(len(start), dtype=np.int32)
        return np.repeat(queries, count), self.order[start]


def _keys(values: np.ndarray, table: int) -> np.ndarray:
    # 16-bit keys: numpy sorts them by radix, 6x faster than int64 here.
    return (((values & KEY_MASKS[table]) * KEY_MULTIPLIER) >> KEY_SHIFT).astype(np.uint16)


def _concatenate(found: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if not found:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate([f for f, _ in found]), np.concatenate([o for _, o in found])


# Colour cells: channel means (0-255) in cells of COLOUR_MEAN, keyed with a
# margin of REACH + 1 cells so that every neighbour of a real cell has a key.
# Two layouts within COLOUR_MEAN have channel means within 3 * COLOUR_MEAN in L1,
# so only the cells that close (at most REACH cells between them) are searched:
# 305 cells, 2.5x fewer candidates than the 27 cells of side 3 * COLOUR_MEAN (measured).
REACH = 3
CELL_SIDE = 256 // int(COLOUR_MEAN) + 2 * (REACH + 1) + 1
NEIGHBOUR_CELLS = np.array(
    [
        offset
        for offset in itertools.product(range(-REACH - 1, REACH + 2), repeat=3)
        if sum(max(abs(d) - 1, 0) for d in offset) <= REACH
    ],
    dtype=np.int64,
)


class SignatureIndex:
    """Distinct signatures, searchable for the near-duplicates of some of them.

    Near: a luminance hash within `distance` bits and half the colour layout
    within COLOUR_MEDIAN (a watermark band or a crop changes only part of it),
    or, when either image is smooth (see SMOOTH_LUMA), the whole colour layout
    within COLOUR_MEAN (gradients and skies, whose hash bits are noise).
    """

    def __init__(self, signatures: Sequence[Signature], distance: int):
        self.distance = distance
        self.hashes = [
            np.array([s.phash for s in signatures], dtype=np.uint64),
            np.array([s.dhash for s in signatures], dtype=np.uint64),
        ]
        self.tables = [
            [Buckets(_keys(values, table), 1 << KEY_BITS) for table in range(KEY_TABLES)]
            for values in self.hashes
        ]
        colour = np.frombuffer(b"".join(s.colour for s in signatures), dtype=np.uint8)
        self.colour = colour.reshape(len(signatures), COLOUR_BYTES).astype(np.int16)
        cells = self.colour.reshape(len(signatures), COLOUR_CELLS, 3)
        self.smooth = (cells @ LUMA).std(axis=1) < SMOOTH_LUMA
        self.means = cells.mean(axis=1)
        self.cell = np.floor(self.means / COLOUR_MEAN).astype(np.int64) + REACH + 1
        self.cells = Buckets(self._key(self.cell), CELL_SIDE**3)
        # Every colour-only pair has a smooth row: searching from the smooth rows
        # finds them all, both ways, once.
        first, other = self._colour_search(np.flatnonzero(self.smooth))
        self.colour_links = (
            Buckets(np.concatenate([first, other]), len(signatures)),
            np.concatenate([other, first]),
        )

    @staticmethod
    def _key(cell: np.ndarray) -> np.ndarray:
        return (cell[..., 0] * CELL_SIDE + cell[..., 1]) * CELL_SIDE + cell[..., 2]

    def _colour_search(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = self._key(self.cell[rows, None, :] + NEIGHBOUR_CELLS[None, :, :]).ravel()
        first, other = self.cells.lookup(np.repeat(rows, len(NEIGHBOUR_CELLS)), keys)
        # The cells hold more than the bound itself, a ball: test it on 3 numbers first.
        near = np.abs(self.means[first] - self.means[other]).sum(axis=1) <= 3 * COLOUR_MEAN
        first, other = first[near], other[near]
        close = np.abs(self.colour[first] - self.colour[other]).mean(axis=1) <= COLOUR_MEAN
        return first[close], other[close]

    def _colour_pairs(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        links, other = self.colour_links
        first, at = links.lookup(rows, rows)
        return first, other[at]

    def _hash_pairs(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows whose phash or dhash is within `distance` bits and most colours agree.

        Candidates share a key in one table (see KEY_BITS); each is then checked
        exactly. Comparing every pair instead cost 32 s at 50,000 images.
        """
        found = []
        for values, tables in zip(self.hashes, self.tables, strict=True):
            for table, buckets in enumerate(tables):
                first, other = buckets.lookup(rows, _keys(values[rows], table))
                close = np.bitwise_count(values[first] ^ values[other]) <= self.distance
                close &= first != other
                found.append((first[close], other[close]))
        first, other = _concatenate(found)
        close = np.median(np.abs(self.colour[first] - self.colour[other]), axis=1) <= COLOUR_MEDIAN
        return first[close], other[close]

    def neighbours(self, rows: Sequence[int]) -> set[tuple[int, int]]:
        """Pairs (row, other) for every near-duplicate of each of `rows`."""
        pairs: set[tuple[int, int]] = set()
        rows = np.asarray(rows, dtype=np.int32)
        for start in range(0, len(rows), QUERY_ROWS):
            chunk = rows[start : start + QUERY_ROWS]
            found = [self._hash_pairs(chunk), self._colour_pairs(chunk)]
            first, other = _concatenate(found)
            apart = first != other
            pairs.update(zip(first[apart].tolist(), other[apart].tolist(), strict=True))
        return pairs


def near_pairs(members: Sequence[Member], distance: int) -> set[tuple[int, int]]:
    """Index pairs (i < j) of near-duplicate members."""
    index = SignatureIndex([m.signature for m in members], distance)
    return {(min(i, j), max(i, j)) for i, j in index.neighbours(range(len(members)))}


def components(index: SignatureIndex, size: int, start: Iterable[int]) -> list[list[int]]:
    """The groups of the rows reachable from `start`, each a sorted index list.

    Only the groups of the starting rows are explored: a class's job pays for
    its own images' groups, not for every pair of every class.
    """
    parent = list(range(size))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    seen = set(start)
    frontier = sorted(seen)
    while frontier:
        found = set()
        for i, j in index.neighbours(frontier):
            a, b = root(i), root(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
            if j not in seen:
                found.add(j)
        seen |= found
        frontier = sorted(found)
    grouped: dict[int, list[int]] = {}
    for i in sorted(seen):
        grouped.setdefault(root(i), []).append(i)
    return list(grouped.values())


def split_of(sha256: str, split: tt_config.SplitConfig) -> str:
    """A stable split from the content hash: adding images never moves another."""
    return _content_split(sha256, split.salt, split.verification_percent)


def _content_split(sha256: str, salt: str, verification_percent: float) -> str:
    digest = hashlib.sha256(f"{salt}:{sha256}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64 * 100
    return "verification" if bucket < verification_percent else "training"


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
    members: Sequence[Member],
    split: tt_config.SplitConfig,
    distance: int,
    wanted: Iterable[str] | None = None,
) -> dict[str, Placement]:
    """The split of each image in the groups of `wanted` (default: every member).

    A group's split is its anchor's content split, whichever class asks.
    """
    unique: dict[str, Member] = {}
    for member in members:
        known = unique.get(member.sha256)
        if known is None or member.timestamp < known.timestamp:
            unique[member.sha256] = member
    # Identical signatures (copies that differ only in bytes) are one point.
    alike: dict[Signature, list[Member]] = {}
    for member in sorted(unique.values(), key=lambda m: m.sha256):
        alike.setdefault(member.signature, []).append(member)
    points = sorted(alike.values(), key=lambda same: same[0].sha256)
    row_of = {m.sha256: row for row, same in enumerate(points) for m in same}
    start = {row_of[sha] for sha in (unique if wanted is None else wanted) if sha in row_of}
    index = SignatureIndex([same[0].signature for same in points], distance)
    salt, percent = split.salt, split.verification_percent  # read once: 50,000 groups
    placements = {}
    for component in components(index, len(points), start):
        group = [m for row in component for m in points[row]]
        anchor = min(group, key=anchor_key)
        placed = Placement(_content_split(anchor.sha256, salt, percent), anchor.sha256, len(group))
        for member in group:
            placements[member.sha256] = placed
    return placements


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(
        "neardup", "Compute the perceptual signatures of one class's images (cached by sha256)."
    )
    parser.add_argument("--manifest", type=Path, required=True, help="the class's manifest TSV")
    parser.add_argument("--output", type=Path, required=True, help="the signature table to write")
    parser.add_argument(
        "--cache", type=Path, required=True, help="signatures kept between runs (read and updated)"
    )
    args = parser.parse_args(argv)
    fileio.clean_leftovers(*{args.output.parent, args.cache.parent}, logger=log)
    cache = {}
    if args.cache.is_file():
        cache = {m.sha256: m for m in read_members(args.cache)}
    members = class_signatures(store.read_manifest(args.manifest), cache)
    computed = [m for m in members if m.sha256 not in cache]
    if computed or not args.cache.is_file():
        write_members(args.cache, [*cache.values(), *computed])
    write_members(args.output, members)
    log.info("%d signatures (%d computed)", len(members), len(computed))
    return 0


if __name__ == "__main__":
    cli.run(main)
