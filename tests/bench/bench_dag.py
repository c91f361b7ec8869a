"""DAG overhead: `snakemake -n` and a no-op re-run on 20 classes, records only."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import REPO, report, scaled
from PIL import Image

CLASSES = 20


def project(root: Path, per_class: int) -> list[str]:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (1, 2, 3)).save(buffer, "JPEG")
    base = buffer.getvalue()
    classes = {}
    for c in range(CLASSES):
        folder = root / "images" / f"class{c:02d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            (folder / f"{i}.jpg").write_bytes(base + (c * 10**6 + i).to_bytes(4, "big"))
        classes[f"class{c:02d}"] = {"folders": [str(folder)], "annotation": "whole_image"}
    (root / "config").mkdir()
    (root / "config" / "config.yaml").write_text(yaml.safe_dump({"classes": classes}))
    return [
        f"results/records/{name}_{split}.tfrecord"
        for name in classes
        for split in ("training", "verification")
    ]


def snakemake(root: Path, targets: list[str], *args: str) -> float:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    start = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(root),
            *targets,
            "--cores",
            "2",
            *args,
            "--quiet",
            "all",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    if result.returncode:
        raise RuntimeError(f"snakemake {' '.join(args)} failed: {result.stderr[-3000:]}")
    return time.perf_counter() - start


def cpu_by_rule(root: Path) -> dict[str, float]:
    """CPU seconds per rule in the first run, from the rules' own benchmark files."""
    import pandas as pd

    return {
        folder.name: round(
            sum(float(pd.read_csv(f, sep="\t")["cpu_time"].sum()) for f in folder.glob("*.tsv")),
            1,
        )
        for folder in sorted((root / "benchmarks").iterdir())
    }


def main() -> dict:
    rows = []
    for total in (scaled(5_000), scaled(50_000)):
        per_class = max(1, total // CLASSES)
        with tempfile.TemporaryDirectory(dir=os.environ.get("TT_BENCH_TMP")) as tmp:
            root = Path(tmp)
            targets = project(root, per_class)
            dry_fresh = snakemake(root, targets, "-n")
            full = snakemake(root, targets)
            cpu = cpu_by_rule(root)
            dry_done = snakemake(root, targets, "-n")
            noop = snakemake(root, targets)
        rows.append(
            {
                "images": per_class * CLASSES,
                "dry_run_fresh_s": dry_fresh,
                "first_run_s": full,
                "dry_run_done_s": dry_done,
                "noop_rerun_s": noop,
                "first_run_cpu_s_by_rule": cpu,
            }
        )
    growth = rows[1]["noop_rerun_s"] / rows[0]["noop_rerun_s"]
    return report(
        "dag",
        rows,
        {
            "noop_growth_for_10x_images": round(growth, 2),
            "targets": "-n and no-op < 10 s; growth at most linear",
        },
    )


if __name__ == "__main__":
    main()
