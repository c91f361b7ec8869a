"""A real HTTP server on 127.0.0.1 standing in for Tumblr's API and media hosts.

It serves /v2/blog/{blog}/posts, /v2/tagged and /media/{name} from fixture
posts with the real API's shapes (legacy photo posts with photosets, NPF posts
with a trail, text posts with inline <img srcset>, reblogs, GIFs), and has
switches for the faults real harvests meet. Images are served from
http://127.0.0.1:PORT/media/..., so test configs set media_hosts: ["127.0.0.1"].
"""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


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


@dataclass
class Faults:
    rate_limit_once: bool = False  # the first API call answers 429 with reset headers
    rate_limit_reset_s: int = 1
    server_errors: int = 0  # this many API calls answer 503 first
    dropped_connections: int = 0  # this many media requests are cut off
    truncate: set[str] = field(default_factory=set)  # media names sent half
    latency_s: float = 0.0  # added to every request
    slow_media_s: float = 0.0


class FakeTumblr:
    def __init__(self, api_key: str = "test-key-not-a-secret"):
        self.api_key = api_key
        self.faults = Faults()
        self.requests: list[str] = []
        self.lock = threading.Lock()
        self.media: dict[str, tuple[bytes, str]] = {}
        self.blog_posts: dict[tuple[str, str], list[dict]] = {}
        self.tagged_posts: dict[str, list[dict]] = {}
        self.page_sizes: list[int] | None = None  # short pages, as the real API sends
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        server.daemon_threads = True
        self.server = server
        self.port = server.server_address[1]
        self.thread = threading.Thread(target=server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def media_url(self, name: str) -> str:
        return f"{self.base}/media/{name}"

    def start(self) -> FakeTumblr:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def image_requests(self) -> list[str]:
        with self.lock:
            return [p for p in self.requests if p.startswith("/media/")]

    def add_media(self, name: str, data: bytes, content_type: str = "image/jpeg") -> str:
        self.media[name] = (data, content_type)
        return self.media_url(name)

    # -- fixtures with the real API's shapes ------------------------------------------------

    def legacy_photo_post(
        self, post_id: int, blog: str, names: list[str], tags: list[str], timestamp: int, **extra
    ) -> dict:
        photos = []
        for name in names:
            url = self.media_url(name)
            photos.append(
                {
                    "caption": "",
                    "original_size": {"url": url, "width": 1280, "height": 960},
                    "alt_sizes": [
                        {"url": url.replace(name, f"small_{name}"), "width": 250, "height": 188}
                    ],
                }
            )
        return {
            "id": post_id,
            "id_string": str(post_id),
            "type": "photo",
            "blog_name": blog,
            "post_url": f"https://{blog}/post/{post_id}",
            "timestamp": timestamp,
            "tags": tags,
            "photos": photos,
            "caption": "",
            **extra,
        }

    def npf_post(
        self,
        post_id: int,
        blog: str,
        name: str,
        trail_name: str | None,
        tags: list[str],
        timestamp: int,
    ) -> dict:
        def block(n):
            return {
                "type": "image",
                "media": [
                    {"url": self.media_url(f"small_{n}"), "width": 400, "height": 300},
                    {"url": self.media_url(n), "width": 2048, "height": 1536},
                ],
            }

        trail = [{"content": [block(trail_name)], "blog": {"name": "other"}}] if trail_name else []
        return {
            "id": post_id,
            "type": "blocks",
            "blog_name": blog,
            "post_url": f"https://{blog}/post/{post_id}",
            "timestamp": timestamp,
            "tags": tags,
            "content": [{"type": "text", "text": "hi"}, block(name)],
            "trail": trail,
        }

    def text_post(
        self, post_id: int, blog: str, name: str, tags: list[str], timestamp: int
    ) -> dict:
        big, small = self.media_url(name), self.media_url(f"small_{name}")
        body = (
            f'<p>look</p><figure><img src="{small}" srcset="{small} 400w, {big} 1280w" '
            f'data-orig-width="1280"></figure>'
        )
        return {
            "id": post_id,
            "type": "text",
            "blog_name": blog,
            "body": body,
            "post_url": f"https://{blog}/post/{post_id}",
            "timestamp": timestamp,
            "tags": tags,
        }

    # -- the HTTP side ----------------------------------------------------------------------

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

            def api(self, status: int, response, headers=None):
                body = json.dumps(
                    {
                        "meta": {"status": status, "msg": "OK" if status == 200 else "error"},
                        "response": response,
                    }
                ).encode()
                self.send(status, body, "application/json", headers)

            def do_GET(self):  # noqa: N802 (the http.server API)
                parsed = urllib.parse.urlparse(self.path)
                query = dict(urllib.parse.parse_qsl(parsed.query))
                with fake.lock:
                    fake.requests.append(parsed.path)
                if fake.faults.latency_s:
                    time.sleep(fake.faults.latency_s)
                if parsed.path.startswith("/media/"):
                    return self.media(parsed.path[len("/media/") :])
                if query.get("api_key") != fake.api_key and "Authorization" not in self.headers:
                    return self.api(401, [])
                with fake.lock:
                    if fake.faults.rate_limit_once:
                        fake.faults.rate_limit_once = False
                        return self.api(
                            429,
                            [],
                            {"X-Ratelimit-Perhour-Reset": str(fake.faults.rate_limit_reset_s)},
                        )
                    if fake.faults.server_errors > 0:
                        fake.faults.server_errors -= 1
                        return self.api(503, [])
                if parsed.path == "/v2/tagged":
                    return self.tagged(query)
                parts = parsed.path.strip("/").split("/")
                if len(parts) == 4 and parts[:2] == ["v2", "blog"] and parts[3] == "posts":
                    return self.posts(parts[2], query)
                return self.api(404, [])

            def posts(self, blog, query):
                posts = fake.blog_posts.get((blog, query.get("tag", "")))
                if posts is None:
                    return self.api(404, [])
                offset, limit = int(query.get("offset", 0)), int(query.get("limit", 20))
                if fake.page_sizes:
                    limit = min(limit, fake.page_sizes[(offset // 3) % len(fake.page_sizes)])
                page = posts[offset : offset + limit]
                return self.api(
                    200, {"blog": {"name": blog}, "posts": page, "total_posts": len(posts)}
                )

            def tagged(self, query):
                posts = fake.tagged_posts.get(query.get("tag", ""), [])
                before = int(query.get("before", 10**12))
                limit = int(query.get("limit", 20))
                page = [p for p in posts if p["timestamp"] < before][:limit]
                return self.api(200, page)

            def media(self, name):
                if fake.faults.slow_media_s:
                    time.sleep(fake.faults.slow_media_s)
                with fake.lock:
                    if fake.faults.dropped_connections > 0:
                        fake.faults.dropped_connections -= 1
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return None
                if name not in fake.media:
                    return self.send(404, b"not found", "text/plain")
                data, content_type = fake.media[name]
                if name in fake.truncate_names():
                    self.send_response(200)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.close_connection = True
                    return None
                return self.send(200, data, content_type)

        return Handler

    def truncate_names(self) -> set[str]:
        return self.faults.truncate
