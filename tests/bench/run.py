"""Run every benchmark: `make bench` (TT_BENCH_SCALE=0.1 for a quick pass).

Training goes last and alone: it shares the cores with nothing of ours.
"""

from __future__ import annotations

import os

# TensorFlow's C++ start-up chatter would bury the tables.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import bench_dag  # noqa: E402
import bench_harvest  # noqa: E402
import bench_records  # noqa: E402
import bench_training  # noqa: E402
import bench_validation  # noqa: E402

if __name__ == "__main__":
    for module in (bench_validation, bench_records, bench_harvest, bench_dag, bench_training):
        module.main()
