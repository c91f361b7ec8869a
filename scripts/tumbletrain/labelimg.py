"""The labelling hand-off: what `python -m tumbletrain.label CLASS` opens in LabelImg.

LabelImg shows and saves an image's boxes as `<save folder>/<image stem>.xml`.
The hand-off makes each image of a class open with the file the annotations
stage reads for it, so existing boxes show and a save replaces that file:
- images in a folder the class reads annotations from (its LabelImg folder of
  its own, its `folders:`, the demo's folder) are labelled in place, saved
  beside them, or one level up from an `images/` folder (the original
  project's `training/images/x.jpg` with `training/x.xml`, which keeps the split);
- the other images (Tumblr's) are copied from the store into the class's
  LabelImg folder `data/{class}` (copies, not links: an edit there never
  changes the store) and saved in the class's `annotations_dir`; the
  annotations stage reads `data/{class}` too (`sources.annotation_folders`),
  so the XML naming those copies is kept whatever the annotations_dir.

`.tumbletrain.json`, the rule's only output, lists those (images folder, save
folder) pairs, the command, and the files the hand-off created in the folder.
Re-running adds new images and never deletes or overwrites a file it did not
create; a copy it made that is no longer wanted (its image is now labelled in
place) goes when no annotation names it. A folder that already is a source of
images (a folder another class reads) gets no image: only the class list, if
it has none.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from . import annotations, cli, fileio, label, sources, store
from . import config as tt_config

log = logging.getLogger("tumbletrain.labelimg")
# The config this command reads; its rule passes exactly this.
# Every class in full: any class's folders may be the one it is asked to fill.
CONFIG = tt_config.stage("label", classes="all")
MARKER = label.MARKER
CLASSES_FILE = label.CLASSES_FILE
# The files LabelImg saves for an image, by suffix (any of them names a copy).
LABEL_SUFFIXES = (".xml", ".txt", ".json")


def is_a_source(cfg: tt_config.WorkflowConfig, class_name: str, folder: Path) -> bool:
    """Whether images put in `folder` would become another image of some class's data."""
    cls = cfg.get_class(class_name)
    taken = [*sources.image_folders(cls)]
    for other in cfg.classes:
        if other.name != class_name:
            taken += sources.annotation_folders(other)
    return sources.overlap([sources.resolved(str(folder))], map(sources.resolved, taken))


def labelled_in_place(cls: tt_config.ClassConfig, row: store.ManifestRow) -> bool:
    """Whether the row's image lies in a folder the class reads annotations from."""
    origin = row.image_url
    if row.source == "tumblr" or not origin or "://" in origin:
        return False
    folders = [sources.resolved(f) for f in sources.annotation_folders(cls)]
    return any(sources.contains(f, sources.resolved(origin)) for f in folders)


def save_folder(image_folder: str, root: str) -> str:
    """Where LabelImg saves the XML of the images of `image_folder` (under `root`): beside
    them, or one level up from an `images/` folder with no XML (the original layout)."""
    below_root = os.path.normpath(image_folder) != os.path.normpath(root)
    if os.path.basename(image_folder) == "images" and below_root:
        has_xml = any(name.endswith(".xml") for name in os.listdir(image_folder))
        if not has_xml:
            return os.path.dirname(image_folder)
    return image_folder


def folder_pairs(cls: tt_config.ClassConfig, folder: Path, copies: bool) -> list[tuple[str, str]]:
    """The (images folder, save folder) pairs LabelImg opens for the class: the copies in
    its LabelImg folder first, then every folder of images it reads annotations from."""
    pairs: dict[str, str] = {}
    if copies:
        pairs[str(folder)] = cls.annotations_dir
    for root in sources.annotation_folders(cls):
        _, images, _ = annotations.scan(Path(root).expanduser())
        for image_folder in dict.fromkeys(os.path.dirname(image) for image in images):
            pairs.setdefault(image_folder, save_folder(image_folder, root))
    return list(pairs.items())


def unwanted(folder: Path, names: Iterable[str], save: Path) -> list[str]:
    """The image copies of `names` that no annotation file names by its stem."""
    gone = []
    for name in names:
        stem, suffix = os.path.splitext(name)
        if suffix.lower() not in store.IMAGE_SUFFIXES:
            continue
        labels = [where / f"{stem}{s}" for where in (folder, save) for s in LABEL_SUFFIXES]
        if not any(path.exists() for path in labels):
            gone.append(name)
    return gone


def materialise(
    rows: list[store.ManifestRow],
    folder: Path,
    class_names: list[str],
    add_images: bool = True,
    save: Path | None = None,
    **extra,
) -> dict:
    """Copy the rows' images into `folder` (`save`: where their XML goes, default `folder`)."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / MARKER
    created = set(json.loads(marker.read_text())["created"]) if marker.exists() else set()
    counts = {"copied": 0, "present": 0, "unlinked": 0, "removed": 0}
    wanted = set()
    for row in rows if add_images else ():
        source = Path(row.file)
        target = folder / f"{row.sha256[:16]}{source.suffix}"
        wanted.add(target.name)
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
    # Copies an older hand-off made of images now labelled in place would show
    # each such image twice; those no annotation names go.
    for name in unwanted(folder, sorted(created - wanted), save or folder):
        (folder / name).unlink(missing_ok=True)
        created.discard(name)
        counts["removed"] += 1
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
        "labelimg",
        "Make a class's LabelImg hand-off: copy the images to label that are only in the "
        "store into its LabelImg folder, and record what `python -m tumbletrain.label "
        "CLASS` opens.",
    )
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--folder", type=Path, required=True, help="data/{class}")
    args = parser.parse_args(argv)
    cfg = tt_config.from_arguments(args, CONFIG)
    fileio.clean_leftovers(args.folder, logger=log)
    if not args.manifest.exists():
        raise cli.UserError(f"{args.manifest} does not exist; run the harvest first")
    cls = cfg.get_class(args.class_name)
    rows = [r for r in store.read_manifest(args.manifest) if not labelled_in_place(cls, r)]
    add_images = bool(rows) and not is_a_source(cfg, args.class_name, args.folder)
    if rows and not add_images:
        log.info("%s already holds a class's images: no image added", args.folder)
    pairs = folder_pairs(cls, args.folder, add_images)
    command = label.command(args.class_name)
    counts = materialise(
        rows,
        args.folder,
        cfg.class_names,
        add_images,
        Path(cls.annotations_dir).expanduser(),
        labelimg=command,
        folders=pairs,
    )
    log.info("%s: %s; LabelImg opens %s", args.folder, counts, pairs)
    cli.tell(f"{args.class_name}: {command}")
    return 0


if __name__ == "__main__":
    cli.run(main)
