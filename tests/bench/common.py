"""What the benchmarks share: timing, scaling, generated data, result files."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
RESULTS = REPO / "results" / "bench"
# The benchmarks also run on older code for "before" figures (PYTHONPATH at an
# older checkout): near-duplicate grouping, and its switch, came with issue #20.
HAS_NEARDUP = importlib.util.find_spec("tumbletrain.neardup") is not None
# TT_BENCH_SCALE=0.1 runs every benchmark at a tenth of its size.
SCALE = float(os.environ.get("TT_BENCH_SCALE", "1"))


def scaled(n: int) -> int:
    return max(10, int(n * SCALE))


def profile(name: str, function: Callable[[], object]) -> None:
    """With TT_BENCH_PROFILE=1, one more call under cProfile: top functions printed and saved.

    Only the calling thread is profiled; time other threads take shows as waits.
    """
    if not os.environ.get("TT_BENCH_PROFILE"):
        return
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(function)
    RESULTS.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(RESULTS / f"{name}.prof")
    print(f"\n== profile: {name} (results/bench/{name}.prof) ==")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


def timed(function: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    """Median wall time of `repeat` calls, and the last result."""
    wall, _, result = timed_cpu(function, repeat)
    return wall, result


def timed_cpu(function: Callable[[], object], repeat: int = 1) -> tuple[float, float, object]:
    """Median wall time and median CPU time (this process and its children) of `repeat` calls.

    CPU time is what a job costs whatever else the shared machine runs; wall time
    of one command doubled between identical runs under other agents' load.
    """
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        cpu = cpu_seconds() + cpu_seconds(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        result = function()
        walls.append(time.perf_counter() - start)
        cpus.append(cpu_seconds() + cpu_seconds(resource.RUSAGE_CHILDREN) - cpu)
    return statistics.median(walls), statistics.median(cpus), result


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    tensorflow = sys.modules.get("tensorflow")
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(memory_kb / 2**20, 1),
        "python": platform.python_version(),
        "tensorflow": tensorflow.__version__ if tensorflow else None,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        # Above the core count means someone else shared the machine during the run.
        "load_1min": round(os.getloadavg()[0], 2),
        "scale": SCALE,
    }


def cell(value: object) -> str:
    if not isinstance(value, float):
        return str(value)
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def target(name: str, value: float, at_least: float | None = None, at_most: float | None = None):
    """One target of a benchmark: the figure measured, the bound, and whether it was met."""
    if (at_least is None) == (at_most is None):
        raise ValueError("a target has one bound")
    met = value >= at_least if at_least is not None else value <= at_most
    bound = f">= {at_least:g}" if at_least is not None else f"<= {at_most:g}"
    return {"target": name, "value": round(value, 3), "bound": bound, "met": bool(met)}


def target_line(benchmark: str, t: dict) -> str:
    verdict = "met" if t["met"] else "MISSED"
    return f"{verdict:>6}  {benchmark}: {t['target']}: {t['value']:g} (target {t['bound']})"


def report(
    name: str, rows: list[dict], extra: dict | None = None, targets: list[dict] | None = None
) -> dict:
    """Print a table and its targets (met or missed); write results/bench/{name}.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": name,
        "machine": machine(),
        "rows": rows,
        **(extra or {}),
        "targets": targets or [],
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    keys = list(dict.fromkeys(k for row in rows for k in row))
    print(f"\n== {name} ==")
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(cell(row.get(k, "")) for k in keys))
    for key, value in (extra or {}).items():
        print(f"{key}: {value}")
    print(f"load average (1 min) at the end: {result['machine']['load_1min']}")
    for t in targets or []:
        print(target_line(name, t))
    return result


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU seconds of this process (or of its waited-for children)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def noise_jpegs(count: int, rng: np.random.Generator, sides=(300, 700)) -> list[bytes]:
    """Distinct JPEGs of realistic sizes (noise compresses badly: 50-300 KB)."""
    images = []
    for _ in range(count):
        w, h = (int(v) for v in rng.integers(*sides, size=2))
        pixels = rng.integers(0, 255, size=(h // 4, w // 4, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).resize((w, h), Image.NEAREST)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(rng.integers(70, 95)))
        images.append(buffer.getvalue())
    return images


def distinct_jpegs(count: int, size: tuple[int, int], seed: int = 0) -> Iterator[bytes]:
    """Small JPEGs of random 8x6 blocks: no two are near-duplicates of each other.

    Identical pixels would make every image of a class one near-duplicate group
    (whose grouping is quadratic in its size): not what a benchmark should time.
    """
    rng = np.random.default_rng(seed)
    for _ in range(count):
        pixels = rng.integers(0, 255, size=(6, 8, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).resize(size, Image.NEAREST).save(buffer, "JPEG", quality=90)
        yield buffer.getvalue()
