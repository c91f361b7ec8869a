"""Tumblr posts to image URLs with pytumblr, politely; and image downloads, safely.

pytumblr hides the HTTP status and headers of API responses, which rate-limit
handling needs, so its request layer is subclassed (`HeaderAwareRequest`)
rather than the API re-implemented. Credentials come from the environment and
are never logged: error messages name the endpoint, never the URL (the API
key travels in the query string).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytumblr
import requests
from lxml import html as lxml_html
from pytumblr.request import TumblrRequest
from requests.adapters import HTTPAdapter
from tenacity import (
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from urllib3.util.retry import Retry

from . import cli
from . import config as tt_config
from .store import RejectedImage

log = logging.getLogger("tumbletrain.tumblr")

PAGE = 20
CREDENTIAL_VARIABLES = (
    "TUMBLR_CONSUMER_KEY",
    "TUMBLR_CONSUMER_SECRET",
    "TUMBLR_OAUTH_TOKEN",
    "TUMBLR_OAUTH_SECRET",
)


class RateLimited(cli.UserError):
    """The API's rate limit outlasts tumblr.max_wait_s; a re-run resumes."""


class ServerError(RuntimeError):
    """A 5xx or a broken connection: worth retrying."""


@dataclass(frozen=True)
class Credentials:
    consumer_key: str
    consumer_secret: str = ""
    oauth_token: str = ""
    oauth_secret: str = ""

    def __repr__(self) -> str:  # never print a secret, even by accident
        return "Credentials(<hidden>)"


@dataclass(frozen=True)
class ImageRef:
    image_url: str
    blog: str
    post_id: str
    post_url: str
    timestamp: int
    tags: tuple[str, ...]


@dataclass(frozen=True)
class PostMark:
    """The newest post of a query's last complete paging: an incremental paging stops there."""

    timestamp: int
    post_id: str

    def reached_by(self, post: dict) -> bool:
        """True for this post and every older one (the API pages newest first)."""
        return (
            str(post.get("id")) == self.post_id or int(post.get("timestamp") or 0) < self.timestamp
        )


def credentials_from_env(environ=os.environ) -> Credentials:
    key = environ.get("TUMBLR_CONSUMER_KEY", "").strip()
    if not key:
        raise cli.UserError(
            "TUMBLR_CONSUMER_KEY is not set: register an app at "
            "https://www.tumblr.com/oauth/apps and `export TUMBLR_CONSUMER_KEY=...` "
            "(add TUMBLR_CONSUMER_SECRET, TUMBLR_OAUTH_TOKEN and TUMBLR_OAUTH_SECRET for OAuth1)"
        )
    rest = [environ.get(name, "").strip() for name in CREDENTIAL_VARIABLES[1:]]
    # OAuth1 only when all four are set; otherwise plain API-key reads.
    return Credentials(key, *rest) if all(rest) else Credentials(key)


def wait_seconds(headers, now: float) -> float:
    """How long a 429 asks us to wait, from Retry-After or Tumblr's reset headers."""
    for name in ("Retry-After", "X-Ratelimit-Perhour-Reset", "X-Ratelimit-Perday-Reset"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = (
                    datetime.strptime(value, "%a, %d %b %Y %H:%M:%S GMT")
                    .replace(tzinfo=UTC)
                    .timestamp()
                    - now
                )
            except ValueError:
                continue
        return max(0.0, seconds)
    return 60.0


class HeaderAwareRequest(TumblrRequest):
    """pytumblr's request layer, with timeouts and the status and headers acted on."""

    def __init__(
        self, credentials: Credentials, host: str, timeout: float, max_wait: float, sleep=time.sleep
    ):
        super().__init__(
            credentials.consumer_key,
            credentials.consumer_secret,
            credentials.oauth_token,
            credentials.oauth_secret,
            host,
        )
        self.timeout = timeout
        self.max_wait = max_wait
        self.sleep = sleep
        self.session = requests.Session()
        if not credentials.consumer_secret:
            self.oauth = None  # API-key reads need no OAuth signature

    def get(self, url, params):
        endpoint = url
        url = self.host + url
        if params:
            url = url + "?" + urllib.parse.urlencode(params)
        while True:
            try:
                response = self.session.get(
                    url,
                    allow_redirects=False,
                    headers=self.headers,
                    auth=self.oauth,
                    timeout=self.timeout,
                )
            except requests.RequestException as error:
                raise ServerError(f"{endpoint}: {type(error).__name__}") from None
            if response.status_code == 429:
                wait = wait_seconds(response.headers, time.time())
                if wait > self.max_wait:
                    raise RateLimited(
                        f"Tumblr's rate limit resets in {wait:.0f} s, longer than "
                        f"tumblr.max_wait_s ({self.max_wait:.0f} s); what was fetched is kept: "
                        "re-run later to continue"
                    )
                log.info("rate limited on %s; waiting %.0f s", endpoint, wait)
                self.sleep(wait)
                continue
            if response.status_code >= 500:
                raise ServerError(f"{endpoint}: HTTP {response.status_code}")
            if response.status_code == 401:
                raise cli.UserError(
                    "Tumblr refused the credentials (HTTP 401); check "
                    "TUMBLR_CONSUMER_KEY (and the OAuth variables)"
                )
            if response.status_code == 404:
                raise cli.UserError(f"Tumblr has no such blog or endpoint: {endpoint}")
            return self.json_parse(response)


def _retrying(retries: int):
    return retry(
        retry=retry_if_exception_type(ServerError),
        stop=stop_after_attempt(retries + 1),
        wait=wait_exponential_jitter(multiplier=0.2, max=30),
        reraise=True,
    )


def widest(candidates: list[dict]) -> str | None:
    sized = [c for c in candidates if c.get("url")]
    if not sized:
        return None
    return max(sized, key=lambda c: (int(c.get("width") or 0), int(c.get("height") or 0)))["url"]


def srcset_largest(srcset: str) -> str | None:
    best, best_width = None, -1
    for part in srcset.split(","):
        bits = part.strip().split()
        if not bits:
            continue
        width = 0
        if len(bits) > 1 and bits[1].endswith("w"):
            try:
                width = int(bits[1][:-1])
            except ValueError:
                width = 0
        if width > best_width:
            best, best_width = bits[0], width
    return best


def html_images(markup: str) -> list[str]:
    """<img> sources in post HTML, the largest srcset rendition first."""
    if not markup or "<img" not in markup:
        return []
    try:
        tree = lxml_html.fromstring(markup)
    except (ValueError, lxml_html.etree.ParserError):
        return []
    urls = []
    for img in tree.iter("img"):
        url = srcset_largest(img.get("srcset", "")) or img.get("src")
        if url:
            urls.append(url)
    return urls


def npf_images(blocks: list[dict]) -> list[str]:
    return [
        url
        for block in blocks or []
        if block.get("type") == "image"
        for url in [widest(block.get("media") or [])]
        if url
    ]


def post_images(post: dict) -> list[str]:
    """Every image of a post: legacy photos, NPF blocks (also in the trail) and inline HTML."""
    urls: list[str] = []
    for photo in post.get("photos") or []:
        original = (photo.get("original_size") or {}).get("url")
        urls.append(original or widest(photo.get("alt_sizes") or []) or "")
    urls += npf_images(post.get("content"))
    for entry in post.get("trail") or []:
        urls += npf_images(entry.get("content"))
        urls += html_images(entry.get("content_raw") or "")
    for field in ("body", "caption"):
        urls += html_images(post.get(field) or "")
    urls += html_images((post.get("reblog") or {}).get("comment") or "")
    seen, unique = set(), []
    for url in urls:
        if url and url not in seen:
            seen.add(url)
            unique.append(url)
    return unique


def parse_date(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class TumblrSource:
    def __init__(self, cfg: tt_config.TumblrConfig, credentials: Credentials, sleep=time.sleep):
        self.cfg = cfg
        self.client = pytumblr.TumblrRestClient(credentials.consumer_key, host=cfg.api_host)
        self.client.request = HeaderAwareRequest(
            credentials, cfg.api_host, cfg.timeout_s, cfg.max_wait_s, sleep
        )
        self.call = _retrying(cfg.retries)(self._call)
        self.since = parse_date(cfg.since)
        self.until = parse_date(cfg.until)

    def _call(self, method, *args, **kwargs):
        data = getattr(self.client, method)(*args, **kwargs)
        meta = data.get("meta") if isinstance(data, dict) else None
        if meta and meta.get("status", 200) >= 500:
            raise ServerError(f"{method}: {meta.get('msg')}")
        if meta and meta.get("status", 200) >= 400:
            raise cli.UserError(
                f"Tumblr answered {meta.get('status')} {meta.get('msg')} to {method}"
            )
        return data

    def wanted(self, post: dict) -> bool:
        stamp = int(post.get("timestamp") or 0)
        if self.since and stamp < self.since:
            return False
        if self.until and stamp > self.until:
            return False
        return self.cfg.include_reblogs or not (
            post.get("reblogged_from_id") or post.get("parent_post_url")
        )

    def iter_posts(
        self, query: tt_config.TumblrQuery, stop_at: PostMark | None = None
    ) -> Iterator[dict]:
        """The query's posts, newest first; only those newer than `stop_at` when given."""
        seen: set[str] = set()
        if query.blog:
            offset = 0
            while True:
                data = self.call(
                    "posts", query.blog, tag=query.tag, offset=offset, limit=PAGE, reblog_info=True
                )
                posts = data.get("posts") or []
                if not posts:
                    return
                for post in posts:
                    if stop_at and stop_at.reached_by(post):
                        return
                    if str(post.get("id")) not in seen:
                        seen.add(str(post.get("id")))
                        yield post
                # Advance by what came back: pages are sometimes short.
                offset += len(posts)
                total = data.get("total_posts")
                if total is not None and offset >= int(total):
                    return
        else:
            before = None
            while True:
                kwargs = {"limit": PAGE}
                if before:
                    kwargs["before"] = before
                posts = self.call("tagged", query.tag, **kwargs)
                posts = posts if isinstance(posts, list) else posts.get("response", [])
                fresh = [p for p in posts if str(p.get("id")) not in seen]
                if not fresh:
                    return
                for post in fresh:
                    if stop_at and stop_at.reached_by(post):
                        return
                    seen.add(str(post.get("id")))
                    yield post
                last = posts[-1]
                before = last.get("featured_timestamp") or last.get("timestamp")
                if self.since and before and int(before) < self.since:
                    return

    def post_refs(self, post: dict, query: tt_config.TumblrQuery) -> list[ImageRef]:
        """The images of one post, none if the config does not want the post."""
        if not self.wanted(post):
            return []
        return [
            ImageRef(
                url,
                post.get("blog_name", query.blog or ""),
                str(post.get("id")),
                post.get("post_url", ""),
                int(post.get("timestamp") or 0),
                tuple(post.get("tags") or ()),
            )
            for url in post_images(post)
        ]

    def iter_image_refs(self, query: tt_config.TumblrQuery) -> Iterator[ImageRef]:
        for post in self.iter_posts(query):
            yield from self.post_refs(post, query)


class Downloader:
    """Images only over http(s), only from media_hosts, never more than max_image_mb."""

    def __init__(self, cfg: tt_config.TumblrConfig):
        self.cfg = cfg
        self.max_bytes = int(cfg.max_image_mb * 1024 * 1024)
        retry_policy = Retry(
            total=cfg.retries,
            connect=cfg.retries,
            read=cfg.retries,
            backoff_factor=0.2,
            backoff_jitter=0.2,
            status_forcelist=(429, 500, 502, 503, 504),
            respect_retry_after_header=True,
            allowed_methods=("GET",),
        )
        adapter = HTTPAdapter(max_retries=retry_policy, pool_maxsize=max(10, cfg.concurrency))
        self.session = requests.Session()
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def allowed(self, url: str) -> bool:
        parsed = urllib.parse.urlparse(url)
        host = parsed.hostname or ""
        return parsed.scheme in ("http", "https") and any(
            fnmatch.fnmatch(host, pattern) for pattern in self.cfg.media_hosts
        )

    def fetch(self, url: str) -> bytes:
        if not self.allowed(url):
            raise RejectedImage("host_not_allowed", "the image is not on a tumblr.media_hosts host")
        try:
            with self.session.get(url, stream=True, timeout=self.cfg.timeout_s) as response:
                if response.status_code >= 400:
                    raise RejectedImage("http_error", f"HTTP {response.status_code}")
                declared = int(response.headers.get("Content-Length") or 0)
                if declared > self.max_bytes:
                    raise RejectedImage("too_large", f"{declared} bytes > tumblr.max_image_mb")
                chunks, size = [], 0
                for chunk in response.iter_content(64 * 1024):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise RejectedImage("too_large", "more than tumblr.max_image_mb")
                    chunks.append(chunk)
                data = b"".join(chunks)
                if declared and len(data) != declared:
                    raise RejectedImage("truncated", f"{len(data)} of {declared} bytes arrived")
                return data
        except requests.exceptions.ChunkedEncodingError:
            raise RejectedImage("truncated", "the connection closed mid-image") from None
        except requests.RequestException as error:
            raise RejectedImage(
                "connection_failed", f"{type(error).__name__} after retries"
            ) from None
