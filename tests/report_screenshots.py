"""Render a Snakemake report in headless Chromium and screenshot each category.

    python tests/report_screenshots.py results/report.html docs/
    python tests/report_screenshots.py results/report.html docs/ --show Evaluation=metrics_

writes OUTDIR/report-<category>.png for every category of the report (or those
named with --category), each showing the category's menu and its first result
(or the first whose path contains the --show text). Installs Debian's chromium
when it is missing (apt-get as root); the report file itself is never changed.

The report is a single-page React app without links into a category, so a copy
of it gets a script that opens the category the way a click would.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

# As workflow/rules/common.smk names them: numbered, so the menu lists them in stage order.
CATEGORIES = ("1. Harvest", "2. Annotations", "3. Records", "4. Training", "5. Evaluation")
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
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/bin"}

# Runs in the report's page: `app`, `categories` and `results` are its globals.
SHOW = """
<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    const category = %(category)s, wanted = %(show)s;
    const subcategory = Object.keys(categories[category])[0];
    const paths = categories[category][subcategory];
    const path = paths.find((p) => p.includes(wanted)) || paths[0];
    const entry = results[path];
    // One call: setView merges with the state of before the call, not the last call's.
    app.setView({
      navbarMode: "subcategory",
      category: category,
      subcategory: subcategory,
      content: entry.mime_type === "text/html" ? "html" : "img",
      contentPath: entry.data_uri,
      resultPath: path,
    });
    document.title = "showing " + category + ": " + path;
  }, 300);
});
</script>
"""


def chromium() -> str | None:
    """Debian's chromium, installed (idempotently) when apt-get can; None when it cannot."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found or not shutil.which("apt-get") or os.geteuid() != 0:
        return found
    # A fresh machine (CI) has no package lists yet; update them first.
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        subprocess.run(command, check=False, capture_output=True, timeout=900, env=APT_ENV)
    return shutil.which("chromium")


def run_chromium(page: Path, *args: str) -> subprocess.CompletedProcess:
    browser = chromium()
    if browser is None:
        raise RuntimeError(
            "chromium is not installed and could not be installed: "
            "run `apt-get install chromium` as root"
        )
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [browser, *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
            check=True,
            capture_output=True,
            text=True,
            timeout=180,
        )


def screenshot(html: Path, png: Path, size: str = "1400,1000") -> Path:
    png.parent.mkdir(parents=True, exist_ok=True)
    run_chromium(html, f"--window-size={size}", f"--screenshot={png.resolve()}")
    return png


def report_categories(html: Path) -> dict[str, dict[str, list[str]]]:
    """The report's own index of categories, subcategories and result paths."""
    match = re.search(r"var categories = (\{.*?\});\s*$", html.read_text(), re.MULTILINE)
    if match is None:
        raise ValueError(f"{html} is not a Snakemake report (no `var categories`)")
    return json.loads(match.group(1))


def with_category_shown(html: Path, category: str, show: str, target: Path) -> Path:
    page = html.read_text()
    script = SHOW % {"category": json.dumps(category), "show": json.dumps(show)}
    head, body_end, tail = page.rpartition("</body>")
    target.write_text(head + script + body_end + tail if body_end else page + script)
    return target


def shown_title(html: Path, category: str, show: str = "") -> str:
    """The page title after the script ran: proves the category really opened."""
    with tempfile.TemporaryDirectory() as tmp:
        page = with_category_shown(html, category, show, Path(tmp) / "report.html")
        dom = run_chromium(page, "--dump-dom").stdout
    match = re.search(r"<title>(.*?)</title>", dom, re.DOTALL)
    return match.group(1).strip() if match else ""


def category_screenshots(
    html: Path,
    outdir: Path,
    categories: list[str] | None = None,
    show: dict[str, str] | None = None,
    size: str = "1400,900",
) -> dict[str, Path]:
    available = report_categories(html)
    wanted = categories or [c for c in CATEGORIES if c in available] or list(available)
    missing = [c for c in wanted if c not in available]
    if missing:
        raise ValueError(f"{html} has no category {', '.join(missing)} (it has {list(available)})")
    pngs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for category in wanted:
            page = with_category_shown(
                html, category, (show or {}).get(category, ""), Path(tmp) / f"{category}.html"
            )
            pngs[category] = screenshot(page, outdir / f"report-{category.lower()}.png", size)
    return pngs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="the report from `snakemake --report`")
    parser.add_argument("outdir", type=Path, help="where report-<category>.png go")
    parser.add_argument("--category", action="append", help="only these categories")
    parser.add_argument(
        "--show",
        action="append",
        default=[],
        metavar="CATEGORY=TEXT",
        help="show the category's result whose path contains TEXT",
    )
    parser.add_argument("--size", default="1400,900", help="window width,height")
    args = parser.parse_args()
    show = dict(item.split("=", 1) for item in args.show)
    for png in category_screenshots(
        args.report, args.outdir, args.category, show, args.size
    ).values():
        print(png)


if __name__ == "__main__":
    main()
