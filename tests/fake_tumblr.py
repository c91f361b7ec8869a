"""A real HTTP server on 127.0.0.1 standing in for api.tumblr.com and Tumblr's media hosts.

It is an HTTP forward proxy: the harvest runs with `HTTP_PROXY` pointing here
and `tumblr.api_host: http://api.tumblr.com`, so requests name the real hosts
(`api.tumblr.com`, `64.media.tumblr.com`, the bare `media.tumblr.com`, a blog's
own domain) and the project's default `media_hosts` is what is tested.

Every object it serves is built from the fixtures in `tests/fixtures/tumblr/`,
each a documented example (api.md, npf-spec.md) or, where the docs are silent,
a shape real clients read from real responses; each file names its source.
Posts are built by copying a fixture and giving its media URLs a fresh key,
never by writing a post from memory. Adaptations, all of them:
- URLs are served as http:// (there is no TLS on 127.0.0.1);
- `/v2/tagged` has no documented response: as for every endpoint, `response`
  is endpoint-specific, here the array of posts (newest first, paged by
  `before`) that the parameters describe;
- NPF only with `npf=true` (api.md, "Important note" under /posts): without
  it, an NPF post is rendered as a legacy `text` post whose `body` holds each
  image block of the post and of its trail as `<img src srcset>` (the docs show
  no legacy rendering of NPF; this is the minimal one). Legacy posts are
  served as they are either way, so a page can hold both formats side by side.
Media are generated per URL (distinct bytes, format from the extension)
unless a test sets its own bytes, status, redirect or fault.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures" / "tumblr"
API_HOST = "api.tumblr.com"


def fixture(name: str) -> dict:
    """The documented example of a fixture file (a fresh copy)."""
    data = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return copy.deepcopy(data["example"])


def retarget(obj, old: str, new: str):
    """The same object with every occurrence of `old` in its strings replaced."""
    return json.loads(json.dumps(obj).replace(old, new))


def image_bytes(seed: int, fmt: str = "JPEG", size=(64, 48)) -> bytes:
    colour = ((seed * 67) % 256, (seed * 131) % 256, (seed * 29) % 256)
    image = Image.new("RGB", size, colour)
    for x in range(0, size[0], 7):
        image.putpixel((x, (x * seed) % size[1]), (255 - colour[0], 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def bomb_png() -> bytes:
    """A tiny PNG that declares 30000 x 30000 pixels: Pillow's bomb check must refuse it."""
    buffer = io.BytesIO()
    Image.new("1", (30000, 30000)).save(buffer, "PNG")
    return buffer.getvalue()


def url_image(url: str) -> tuple[bytes, str]:
    """Distinct image bytes for a media URL; GIF or PNG by its extension, JPEG otherwise."""
    seed = int(hashlib.sha256(url.encode()).hexdigest()[:6], 16)
    path = urllib.parse.urlsplit(url).path.lower()
    fmt, ctype = (
        ("GIF", "image/gif")
        if path.endswith(".gif")
        else ("PNG", "image/png")
        if path.endswith(".png")
        else ("JPEG", "image/jpeg")
    )
    return image_bytes(seed, fmt, (24 + seed % 40, 18 + seed % 30)), ctype


# -- posts from the fixtures ------------------------------------------------------------------

NPF_KEY = "b06fe71cc4ab47e93749df060ff54a90/tumblr_nshp8oVOnV1rg0s9xo1"


def npf_image(key: str, host: str = "69.media.tumblr.com", ext: str = "jpg") -> dict:
    """npf-spec's image block (1280, 540, 250) for an image of its own."""
    block = retarget(fixture("npf-image-block.json"), NPF_KEY, f"{key}/tumblr_{key}")
    block = retarget(block, "69.media.tumblr.com", host)
    return retarget(block, ".jpg", f".{ext}") if ext != "jpg" else block


def npf_gif(key: str) -> dict:
    """npf-spec's GIF block: one GIF rendition and a JPEG poster."""
    return retarget(fixture("npf-gif-block.json"), NPF_KEY, f"{key}/tumblr_{key}")


def npf_post(post_id: int, timestamp: int, tags: list[str], content: list, **fields) -> dict:
    """An NPF post: the documented post fields around `content` (layout and trail optional)."""
    post = fixture("npf-post.json")
    blog = fields.pop("blog_name", post["blog_name"])
    post.update(
        id=post_id,
        id_string=str(post_id),
        blog_name=blog,
        blog={"name": blog},
        post_url=f"https://{blog}.tumblr.com/post/{post_id}",
        timestamp=timestamp,
        tags=tags,
        content=content,
        **fields,
    )
    return post


def legacy_photo_post(post_id: int, timestamp: int, tags: list[str], keys: list[str], **fields):
    """api.md's legacy photo example (derekg), a photo per key; a photoset with several."""
    example = fixture("legacy-photo-post.json")
    photos = [
        retarget(example["photos"][0], "tumblr_lo36wbWqqq1qanqww", f"tumblr_{key}") for key in keys
    ]
    example.update(
        id=post_id, id_string=str(post_id), timestamp=timestamp, tags=tags, photos=photos, **fields
    )
    example["post_url"] = f"https://derekg.org/post/{post_id}"
    return example


def legacy_post(name: str, post_id: int, timestamp: int, tags: list[str], **fields) -> dict:
    """A legacy example of another type (text, link, quote, answer) with its own id and fields."""
    post = fixture(name)
    post.update(id=post_id, id_string=str(post_id), timestamp=timestamp, tags=tags, **fields)
    return post


def legacy_trail_item(name: str, post_id: str, html: str) -> dict:
    """The legacy trail item real responses carry: content and content_raw are HTML strings."""
    item = fixture("legacy-trail-item.json")
    item["blog"]["name"], item["post"]["id"] = name, post_id
    item["content"] = item["content_raw"] = html
    return item


def img_html(key: str, host: str = "64.media.tumblr.com") -> str:
    """An inline image as post HTML carries it: a small src and a srcset up to 1280w."""
    base = f"https://{host}/{key}/tumblr_inline_{key}"
    return (
        f'<figure class="tmblr-full"><img src="{base}_500.jpg" '
        f'srcset="{base}_250.jpg 250w, {base}_500.jpg 500w, {base}_1280.jpg 1280w"/></figure>'
    )


def legacy_rendering(post: dict) -> dict:
    """An NPF post as a legacy text post (see the module docstring), for requests without npf."""
    if post.get("type") != "blocks":
        return post
    blocks = list(post.get("content") or [])
    for item in post.get("trail") or []:
        blocks += item.get("content") or []
    html = []
    for block in blocks:
        if block.get("type") == "image" and block.get("media"):
            media = block["media"]
            srcset = ", ".join(f"{m['url']} {m['width']}w" for m in media)
            html.append(f'<figure><img src="{media[-1]["url"]}" srcset="{srcset}"/></figure>')
        elif block.get("type") == "text":
            html.append(f"<p>{block.get('text', '')}</p>")
    legacy = {k: v for k, v in post.items() if k not in ("content", "layout", "trail")}
    legacy.update(type="text", body="".join(html), title=None)
    return legacy


# -- the server -------------------------------------------------------------------------------


@dataclass
class Faults:
    rate_limit: str | None = None  # "hourly" or "daily": API calls answer 429 ...
    rate_limit_after: int = 0  # ... after this many answered calls
    rate_limit_times: int = 1  # ... this many times (daily: until cleared)
    rate_limit_reset_s: int = 1
    server_errors: int = 0  # this many API calls answer 503 first
    dropped_connections: int = 0  # this many media requests are cut off
    api_dropped: int = 0  # this many API calls: the socket closed without an answer
    api_redirect: str | None = None  # API calls answer 301 to this URL (+ the query)
    truncate: set[str] = field(default_factory=set)  # media URLs sent half
    latency_s: float = 0.0  # added to every request
    api_latency_s: float = 0.0
    slow_media_s: float = 0.0
    ignore_npf: bool = False  # answer as if npf=true had not been asked
    answered: int = 0  # API calls answered since these faults were set


@dataclass(frozen=True)
class Request:
    host: str
    path: str
    query: tuple[tuple[str, str], ...]

    @property
    def url(self) -> str:
        return f"http://{self.host}{self.path}"

    def params(self) -> dict[str, str]:
        return {k: v for k, v in self.query if k != "api_key"}


class FakeTumblr:
    def __init__(self, api_key: str = "test-key-not-a-secret"):
        self.api_key = api_key
        self.faults = Faults()
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.blogs: dict[str, list[dict]] = {}  # blog identifier -> posts, newest first
        self.tagged: dict[str, list[dict]] = {}
        self.blog_errors: dict[str, tuple[int, str]] = {}  # blog -> (status, msg)
        self.meta_errors: dict[str, tuple[int, str]] = {}  # the error inside an HTTP 200
        self.media: dict[str, tuple[bytes, str]] = {}  # URL -> own bytes
        self.media_status: dict[str, int] = {}
        self.redirects: dict[str, str] = {}  # URL -> Location
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        server.daemon_threads = True
        self.server = server
        self.port = server.server_address[1]
        self.thread = threading.Thread(target=server.serve_forever, daemon=True)

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a process needs to reach the fake as Tumblr."""
        return {"HTTP_PROXY": self.proxy, "http_proxy": self.proxy, "NO_PROXY": "", "no_proxy": ""}

    def start(self) -> FakeTumblr:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def api_requests(self) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.host == API_HOST]

    def media_requests(self) -> list[str]:
        with self.lock:
            return [r.url for r in self.requests if r.host != API_HOST]

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def send(self, status: int, body: bytes, content_type: str, headers=None):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def api(self, status: int, response, msg: str = "OK", headers=None, http=None):
                body = fixture("envelope.json")["ok" if status < 400 else "error"]
                body["meta"] = {"status": status, "msg": msg}
                body["response"] = response
                if status < 400:
                    body.pop("errors", None)
                else:
                    body["errors"][0].update(title=msg, detail=msg)
                data = json.dumps(body).replace("https://", "http://").encode()
                self.send(http or status, data, "application/json", headers)

            def do_GET(self):  # noqa: N802 (the http.server API)
                parsed = urllib.parse.urlsplit(self.path)
                host = parsed.hostname or self.headers.get("Host", "").split(":")[0]
                query = urllib.parse.parse_qsl(parsed.query)
                with fake.lock:
                    fake.requests.append(Request(host, parsed.path, tuple(query)))
                if fake.faults.latency_s:
                    time.sleep(fake.faults.latency_s)
                if host != API_HOST:
                    return self.media(f"http://{host}{parsed.path}")
                if fake.faults.api_latency_s:
                    time.sleep(fake.faults.api_latency_s)
                return self.api_call(parsed.path, dict(query))

            def api_call(self, path, query):
                with fake.lock:
                    if fake.faults.api_dropped > 0:
                        fake.faults.api_dropped -= 1
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return None
                if fake.faults.api_redirect:
                    location = f"{fake.faults.api_redirect}?{urllib.parse.urlencode(query)}"
                    return self.send(301, b"", "text/plain", {"Location": location})
                if query.get("api_key") != fake.api_key and "Authorization" not in self.headers:
                    return self.api(401, [], "Unauthorized")
                with fake.lock:
                    limited = self.rate_limited()
                    if limited:
                        return self.api(429, [], "Limit Exceeded", limited)
                    if fake.faults.server_errors > 0:
                        fake.faults.server_errors -= 1
                        return self.api(503, [], "Service Unavailable")
                    fake.faults.answered += 1
                npf = query.get("npf") == "true" and not fake.faults.ignore_npf
                before = int(query.get("before", 2**62))
                limit = min(int(query.get("limit", 20)), 20)
                parts = path.strip("/").split("/")
                if path == "/v2/tagged":
                    posts = fake.tagged.get(query.get("tag", ""), [])
                    page = self.page(posts, before, limit, npf, "featured_timestamp")
                    return self.api(200, page)
                if len(parts) == 4 and parts[:2] == ["v2", "blog"] and parts[3] == "posts":
                    blog = parts[2]
                    if blog in fake.blog_errors:
                        status, msg = fake.blog_errors[blog]
                        return self.api(status, [], msg)
                    if blog in fake.meta_errors:
                        status, msg = fake.meta_errors[blog]
                        return self.api(status, [], msg, http=200)
                    if blog not in fake.blogs:
                        return self.api(404, [], "Not Found")
                    tag = query.get("tag")
                    posts = [p for p in fake.blogs[blog] if not tag or tag in p.get("tags", [])]
                    page = self.page(posts, before, limit, npf, "timestamp")
                    blog_info = {"name": blog.split(".")[0], "url": f"https://{blog}/"}
                    return self.api(
                        200, {"blog": blog_info, "posts": page, "total_posts": len(posts)}
                    )
                return self.api(404, [], "Not Found")

            def page(self, posts, before, limit, npf, stamp):
                older = [p for p in posts if int(p.get(stamp) or p["timestamp"]) < before]
                return [p if npf else legacy_rendering(p) for p in older[:limit]]

            def rate_limited(self):
                faults = fake.faults
                if not faults.rate_limit or faults.answered < faults.rate_limit_after:
                    return None
                if faults.rate_limit_times <= 0:
                    return None
                faults.rate_limit_times -= 1
                headers = fixture("rate-limit-headers.json")[f"{faults.rate_limit}_spent"]
                kind = "Perday" if faults.rate_limit == "daily" else "Perhour"
                headers[f"X-Ratelimit-{kind}-Reset"] = str(faults.rate_limit_reset_s)
                return headers

            def media(self, url):
                if fake.faults.slow_media_s:
                    time.sleep(fake.faults.slow_media_s)
                with fake.lock:
                    if fake.faults.dropped_connections > 0:
                        fake.faults.dropped_connections -= 1
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return None
                if url in fake.redirects:
                    return self.send(302, b"", "text/plain", {"Location": fake.redirects[url]})
                if url in fake.media_status:
                    return self.send(fake.media_status[url], b"no", "text/plain")
                data, content_type = fake.media.get(url) or url_image(url)
                if url in fake.faults.truncate:
                    self.send_response(200)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.close_connection = True
                    return None
                return self.send(200, data, content_type)

        return Handler
