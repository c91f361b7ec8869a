"""Validation: LabelImg XML -> lists, against the bare minimum of work on the same files."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

from common import profile, report, scaled, timed
from lxml import etree
from PIL import Image
from tumbletrain import annotations, config, store, vocxml


def make_corpus(root: Path, count: int) -> Path:
    """`count` images with one XML each, and the manifest the harvest would have written."""
    data = root / "data" / "pose"
    data.mkdir(parents=True)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 30, 200)).save(buffer, "JPEG")
    base = buffer.getvalue()
    rows = []
    for i in range(count):
        image = data / f"img_{i:06d}.jpg"
        content = base + i.to_bytes(4, "big")  # bytes after EOI: distinct, still a JPEG
        image.write_bytes(content)
        sha = hashlib.sha256(content).hexdigest()
        (data / f"img_{i:06d}.xml").write_bytes(
            vocxml.labelimg_xml(
                "pose",
                image.name,
                str(image),
                (64, 48, 3),
                [vocxml.VocObject("pose", 5, 5, 40 + i % 20, 40)],
            )
        )
        rows.append(
            store.ManifestRow(
                sha,
                str(image),
                "folder",
                image_url=str(image),
                width=64,
                height=48,
                bytes=len(content),
            )
        )
    manifest = root / "manifest.tsv"
    store.write_manifest(manifest, rows)
    return manifest


def bare_minimum(folder: Path) -> int:
    """Parse each XML with lxml and open its image's header with Pillow: nothing else."""
    count = 0
    for xml in sorted(folder.glob("*.xml")):
        root = etree.parse(str(xml), vocxml.safe_parser()).getroot()
        with Image.open(root.findtext("path")) as image:
            image.size  # noqa: B018 (reading the header is the point)
        count += 1
    return count


def ours(root: Path, manifest: Path) -> dict:
    cfg = config.parse({"classes": {"pose": {"annotations_dir": str(root / "data" / "pose")}}})
    return annotations.validate_class(cfg, "pose", manifest, root / "out")


def main() -> dict:
    rows = []
    for size in (scaled(5_000), scaled(50_000)):
        with tempfile.TemporaryDirectory(dir=os.environ.get("TT_BENCH_TMP")) as tmp:
            root = Path(tmp)
            manifest = make_corpus(root, size)
            limit_s, _ = timed(lambda r=root: bare_minimum(r / "data" / "pose"), repeat=2)
            ours_s, summary = timed(lambda r=root, m=manifest: ours(r, m), repeat=2)
            assert summary["kept"] == size, summary
            profile(f"validation_{size}", lambda r=root, m=manifest: ours(r, m))
            rows.append(
                {
                    "files": size,
                    "limit_files_per_s": size / limit_s,
                    "ours_files_per_s": size / ours_s,
                    "ratio_to_limit": limit_s / ours_s,
                    "ours_s": ours_s,
                }
            )
    growth = (rows[1]["ours_s"] / rows[0]["ours_s"]) / (rows[1]["files"] / rows[0]["files"])
    return report(
        "validation",
        rows,
        {"target_ratio": 0.5, "time_growth_per_file_10x (1.0 = linear)": round(growth, 2)},
    )


if __name__ == "__main__":
    main()
