"""Run every benchmark: `make bench` (TT_BENCH_SCALE=0.1 for a quick pass).

Training goes last and alone: it shares the cores with nothing of ours.
"""

from __future__ import annotations

import bench_dag
import bench_harvest
import bench_records
import bench_training
import bench_validation

if __name__ == "__main__":
    for module in (bench_validation, bench_records, bench_harvest, bench_dag, bench_training):
        module.main()
