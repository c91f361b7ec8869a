"""Re-training after new data: a warm start from the previous model against a full retrain.

The shipped demo (config/config.yaml) is trained; then 10% more images per
class arrive (the demo draws the same first images, and splits go by content,
so the old images keep their split) and the run trains again: warm-started
from the previous model for `train.warm_start_steps` (a quarter of the steps,
the default), and, in another run, from scratch for the full steps
(`train.warm_start: none`). Both are evaluated on the new verification split.
And a class added: the demo's circle and square are trained (`two`), then
triangle joins and the run warm-starts with a fresh classifier layer for the
default half of the steps (`add`), compared with the first training on the
same three classes (`first`). Run it only when nothing else trains.

`python bench_warm_start.py` runs the five trainings in a fresh directory
(results/bench/warm_start/). Named phases (`first warm`, then `full`) run only
those, keeping what the directory holds, so that a shared machine can give
each its own turn; the report is written once all of them have been measured.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field

import yaml
from common import REPO, RESULTS, report, scaled, target
from test_model import evaluate_cli, make_records, model_cli, train_args

WORK = RESULTS / "warm_start"
NEW_DATA = 0.1


@dataclass(frozen=True)
class Phase:
    run: str
    extra: float = 0.0  # the share of new images
    train: dict = field(default_factory=dict)  # settings that differ from the demo's
    classes: tuple[str, ...] | None = None  # None: the demo's
    folder: str = "."  # under WORK: phases that draw other data keep it apart


PHASES = {
    "first": Phase("demo"),
    "warm": Phase("demo", NEW_DATA),
    "full": Phase("full", NEW_DATA, {"warm_start": "none"}),
    "two": Phase("classes", classes=("circle", "square"), folder="classes"),
    "add": Phase("classes", folder="classes"),
}


def demo_raw(phase: Phase) -> dict:
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["classes"] = {
        name: spec for name, spec in raw["classes"].items() if name in (phase.classes or [name])
    }
    for spec in raw["classes"].values():
        spec["demo"]["images"] = round(scaled(spec["demo"]["images"]) * (1 + phase.extra))
    raw["train"] = {**raw["train"], "run": phase.run, **phase.train}
    return raw


def measure(name: str) -> dict:
    """Train one phase's run on its data, evaluate it on the verification split."""
    phase = PHASES[name]
    raw, run, base = demo_raw(phase), phase.run, WORK / phase.folder
    classes = tuple(raw["classes"])
    base.mkdir(parents=True, exist_ok=True)
    make_records(base, raw)
    start = time.perf_counter()
    model_cli(base, raw, *train_args(run, classes=classes), timeout=3600)
    seconds = time.perf_counter() - start
    final = json.loads((base / f"results/train/{run}/final.json").read_text())
    metrics = evaluate_cli(base, raw, run, classes)
    return {
        "phase": name,
        "data": f"demo + {phase.extra:.0%}, {len(classes)} classes",
        "start": final["start"]["source"],
        "modules": len(final["start"]["modules"]),
        "steps": final["start"]["steps"],
        "selected step": final["selected"]["step"],
        "train_s": round(seconds, 1),
        "AP50": round(metrics["AP50"], 4),
        "AP": round(metrics["AP"], 4),
        "AP50 per class": {k: round(v, 3) for k, v in metrics["AP50_per_class"].items()},
        "verification images": metrics["images"],
        "load_1min": round(os.getloadavg()[0], 2),
        "ended": time.strftime("%H:%M UTC", time.gmtime()),
    }


def main(phases: list[str] | None = None) -> dict | None:
    if phases is None:
        shutil.rmtree(WORK, ignore_errors=True)
        phases = list(PHASES)
    WORK.mkdir(parents=True, exist_ok=True)
    for phase in phases:
        row = measure(phase)
        (WORK / f"{phase}.json").write_text(json.dumps(row, indent=2) + "\n")
        print(json.dumps(row))
    if not all((WORK / f"{phase}.json").exists() for phase in PHASES):
        print(f"measured {phases}; the report waits for {list(PHASES)} in {WORK}")
        return None
    rows = {p: json.loads((WORK / f"{p}.json").read_text()) for p in PHASES}
    first, warm, full, add = rows["first"], rows["warm"], rows["full"], rows["add"]
    return report(
        "warm_start",
        list(rows.values()),
        {
            "time warm / full": round(warm["train_s"] / full["train_s"], 3),
            "time add a class / first": round(add["train_s"] / first["train_s"], 3),
        },
        targets=[
            target("AP50 warm start - full retrain", warm["AP50"] - full["AP50"], at_least=-0.02),
            target("steps warm start / full retrain", warm["steps"] / full["steps"], at_most=0.25),
            # The same three classes and verification images as the first training.
            target("AP50 class added - full training", add["AP50"] - first["AP50"], at_least=-0.02),
        ],
    )


if __name__ == "__main__":
    main(sys.argv[1:] or None)
