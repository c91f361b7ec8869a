"""Run every benchmark: `make bench` (TT_BENCH_SCALE=0.1 for a quick pass), or the named ones.

At the end, every target with its figure, met or MISSED.

The trainings go last and alone: they share the cores with nothing of ours.
"""

from __future__ import annotations

import os
import sys

# TensorFlow's C++ start-up chatter would bury the tables.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import importlib  # noqa: E402

from common import target_line  # noqa: E402

# Imported only when chosen: each one run alone starts sooner, and runs on an
# older checkout (for "before" figures) that lacks what the others import.
BENCHMARKS = [
    "validation",
    "records",
    "harvest",
    "dag",
    "neardup",
    # Trains the demo model 50 steps, then exports it twice (about 5 min here).
    "export",
    "training",
    "warm_start",
    "workers",
    "finetune",
    # config/tumblr.example.yaml's 5,000 steps twice: about an hour here at full scale.
    "finetune_run",
]

if __name__ == "__main__":
    # `run.py records dag` runs only those; the default is all of them.
    chosen = sys.argv[1:] or BENCHMARKS
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        sys.exit(f"ERROR: no benchmark {', '.join(unknown)}; they are {', '.join(BENCHMARKS)}")
    results = [importlib.import_module(f"bench_{name}").main() for name in chosen]
    print("\n== targets ==")
    for result in results:
        for t in result["targets"]:
            print(target_line(result["benchmark"], t))
        print(f"        ({result['benchmark']}: load average {result['machine']['load_1min']})")
