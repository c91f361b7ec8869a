"""Run every benchmark: `make bench` (TT_BENCH_SCALE=0.1 for a quick pass), or the named ones.

At the end, every target with its figure, met or MISSED.

The trainings go last and alone: they share the cores with nothing of ours.
"""

from __future__ import annotations

import os
import sys

# TensorFlow's C++ start-up chatter would bury the tables.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import bench_dag  # noqa: E402
import bench_finetune  # noqa: E402
import bench_finetune_run  # noqa: E402
import bench_harvest  # noqa: E402
import bench_neardup  # noqa: E402
import bench_records  # noqa: E402
import bench_training  # noqa: E402
import bench_validation  # noqa: E402
import bench_warm_start  # noqa: E402
import bench_workers  # noqa: E402
from common import target_line  # noqa: E402

BENCHMARKS = {
    "validation": bench_validation,
    "records": bench_records,
    "harvest": bench_harvest,
    "dag": bench_dag,
    "neardup": bench_neardup,
    "training": bench_training,
    "warm_start": bench_warm_start,
    "workers": bench_workers,
    "finetune": bench_finetune,
    # config/tumblr.example.yaml's 5,000 steps twice: about an hour here at full scale.
    "finetune_run": bench_finetune_run,
}

if __name__ == "__main__":
    # `run.py records dag` runs only those; the default is all of them.
    chosen = sys.argv[1:] or list(BENCHMARKS)
    results = [BENCHMARKS[name].main() for name in chosen]
    print("\n== targets ==")
    for result in results:
        for t in result["targets"]:
            print(target_line(result["benchmark"], t))
        print(f"        ({result['benchmark']}: load average {result['machine']['load_1min']})")
