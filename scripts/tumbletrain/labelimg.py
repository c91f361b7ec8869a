"""The labelling hand-off: a class's images in data/{class}/, ready for LabelImg.

Open the folder in LabelImg (Open Dir), draw boxes, save: the XML lands next
to the images, where the annotations stage looks for it. Re-running adds new
images and never deletes or overwrites a file it did not create; the files it
did create are listed in `.tumbletrain.json`, the rule's only output.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from . import cli, fileio
from . import config as tt_config

log = logging.getLogger("tumbletrain.labelimg")
MARKER = ".tumbletrain.json"


def link_or_copy(source: Path, target: Path) -> str:
    try:
        os.link(source, target)
        return "linked"
    except OSError:  # another file system, or links not allowed
        fileio.copy_file(source, target)
        return "copied"


def materialise(rows: list[dict[str, str]], folder: Path, class_names: list[str]) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / MARKER
    created = set(json.loads(marker.read_text())["created"]) if marker.exists() else set()
    counts = {"linked": 0, "copied": 0, "present": 0}
    for row in rows:
        source = Path(row["file"])
        target = folder / f"{row['sha256'][:16]}{source.suffix}"
        if target.exists():
            counts["present"] += 1
            continue
        counts[link_or_copy(source, target)] += 1
        created.add(target.name)
    classes = folder / "predefined_classes.txt"
    if not classes.exists():
        fileio.write_text(classes, "".join(f"{name}\n" for name in class_names))
        created.add(classes.name)
    elif classes.name not in created:
        log.info("%s is the user's; left as it is", classes)
    fileio.write_json(marker, {"created": sorted(created), **counts})
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tumbletrain.labelimg",
        description="Put a class's harvested images into a folder to label with LabelImg.",
    )
    tt_config.add_config_arguments(parser)
    parser.add_argument("--class", dest="class_name", required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--folder", type=Path, required=True, help="data/{class}")
    args = parser.parse_args(argv)
    cfg = tt_config.from_arguments(args)
    if not args.manifest.exists():
        raise cli.UserError(f"{args.manifest} does not exist; run the harvest first")
    counts = materialise(fileio.read_tsv(args.manifest), args.folder, cfg.class_names)
    log.info("%s: %s; open it in LabelImg and save the XML next to the images", args.folder, counts)
    return 0


if __name__ == "__main__":
    cli.run(main)
