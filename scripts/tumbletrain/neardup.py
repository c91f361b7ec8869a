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
    """The members of a signature table; a damaged one is a fileio.TableError naming it."""
    members = []
    for number, row in enumerate(fileio.read_tsv(path), start=2):
        try:
            colour = bytes.fromhex(row["colour"])
            if len(colour) != COLOUR_BYTES:
                raise ValueError(f"{len(colour)} colour bytes, not {COLOUR_BYTES}")
            signature = Signature(int(row["phash"], 16), int(row["dhash"], 16), colour)
            members.append(Member(row["sha256"], float(row["timestamp"] or 0), signature))
        except (KeyError, TypeError, ValueError) as error:
            raise fileio.TableError(
                f"{path} line {number} is not a signature row ({error}); delete the file "
                "and re-run (the signatures rule computes it again)"
            ) from None
    return members


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
# A colour layout whose luminance varies less than this (standard deviation of
# its 16 cells, 0-255) has too little structure for stable hash bits: only such
# images are searched by colour alone. Every copy in tests/neardup_corpus.py that
# only the colour clause finds is a gradient of at most 6.0; distinct random
# pictures (the benchmark's) are above it 99% of the time.
SMOOTH_LUMA = 10.0
LUMA = np.array([0.299, 0.587, 0.114])


# Candidate pairs are made and checked in blocks of about this many (a bucket's
# run for one query is never cut: at most the number of images), and groups are
# joined block by block: the memory of a search is bounded per image whatever
# the pictures look like. Flat pictures share every key, and materialising
# every candidate pair at once took 3.3 GB at 400 of them (issue #27).
BLOCK_PAIRS = 1 << 18


class Buckets:
    """Rows by an integer key below `size`, looked up for many queries at once."""

    def __init__(self, keys: np.ndarray, size: int):
        self.order = np.argsort(keys, kind="stable").astype(np.int64)
        self.count = np.bincount(keys, minlength=size).astype(np.int64)
        self.first = np.cumsum(self.count) - self.count

    def lookup(self, queries: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query, row) for every row whose key equals the query's key."""
        count = self.count[keys]
        # Each query's run of rows, laid end to end: position in the run + run start.
        start = np.repeat(self.first[keys] - (np.cumsum(count) - count), count)
        start += np.arange(len(start), dtype=np.int64)
        return np.repeat(queries, count), self.order[start]

    def blocks(self, queries: np.ndarray, keys: np.ndarray):
        """lookup() in blocks of about BLOCK_PAIRS pairs."""
        for start, stop in _spans(self.count[keys]):
            yield self.lookup(queries[start:stop], keys[start:stop])


def _spans(sizes: np.ndarray):
    """(start, stop): consecutive spans of about BLOCK_PAIRS in total size, at least one each."""
    ends = np.cumsum(sizes)
    start = 0
    while start < len(sizes):
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + BLOCK_PAIRS, side="right")), start + 1)
        yield start, stop
        start = stop


def _keys(values: np.ndarray, table: int) -> np.ndarray:
    # 16-bit keys: numpy sorts them by radix, 6x faster than int64 here.
    return (((values & KEY_MASKS[table]) * KEY_MULTIPLIER) >> KEY_SHIFT).astype(np.uint16)


class HashIndex:
    """One hash's distinct values (rows sharing one are searched once), keyed for search."""

    def __init__(self, values: np.ndarray):
        self.distinct, self.value_of = np.unique(values, return_inverse=True)
        self.value_of = self.value_of.astype(np.int64)
        self.rows = Buckets(self.value_of, len(self.distinct))
        self.tables = [
            Buckets(_keys(self.distinct, table), 1 << KEY_BITS) for table in range(KEY_TABLES)
        ]

    def near_values(self, ids: np.ndarray, distance: int):
        """Blocks of (id, other): distinct values within `distance` bits, each pair once."""
        keys = [_keys(self.distinct[ids], table) for table in range(KEY_TABLES)]
        tables = list(zip(self.tables, keys, strict=True))
        for start, stop in _spans(np.sum([b.count[k] for b, k in tables], axis=0)):
            found = [b.lookup(ids[start:stop], k[start:stop]) for b, k in tables]
            first = np.concatenate([f for f, _ in found])
            other = np.concatenate([o for _, o in found])
            close = np.bitwise_count(self.distinct[first] ^ self.distinct[other]) <= distance
            pair = np.unique(first[close] * len(self.distinct) + other[close])
            yield pair // len(self.distinct), pair % len(self.distinct)


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
        self.size = len(signatures)
        self.hashes = [
            HashIndex(np.array([s.phash for s in signatures], dtype=np.uint64)),
            HashIndex(np.array([s.dhash for s in signatures], dtype=np.uint64)),
        ]
        colour = np.frombuffer(b"".join(s.colour for s in signatures), dtype=np.uint8)
        self.colour = colour.reshape(len(signatures), COLOUR_BYTES).astype(np.int16)
        cells = self.colour.reshape(len(signatures), COLOUR_CELLS, 3)
        self.smooth = (cells @ LUMA).std(axis=1) < SMOOTH_LUMA
        self.means = cells.mean(axis=1)
        self.cell = np.floor(self.means / COLOUR_MEAN).astype(np.int64) + REACH + 1
        keys = self._key(self.cell)
        self.cells = Buckets(keys, CELL_SIDE**3)
        # The smooth rows alone (the others under a key no query asks for): every
        # colour-only pair has a smooth row, so a row that is not smooth looks there.
        self.smooth_cells = Buckets(np.where(self.smooth, keys, CELL_SIDE**3), CELL_SIDE**3 + 1)

    @staticmethod
    def _key(cell: np.ndarray) -> np.ndarray:
        return (cell[..., 0] * CELL_SIDE + cell[..., 1]) * CELL_SIDE + cell[..., 2]

    def _hash_candidates(self, rows: np.ndarray):
        """Blocks of (row, other) whose phash or dhash is within `distance` bits."""
        for index in self.hashes:
            ids = index.value_of[rows]
            by_value = Buckets(ids, len(index.distinct))  # the rows of each value
            for value, other_value in index.near_values(np.unique(ids), self.distance):
                for near, at in by_value.blocks(other_value, value):
                    for position, other in index.rows.blocks(np.arange(len(at)), near):
                        yield rows[at[position]], other

    def _colour_candidates(self, rows: np.ndarray):
        """Blocks of (row, other) in colour cells near enough, one side smooth."""
        step = BLOCK_PAIRS // len(NEIGHBOUR_CELLS)  # rows whose cells are looked up at once
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            for smooth, buckets in ((True, self.cells), (False, self.smooth_cells)):
                query = chunk[self.smooth[chunk] == smooth]
                keys = self._key(self.cell[query, None, :] + NEIGHBOUR_CELLS[None, :, :]).ravel()
                yield from buckets.blocks(np.repeat(query, len(NEIGHBOUR_CELLS)), keys)

    def neighbours(self, rows: Sequence[int], linked=None):
        """Blocks of (row, other): the near-duplicates of each of `rows`.

        A pair of two of `rows` comes once; `linked(first, other)`, when given,
        says which candidates are known to be in one group already, and they
        are not checked (a flat picture's candidates are mostly such).
        """
        rows = np.asarray(rows, dtype=np.int64)
        asked = np.zeros(self.size, dtype=bool)
        asked[rows] = True
        searches = (
            (self._hash_candidates(rows), self._hash_close),
            (self._colour_candidates(rows), self._colour_close),
        )
        for candidates, close in searches:
            for first, other in candidates:
                keep = (first != other) & ~(asked[other] & (other < first))
                if linked is not None:
                    keep &= ~linked(first, other)
                first, other = first[keep], other[keep]
                near = close(first, other)
                if near.any():
                    yield first[near], other[near]

    def _hash_close(self, first: np.ndarray, other: np.ndarray) -> np.ndarray:
        """Whether the median of the colour differences is within COLOUR_MEDIAN.

        The bits were checked on the distinct values. The median of 48 integers
        is that of the 24th and 25th smallest: counting the differences within
        the bound decides it unless exactly 24 are, and only those pairs are
        sorted (np.median on every pair was most of the time of a flat class).
        """
        apart = np.abs(self.colour[first] - self.colour[other])
        within = (apart <= COLOUR_MEDIAN).sum(axis=1)
        close = within > COLOUR_BYTES // 2
        tie = np.flatnonzero(within == COLOUR_BYTES // 2)
        close[tie] = np.median(apart[tie], axis=1) <= COLOUR_MEDIAN
        return close

    def _colour_close(self, first: np.ndarray, other: np.ndarray) -> np.ndarray:
        # The cells hold more than the bound itself, a ball: test it on 3 numbers first.
        near = np.abs(self.means[first] - self.means[other]).sum(axis=1) <= 3 * COLOUR_MEAN
        at = np.flatnonzero(near)
        near[at] = (
            np.abs(self.colour[first[at]] - self.colour[other[at]]).mean(axis=1) <= COLOUR_MEAN
        )
        return near


def near_pairs(members: Sequence[Member], distance: int) -> set[tuple[int, int]]:
    """Index pairs (i < j) of near-duplicate members."""
    index = SignatureIndex([m.signature for m in members], distance)
    return {
        (min(i, j), max(i, j))
        for first, other in index.neighbours(range(len(members)))
        for i, j in zip(first.tolist(), other.tolist(), strict=True)
    }


class Labels:
    """Each row's group, as the smallest row in it, joined a block of pairs at a time.

    Vectorised union-find: a block's pairs cost numpy operations, not a Python
    call each (a flat picture can link to thousands).
    """

    def __init__(self, size: int):
        self.label = np.arange(size)

    def linked(self, first: np.ndarray, other: np.ndarray) -> np.ndarray:
        return self.label[first] == self.label[other]

    def join(self, first: np.ndarray, other: np.ndarray) -> None:
        from scipy.sparse import coo_array  # scipy's import is paid only by grouping
        from scipy.sparse.csgraph import connected_components

        a, b = self.label[first], self.label[other]
        apart = a != b
        if not apart.any():
            return
        labels, at = np.unique(np.concatenate([a[apart], b[apart]]), return_inverse=True)
        count = int(apart.sum())
        graph = coo_array(
            (np.ones(count, dtype=bool), (at[:count], at[count:])), shape=(len(labels),) * 2
        )
        _, component = connected_components(graph, directed=False)
        smallest = np.full(len(labels), len(self.label))
        np.minimum.at(smallest, component, labels)
        remap = np.arange(len(self.label))
        remap[labels] = smallest[component]
        self.label = remap[self.label]


def components(index: SignatureIndex, size: int, start: Iterable[int]) -> list[list[int]]:
    """The groups of the rows reachable from `start`, each a sorted index list.

    Only the groups of the starting rows are explored: a class's job pays for
    its own images' groups, not for every pair of every class.
    """
    labels = Labels(size)
    seen = np.zeros(size, dtype=bool)
    seen[list(start)] = True
    frontier = np.flatnonzero(seen)
    while len(frontier):
        found = np.zeros(size, dtype=bool)
        for first, other in index.neighbours(frontier, labels.linked):
            labels.join(first, other)
            found[other] = True
        found &= ~seen
        seen |= found
        frontier = np.flatnonzero(found)
    grouped: dict[int, list[int]] = {}
    for i, label in zip(np.flatnonzero(seen).tolist(), labels.label[seen].tolist(), strict=True):
        grouped.setdefault(label, []).append(i)
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
        try:
            cache = {m.sha256: m for m in read_members(args.cache)}
        except fileio.TableError as error:
            log.warning("%s; the cache is computed again", error)
    members = class_signatures(store.read_manifest(args.manifest), cache)
    computed = [m for m in members if m.sha256 not in cache]
    if computed or not cache:
        write_members(args.cache, [*cache.values(), *computed])
    write_members(args.output, members)
    log.info("%d signatures (%d computed)", len(members), len(computed))
    return 0


if __name__ == "__main__":
    cli.run(main)
