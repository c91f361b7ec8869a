"""Harvest: images from the fake Tumblr with 50 ms latency, concurrent vs serial."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from unittest import mock

# `common` puts tests/ on the path, where fake_tumblr lives: its import must come
# first (isort's order keeps it so: plain imports, alphabetically, before `from`).
import common
import fake_tumblr as ft
import requests
from fake_tumblr import FakeTumblr
from tumbletrain import config, harvest


def build(fake: FakeTumblr, count: int) -> list[str]:
    """Documented NPF posts of one image each; returns the largest renditions' URLs."""
    fake.blogs["bench.tumblr.com"] = [
        ft.npf_post(10_000 - i, 1_700_000_000 + count - i, ["t"], [ft.npf_image(f"i{i}")])
        for i in range(count)
    ]
    return [f"http://69.media.tumblr.com/i{i}/tumblr_i{i}_1280.jpg" for i in range(count)]


def main() -> dict:
    count = common.scaled(2_000)
    serial_sample = min(count, common.scaled(200))
    fake = FakeTumblr(api_key="k")
    # http.server sends headers and body in two writes; with Nagle's algorithm the
    # body then waits for the client's delayed ACK, adding ~40 ms to every request
    # on top of the 50 ms the benchmark asks for.
    fake.server.RequestHandlerClass.disable_nagle_algorithm = True
    fake.start()
    # The fake's key and proxy for this benchmark only: a proxy left in the environment
    # would carry the later benchmarks' traffic (the workers' gRPC) to a stopped server.
    environment = mock.patch.dict(os.environ, {"TUMBLR_CONSUMER_KEY": "k", **fake.env()})
    environment.start()
    try:
        urls = build(fake, count)
        fake.faults.latency_s = 0.05
        session = requests.Session()
        start = time.perf_counter()
        for url in urls[:serial_sample]:
            session.get(url, timeout=10).content  # noqa: B018
        serial_rate = serial_sample / (time.perf_counter() - start)
        raw = {
            "classes": {"c": {"tumblr": [{"blog": "bench.tumblr.com", "tag": "t"}]}},
            "tumblr": {"api_host": "http://api.tumblr.com", "concurrency": 8},
        }
        cfg = config.parse(raw)
        full_cfg = config.parse({**raw, "tumblr": {**raw["tumblr"], "full_paging": True}})
        runs = []
        with tempfile.TemporaryDirectory(dir=os.environ.get("TT_BENCH_TMP")) as tmp:
            root = Path(tmp)
            for name, run_cfg in (
                ("harvest, concurrency 8 (API paging included)", cfg),
                ("incremental re-run", cfg),
                ("re-run with full_paging (every page again)", full_cfg),
            ):
                fake.clear()
                start = time.perf_counter()
                harvest.harvest_class(run_cfg, "c", root / "images", root / "manifests" / "c.tsv")
                seconds = time.perf_counter() - start
                images = len(fake.media_requests())
                runs.append(
                    {
                        "run": name,
                        "images": images,
                        "api_calls": len(fake.api_requests()),
                        "images_per_s": count / seconds,
                        "seconds": seconds,
                    }
                )
    finally:
        environment.stop()
        fake.stop()
    runs[1]["images_per_s"] = runs[2]["images_per_s"] = None  # nothing was fetched
    rows = [
        {"run": "serial fetch (sample)", "images": serial_sample, "images_per_s": serial_rate},
        *runs,
    ]
    first, rerun = runs[0], runs[1]
    return common.report(
        "harvest",
        rows,
        {
            "images": count,
            "speedup_vs_serial": round(first["images_per_s"] / serial_rate, 2),
            # Fetching overlaps the paging: the first run is bounded by the slower of
            # the two, not their sum.
            "paging_alone_s": round(runs[2]["seconds"], 2),
            "serial_fetch_of_all_s (extrapolated)": round(count / serial_rate, 1),
            "rerun_image_requests": rerun["images"],
            "rerun_s": round(rerun["seconds"], 2),
        },
        [
            common.target("speed-up over serial", first["images_per_s"] / serial_rate, at_least=6),
            common.target("re-run, image requests", rerun["images"], at_most=0),
            common.target("re-run, s", rerun["seconds"], at_most=5),
        ],
    )


if __name__ == "__main__":
    main()
