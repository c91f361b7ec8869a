"""The real-size fine-tune end to end, without and with train.feature_cache (issue #19's target).

config/tumblr.example.yaml's model and train settings (MobileNetV2 at 256,
freeze_backbone, batch 16, learning rate 0.01) on the shipped demo's data
(3 classes of 120 images), 5,000 steps x TT_BENCH_SCALE. The example's COCO
checkpoint cannot be downloaded here, and a random frozen backbone's features
do not separate the shapes, so the backbone comes from a full training of the
same model on the same data (600 steps, the stand-in for COCO); both
fine-tunes restore only its backbone (`model.init_modules: [backbone]`) and
train a fresh FPN and head: their difference is the feature cache alone.

Each run is the train command as the rule runs it (a new process: start-up,
for the cached run building its cache from empty, the steps and one
validation at the end), timed from outside. AP50 is that validation's: the
Model Garden's COCO evaluation of the verification split.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from bench_training import demo_splits
from common import REPO, report, scaled, target
from tumbletrain import config, training

EXAMPLE_STEPS = 5000  # config/tumblr.example.yaml's train.steps
PRETRAIN_STEPS = 600


def run_raw(steps: int, cache: bool | None) -> dict:
    """The fine-tune's config (cache: None is the full training that makes the backbone)."""
    demo = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    example = yaml.safe_load((REPO / "config" / "tumblr.example.yaml").read_text())
    return {
        "classes": demo["classes"],
        "demo": demo["demo"],
        "split": demo["split"],
        "model": {
            **example["model"],
            "checkpoint": None,
            "freeze_backbone": cache is not None,
            "init_modules": ["backbone"],
        },
        "train": {
            **example["train"],
            "run": {None: "pretrain", False: "uncached", True: "cached"}[cache],
            "steps": steps,
            "checkpoint_every": steps,
            "eval_every": steps,
            "feature_cache": bool(cache),
        },
    }


def train(root: Path, raw: dict, *extra: str) -> dict:
    """One train command, timed; its validation AP50 and the cache's own log line."""
    run = raw["train"]["run"]
    stats = {
        split: sorted(map(str, root.glob(f"records/*_{split}.json"))) for split in config.SPLITS
    }
    command = [
        sys.executable,
        "-m",
        "tumbletrain.model",
        "train",
        "--config-json",
        json.dumps(raw),
        "--training-stats",
        *stats["training"],
        "--validation-stats",
        *stats["verification"],
        "--model-dir",
        f"train/{run}",
        "--final",
        f"train/{run}/final.json",
        *extra,
    ]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=root, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    validation = training.scalar_summaries(root / "train" / run / "validation")
    built = re.search(r"feature cache .*computed in ([\d.]+) s", result.stderr)
    return {
        "run": run,
        "steps": raw["train"]["steps"],
        "wall_s": wall,
        "cache_build_s": float(built[1]) if built else 0.0,
        "AP50": validation["AP50"][-1][1],
        "AP": validation["AP"][-1][1],
    }


def main() -> dict:
    steps = scaled(EXAMPLE_STEPS)
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("TT_BENCH_TMP")) as tmp:
        root = Path(tmp)
        splits = demo_splits(config.parse(run_raw(steps, False)), root)
        pretrained = train(root, run_raw(PRETRAIN_STEPS, None))
        prefix = root / "train" / "pretrain" / f"ckpt-{PRETRAIN_STEPS}"
        (root / "checkpoint.json").write_text(json.dumps({"prefix": str(prefix)}))
        start = ["--checkpoint-json", "checkpoint.json"]
        before = train(root, run_raw(steps, False), *start)
        after = train(root, run_raw(steps, True), *start, "--feature-cache", "cache")
    rows = [pretrained, before, after]
    return report(
        "finetune_run",
        rows,
        {
            "model": "config/tumblr.example.yaml's, freeze_backbone, the pretrain run's backbone",
            "training_images": splits["training"].images,
            "verification_images": splits["verification"].images,
            "speedup": round(before["wall_s"] / after["wall_s"], 2),
            # Start-up and validation scaled with the steps too: an upper bound.
            f"extrapolated to {EXAMPLE_STEPS} steps, min (before, after)": [
                round(
                    r["cache_build_s"] / 60
                    + (r["wall_s"] - r["cache_build_s"]) / 60 * EXAMPLE_STEPS / steps,
                    1,
                )
                for r in (before, after)
            ],
        },
        [
            target(
                "feature cache: AP50 minus uncached AP50",
                after["AP50"] - before["AP50"],
                at_least=-0.02,
            ),
            target(
                "feature cache: wall time speed-up", before["wall_s"] / after["wall_s"], at_least=1
            ),
        ],
    )


if __name__ == "__main__":
    main()
