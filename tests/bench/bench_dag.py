"""DAG overhead: 20 classes, records and label map: CPU of the data jobs, `-n`, a no-op re-run."""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import HAS_NEARDUP, REPO, cpu_seconds, distinct_jpegs, report, scaled, target
from PIL import Image

CLASSES = 20

# On PYTHONPATH for the jobs: each stage command notes its CPU seconds at exit
# (its own and its worker processes'). Snakemake's benchmark files sample every
# second and miss the last part of a job, most of a short one.
SITECUSTOMIZE = """
import atexit, json, os, resource, sys

def _note():
    if "-m" not in sys.orig_argv:
        return
    at = sys.orig_argv.index("-m") + 1
    if not sys.orig_argv[at].startswith("tumbletrain."):
        return
    usages = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(u.ru_utime + u.ru_stime for u in usages)
    command = " ".join(a for a in sys.orig_argv[at : at + 2] if not a.startswith("-"))
    with open(os.environ["TT_BENCH_JOBS"], "a") as log:
        log.write(json.dumps({"command": command, "cpu_s": cpu}) + "\\n")

atexit.register(_note)
"""


# Snakemake's own floor: a workflow of the same shape (a harvest, an annotations
# job and two records jobs per class, one label map; params, logs, benchmarks)
# whose jobs only touch their outputs. Its no-op re-run is what Snakemake costs
# before any of ours (our imports, config validation, folder digests).
FLOOR_SNAKEFILE = """
C = [f"class{i:02d}" for i in range(CLASSES)]
rule all:
    input: expand("r/{c}_{s}.rec", c=C, s=["training", "verification"]), "label_map.csv"
rule harvest:
    output: "m/{c}.tsv", "m/{c}.skipped.tsv"
    log: "logs/h/{c}.log"
    benchmark: "b/h/{c}.tsv"
    params: cfg=lambda w: w.c
    shell: "touch {output}"
rule annotations:
    input: "m/{c}.tsv"
    output: "l/{c}/training.tsv", "l/{c}/verification.tsv", "l/{c}/summary.json"
    log: "logs/a/{c}.log"
    benchmark: "b/a/{c}.tsv"
    params: cfg=lambda w: w.c
    shell: "touch {output}"
rule records:
    input: "l/{c}/{s}.tsv"
    output: "r/{c}_{s}.rec", "r/{c}_{s}.json"
    log: "logs/r/{c}_{s}.log"
    benchmark: "b/r/{c}_{s}.tsv"
    params: cfg=lambda w: w.c
    shell: "touch {output}"
rule label_map:
    output: "label_map.csv"
    shell: "touch {output}"
""".replace("CLASSES", str(CLASSES))


def project(root: Path, per_class: int) -> list[str]:
    images = distinct_jpegs(CLASSES * per_class, (32, 24))
    classes = {}
    for c in range(CLASSES):
        folder = root / "images" / f"class{c:02d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            (folder / f"{i}.jpg").write_bytes(next(images))
        classes[f"class{c:02d}"] = {"folders": [str(folder)], "annotation": "whole_image"}
    raw: dict = {"classes": classes}
    # Near-duplicate signatures and grouping are timed on their own in
    # bench_neardup (cold and cached); here the rest of the data path.
    if HAS_NEARDUP:
        raw["split"] = {"group_near_duplicates": False}
    (root / "config").mkdir()
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(raw))
    return ["results/label_map.csv"] + [
        f"results/records/{name}_{split}.tfrecord"
        for name in classes
        for split in ("training", "verification")
    ]


def snakemake(
    root: Path, targets: list[str], *args: str, snakefile: Path = REPO / "Snakefile"
) -> tuple[float, float]:
    """Wall seconds and CPU seconds (Snakemake and every job) of one run."""
    hook = root / "bench_hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": ":".join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
        "TT_BENCH_JOBS": str(root / "bench_jobs.jsonl"),
    }
    cpu_before = cpu_seconds(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(snakefile),
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
    wall = time.perf_counter() - start
    if result.returncode:
        raise RuntimeError(f"snakemake {' '.join(args)} failed: {result.stderr[-3000:]}")
    return wall, cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_before


def jobs_cpu(root: Path) -> dict[str, list[float]]:
    """CPU seconds of each job of the run, by command."""
    by_command: dict[str, list[float]] = {}
    for line in (root / "bench_jobs.jsonl").read_text().splitlines():
        job = json.loads(line)
        by_command.setdefault(job["command"], []).append(job["cpu_s"])
    return by_command


def bare_work(root: Path) -> float:
    """CPU seconds of the work no data path can skip, on the same bytes.

    Each image is read and written once into a store (harvest), its header
    read (validation) and its bytes written once more into its class's record
    file (records).
    """
    store = root / "bare_store"
    store.mkdir()
    before = cpu_seconds()
    for folder in sorted((root / "images").iterdir()):
        with open(root / f"bare_{folder.name}.bin", "wb") as record:
            for path in sorted(folder.iterdir()):
                data = path.read_bytes()
                (store / f"{folder.name}_{path.name}").write_bytes(data)
                with Image.open(io.BytesIO(data)) as image:
                    image.size  # noqa: B018 (reading the header is the point)
                record.write(data)
    return cpu_seconds() - before


def floor_noop(root: Path) -> tuple[float, float]:
    """Wall and CPU seconds of the no-op re-run of FLOOR_SNAKEFILE (median of 3)."""
    snakefile = root / "Snakefile"
    snakefile.write_text(FLOOR_SNAKEFILE)
    snakemake(root, [], snakefile=snakefile)
    runs = sorted(snakemake(root, [], snakefile=snakefile) for _ in range(3))
    return runs[1]


def fixed_costs(small: dict, big: dict) -> dict[str, float]:
    """Each command's CPU seconds per job at zero images: a line through the two sizes."""
    costs = {}
    n_small, n_big = small["images"] / CLASSES, big["images"] / CLASSES
    for command, cpus in big["jobs_cpu_s"].items():
        c_big = sum(cpus) / len(cpus)
        c_small = sum(small["jobs_cpu_s"][command]) / len(small["jobs_cpu_s"][command])
        costs[command] = round((c_small * n_big - c_big * n_small) / (n_big - n_small), 3)
    return costs


def main() -> dict:
    rows = []
    for total in (scaled(5_000), scaled(50_000)):
        per_class = max(1, total // CLASSES)
        with tempfile.TemporaryDirectory(dir=os.environ.get("TT_BENCH_TMP")) as tmp:
            root = Path(tmp)
            targets = project(root, per_class)
            dry_fresh, _ = snakemake(root, targets, "-n")
            full, full_cpu = snakemake(root, targets)
            jobs = jobs_cpu(root)
            dry_done, _ = snakemake(root, targets, "-n")
            noop, noop_cpu = snakemake(root, targets)
            # Then two more no-op runs and Snakemake's floor, one after the other:
            # medians, since other users' load moves single runs by seconds.
            noops = sorted([(noop, noop_cpu), *(snakemake(root, targets) for _ in range(2))])
            floor_dir = root / "floor"
            floor_dir.mkdir()
            floor, floor_cpu = floor_noop(floor_dir)
            bare = bare_work(root)
            # The folders are tracked (a digest of their files' stats): a new image
            # re-harvests its class; -n must see it at the cost of a no-op -n.
            (root / "images" / "class00" / "added.jpg").write_bytes(
                (root / "images" / "class00" / "0.jpg").read_bytes() + b"added"
            )
            dry_added, _ = snakemake(root, targets, "-n")
        data_cpu = sum(sum(c) for c in jobs.values())
        rows.append(
            {
                "images": per_class * CLASSES,
                "dry_run_fresh_s": dry_fresh,
                "first_run_s": full,
                "dry_run_done_s": dry_done,
                "noop_rerun_s": noop,
                "noop_rerun_median_s": noops[1][0],
                "noop_rerun_median_cpu_s": noops[1][1],
                "snakemake_floor_noop_s": floor,
                "snakemake_floor_noop_cpu_s": floor_cpu,
                "dry_run_after_an_image_is_added_s": dry_added,
                "first_run_cpu_s (Snakemake and jobs)": full_cpu,
                "data_jobs_cpu_s": data_cpu,
                "bare_copy_and_parse_cpu_s": bare,
                "data_jobs_cpu_to_bare": data_cpu / bare,
                "jobs_cpu_s_by_command": {k: round(sum(v), 1) for k, v in jobs.items()},
                "jobs_cpu_s": jobs,
            }
        )
    fixed = fixed_costs(rows[0], rows[1])
    for row in rows:
        del row["jobs_cpu_s"]
    return report(
        "dag",
        rows,
        {
            "fixed_cpu_s_per_job (line through both sizes)": fixed,
            "near_duplicate_grouping": "off (its cost: bench_neardup and bench_validation)",
            "noop_growth_for_10x_images": round(
                rows[1]["noop_rerun_s"] / rows[0]["noop_rerun_s"], 2
            ),
        },
        [
            target(
                f"first run, data jobs' CPU / bare copy + parse, {rows[1]['images']:,} images",
                rows[1]["data_jobs_cpu_to_bare"],
                at_most=1.5,
            ),
            target("largest fixed CPU s per job", max(fixed.values()), at_most=1),
            target(
                "no-op re-run, s (largest median of 3)",
                max(r["noop_rerun_median_s"] for r in rows),
                at_most=3,
            ),
        ],
    )


if __name__ == "__main__":
    main()
