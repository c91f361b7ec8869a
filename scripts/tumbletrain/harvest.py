"""Tumblr tags, local folders and the demo become one class's image set.

Images go into the content-addressed store and are listed in the class's
manifest. A re-run fetches only what it does not have: every fetched URL is
remembered in `{class}.fetched.tsv` beside the manifest (flushed as the
harvest goes), so a run killed by a crash, Ctrl-C or the daily rate limit
continues where it stopped.

A re-run also pages less: `{class}.paging.json` keeps, per query, the newest
post and every image ref of the last *complete* paging, and the next paging
stops at that post. Tags added later to older posts, and deleted posts, are
therefore seen only by a full paging: set `tumblr.full_paging: true` (or
delete the file). A change to the query, `since`, `until`, `include_reblogs`
or `api_host` pages that query in full by itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

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


def query_key(query: tt_config.TumblrQuery, cfg: tt_config.TumblrConfig) -> str:
    """What a query's remembered posts depend on: a change to any of it pages afresh."""
    return json.dumps(
        [cfg.api_host, query.blog, query.tag, cfg.since, cfg.until, cfg.include_reblogs]
    )


def read_paging(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    try:
        return fileio.read_json(path)
    except ValueError:
        return {}  # unreadable state costs a full paging, never a wrong manifest


class QueryPaging:
    """One query's image refs, newest first, as the API pages them; then its state.

    Given the state of a complete paging, only posts newer than its newest
    are asked for and the older ones' refs come from the state. `state` is
    set only once the paging has run to its end, so an interrupted paging
    leaves the state on disk that of the last complete one.
    """

    def __init__(self, client, query: tt_config.TumblrQuery, remembered: dict | None):
        self.client = client
        self.query = query
        self.remembered = remembered
        self.state: dict | None = None

    def __iter__(self) -> Iterator:
        from . import tumblr

        remembered = self.remembered
        stop_at = None
        if remembered:
            mark = remembered["newest"]
            stop_at = tumblr.PostMark(mark["timestamp"], mark["id"])
        newest = stop_at
        refs: list[tumblr.ImageRef] = []
        for post in self.client.iter_posts(self.query, stop_at):
            stamp = int(post.get("timestamp") or 0)
            if newest is None or stamp > newest.timestamp:
                newest = tumblr.PostMark(stamp, str(post.get("id")))
            found = self.client.post_refs(post, self.query)
            refs += found
            yield from found
        if remembered:
            old = [tumblr.ImageRef(*ref[:5], tuple(ref[5])) for ref in remembered["refs"]]
            refs += old
            yield from old
        self.state = {
            "newest": newest and {"timestamp": newest.timestamp, "id": newest.post_id},
            "refs": [list(vars(ref).values()) for ref in refs],
        }


def harvest_tumblr(
    cls: tt_config.ClassConfig,
    tumblr_cfg: tt_config.TumblrConfig,
    image_store: store.ImageStore,
    fetched_path: Path,
    paging_path: Path,
) -> tuple[list[store.ManifestRow], list[tuple[str, str, str, str]]]:
    """Page the class's queries and fetch the images the store lacks.

    Images are fetched while the API is still being paged (the two overlap),
    unless `max_images` needs every post's date before choosing which to take.
    """
    from . import tumblr

    credentials = tumblr.credentials_from_env()
    client = tumblr.TumblrSource(tumblr_cfg, credentials)
    downloader = tumblr.Downloader(tumblr_cfg)
    fetched = read_fetched(fetched_path)
    paging = {} if tumblr_cfg.full_paging else read_paging(paging_path)
    refs: dict[str, tumblr.ImageRef] = {}
    skipped: list[tuple[str, str, str, str]] = []
    pending: dict[Future, tumblr.ImageRef] = {}
    finished: queue.SimpleQueue[Future] = queue.SimpleQueue()
    successes = 0

    def wanted(ref: tumblr.ImageRef) -> bool:
        """Whether to fetch the ref; remembered permanent skips are listed, not retried."""
        known = fetched.get(ref.image_url)
        if known and known.get("skipped") and known["skipped"] not in RETRYABLE:
            skipped.append((ref.image_url, "tumblr", known["skipped"], known.get("message", "")))
            return False
        return (
            not known
            or bool(known.get("skipped"))
            or not image_store.path_for(known["sha256"], known["ext"]).exists()
        )

    def fetch(ref: tumblr.ImageRef) -> store.CheckedImage:
        checked, _ = image_store.put(downloader.fetch(ref.image_url))
        return checked

    def record(future: Future) -> None:
        """Note one finished fetch in the resume state (in this thread only)."""
        nonlocal successes
        ref = pending.pop(future)
        try:
            checked = future.result()
        except store.RejectedImage as rejected:
            skipped.append((ref.image_url, "tumblr", rejected.reason, str(rejected)))
            fetched[ref.image_url] = {
                "image_url": ref.image_url,
                "skipped": rejected.reason,
                "message": str(rejected),
            }
            return
        fetched[ref.image_url] = {
            "image_url": ref.image_url,
            "sha256": checked.sha256,
            "ext": checked.ext,
            "width": str(checked.width),
            "height": str(checked.height),
            "bytes": str(checked.bytes),
        }
        successes += 1
        if successes % FLUSH_EVERY == 0:
            write_fetched(fetched_path, fetched)

    def record_finished() -> None:
        while True:
            try:
                future = finished.get_nowait()
            except queue.Empty:
                return
            if future in pending and not future.cancelled():
                record(future)

    overlap = not cls.max_images
    with ThreadPoolExecutor(max_workers=tumblr_cfg.concurrency) as pool:

        def submit(ref: tumblr.ImageRef) -> None:
            future = pool.submit(fetch, ref)
            pending[future] = ref
            future.add_done_callback(finished.put)

        try:
            for query in cls.tumblr:
                key = query_key(query, tumblr_cfg)
                query_paging = QueryPaging(client, query, paging.get(key))
                for ref in cli.progress(query_paging, f"posts {query.tag}", None, "images", log):
                    if ref.image_url not in refs:
                        refs[ref.image_url] = ref
                        if overlap and wanted(ref):
                            submit(ref)
                    record_finished()
                # Only now is this query's paging complete: the next run may stop at its newest.
                paging[key] = query_paging.state
                fileio.write_json(paging_path, paging)
            ordered = sorted(refs.values(), key=lambda r: (-int(r.timestamp or 0), r.image_url))
            if cls.max_images:
                ordered = ordered[: cls.max_images]
                for ref in ordered:
                    if wanted(ref):
                        submit(ref)
            log.info(
                "%s: %d images found, %d fetched while paging, %d to fetch",
                cls.name,
                len(ordered),
                successes,
                len(pending),
            )
            record_finished()
            for _ in cli.progress(range(len(pending)), "images", len(pending), "images", log):
                record(finished.get())
        finally:
            # Whatever happened, keep what was fetched: the next run resumes from it.
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True)
            record_finished()
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
            cls,
            cfg.tumblr,
            image_store,
            manifests / f"{class_name}.fetched.tsv",
            manifests / f"{class_name}.paging.json",
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
