"""Tumblr tags, local folders and the demo become one class's image set.

Images go into the content-addressed store and are listed in the class's
manifest. A re-run fetches only what it does not have: every fetched URL is
remembered in `{class}.fetched.tsv` beside the manifest (flushed as the
harvest goes), so a run killed by a crash, Ctrl-C or the daily rate limit
continues where it stopped.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from . import cli, fileio, store
from . import config as tt_config

log = logging.getLogger("tumbletrain.harvest")

FOLDER_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp"}
FETCHED_COLUMNS = ("image_url", "sha256", "ext", "width", "height", "bytes", "skipped", "message")
# Skips worth another try on the next run; the others (not an image, too large,
# a host outside media_hosts, ...) are remembered, so a re-run asks for nothing.
RETRYABLE = {"connection_failed", "truncated", "http_error"}
FLUSH_EVERY = 25


def iter_folder_images(folder: Path) -> Iterator[Path]:
    """Image files under a folder, recursively, in a stable order."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in FOLDER_SUFFIXES and not name.startswith("."):
                yield Path(dirpath) / name


def ingest_folder(
    folder: Path, source: str, image_store: store.ImageStore
) -> tuple[list[store.ManifestRow], list[tuple[str, str, str, str]]]:
    rows, skipped = [], []
    for path in iter_folder_images(folder):
        try:
            checked, stored = image_store.put(path.read_bytes())
        except store.RejectedImage as rejected:
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
    return rows, skipped


def read_fetched(path: Path) -> dict[str, dict[str, str]]:
    if not path.exists():
        return {}
    return {row["image_url"]: row for row in fileio.read_tsv(path)}


def write_fetched(path: Path, fetched: dict[str, dict[str, str]]) -> None:
    fileio.write_tsv(
        path,
        FETCHED_COLUMNS,
        ([row.get(c, "") for c in FETCHED_COLUMNS] for _, row in sorted(fetched.items())),
    )


def harvest_tumblr(
    cls: tt_config.ClassConfig,
    tumblr_cfg: tt_config.TumblrConfig,
    image_store: store.ImageStore,
    fetched_path: Path,
) -> tuple[list[store.ManifestRow], list[tuple[str, str, str, str]]]:
    from . import tumblr

    credentials = tumblr.credentials_from_env()
    client = tumblr.TumblrSource(tumblr_cfg, credentials)
    refs: dict[str, tumblr.ImageRef] = {}
    for query in cls.tumblr:
        for ref in tqdm(
            client.iter_image_refs(query), desc=f"posts {query.tag}", unit="img", disable=None
        ):
            refs.setdefault(ref.image_url, ref)
    ordered = sorted(refs.values(), key=lambda r: (-int(r.timestamp or 0), r.image_url))
    if cls.max_images:
        ordered = ordered[: cls.max_images]
    fetched = read_fetched(fetched_path)
    skipped: list[tuple[str, str, str, str]] = []
    missing = []
    for ref in ordered:
        known = fetched.get(ref.image_url)
        if known and known.get("skipped") and known["skipped"] not in RETRYABLE:
            skipped.append((ref.image_url, "tumblr", known["skipped"], known.get("message", "")))
        elif (
            not known
            or known.get("skipped")
            or not image_store.path_for(known["sha256"], known["ext"]).exists()
        ):
            missing.append(ref)
    log.info("%s: %d images found, %d to fetch", cls.name, len(ordered), len(missing))
    downloader = tumblr.Downloader(tumblr_cfg)

    def fetch(ref):
        checked, _ = image_store.put(downloader.fetch(ref.image_url))
        return checked

    done = 0
    with ThreadPoolExecutor(max_workers=tumblr_cfg.concurrency) as pool:
        futures = {pool.submit(fetch, ref): ref for ref in missing}
        try:
            for future in tqdm(
                as_completed(futures), total=len(futures), desc="images", unit="img", disable=None
            ):
                ref = futures[future]
                try:
                    checked = future.result()
                except store.RejectedImage as rejected:
                    skipped.append((ref.image_url, "tumblr", rejected.reason, str(rejected)))
                    fetched[ref.image_url] = {
                        "image_url": ref.image_url,
                        "skipped": rejected.reason,
                        "message": str(rejected),
                    }
                    continue
                fetched[ref.image_url] = {
                    "image_url": ref.image_url,
                    "sha256": checked.sha256,
                    "ext": checked.ext,
                    "width": str(checked.width),
                    "height": str(checked.height),
                    "bytes": str(checked.bytes),
                }
                done += 1
                if done % FLUSH_EVERY == 0:
                    write_fetched(fetched_path, fetched)
        finally:
            # Whatever happened, keep what was fetched: the next run resumes from it.
            for future in futures:
                future.cancel()
            write_fetched(fetched_path, fetched)
    rows = []
    for ref in ordered:
        known = fetched.get(ref.image_url)
        if known is None or known.get("skipped"):
            continue
        rows.append(
            store.ManifestRow(
                sha256=known["sha256"],
                file=str(image_store.path_for(known["sha256"], known["ext"])),
                source="tumblr",
                blog=ref.blog,
                post_id=ref.post_id,
                post_url=ref.post_url,
                image_url=ref.image_url,
                timestamp=str(ref.timestamp),
                tags=",".join(ref.tags),
                width=int(known["width"]),
                height=int(known["height"]),
                bytes=int(known["bytes"]),
            )
        )
    return rows, skipped


def cap(rows: Iterable[store.ManifestRow], limit: int | None) -> list[store.ManifestRow]:
    rows = list(rows)
    return rows if limit is None else rows[:limit]


def harvest_class(
    cfg: tt_config.WorkflowConfig,
    class_name: str,
    store_root: Path,
    manifests: Path,
    demo_dir: Path | None = None,
) -> dict:
    cls = cfg.get_class(class_name)
    image_store = store.ImageStore(store_root)
    for root in (store_root, manifests):
        if Path(root).is_dir():
            removed = fileio.remove_leftovers(root)
            if removed:
                log.info("removed %d partial files a killed run left in %s", removed, root)
    rows: list[store.ManifestRow] = []
    skipped: list[tuple[str, str, str, str]] = []
    if cls.tumblr:
        found, lost = harvest_tumblr(
            cls, cfg.tumblr, image_store, manifests / f"{class_name}.fetched.tsv"
        )
        rows += found
        skipped += lost
    for folder in cls.folders:
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise cli.UserError(
                f"folder {path} of class {class_name!r} does not exist; "
                "fix `folders:` in the config"
            )
        found, lost = ingest_folder(path, "folder", image_store)
        rows += cap(found, cls.max_images)
        skipped += lost
    if demo_dir is not None:
        found, lost = ingest_folder(demo_dir, "demo", image_store)
        rows += found
        skipped += lost
    if not rows and not skipped:
        raise cli.UserError(
            f"class {class_name!r} has no image source with images "
            f"(folders: {', '.join(cls.folders) or 'none'}): "
            "put images in its folders or give it `tumblr:` queries or `demo:` in the config"
        )
    rows = [replace(r, file=os.path.relpath(r.file)) if os.path.isabs(r.file) else r for r in rows]
    store.write_manifest(manifests / f"{class_name}.tsv", rows)
    store.write_skipped(manifests / f"{class_name}.skipped.tsv", skipped)
    return {"class": class_name, "images": len({r.sha256 for r in rows}), "skipped": len(skipped)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tumbletrain.harvest",
        description="Harvest one class's images from Tumblr tags, folders and the demo "
        "into the image store and the class's manifest. Tumblr credentials are read from "
        "TUMBLR_CONSUMER_KEY (and, for OAuth1, TUMBLR_CONSUMER_SECRET, TUMBLR_OAUTH_TOKEN, "
        "TUMBLR_OAUTH_SECRET).",
    )
    tt_config.add_config_arguments(parser)
    parser.add_argument("--class", dest="class_name", required=True)
    parser.add_argument("--store", type=Path, default=Path("resources/images"))
    parser.add_argument("--manifests", type=Path, default=Path("resources/manifests"))
    parser.add_argument("--demo-dir", type=Path, help="the class's demo folder, if any")
    args = parser.parse_args(argv)
    cfg = tt_config.from_arguments(args)
    result = harvest_class(cfg, args.class_name, args.store, args.manifests, args.demo_dir)
    log.info(
        "%s: %d images in the manifest, %d skipped",
        result["class"],
        result["images"],
        result["skipped"],
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
