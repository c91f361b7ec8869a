"""The benchmarks run one by one: `python bench_x.py` as BENCHMARKS.md shows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent / "bench"


@pytest.mark.parametrize("module", sorted(p.stem for p in BENCH.glob("bench_*.py")))
def test_each_benchmark_imports_alone(module):
    """Run alone, a benchmark has only its own folder on the path (not tests/, as
    run.py's earlier imports left it): whatever it needs from tests/ goes through
    `common`, which must come first."""
    env = {**os.environ, "PYTHONPATH": str(BENCH.parents[1] / "scripts")}
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=BENCH,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_make_bench_runs_every_benchmark():
    """run.py imports a benchmark by its name in its list: a new file left out would never run."""
    listed = subprocess.run(
        [sys.executable, "-c", "import run; print(' '.join(run.BENCHMARKS))"],
        cwd=BENCH,
        env={**os.environ, "PYTHONPATH": str(BENCH.parents[1] / "scripts")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(listed) == sorted(p.stem.removeprefix("bench_") for p in BENCH.glob("bench_*.py"))
