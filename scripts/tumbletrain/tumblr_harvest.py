"""One class's Tumblr images: page its queries, fetch what the store lacks, list them.

Three files make a harvest resumable and cheap to repeat (`harvest.ResumeFiles`: the
harvest rule names them; a command without them keeps them beside the manifest):
- `{class}.fetched.tsv`: every URL fetched (sha256, size) or skipped (reason),
  flushed as the harvest goes, so no image is fetched twice;
- `{class}.paging.json`: per query (keyed by what its posts depend on), the
  newest post and every image ref of the last *complete* paging; the next
  paging stops at that post (`tumblr.full_paging: true` pages everything);
- `{class}.paging.log`: the paging in progress, one JSON line per page
  (cursor and refs), appended as the pages arrive. A paging stopped by the
  daily rate limit, an error or kill -9 continues from its cursor: no call is
  spent on a page already paged. Posts published since the interrupted paging
  began are found by the next run.
All three are read and written by field name.
"""

from __future__ import annotations

import json
import logging
import queue
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import cli, fileio, store, tumblr
from . import config as tt_config

if TYPE_CHECKING:
    from .harvest import ResumeFiles

log = logging.getLogger("tumbletrain.harvest")

FETCHED_COLUMNS = ("image_url", "sha256", "ext", "width", "height", "bytes", "skipped", "message")
# Skips worth another try on the next run; the others (not an image, too large,
# a host outside media_hosts, ...) are remembered, so a re-run asks for nothing.
RETRYABLE = {"connection_failed", "truncated", "http_error"}
FLUSH_EVERY = 25
PAGING_VERSION = 2


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
        {
            "api_host": cfg.api_host,
            "blog": query.blog,
            "tag": query.tag,
            "since": cfg.since,
            "until": cfg.until,
            "include_reblogs": cfg.include_reblogs,
        },
        sort_keys=True,
    )


def read_paging(path: Path) -> dict[str, dict]:
    """Complete pagings by query key; unreadable or older state costs a full paging."""
    try:
        data = fileio.read_json(path)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != PAGING_VERSION:
        return {}
    return data.get("queries") or {}


def read_paging_log(path: Path) -> tuple[dict[str, dict], set[str]]:
    """The interrupted run's pagings in progress, and the queries it completed.

    Replayed from the log; a line cut by a kill is ignored.
    """
    partial: dict[str, dict] = {}
    done: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}, done
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        key = entry.get("query")
        if "start" in entry:
            partial[key] = {"stop_at": entry["start"], "before": None, "newest": None, "refs": []}
        elif "page" in entry and key in partial:
            page = entry["page"]
            state = partial[key]
            state["before"], state["newest"] = page["before"], page["newest"]
            state["refs"] += page["refs"]
        elif "done" in entry:
            partial.pop(key, None)
            done.add(key)
    return partial, done


def tumblr_refs(state: dict) -> list[tumblr.ImageRef]:
    return [tumblr.ImageRef.from_json(ref) for ref in state["refs"]]


@dataclass(frozen=True)
class Mark:
    """A post by id and timestamp: the newest of a paging, where the next one stops."""

    id: str
    timestamp: int

    @classmethod
    def of(cls, data: dict | None) -> Mark | None:
        return cls(str(data["id"]), int(data["timestamp"])) if data else None

    def json(self) -> dict:
        return {"id": self.id, "timestamp": self.timestamp}

    def reached_by(self, post_id: str, stamp: int) -> bool:
        """True for this post and every older one (the API pages newest first)."""
        return post_id == self.id or stamp < self.timestamp


def post_id(post: dict) -> str:
    return str(post.get("id_string") or post.get("id") or "")


def cursor_time(post: dict) -> int:
    """api.md /tagged: a featured tag pages by `featured_timestamp`, others by `timestamp`."""
    return tumblr._int(post.get("featured_timestamp") or post.get("timestamp"))


class QueryPaging:
    """One query's image refs, newest first, as the API pages them, resuming a paging log."""

    def __init__(
        self,
        api: tumblr.TumblrAPI,
        query: tt_config.TumblrQuery,
        complete: dict | None,
        partial: dict | None,
        log_page,
        cfg: tt_config.TumblrConfig,
    ):
        self.api, self.query, self.log_page = api, query, log_page
        self.since, self.until = tumblr.parse_date(cfg.since), tumblr.parse_date(cfg.until)
        self.include_reblogs = cfg.include_reblogs
        self.stop_at = Mark.of(complete["newest"]) if complete else None
        self.old_refs = tumblr_refs(complete) if complete else []
        if partial and Mark.of(partial["stop_at"]) != self.stop_at:
            partial = None  # begun against another complete paging: start afresh
        self.resumed = partial is not None
        self.before: int | None = partial["before"] if partial else None
        self.newest = Mark.of(partial["newest"]) if partial else None
        self.refs = tumblr_refs(partial) if partial else []
        self.pages = 0

    def wanted(self, post: dict) -> bool:
        """The config's date range and reblog setting.

        A reblog carries `parent_post_url` (api.md) or, in NPF, a reblog trail (npf-spec
        "Reblog Trail"); a legacy post's trail may hold the post itself, so it does not count.
        """
        stamp = tumblr._int(post.get("timestamp"))
        if self.until and stamp > self.until:
            return False
        return self.include_reblogs or not (
            post.get("reblogged_from_id")
            or post.get("parent_post_url")
            or (tumblr.is_npf(post) and post.get("trail"))
        )

    def state(self) -> dict:
        """The complete paging's state: the newest post and every ref, newest first."""
        newest = self.newest or self.stop_at
        return {
            "newest": newest and newest.json(),
            "refs": [ref.to_json() for ref in self.refs + self.old_refs],
        }

    def __iter__(self) -> Iterator[tumblr.ImageRef]:
        yield from self.refs
        if not self.resumed:
            self.log_page({"start": self.stop_at and self.stop_at.json()})
        seen = {ref.post_id for ref in self.refs}
        strict = False
        while True:
            posts = self.api.page(self.query, self.before)
            self.pages += 1
            fresh = [p for p in posts if post_id(p) not in seen]
            if not fresh:
                if len(posts) < tumblr.PAGE or strict:
                    break
                # A full page of posts already seen: many share one second; step past it.
                strict, self.before = True, min(cursor_time(p) for p in posts)
                continue
            strict, found, ended = False, [], False
            for post in fresh:
                seen.add(post_id(post))
                stamp = tumblr._int(post.get("timestamp"))
                if (self.stop_at and self.stop_at.reached_by(post_id(post), stamp)) or (
                    self.since and stamp < self.since
                ):
                    ended = True
                    break
                if self.newest is None or stamp > self.newest.timestamp:
                    self.newest = Mark(post_id(post), stamp)
                if self.wanted(post):
                    found += self.api_refs(post)
            # The oldest post's second again (+1): same-second posts cut by the page come back.
            self.before = min(cursor_time(p) for p in posts) + 1
            self.refs += found
            self.log_page(
                {
                    "page": {
                        "before": self.before,
                        "newest": self.newest and self.newest.json(),
                        "refs": [ref.to_json() for ref in found],
                    }
                }
            )
            yield from found
            if ended:
                break
        yield from self.old_refs

    def api_refs(self, post: dict) -> list[tumblr.ImageRef]:
        """A ref per image of the post; a post without one gives one empty ref (to list it)."""
        blog = post.get("blog") if isinstance(post.get("blog"), dict) else {}
        return [
            tumblr.ImageRef(
                blog=str(post.get("blog_name") or blog.get("name") or ""),
                post_id=post_id(post),
                post_url=str(post.get("post_url") or ""),
                timestamp=tumblr._int(post.get("timestamp")),
                tags=tuple(str(t) for t in post.get("tags") or ()),
                renditions=image,
            )
            for image in tumblr.post_images(post) or [()]
        ]


@dataclass(frozen=True)
class Chosen:
    ref: tumblr.ImageRef
    url: str
    rendition: str  # how the URL was chosen, for the manifest


class TumblrHarvest:
    """Page the class's queries and fetch the images the store lacks, overlapping the two.

    Steps: `page` each query (refs are fetched as they arrive, unless
    `max_images` needs every post's date first), `select` what to keep,
    `finish` the fetches, then `rows` for the manifest. Whatever stops the run,
    `save` keeps what was fetched and paged for the next one.
    """

    def __init__(
        self,
        cls: tt_config.ClassConfig,
        cfg: tt_config.TumblrConfig,
        image_store: store.ImageStore,
        resume: ResumeFiles,
        api: tumblr.TumblrAPI | None = None,
    ):
        self.cls, self.cfg, self.store, self.resume = cls, cfg, image_store, resume
        self.api = api or tumblr.TumblrAPI(cfg, tumblr.credentials_from_env())
        self.downloader = tumblr.Downloader(cfg)
        self.fetched = read_fetched(self.resume.fetched)
        saved = read_paging(self.resume.paging)
        self.partial, done = read_paging_log(self.resume.paging_log)
        # Queries the interrupted run this one resumes paged to their end, full paging or not.
        self.paged_before = {key: saved[key] for key in done if key in saved}
        self.complete = {} if cfg.full_paging else saved
        self.chosen: dict[str, Chosen] = {}
        self.skipped: list[tuple[str, str, str, str]] = []
        self.pending: dict[Future, str] = {}
        self.finished: queue.SimpleQueue[Future] = queue.SimpleQueue()
        self.successes = 0
        self.pool: ThreadPoolExecutor | None = None

    # -- steps ---------------------------------------------------------------------------------

    def run(self) -> tuple[list[store.ManifestRow], list[tuple[str, str, str, str]]]:
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as self.pool:
            try:
                for query in self.cls.tumblr:
                    self.page(query)
                self.select()
                self.finish()
            finally:
                self.save()
        self.resume.paging_log.unlink(missing_ok=True)  # every paging is complete
        return self.rows(), self.skipped

    def page(self, query: tt_config.TumblrQuery) -> None:
        key = query_key(query, self.cfg)
        if key in self.paged_before:
            # Paged to its end by the interrupted run this one resumes: no call needed.
            self.complete[key] = self.paged_before[key]
            for ref in tumblr_refs(self.paged_before[key]):
                self.take(ref)
            return
        paging = QueryPaging(
            self.api,
            query,
            self.complete.get(key),
            self.partial.get(key),
            lambda entry: self.append_log({"query": key, **entry}),
            self.cfg,
        )
        if paging.resumed:
            log.info("%s: resuming an interrupted paging", tumblr.describe(query))
        for ref in cli.progress(paging, f"posts {query.tag}", None, "images", log):
            self.take(ref)
            self.record_finished()
        log.info("%s: %d pages, %d images", tumblr.describe(query), paging.pages, len(paging.refs))
        # Only now is this query's paging complete: the next run may stop at its newest.
        self.complete[key] = paging.state()
        fileio.write_json(self.resume.paging, {"version": PAGING_VERSION, "queries": self.complete})
        self.append_log({"query": key, "done": True})

    def select(self) -> None:
        """With `max_images`, the newest images only, fetched once all posts are known."""
        if not self.cls.max_images:
            return
        for chosen in self.ordered()[: self.cls.max_images]:
            if self.needs_fetch(chosen.url):
                self.submit(chosen.url)

    def finish(self) -> None:
        log.info(
            "%s: %d images found, %d fetched while paging, %d to fetch; %d API calls",
            self.cls.name,
            len(self.chosen),
            self.successes,
            len(self.pending),
            self.api.calls,
        )
        self.record_finished()
        for _ in cli.progress(range(len(self.pending)), "images", len(self.pending), "images", log):
            self.record(self.finished.get())

    def save(self) -> None:
        """Keep what was fetched, whatever happened: the next run resumes from it."""
        for future in self.pending:
            future.cancel()
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        self.record_finished()
        write_fetched(self.resume.fetched, self.fetched)
        log.info("%s: %d Tumblr API calls made", self.cls.name, self.api.calls)

    def rows(self) -> list[store.ManifestRow]:
        rows = []
        for chosen in self.ordered()[: self.cls.max_images or None]:
            known = self.fetched.get(chosen.url)
            if known is None or known.get("skipped"):
                continue
            ref = chosen.ref
            rows.append(
                store.ManifestRow(
                    sha256=known["sha256"],
                    file=str(self.store.path_for(known["sha256"], known["ext"])),
                    source="tumblr",
                    blog=ref.blog,
                    post_id=ref.post_id,
                    post_url=ref.post_url,
                    image_url=chosen.url,
                    timestamp=str(ref.timestamp),
                    tags=",".join(ref.tags),
                    width=int(known["width"]),
                    height=int(known["height"]),
                    bytes=int(known["bytes"]),
                    rendition=chosen.rendition,
                )
            )
        return rows

    # -- helpers -------------------------------------------------------------------------------

    def append_log(self, entry: dict) -> None:
        # Appended, not rewritten: a page costs its own refs, however long the paging.
        self.resume.paging_log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.resume.paging_log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")

    def take(self, ref: tumblr.ImageRef) -> None:
        if not ref.renditions:
            reason = "the post has no image (no image block, photo or <img>)"
            self.skipped.append((ref.post_url, "tumblr", "no_image", reason))
            return
        rendition, how, reason = tumblr.choose(ref.renditions, tuple(self.cfg.media_hosts))
        if rendition is None:
            self.skipped.append((ref.renditions[0].url, "tumblr", reason, how))
            return
        known = self.chosen.get(rendition.url)
        # The same image in several posts: the newest post names it, whatever the order seen.
        if known and (known.ref.timestamp, known.ref.post_id) >= (ref.timestamp, ref.post_id):
            return
        self.chosen[rendition.url] = Chosen(ref, rendition.url, how)
        if known is None and not self.cls.max_images and self.needs_fetch(rendition.url):
            self.submit(rendition.url)

    def ordered(self) -> list[Chosen]:
        return sorted(self.chosen.values(), key=lambda c: (-c.ref.timestamp, c.url))

    def needs_fetch(self, url: str) -> bool:
        """Whether to fetch; remembered permanent skips are listed, not retried."""
        known = self.fetched.get(url)
        if known and known.get("skipped") and known["skipped"] not in RETRYABLE:
            self.skipped.append((url, "tumblr", known["skipped"], known.get("message", "")))
            return False
        return (
            not known
            or bool(known.get("skipped"))
            or not self.store.path_for(known["sha256"], known["ext"]).exists()
        )

    def submit(self, url: str) -> None:
        future = self.pool.submit(self.fetch, url)
        self.pending[future] = url
        future.add_done_callback(self.finished.put)

    def fetch(self, url: str) -> store.CheckedImage:
        checked, _ = self.store.put(self.downloader.fetch(url))
        return checked

    def record(self, future: Future) -> None:
        """Note one finished fetch in the resume state (in this thread only)."""
        url = self.pending.pop(future)
        try:
            checked = future.result()
        except store.RejectedImage as rejected:
            self.skipped.append((url, "tumblr", rejected.reason, str(rejected)))
            self.fetched[url] = {
                "image_url": url,
                "skipped": rejected.reason,
                "message": str(rejected),
            }
            return
        self.fetched[url] = {
            "image_url": url,
            "sha256": checked.sha256,
            "ext": checked.ext,
            "width": str(checked.width),
            "height": str(checked.height),
            "bytes": str(checked.bytes),
        }
        self.successes += 1
        if self.successes % FLUSH_EVERY == 0:
            write_fetched(self.resume.fetched, self.fetched)

    def record_finished(self) -> None:
        while True:
            try:
                future = self.finished.get_nowait()
            except queue.Empty:
                return
            if future in self.pending and not future.cancelled():
                self.record(future)
