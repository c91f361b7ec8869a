"""Re-training after new data: a warm start from the previous model against a full retrain.

The shipped demo (config/config.yaml) is trained; then 10% more images per
class arrive (the demo draws the same first images, and splits go by content,
so the old images keep their split) and the run trains again: warm-started
from the previous model for `train.warm_start_steps` (a quarter of the steps,
the default), and, in another run, from scratch for the full steps
(`train.warm_start: none`). Both are evaluated on the new verification split.
Run it only when nothing else trains.

`python bench_warm_start.py` runs the three trainings in a fresh directory
(results/bench/warm_start/). Named phases (`first warm`, then `full`) run only
those, keeping what the directory holds, so that a shared machine can give
each its own turn; the report is written once all three have been measured.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import yaml
from common import REPO, RESULTS, report, scaled, target
from test_model import evaluate_cli, make_records, model_cli, train_args

WORK = RESULTS / "warm_start"
NEW_DATA = 0.1
# Each phase: the share of new images, the run, the train settings that differ from the demo's.
PHASES = {
    "first": (0.0, "demo", {}),
    "warm": (NEW_DATA, "demo", {}),
    "full": (NEW_DATA, "full", {"warm_start": "none"}),
}


def demo_raw(extra: float, run: str, train: dict) -> dict:
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for spec in raw["classes"].values():
        spec["demo"]["images"] = round(scaled(spec["demo"]["images"]) * (1 + extra))
    raw["train"] = {**raw["train"], "run": run, **train}
    return raw


def measure(phase: str) -> dict:
    """Train one phase's run on its data, evaluate it on the verification split."""
    extra, run, train = PHASES[phase]
    raw = demo_raw(extra, run, train)
    classes = tuple(raw["classes"])
    make_records(WORK, raw)
    start = time.perf_counter()
    model_cli(WORK, raw, *train_args(run, classes=classes), timeout=3600)
    seconds = time.perf_counter() - start
    final = json.loads((WORK / f"results/train/{run}/final.json").read_text())
    metrics = evaluate_cli(WORK, raw, run, classes)
    return {
        "phase": phase,
        "data": f"demo + {extra:.0%}",
        "start": final["start"]["source"],
        "steps": final["start"]["steps"],
        "selected step": final["selected"]["step"],
        "train_s": round(seconds, 1),
        "AP50": round(metrics["AP50"], 4),
        "AP": round(metrics["AP"], 4),
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
    first, warm, full = (json.loads((WORK / f"{p}.json").read_text()) for p in PHASES)
    return report(
        "warm_start",
        [first, warm, full],
        {"time warm / full": round(warm["train_s"] / full["train_s"], 3)},
        targets=[
            target("AP50 warm start - full retrain", warm["AP50"] - full["AP50"], at_least=-0.02),
            target("steps warm start / full retrain", warm["steps"] / full["steps"], at_most=0.25),
        ],
    )


if __name__ == "__main__":
    main(sys.argv[1:] or None)
