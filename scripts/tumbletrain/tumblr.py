"""Tumblr posts to image renditions, through pytumblr; and image downloads, through `net`.

Every call that returns posts asks for the Neue Post Format (`npf=true`,
api.md "/posts – Retrieve Published Posts"), through pytumblr's generic
`send_api_request` with the documented parameters (pytumblr 0.1.2's
`tagged()` refuses `npf`). pytumblr's request layer is replaced by
`NetRequest`, which sends through `net.Net` (retries, rate limits, timeouts)
and turns an error status into `ApiError`.

Two parsers read posts, and the format is decided per object from its
documented shape, never mixed within one parser:
- NPF (npf-spec.md): a post with `type: blocks` or a `content` list; a trail
  item whose `content` is a list. Image blocks anywhere in `content`, whatever
  the `layout` (rows, ask); each block's `media` renditions.
- legacy (api.md "Legacy ... Posts"): `photos[]` (`original_size`,
  `alt_sizes`), and `<img src srcset>` in the HTML fields; a legacy trail item
  carries `content`/`content_raw` as HTML strings.

Credentials come from the environment and are never logged: messages name
the host and the query, never the URL (the API key travels in its query).
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import pytumblr
from lxml import etree
from lxml import html as lxml_html
from pytumblr.request import TumblrRequest

from . import cli, net
from . import config as tt_config
from .store import RejectedImage

log = logging.getLogger("tumbletrain.tumblr")

PAGE = 20  # the documented maximum of `limit`
USER_AGENT = "tumbletrain/0.1 (pytumblr 0.1.2)"  # api.md: one consistent User-Agent
CREDENTIAL_VARIABLES = (
    "TUMBLR_CONSUMER_KEY",
    "TUMBLR_CONSUMER_SECRET",
    "TUMBLR_OAUTH_TOKEN",
    "TUMBLR_OAUTH_SECRET",
)
# Legacy fields that hold post HTML (api.md "Legacy Text/Photo/Quote/Link/Answer Posts").
LEGACY_HTML_FIELDS = ("body", "caption", "text", "source", "description", "question", "answer")
# npf-spec "Media Objects": the dimensions a media object has when its own are unknown.
DEFAULT_WIDTH, DEFAULT_HEIGHT = 540, 405


@dataclass(frozen=True)
class Credentials:
    consumer_key: str
    consumer_secret: str = ""
    oauth_token: str = ""
    oauth_secret: str = ""

    def __repr__(self) -> str:  # never print a secret, even by accident
        return "Credentials(<hidden>)"


def credentials_from_env(environ=os.environ) -> Credentials:
    key = environ.get("TUMBLR_CONSUMER_KEY", "").strip()
    if not key:
        raise cli.UserError(
            "TUMBLR_CONSUMER_KEY is not set: register an app at "
            "https://www.tumblr.com/oauth/apps and `export TUMBLR_CONSUMER_KEY=...` "
            "(add TUMBLR_CONSUMER_SECRET, TUMBLR_OAUTH_TOKEN and TUMBLR_OAUTH_SECRET for OAuth1)"
        )
    rest = [environ.get(name, "").strip() for name in CREDENTIAL_VARIABLES[1:]]
    for secret in (key, *rest):
        cli.register_secret(secret)
    # OAuth1 only when all four are set; otherwise plain API-key reads.
    return Credentials(key, *rest) if all(rest) else Credentials(key)


# -- posts to images --------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendition:
    url: str
    width: int = 0
    height: int = 0

    @property
    def pixels(self) -> int:
        return self.width * self.height if self.height else self.width


Image = tuple[Rendition, ...]  # one image's renditions, the largest first


def _int(value, default: int = 0) -> int:
    """A post's number, or `default` for anything else: JSON's 1e400 is an infinite float
    (OverflowError), NaN a ValueError; a dimension only ranks renditions, the image's
    own bytes are checked when it is fetched."""
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default


def largest_first(renditions: list[Rendition], prefer=()) -> Image:
    """Sorted by pixels, larger first; ties keep `prefer`red (original-size) ones first."""
    unique = {r.url: r for r in reversed(renditions) if r.url}
    return tuple(sorted(unique.values(), key=lambda r: (-r.pixels, r.url not in prefer, r.url)))


def npf_media(block: dict) -> Image:
    """An image block's renditions (npf-spec "Content Block Type: Image"); posters are not."""
    media = block.get("media")
    media = [media] if isinstance(media, dict) else media if isinstance(media, list) else []
    renditions, originals = [], set()
    for item in media:
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            continue
        missing = item.get("original_dimensions_missing")
        width = DEFAULT_WIDTH if missing else _int(item.get("width"), DEFAULT_WIDTH)
        height = DEFAULT_HEIGHT if missing else _int(item.get("height"), DEFAULT_HEIGHT)
        renditions.append(Rendition(item["url"], width, height))
        if item.get("has_original_dimensions"):
            originals.add(item["url"])
    return largest_first(renditions, originals)


def npf_images(blocks) -> list[Image]:
    """Every image block of an NPF `content` list; `layout` (rows, ask) only arranges them."""
    if not isinstance(blocks, list):
        return []
    found = [
        npf_media(block)
        for block in blocks
        if isinstance(block, dict) and block.get("type") == "image"
    ]
    return [image for image in found if image]


def srcset(value: str) -> list[Rendition]:
    renditions = []
    for part in value.split(","):
        bits = part.split()
        if bits:
            width = bits[1][:-1] if len(bits) > 1 and bits[1].endswith("w") else 0
            renditions.append(Rendition(bits[0], _int(width)))
    return renditions


def html_images(markup) -> list[Image]:
    """`<img>` elements of post HTML, each with its `src` and `srcset` renditions."""
    if not isinstance(markup, str) or "<img" not in markup.lower():
        return []
    try:
        tree = lxml_html.fromstring(markup)
    except (ValueError, etree.ParserError):
        return []
    images = []
    for img in tree.iter("img"):
        src = img.get("src")
        renditions = srcset(img.get("srcset") or "")
        if src:
            renditions.append(Rendition(src, _int(img.get("width"))))
        image = largest_first(renditions)
        if image:
            images.append(image)
    return images


def legacy_photo(photo: dict) -> Image:
    """A legacy photo object: `original_size` and its `alt_sizes` (api.md, Legacy Photo/Link)."""
    original = photo.get("original_size") if isinstance(photo.get("original_size"), dict) else {}
    sizes = [original, *(photo.get("alt_sizes") or [])]
    renditions = [
        Rendition(s["url"], _int(s.get("width")), _int(s.get("height")))
        for s in sizes
        if isinstance(s, dict) and isinstance(s.get("url"), str)
    ]
    return largest_first(renditions, {original.get("url")})


def legacy_images(post: dict) -> list[Image]:
    images = [legacy_photo(p) for p in post.get("photos") or [] if isinstance(p, dict)]
    for field in LEGACY_HTML_FIELDS:
        images += html_images(post.get(field))
    reblog = post.get("reblog")
    if isinstance(reblog, dict):  # reblog_info's legacy reblog object
        images += html_images(reblog.get("comment")) + html_images(reblog.get("tree_html"))
    return [image for image in images if image]


def is_npf(post: dict) -> bool:
    """api.md "Neue Post Format (NPF) Posts": `type: blocks`, or the `content` list."""
    return post.get("type") == "blocks" or isinstance(post.get("content"), list)


def trail_images(item) -> list[Image]:
    """One reblog trail item: NPF (content is a list, npf-spec "Reblog Trail", broken or not)
    or legacy (content and content_raw are HTML strings)."""
    if not isinstance(item, dict):
        return []
    if isinstance(item.get("content"), list):
        return npf_images(item["content"])
    return html_images(item.get("content")) + html_images(item.get("content_raw"))


def post_images(post: dict) -> list[Image]:
    """Every image of a post and of its reblog trail, once each (by its largest rendition)."""
    images = npf_images(post.get("content")) if is_npf(post) else legacy_images(post)
    for item in post.get("trail") or []:
        images += trail_images(item)
    seen, unique = set(), []
    for image in images:
        if image[0].url not in seen:
            seen.add(image[0].url)
            unique.append(image)
    return unique


def choose(image: Image, media_hosts: tuple[str, ...]) -> tuple[Rendition | None, str, str]:
    """The largest rendition on an allowed host, how it was chosen (for the manifest), and
    the skip reason when none is: `ambiguous_url` (net.url_host) or `host_not_allowed`."""
    refusals: dict[str, net.Refused] = {}
    for rendition in image:
        try:
            host = net.url_host(rendition.url)
        except net.Refused as refused:
            refusals[rendition.url] = refused
            continue
        if not net.host_allowed(host, media_hosts):
            continue
        if rendition is image[0]:
            return rendition, "largest", ""
        top = image[0]
        why = (
            f"refused: {refusals[top.url]}"
            if top.url in refusals
            else f"on {net.url_host(top.url)} is not in tumblr.media_hosts"
        )
        return rendition, f"largest allowed: {top.width}x{top.height} {why}", ""
    if image and image[0].url in refusals:
        return None, str(refusals[image[0].url]), refusals[image[0].url].reason
    return None, "no rendition on a tumblr.media_hosts host", "host_not_allowed"


@dataclass(frozen=True)
class ImageRef:
    """One image of one post, with every rendition the response named."""

    blog: str
    post_id: str
    post_url: str
    timestamp: int
    tags: tuple[str, ...]
    renditions: Image

    def to_json(self) -> dict:
        data = asdict(self)
        data["tags"] = list(self.tags)
        data["renditions"] = [asdict(r) for r in self.renditions]
        return data

    @classmethod
    def from_json(cls, data: dict) -> ImageRef:
        return cls(
            blog=data["blog"],
            post_id=data["post_id"],
            post_url=data["post_url"],
            timestamp=int(data["timestamp"]),
            tags=tuple(data["tags"]),
            renditions=tuple(Rendition(**r) for r in data["renditions"]),
        )


def parse_date(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def describe(query: tt_config.TumblrQuery) -> str:
    if query.blog:
        return f"tag {query.tag!r} on blog {query.blog}"
    return f"tag {query.tag!r} (site-wide, /v2/tagged)"


# -- the API ----------------------------------------------------------------------------------


class ApiError(Exception):
    """An error status, from HTTP or from `meta.status` in a 200 (api.md "Response Format")."""

    def __init__(self, status: int, msg: str, detail: str = ""):
        super().__init__(f"HTTP {status} {msg}")
        self.status, self.msg, self.detail = status, msg, detail


def api_status(data, status: int, reason: str) -> tuple[int, str, str]:
    """Status, message and first error detail; `meta` wins (a JSONP-style 200 carries errors)."""
    if not isinstance(data, dict):
        return status, reason, ""
    meta = data["meta"] if isinstance(data.get("meta"), dict) else {}
    response = data["response"] if isinstance(data.get("response"), dict) else {}
    errors = data.get("errors") or response.get("errors")
    detail = ""
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        detail = str(errors[0].get("detail") or errors[0].get("title") or "")
    meta_status = _int(meta.get("status"), status)
    return max(status, meta_status), str(meta.get("msg") or reason), detail


class NetRequest(TumblrRequest):
    """pytumblr's request layer, sending through `net.Net` and raising on error statuses."""

    def __init__(self, credentials: Credentials, host: str, client: net.Net):
        super().__init__(
            credentials.consumer_key,
            credentials.consumer_secret,
            credentials.oauth_token,
            credentials.oauth_secret,
            host,
        )
        self.net = client
        self.headers = {"User-Agent": USER_AGENT}
        if not credentials.consumer_secret:
            self.oauth = None  # API-key reads need no OAuth signature

    def get(self, url, params):
        full = self.host + url + ("?" + urllib.parse.urlencode(params) if params else "")
        response = self.net.get(full, headers=self.headers, auth=self.oauth, follow=False)
        with response:
            try:
                data = response.json()
            except ValueError:
                data = None
        status = response.status_code
        if status == 429:  # still limited after every wait the retries allow
            host = net.url_host(full)
            net.rate_limit_wait(response.headers, host, float("inf"), self.net.clock())
            raise net.RateLimited(
                f"{host}: still rate limited (HTTP 429) after {self.net.policy.retries} waits. "
                "What was fetched is kept: re-run to resume later"
            )
        if not isinstance(data, dict):
            raise ApiError(max(status, 502), "not an API response (no JSON)")
        status, msg, detail = api_status(data, status, response.reason or "")
        if status >= 300:
            raise ApiError(status, msg, detail)
        return data.get("response")


class TumblrAPI:
    """The two endpoints the harvest reads, in NPF, one page per call."""

    def __init__(self, cfg: tt_config.TumblrConfig, credentials: Credentials):
        policy = net.Policy(timeout_s=cfg.timeout_s, retries=cfg.retries, max_wait_s=cfg.max_wait_s)
        self.net = net.Net(policy)
        self.retries = cfg.retries
        self.client = pytumblr.TumblrRestClient(
            credentials.consumer_key,
            credentials.consumer_secret,
            credentials.oauth_token,
            credentials.oauth_secret,
            host=cfg.api_host.rstrip("/"),
        )
        self.client.request = NetRequest(credentials, cfg.api_host.rstrip("/"), self.net)

    @property
    def calls(self) -> int:
        """HTTP answers received from the API so far (each counts against the budget)."""
        return self.net.requests

    def page(self, query: tt_config.TumblrQuery, before: int | None) -> list[dict]:
        """One page of the query's posts, newest first, older than `before` when given."""
        params: dict = {"tag": query.tag, "limit": PAGE, "npf": "true"}
        if before is not None:
            params["before"] = before
        if query.blog:
            endpoint = f"/v2/blog/{query.blog}/posts"
            params["reblog_info"] = "true"
            valid = ["tag", "limit", "before", "npf", "reblog_info"]
        else:
            endpoint = "/v2/tagged"
            valid = ["tag", "limit", "before", "npf"]
        try:
            data = self.client.send_api_request("get", endpoint, params, valid, True)
        except ApiError as error:
            raise cli.UserError(self.explain(error, query)) from None
        except net.Unreachable as error:
            raise cli.UserError(
                f"{error}; check the network connection (and tumblr.api_host), "
                "then re-run to resume"
            ) from None
        except net.Refused as refused:
            raise cli.UserError(
                f"tumblr.api_host {self.client.request.host!r}: {refused}; it must be an http(s) "
                "URL such as https://api.tumblr.com"
            ) from None
        posts = data.get("posts") if isinstance(data, dict) else data
        return [p for p in posts if isinstance(p, dict)] if isinstance(posts, list) else []

    def explain(self, error: ApiError, query: tt_config.TumblrQuery) -> str:
        what = describe(query)
        detail = f" ({error.detail})" if error.detail else ""
        if error.status == 401:
            return (
                f"Tumblr refused the credentials (HTTP 401 {error.msg}) for {what}: check "
                "TUMBLR_CONSUMER_KEY (and, for OAuth1, the three other TUMBLR_ variables)"
            )
        if error.status == 403 or "dashboard" in error.detail:
            return (
                f"{what}: the blog can only be read when logged in (HTTP {error.status} "
                f"{error.msg}){detail}: set TUMBLR_CONSUMER_SECRET, TUMBLR_OAUTH_TOKEN and "
                "TUMBLR_OAUTH_SECRET of an account that can see it, or remove the query"
            )
        if error.status == 404:
            return (
                f"{what}: Tumblr has no such blog (HTTP 404 {error.msg}){detail}: fix `blog:` "
                "in the config (a blog name like staff, or a host like staff.tumblr.com)"
            )
        if error.status >= 500:
            return (
                f"{what}: Tumblr answered HTTP {error.status} {error.msg} after "
                f"{self.retries} retries; re-run later to resume"
            )
        return f"{what}: Tumblr answered HTTP {error.status} {error.msg}{detail}"


class Downloader:
    """Images only over http(s), only from media_hosts (every redirect hop), size-capped."""

    def __init__(self, cfg: tt_config.TumblrConfig):
        self.max_bytes = int(cfg.max_image_mb * 1024 * 1024)
        policy = net.Policy(
            timeout_s=cfg.timeout_s,
            retries=cfg.retries,
            max_wait_s=cfg.max_wait_s,
            allowed_hosts=tuple(cfg.media_hosts),
            pool=max(10, cfg.concurrency),
        )
        self.net = net.Net(policy)

    def fetch(self, url: str) -> bytes:
        try:
            with self.net.get(url, stream=True) as response:
                if response.status_code >= 400:
                    raise RejectedImage("http_error", f"HTTP {response.status_code}")
                return net.Net.read_capped(response, self.max_bytes)
        except net.Refused as refused:
            raise RejectedImage(refused.reason, str(refused)) from None
        except net.Truncated as truncated:
            raise RejectedImage("truncated", str(truncated)) from None
        except net.Unreachable as error:
            raise RejectedImage("connection_failed", str(error)) from None
