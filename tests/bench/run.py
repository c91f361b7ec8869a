"""Run every benchmark: `make bench` (TT_BENCH_SCALE=0.1 for a quick pass)."""

from __future__ import annotations

import bench_dag
import bench_harvest
import bench_records
import bench_validation

if __name__ == "__main__":
    for module in (bench_validation, bench_records, bench_harvest, bench_dag):
        module.main()
