"""Render a Snakemake report in headless Chromium and save a screenshot.

    python tests/report_screenshots.py results/report.html docs/report.png

Installs Debian's chromium when it is missing (root and apt-get needed).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=5000",
]


def chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found or not shutil.which("apt-get"):
        return found
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
        check=False,
        capture_output=True,
        timeout=900,
        env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/bin"},
    )
    return shutil.which("chromium")


def screenshot(html: Path, png: Path, size: str = "1400,1000") -> Path:
    browser = chromium()
    if browser is None:
        raise RuntimeError("chromium is not installed and could not be installed")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={size}",
                f"--screenshot={png.resolve()}",
                html.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
    return png


if __name__ == "__main__":
    print(screenshot(Path(sys.argv[1]), Path(sys.argv[2])))
