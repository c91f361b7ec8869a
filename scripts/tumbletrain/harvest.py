"""Tumblr tags, local folders and the demo become one class's image set.

Images go into the content-addressed store and are listed in the class's
manifest. The Tumblr part (paging, resuming, fetching) is `tumblr_harvest`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import astuple, dataclass, replace
from pathlib import Path

from . import cli, fileio, sources, store
from . import config as tt_config

log = logging.getLogger("tumbletrain.harvest")
# The config this command reads; its rule passes exactly this.
CONFIG = tt_config.stage("harvest", "tumblr", classes="own")


def iter_folder_images(folder: Path) -> Iterator[Path]:
    """Image files under a folder, recursively, in a stable order."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in store.IMAGE_SUFFIXES and not name.startswith("."):
                yield Path(dirpath) / name


def ingest_folder(
    folder: Path,
    source: str,
    image_store: store.ImageStore,
    max_bytes: int | None = None,
    allowed: Iterable[Path] = (),
) -> tuple[list[store.ManifestRow], list[tuple[str, str, str, str]]]:
    """Store a folder's images. A file is read only if it is a regular file of at most
    `max_bytes` that resolves (symlinks followed) inside `folder` or one of `allowed`.

    The store is flushed to disk once, at the end, not once per image: before
    the manifest names any of them.
    """
    rows, skipped = [], []
    roots = fileio.real_roots([folder, *allowed])
    for path in iter_folder_images(folder):
        try:
            problem = fileio.file_problem(path, max_bytes)
            if problem is not None:
                raise problem
            if not fileio.inside(os.path.realpath(path), roots):
                raise fileio.FileProblem(
                    "image_outside_sources",
                    f"links to {os.path.realpath(path)}, outside the class's folders",
                )
            checked, stored = image_store.put(fileio.read_regular(path, max_bytes), sync=False)
        except (store.RejectedImage, fileio.FileProblem) as rejected:
            skipped.append((str(path), source, rejected.reason, str(rejected)))
            continue
        rows.append(
            store.ManifestRow(
                sha256=checked.sha256,
                file=str(stored),
                source=source,
                image_url=str(path),
                width=checked.width,
                height=checked.height,
                bytes=checked.bytes,
            )
        )
    image_store.sync()
    return rows, skipped


@dataclass(frozen=True)
class ResumeFiles:
    """A class's resume state. Outside Snakemake's DAG on purpose: it must outlive a
    failed harvest (Snakemake deletes a failed job's outputs) and the paging log
    exists only while a paging is unfinished (docs/DESIGN.md)."""

    fetched: Path
    paging: Path
    paging_log: Path

    @classmethod
    def beside(cls, manifest: Path) -> ResumeFiles:
        stem = Path(manifest).with_suffix("")
        return cls(
            *(Path(f"{stem}.{name}") for name in ("fetched.tsv", "paging.json", "paging.log"))
        )


def cap(rows: Iterable[store.ManifestRow], limit: int | None) -> list[store.ManifestRow]:
    rows = list(rows)
    return rows if limit is None else rows[:limit]


def harvest_class(
    cfg: tt_config.WorkflowConfig,
    class_name: str,
    store_root: Path,
    manifest: Path,
    demo_dir: Path | None = None,
    skipped_path: Path | None = None,
    resume: ResumeFiles | None = None,
) -> dict:
    """Harvest a class into the store and its manifest; the skipped images' table and
    the Tumblr resume state go beside the manifest unless named."""
    manifest = Path(manifest)
    skipped_path = skipped_path or manifest.with_suffix(".skipped.tsv")
    resume = resume or ResumeFiles.beside(manifest)
    cls = cfg.get_class(class_name)
    image_store = store.ImageStore(store_root)
    folders = {manifest.parent, skipped_path.parent, *(p.parent for p in astuple(resume))}
    fileio.clean_leftovers(store_root, *sorted(folders), logger=log)
    rows: list[store.ManifestRow] = []
    skipped: list[tuple[str, str, str, str]] = []
    if cls.tumblr:
        from .tumblr_harvest import TumblrHarvest

        found, lost = TumblrHarvest(cls, cfg.tumblr, image_store, resume).run()
        rows += found
        skipped += lost
    for folder in sources.image_folders(cls):
        path = Path(folder).expanduser()
        if not path.is_dir() and not cls.folders:
            raise cli.UserError(
                f"class {class_name!r} has no image source: give it `tumblr:` queries or "
                f"`folders:`, or put its LabelImg images and XML in {path} (`annotations_dir:`)"
            )
        if not path.is_dir():
            raise cli.UserError(
                f"folder {path} of class {class_name!r} does not exist; "
                "fix `folders:` in the config"
            )
        found, lost = ingest_folder(
            path,
            "folder",
            image_store,
            cfg.tumblr.max_image_bytes,
            [Path(f).expanduser() for f in sources.image_folders(cls)],
        )
        rows += cap(found, cls.max_images)
        skipped += lost
    if demo_dir is not None:
        found, lost = ingest_folder(demo_dir, "demo", image_store)
        rows += found
        skipped += lost
    if not rows and not skipped:
        raise cli.UserError(
            f"class {class_name!r} has no image source with images "
            f"(folders: {', '.join(sources.image_folders(cls)) or 'none'}): "
            "put images in its folders or give it `tumblr:` queries or `demo:` in the config"
        )
    rows = [replace(r, file=os.path.relpath(r.file)) if os.path.isabs(r.file) else r for r in rows]
    rows, unstorable = store.storable(rows)
    skipped += unstorable
    store.write_manifest(manifest, rows)
    store.write_skipped(skipped_path, skipped)
    return {"class": class_name, "images": len({r.sha256 for r in rows}), "skipped": len(skipped)}


def main(argv: list[str] | None = None) -> int:
    parser = tt_config.class_command_parser(
        "harvest",
        "Harvest one class's images from Tumblr tags, folders and the demo "
        "into the image store and the class's manifest. Tumblr credentials are read from "
        "TUMBLR_CONSUMER_KEY (and, for OAuth1, TUMBLR_CONSUMER_SECRET, TUMBLR_OAUTH_TOKEN, "
        "TUMBLR_OAUTH_SECRET).",
    )
    parser.add_argument(
        "--store", type=Path, required=True, help="the content-addressed image store"
    )
    parser.add_argument("--manifest", type=Path, required=True, help="the class's manifest (TSV)")
    parser.add_argument(
        "--skipped", type=Path, help="the skipped images' table (default: MANIFEST.skipped.tsv)"
    )
    resume = parser.add_argument_group(
        "Tumblr resume state",
        "kept when a harvest fails, read by the next one (default: beside the manifest)",
    )
    resume.add_argument("--fetched", type=Path, help="every URL fetched or skipped")
    resume.add_argument("--paging", type=Path, help="each query's last complete paging")
    resume.add_argument("--paging-log", type=Path, help="the paging in progress")
    parser.add_argument("--demo-dir", type=Path, help="the class's demo folder, if any")
    args = parser.parse_args(argv)
    cfg = tt_config.from_arguments(args, CONFIG)
    default = ResumeFiles.beside(args.manifest)
    resume_files = ResumeFiles(
        args.fetched or default.fetched,
        args.paging or default.paging,
        args.paging_log or default.paging_log,
    )
    try:
        result = harvest_class(
            cfg,
            args.class_name,
            args.store,
            args.manifest,
            args.demo_dir,
            args.skipped,
            resume_files,
        )
    except OSError as error:
        if error.errno not in cli.NO_SPACE:
            raise
        raise cli.no_space(error, [args.store, args.manifest.parent]) from None
    log.info(
        "%s: %d images in the manifest, %d skipped",
        result["class"],
        result["images"],
        result["skipped"],
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
