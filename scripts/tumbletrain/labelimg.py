"""The labelling hand-off: a class's images in data/{class}/, ready for LabelImg.

Start LabelImg with the command this prints and records in `.tumbletrain.json`
(`labelImg data/{class} data/{class}/predefined_classes.txt data/{class}`:
the images, the class list, where to save), draw boxes, save: the XML lands
in the class's `annotations_dir`, where the annotations stage looks for it.
Re-running adds new images and never deletes or overwrites a file it did not
create; the files it did create are listed in `.tumbletrain.json`, the rule's
only output. A class whose images come from its LabelImg folder is labelled
there, in place, and a folder that already is a source of images (a folder
another class reads) gets no image: only the class list, if it has none.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from pathlib import Path

from . import cli, fileio, sources, store
from . import config as tt_config

log = logging.getLogger("tumbletrain.labelimg")
# The config this command reads; its rule passes exactly this.
# Every class in full: any class's folders may be the one it is asked to fill.
CONFIG = tt_config.stage("label", classes="all")
MARKER = ".tumbletrain.json"
CLASSES_FILE = "predefined_classes.txt"


def labelimg_command(images: str, class_list: Path, save_dir: str) -> str:
    """LabelImg's own command line: images, class list, where to save (its three arguments).

    LabelImg reads a class list only from its second argument (or its own
    install), never from the folder it opens.
    """
    return shlex.join(["labelImg", images, str(class_list), save_dir])


def is_a_source(cfg: tt_config.WorkflowConfig, class_name: str, folder: Path) -> bool:
    """Whether images put in `folder` would become another image of some class's data."""
    cls = cfg.get_class(class_name)
    taken = [*sources.image_folders(cls)]
    for other in cfg.classes:
        if other.name != class_name:
            taken += sources.annotation_folders(other)
    return sources.overlap([sources.resolved(str(folder))], map(sources.resolved, taken))


def materialise(
    rows: list[store.ManifestRow],
    folder: Path,
    class_names: list[str],
    add_images: bool = True,
    **extra: str,
) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / MARKER
    created = set(json.loads(marker.read_text())["created"]) if marker.exists() else set()
    counts = {"copied": 0, "present": 0, "unlinked": 0}
    for row in rows if add_images else ():
        source = Path(row.file)
        target = folder / f"{row.sha256[:16]}{source.suffix}"
        linked = target.name in created and source.exists() and os.path.samefile(source, target)
        if target.exists() and not linked:
            counts["present"] += 1
            continue
        # A copy, never a link: data/{class} is the folder users edit, and an edit
        # through a hard link would change the store file under its old sha256
        # name. A link an older version made is replaced by a copy.
        counts["unlinked" if target.exists() else "copied"] += 1
        fileio.copy_file(source, target)
        created.add(target.name)
    classes = folder / CLASSES_FILE
    if not classes.exists():
        fileio.write_text(classes, "".join(f"{name}\n" for name in class_names))
        created.add(classes.name)
    elif classes.name not in created:
        log.info("%s is the user's; left as it is", classes)
    fileio.write_json(marker, {"created": sorted(created), **counts, **extra})
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = tt_config.class_command_parser(
        "labelimg", "Put a class's harvested images into a folder to label with LabelImg."
    )
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--folder", type=Path, required=True, help="data/{class}")
    args = parser.parse_args(argv)
    cfg = tt_config.from_arguments(args, CONFIG)
    fileio.clean_leftovers(args.folder, logger=log)
    if not args.manifest.exists():
        raise cli.UserError(f"{args.manifest} does not exist; run the harvest first")
    cls = cfg.get_class(args.class_name)
    # A class whose images are its LabelImg folder's is labelled there, in place.
    in_place = sources.takes_images_from_annotations(cls)
    images = cls.annotations_dir if in_place else str(args.folder)
    command = labelimg_command(images, args.folder / CLASSES_FILE, cls.annotations_dir)
    add_images = not in_place and not is_a_source(cfg, args.class_name, args.folder)
    if not add_images:
        log.info("%s already holds a class's images: no image added to %s", images, args.folder)
    counts = materialise(
        store.read_manifest(args.manifest),
        args.folder,
        cfg.class_names,
        add_images,
        labelimg=command,
    )
    log.info("%s: %s; label it with LabelImg: %s", args.folder, counts, command)
    cli.tell(f"{args.class_name}: {command}")
    return 0


if __name__ == "__main__":
    cli.run(main)
