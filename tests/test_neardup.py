"""Near-duplicates: grouped by their signatures, split as one group, reported."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import re
import subprocess
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

import neardup_corpus as corpus_
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from tumbletrain import annotations, config, fileio, neardup, vocxml

DISTANCE = config.parse({"classes": {"a": {}}}).split.near_duplicate_distance


def signature(image: Image.Image) -> neardup.Signature:
    return neardup.signature_of(io.BytesIO(corpus_.encode(image)))


@pytest.fixture(scope="module")
def originals() -> dict[str, list[Image.Image]]:
    return {
        "demo": corpus_.demo_originals(12),
        "noise": corpus_.noise_originals(120),
        "gradient": corpus_.gradient_originals(120),
    }


@pytest.fixture(scope="module")
def signatures(originals) -> dict[str, list[neardup.Signature]]:
    return {kind: [signature(image) for image in images] for kind, images in originals.items()}


def near(a: neardup.Signature, b: neardup.Signature, distance: int = DISTANCE) -> bool:
    members = [neardup.Member("a", 0, a), neardup.Member("b", 0, b)]
    return bool(neardup.near_pairs(members, distance))


@pytest.mark.parametrize("kind", corpus_.VARIANTS)
def test_each_variant_is_grouped_with_its_original(originals, signatures, kind):
    missed = {}
    for name, images in originals.items():
        missed[name] = [
            i
            for i, (image, sig) in enumerate(zip(images, signatures[name], strict=True))
            if not near(sig, signature(corpus_.variant(image, kind)))
        ]
    print(kind, {name: f"{len(m)}/{len(originals[name])} missed" for name, m in missed.items()})
    # Demo pictures and textured noise: every copy is found. Smooth gradients have
    # almost no luminance structure; at most one in twenty of their copies is missed.
    assert missed["demo"] == [] and missed["noise"] == []
    assert len(missed["gradient"]) <= len(originals["gradient"]) // 20


def test_different_images_are_not_grouped(signatures):
    everything = [
        neardup.Member(f"{kind}{i}", 0, sig)
        for kind, sigs in signatures.items()
        for i, sig in enumerate(sigs)
    ]
    pairs = neardup.near_pairs(everything, DISTANCE)
    by_kind = Counter(
        tuple(sorted(everything[k].sha256.rstrip("0123456789") for k in pair)) for pair in pairs
    )
    total = len(everything) * (len(everything) - 1) // 2
    print(f"false merges: {len(pairs)} of {total} pairs: {by_kind}")
    assert all(a == b for a, b in by_kind), "no pair across kinds of picture"
    assert by_kind.get(("demo", "demo"), 0) == 0
    assert by_kind.get(("noise", "noise"), 0) == 0
    assert len(pairs) <= total // 1000


def test_a_near_pair_needs_the_colours_to_agree():
    base = neardup.Signature(0, 0, bytes(48))
    recoloured = neardup.Signature(0, 0, bytes([100] * 48))
    assert not near(base, recoloured)
    assert near(base, neardup.Signature(0, 0, bytes([100] * 12 + [0] * 36)))  # a band
    assert near(base, neardup.Signature(2**64 - 1, 2**64 - 1, bytes([2] * 48)))  # smooth
    # Colours alike but hashes apart: near only when one image is smooth (its
    # hash bits are noise); a picture with structure is judged by its hashes.
    squares = bytes(itertools.chain.from_iterable([v] * 3 for v in [0, 200] * 8))
    textured = neardup.Signature(0, 0, squares)
    shifted = bytes(v + 2 for v in squares)
    assert not near(textured, neardup.Signature(2**64 - 1, 2**64 - 1, shifted))
    assert near(textured, neardup.Signature(0, 0, shifted))


def split_config(**extra) -> config.SplitConfig:
    return config.parse({"classes": {"a": {}}, "split": {"salt": "t", **extra}}).split


def colour(shift: int) -> bytes:
    # Layouts that agree on most cells but not everywhere (a band of 12 values
    # differs): only a hash can link them.
    return bytes([0] * 36 + [shift % 256] * 12)


def sha_in(split: str, cfg: config.SplitConfig, prefix: str) -> str:
    for n in itertools.count():
        sha = f"{prefix}{n:060d}"
        if neardup.split_of(sha, cfg) == split:
            return sha
    raise AssertionError


def test_a_group_goes_to_its_oldest_posts_split_and_new_posts_never_move_it():
    cfg = split_config(verification_percent=50)
    old = sha_in("verification", cfg, "aaaa")
    young = sha_in("training", cfg, "bbbb")
    before = [
        neardup.Member(old, 100, neardup.Signature(0, 0, colour(0))),
        neardup.Member(young, 200, neardup.Signature(1, 1, colour(60))),
    ]
    placed = neardup.place(before, cfg, DISTANCE)
    assert {p.split for p in placed.values()} == {"verification"}
    assert {p.group for p in placed.values()} == {old}
    # A newer repost joins; whatever its own content split, nothing moves.
    newest = sha_in("training", cfg, "0000")
    after = neardup.place(
        [*before, neardup.Member(newest, 300, neardup.Signature(3, 3, colour(120)))], cfg, DISTANCE
    )
    assert after[old] == after[young] == after[newest]
    assert after[old].split == "verification" and after[old].size == 3


def test_an_image_linking_two_groups_moves_the_younger_group():
    cfg = split_config(verification_percent=50)
    first = sha_in("verification", cfg, "cccc")
    second = sha_in("training", cfg, "dddd")
    far = (1 << 24) - 1  # 24 bits from the first group: no link on its own
    groups = [
        neardup.Member(first, 100, neardup.Signature(0, 0, colour(0))),
        neardup.Member(second, 150, neardup.Signature(far, far, colour(120))),
    ]
    apart = neardup.place(groups, cfg, DISTANCE)
    assert apart[first].split == "verification" and apart[second].split == "training"
    link = sha_in("training", cfg, "eeee")
    middle = (1 << 12) - 1  # 12 bits from each
    joined = neardup.place(
        [*groups, neardup.Member(link, 400, neardup.Signature(middle, middle, colour(60)))],
        cfg,
        DISTANCE,
    )
    assert {p.split for p in joined.values()} == {"verification"}
    assert {p.group for p in joined.values()} == {first}


def test_placement_does_not_depend_on_the_order_or_on_other_classes_copies():
    cfg = split_config(verification_percent=50)
    members = [
        neardup.Member(f"{i:064x}", float(i % 3), neardup.Signature(i // 4, i // 4, colour(i * 20)))
        for i in range(40)
    ]
    forward = neardup.place(members, cfg, DISTANCE)
    twice = neardup.place(list(reversed(members)) + members[:10], cfg, DISTANCE)
    assert forward == twice


def write_class(root: Path, cls: str, images: dict[str, Image.Image]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, image in images.items():
        image.save(root / f"{name}.png")
        width, height = image.size
        (root / f"{name}.xml").write_bytes(
            vocxml.labelimg_xml(
                folder=cls,
                filename=f"{name}.png",
                path=str(root / f"{name}.png"),
                size=(width, height, 3),
                objects=[vocxml.VocObject(cls, 1, 1, width - 1, height - 1)],
            )
        )


def write_manifest(path: Path, images: dict[str, Path]) -> Path:
    rows = [(hashlib.sha256(p.read_bytes()).hexdigest(), str(p), "folder") for p in images.values()]
    fileio.write_tsv(path, ("sha256", "file", "source"), rows)
    return path


def signature_table(path: Path, manifest: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tumbletrain.neardup",
            "--manifest",
            str(manifest),
            "--output",
            str(path),
            "--cache",
            str(path.parent / "cache" / path.name),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return path


def test_copies_land_in_one_split_within_and_across_classes(tmp_path):
    pictures = corpus_.noise_originals(30, seed=11)
    circle = {f"c{i}": image for i, image in enumerate(pictures[:20])}
    circle |= {f"c{i}_half": corpus_.variant(pictures[i], "half") for i in range(10)}
    square = {f"s{i}_wm": corpus_.variant(pictures[i], "watermark10") for i in range(10, 20)}
    square |= {f"s{i}": image for i, image in enumerate(pictures[20:])}
    write_class(tmp_path / "circle", "circle", circle)
    write_class(tmp_path / "square", "square", square)
    raw = {
        "classes": {
            "circle": {"annotations_dir": str(tmp_path / "circle")},
            "square": {"annotations_dir": str(tmp_path / "square")},
        },
        "split": {"verification_percent": 50, "salt": "x"},
    }
    tables = [
        signature_table(
            tmp_path / "sig" / f"{cls}.tsv",
            write_manifest(
                tmp_path / f"{cls}.manifest.tsv",
                {p.stem: p for p in (tmp_path / cls).glob("*.png")},
            ),
        )
        for cls in ("circle", "square")
    ]
    cfg = config.parse(raw)
    splits = {}
    summaries = {}
    for cls in ("circle", "square"):
        summaries[cls] = annotations.validate_class(
            cfg, cls, None, tmp_path / "out" / cls, signatures=tables
        )
        for split in config.SPLITS:
            for row in fileio.read_tsv(tmp_path / "out" / cls / f"{split}.tsv"):
                splits[Path(row["image"]).stem] = split
    for i in range(10):
        assert splits[f"c{i}"] == splits[f"c{i}_half"], i
    for i in range(10, 20):
        assert splits[f"c{i}"] == splits[f"s{i}_wm"], i
    assert set(splits.values()) == set(config.SPLITS)
    dup = summaries["circle"]["near_duplicates"]
    assert dup["groups"] == 20 and dup["images_in_groups"] == 30
    assert sum(dup["moved_from_content_split"].values()) >= 1
    assert dup["largest"][0]["size"] == 2
    assert summaries["square"]["near_duplicates"]["groups"] == 10
    # Without grouping, the same data straddles the splits.
    ungrouped = config.parse({**raw, "split": {**raw["split"], "group_near_duplicates": False}})
    annotations.validate_class(ungrouped, "circle", None, tmp_path / "plain", signatures=tables)
    plain = {
        Path(row["image"]).stem: split
        for split in config.SPLITS
        for row in fileio.read_tsv(tmp_path / "plain" / f"{split}.tsv")
    }
    assert any(plain[f"c{i}"] != plain[f"c{i}_half"] for i in range(10))
    summary = json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert summary["near_duplicates"]["groups"] == 0


def test_signatures_are_computed_once_per_image(tmp_path):
    pictures = corpus_.noise_originals(3, seed=5)
    paths = {}
    for i, image in enumerate(pictures):
        paths[str(i)] = tmp_path / f"{i}.png"
        image.save(paths[str(i)])
    manifest = write_manifest(tmp_path / "manifest.tsv", paths)
    first = signature_table(tmp_path / "sig" / "a.tsv", manifest).read_bytes()
    cache = tmp_path / "sig" / "cache" / "a.tsv"
    assert len(fileio.read_tsv(cache)) == 3
    # The cache answers for the known images: a changed file under a known hash
    # is not decoded again (the store never changes a file under its hash).
    paths["0"].write_bytes(b"not an image any more")
    assert signature_table(tmp_path / "sig" / "a.tsv", manifest).read_bytes() == first


@given(
    st.lists(st.integers(0, 2**20), min_size=2, max_size=40),
    st.integers(1, 20),
    st.integers(0, 2**32),
)
@settings(max_examples=60, deadline=None)
def test_new_posts_move_an_image_only_by_linking_its_group_to_an_older_one(hashes, old, salt):
    """Any signatures: images added later never move an earlier image, except by a link."""
    cfg = split_config(verification_percent=50, salt=str(salt))
    members = [
        neardup.Member(hashlib.sha256(f"{i}".encode()).hexdigest(), float(i), sig)
        for i, sig in enumerate(neardup.Signature(h, h, colour(h % 7 * 40)) for h in hashes)
    ]
    before = neardup.place(members[:old], cfg, DISTANCE)
    after = neardup.place(members, cfg, DISTANCE)
    for sha, placed in before.items():
        if after[sha].split != placed.split:
            # Its new group holds images of two or more earlier groups.
            joined = {before[s].group for s in before if after[s].group == after[sha].group}
            assert len(joined) > 1, sha


def test_a_group_split_by_the_users_folders_is_kept_and_reported(tmp_path):
    root = tmp_path / "pose"
    picture = corpus_.noise_originals(1, seed=9)[0]
    write_class(root / "training", "pose", {"a": picture})
    write_class(root / "verification", "pose", {"a_copy": corpus_.variant(picture, "jpeg40")})
    cfg = config.parse({"classes": {"pose": {"annotations_dir": str(root)}}})
    summary = annotations.validate_class(cfg, "pose", None, tmp_path / "out")
    assert summary["per_split"] == {"training": 1, "verification": 1}
    near = summary["near_duplicates"]
    assert near["groups"] == 1 and len(near["user_split_straddles"]) == 1


def test_an_image_whose_split_changed_since_the_last_run_is_reported(tmp_path, caplog):
    write_class(tmp_path / "pose", "pose", dict(enumerate(corpus_.noise_originals(12, seed=5))))
    memory = tmp_path / "cache" / "splits" / "pose.tsv"

    def run(salt: str) -> tuple[dict, dict[str, str]]:
        raw = {
            "classes": {"pose": {"annotations_dir": str(tmp_path / "pose")}},
            "split": {"verification_percent": 50, "salt": salt},
        }
        out = tmp_path / "out" / salt
        summary = annotations.validate_class(
            config.parse(raw), "pose", None, out, split_memory=memory
        )
        splits = {
            row["image"]: split
            for split in config.SPLITS
            for row in fileio.read_tsv(out / f"{split}.tsv")
        }
        return summary["moved_since_last_run"], splits

    first, before = run("a")
    assert first["images"] == [] and set(fileio.read_tsv(memory)[0]) == {"sha256", "split"}
    assert run("a")[0]["images"] == []
    caplog.clear()
    # Other split settings move about half of the images: each one is reported.
    moved, after = run("b")
    changed = {image for image in before if after[image] != before[image]}
    assert changed and {m["image"] for m in moved["images"]} == changed
    assert sum(moved["to"].values()) == len(changed)
    assert f"{len(changed)} images changed split since the last run" in caplog.text


def test_flat_pictures_are_grouped_in_memory_bounded_per_image():
    """Solid colours share both hashes: every pair was a candidate at once (issue #27).

    1,200 of them were OOM-killed at 24 GB before; what is traced now stays below
    200 MB (the signatures themselves are 0.3 MB).
    """
    rng = np.random.default_rng(5)
    members = [
        neardup.Member(
            f"{i:064x}", float(i), neardup.Signature(1 << 63, 0, bytes(rgb.tolist() * 16))
        )
        for i, rgb in enumerate(rng.integers(0, 256, (2_000, 3)))
    ]
    cfg = config.parse({"classes": {"a": {"annotations_dir": "x"}}}).split
    tracemalloc.start()
    try:
        placed = neardup.place(members, cfg, DISTANCE)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20, f"{peak / 2**20:.0f} MB"
    # Two solid colours are near when most channel means agree within COLOUR_MEDIAN:
    # random colours chain into one group, as before.
    assert len(placed) == 2_000
    assert len({p.group for p in placed.values()}) == 1


def test_a_damaged_signature_cache_is_computed_again_and_a_table_named(tmp_path):
    """A truncated row stopped the signatures and annotations jobs with a traceback."""
    paths = {}
    for i, image in enumerate(corpus_.noise_originals(2, seed=6)):
        paths[str(i)] = tmp_path / f"{i}.png"
        image.save(paths[str(i)])
    manifest = write_manifest(tmp_path / "manifest.tsv", paths)
    table = tmp_path / "sig" / "a.tsv"
    first = signature_table(table, manifest).read_bytes()
    cache = tmp_path / "sig" / "cache" / "a.tsv"
    cache.write_bytes(cache.read_bytes()[:-40])  # the last row cut short
    assert signature_table(table, manifest).read_bytes() == first
    assert len(fileio.read_tsv(cache)) == 2, "the cache was written again, whole"
    table.write_bytes(first[:-40])
    with pytest.raises(fileio.TableError, match=f"{re.escape(str(table))} line 3 "):
        neardup.read_members(table)
