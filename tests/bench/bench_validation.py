"""Validation: LabelImg XML -> lists, against the bare minimum of work on the same files."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import HAS_NEARDUP, distinct_jpegs, profile, report, scaled, target, timed, timed_cpu
from lxml import etree
from PIL import Image
from tumbletrain import annotations, config, store, vocxml


def make_corpus(root: Path, count: int) -> Path:
    """`count` images with one XML each, and the manifest the harvest would have written."""
    data = root / "data" / "pose"
    data.mkdir(parents=True)
    rows = []
    for i, content in enumerate(distinct_jpegs(count, (64, 48))):
        image = data / f"img_{i:06d}.jpg"
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


# The same benchmark runs on older code for the "before" figures (PYTHONPATH at
# an older checkout): options it lacks are left out.
VALIDATE_OPTIONS = inspect.signature(annotations.validate_class).parameters


def signatures(root: Path, manifest: Path) -> Path | None:
    """The class's near-duplicate signatures: the signatures rule's job, before validation."""
    if not HAS_NEARDUP:
        return None
    table = root / "signatures.tsv"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tumbletrain.neardup",
            "--manifest",
            str(manifest),
            "--output",
            str(table),
            "--cache",
            str(root / "cache" / "signatures.tsv"),
        ],
        check=True,
        capture_output=True,
    )
    return table


def ours(root: Path, manifest: Path) -> dict:
    """The validation in this process, one process: the part the profile looks at."""
    cfg = config.parse(raw_config(root))
    extra = {"signatures": [root / "signatures.tsv"]} if "signatures" in VALIDATE_OPTIONS else {}
    return annotations.validate_class(cfg, "pose", manifest, root / "out", **extra)


def raw_config(root: Path) -> dict:
    return {"classes": {"pose": {"annotations_dir": str(root / "data" / "pose")}}}


def command(root: Path, manifest: Path, grouping: bool = True) -> None:
    """The annotations command as the rule runs it (threads: 2), start-up included."""
    raw = raw_config(root)
    if not grouping and HAS_NEARDUP:
        raw["split"] = {"group_near_duplicates": False}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tumbletrain.annotations",
            "--config-json",
            json.dumps(raw),
            "--class",
            "pose",
            "--manifest",
            str(manifest),
            "--outdir",
            str(root / "out_command"),
            *(["--processes", "2"] if "processes" in VALIDATE_OPTIONS else []),
            *(["--signatures", str(root / "signatures.tsv")] if HAS_NEARDUP else []),
        ],
        check=True,
        capture_output=True,
    )


def fixed_cost() -> float:
    """CPU seconds of the command on 10 files: start-up, imports, config, index, writes."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("TT_BENCH_TMP")) as tmp:
        root = Path(tmp)
        manifest = make_corpus(root, 10)
        signatures(root, manifest)
        return timed_cpu(lambda: command(root, manifest, grouping=False), repeat=5)[1]


def main() -> dict:
    rows = []
    for size in (scaled(5_000), scaled(50_000)):
        with tempfile.TemporaryDirectory(dir=os.environ.get("TT_BENCH_TMP")) as tmp:
            root = Path(tmp)
            manifest = make_corpus(root, size)
            signatures(root, manifest)
            limit_s, limit_cpu, _ = timed_cpu(
                lambda r=root: bare_minimum(r / "data" / "pose"), repeat=3
            )
            ours_s, summary = timed(lambda r=root, m=manifest: ours(r, m), repeat=2)
            assert summary["kept"] == size, summary
            command_s, command_cpu, _ = timed_cpu(
                lambda r=root, m=manifest: command(r, m), repeat=3
            )
            for name in ("training.tsv", "verification.tsv", "rejected.tsv", "summary.json"):
                same = (root / "out" / name).read_bytes() == (
                    root / "out_command" / name
                ).read_bytes()
                assert same, f"{name}: 2 processes wrote other lists than 1"
            # Without near-duplicate grouping: the validation alone.
            ungrouped_s, ungrouped_cpu, _ = (
                timed_cpu(lambda r=root, m=manifest: command(r, m, grouping=False), repeat=3)
                if HAS_NEARDUP
                else (command_s, command_cpu, None)
            )
            profile(f"validation_{size}", lambda r=root, m=manifest: ours(r, m))
            rows.append(
                {
                    "files": size,
                    "limit_files_per_s": size / limit_s,
                    "ours_in_process_1_files_per_s": size / ours_s,
                    "command_2_processes_files_per_s": size / command_s,
                    "ratio_in_process": limit_s / ours_s,
                    "ratio_command": limit_s / command_s,
                    "command_s": command_s,
                    "ratio_command_without_grouping": limit_s / ungrouped_s,
                    "command_without_grouping_s": ungrouped_s,
                    # CPU seconds: what the work costs whatever else the machine runs
                    # (two processes spend more CPU than one to finish sooner).
                    "limit_cpu_s": limit_cpu,
                    "command_cpu_s": command_cpu,
                    "command_without_grouping_cpu_s": ungrouped_cpu,
                    "cpu_ratio_command": limit_cpu / command_cpu,
                    "cpu_ratio_command_without_grouping": limit_cpu / ungrouped_cpu,
                }
            )
    growth = (rows[1]["command_s"] / rows[0]["command_s"]) / (rows[1]["files"] / rows[0]["files"])
    return report(
        "validation",
        rows,
        {
            "command_time_growth_per_file_10x (1.0 = linear)": round(growth, 2),
            "command_fixed_cpu_s (10 files, grouping off)": round(fixed_cost(), 3),
        },
        [
            target(
                f"whole command, ratio to the limit at {row['files']:,} files",
                row["ratio_command"],
                at_least=0.7,
            )
            for row in rows
        ],
    )


if __name__ == "__main__":
    main()
