"""All network policy in one place: sessions, retries, rate limits, hosts, redirects, sizes.

The Tumblr API client, the image downloader and the checkpoint download all
go through `Net`:
- one retry mechanism, urllib3's `Retry` (connection errors, read errors and
  5xx, with exponential backoff and jitter), extended to wait out an HTTP 429
  as the documented rate-limit headers say, up to `max_wait_s`, and to stop at
  once when the daily budget is spent (`RateLimited`: one line, a re-run
  resumes);
- a timeout on every request;
- one URL policy (`url_host`), on the first request and every redirect hop:
  the host is the one urllib3 connects to (`urllib3.util.parse_url`, which
  requests uses too), and a URL that two parsers could read as different hosts
  is refused (`ambiguous_url`): a backslash or `%5C`, user info (`@`), a
  control character or white space, a host that is not plain ASCII;
- redirects followed here, not by requests, so that every hop is checked: only
  http(s), only `allowed_hosts` (a bare domain matches itself and its
  subdomains), no loops, at most `max_redirects`;
- bodies read with a size cap, and on request without content decoding (a
  file's sha256 is that of the bytes the server sent).
"""

from __future__ import annotations

import email.utils
import fnmatch
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url
from urllib3.util.retry import Retry

from . import cli

log = logging.getLogger("tumbletrain.net")

# Tumblr's documented limits (api.md, "Rate Limits") and the headers that report them
# (named as gallery-dl's and tumblr-utils' Tumblr clients read them from real responses).
PER_DAY_REMAINING = "X-Ratelimit-Perday-Remaining"
PER_DAY_RESET = "X-Ratelimit-Perday-Reset"
PER_HOUR_REMAINING = "X-Ratelimit-Perhour-Remaining"
PER_HOUR_RESET = "X-Ratelimit-Perhour-Reset"
RETRY_STATUSES = (429, 500, 502, 503, 504)
CHUNK = 1 << 16


class RateLimited(cli.UserError):
    """A rate limit that must not be waited out here; what was fetched is kept."""


class Unreachable(cli.UserError):
    """The host did not answer after every retry."""

    def __init__(self, host: str, retries: int, why: str):
        super().__init__(f"cannot reach {host} after {retries} retries ({why})")
        self.host = host


class Refused(Exception):
    """A URL or a redirect hop that the policy does not allow; `reason` is a skip code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class TooLarge(Refused):
    def __init__(self, message: str):
        super().__init__("too_large", message)


class Truncated(Exception):
    """Fewer bytes arrived than the response declared."""


@dataclass(frozen=True)
class Policy:
    timeout_s: float = 30.0
    retries: int = 5
    max_wait_s: float = 3600.0
    backoff_s: float = 0.5  # 0, 1, 2, 4, ... s between retries, plus up to 0.5 s of jitter
    allowed_hosts: tuple[str, ...] | None = None  # None: any host (http and https only)
    max_redirects: int = 5
    pool: int = 10


# What a host may be: a DNS name or an IPv4 address in ASCII (an IDN in its xn-- form),
# or a bracketed IPv6 literal. Anything else (%-escapes, non-ASCII letters that IDNA
# would map to other ones) may resolve to a host the allow-list never saw.
PLAIN_HOST = re.compile(r"[a-z0-9._-]+|\[[0-9a-f:.]+\]", re.ASCII)
# Python's urlsplit and urllib3's parse_url (and browsers, and proxies) disagree
# about where the host ends at a backslash; an encoded one (%5C) before the host
# is decoded by some. (In a query, %5C is only a tag's backslash.)
BACKSLASH = "\\"
ENCODED_BACKSLASH = "%5c"


def url_host(url: str) -> str:
    """The host requests will connect to for `url`, or `Refused` when it is not plain.

    The host is urllib3's (what the connection uses), never urlsplit's. A URL
    that the two could read differently is refused rather than resolved:
    `http://10.1.2.3:80\\@64.media.tumblr.com/` is 64.media.tumblr.com to
    urlsplit and 10.1.2.3 to urllib3; Python drops tabs and newlines that
    urllib3 keeps.
    """
    if not isinstance(url, str):
        raise Refused("ambiguous_url", "the URL is not text")
    for char in url:
        if char.isspace() or not char.isprintable():
            raise Refused(
                "ambiguous_url",
                f"the URL holds a control character or white space ({char!r}); refused",
            )
    if BACKSLASH in url:
        raise Refused("ambiguous_url", "the URL holds a backslash, which parsers read differently")
    try:
        parts, netloc = parse_url(url), urllib.parse.urlsplit(url).netloc
    except (LocationParseError, ValueError) as error:
        raise Refused(
            "ambiguous_url", f"the URL cannot be parsed ({type(error).__name__})"
        ) from None
    if parts.scheme not in ("http", "https"):
        raise Refused("scheme_not_allowed", f"{parts.scheme or 'a relative'} URL refused")
    if ENCODED_BACKSLASH in netloc.lower():
        raise Refused("ambiguous_url", "the URL's host part holds an encoded backslash (%5C)")
    if parts.auth is not None or "@" in netloc:
        raise Refused("ambiguous_url", "the URL holds user info (@) before its host; refused")
    if not netloc.isascii():
        raise Refused("ambiguous_url", "the URL's host is not ASCII (give its xn-- form)")
    host = (parts.host or "").lower()
    if not PLAIN_HOST.fullmatch(host):
        raise Refused("ambiguous_url", f"the URL's host {host!r} is not a plain host name")
    # The two parsers must agree, or one of the checks above has a hole.
    if (urllib.parse.urlsplit(url).hostname or "") != host.strip("[]"):
        raise Refused("ambiguous_url", "the URL's host reads differently to two parsers")
    return host


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """`media.tumblr.com` matches itself and `64.media.tumblr.com`; `*.x` needs a subdomain."""
    host = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower().rstrip(".")
        if any(c in pattern for c in "*?["):
            if fnmatch.fnmatchcase(host, pattern):
                return True
        elif host == pattern or host.endswith("." + pattern):
            return True
    return False


def parse_seconds(value: str | None, now: float) -> float | None:
    """A header's delay: seconds, or an HTTP date (Retry-After may be either)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError):
        return None


def clock_time(now: float, seconds: float) -> str:
    return datetime.fromtimestamp(now + seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def rate_limit_wait(headers, host: str, max_wait: float, now: float) -> float:
    """How long an HTTP 429 asks us to wait; `RateLimited` when that must not be waited."""
    if headers.get(PER_DAY_REMAINING) == "0":
        reset = parse_seconds(headers.get(PER_DAY_RESET), now) or 0.0
        raise RateLimited(
            f"{host}: the daily API budget of this consumer key is spent (HTTP 429, "
            f"{PER_DAY_REMAINING}: 0); it resets at {clock_time(now, reset)} (in {reset:.0f} s). "
            "What was fetched is kept: re-run to resume after the reset"
        )
    wait = parse_seconds(headers.get("Retry-After"), now)
    if wait is None and headers.get(PER_HOUR_REMAINING) == "0":
        wait = parse_seconds(headers.get(PER_HOUR_RESET), now)
    if wait is None:
        # Another limit (per IP and minute, say) that names no reset: wait a minute.
        wait = 60.0
    if wait > max_wait:
        raise RateLimited(
            f"{host}: rate limited (HTTP 429) until {clock_time(now, wait)} (in {wait:.0f} s), "
            f"longer than tumblr.max_wait_s ({max_wait:.0f} s). What was fetched is kept: "
            "re-run to resume after the reset"
        )
    return wait


class PolicyRetry(Retry):
    """urllib3's Retry, waiting out a 429 as its rate-limit headers say, counting responses."""

    net: Net | None = None

    def new(self, **kw):
        retry = super().new(**kw)
        retry.net = self.net
        return retry

    def increment(self, method=None, url=None, response=None, error=None, **kwargs):
        retry = super().increment(method, url, response=response, error=error, **kwargs)
        if response is not None and self.net is not None:
            self.net.count(response)  # an answer that will be asked again
        return retry

    def sleep(self, response=None) -> None:
        net = self.net
        if net is None:
            return super().sleep(response)
        if response is not None and response.status == 429:
            host = parse_url(response.geturl() or "").host or "the server"
            wait = rate_limit_wait(response.headers, host, net.policy.max_wait_s, net.clock())
            log.info("%s: rate limited (HTTP 429); waiting %.0f s as its headers ask", host, wait)
            net.sleep(wait)
            return None
        backoff = self.get_backoff_time()
        if backoff > 0:
            net.sleep(backoff)
        return None


def _why(error: Exception, timeout: float) -> str:
    """A short, secret-free reason for a connection failure (the URL may hold a key)."""
    text = repr(error)
    if isinstance(error, requests.Timeout) or "timed out" in text.lower():
        return f"timed out after {timeout:g} s"
    if "NameResolution" in text or "Name or service not known" in text:
        return "host name not resolved"
    if "Connection refused" in text or "ConnectionRefused" in text:
        return "connection refused"
    if "SSL" in text:
        return "TLS handshake failed"
    return "connection failed"


class Net:
    """One session under one policy; `requests` counts the HTTP answers received."""

    def __init__(
        self,
        policy: Policy,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ):
        self.policy = policy
        self.sleep = sleep
        self.clock = clock
        self.requests = 0
        self._lock = threading.Lock()
        retry = PolicyRetry(
            total=None,
            # One budget for every kind of failure a request can meet.
            **dict.fromkeys(("connect", "read", "status", "other"), policy.retries),
            redirect=False,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=("GET", "HEAD"),
            backoff_factor=policy.backoff_s,
            backoff_jitter=policy.backoff_s,
            backoff_max=60.0,
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        retry.net = self
        adapter = HTTPAdapter(max_retries=retry, pool_maxsize=policy.pool)
        self.session = requests.Session()
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def count(self, _response=None) -> None:
        with self._lock:
            self.requests += 1

    def check(self, url: str) -> str:
        """The URL's host, if the policy allows fetching it; `Refused` otherwise."""
        host = url_host(url)
        allowed = self.policy.allowed_hosts
        if allowed is not None and not host_allowed(host, allowed):
            raise Refused("host_not_allowed", f"{host} is not one of the allowed hosts")
        return host

    def get(
        self,
        url: str,
        *,
        headers: dict | None = None,
        auth=None,
        stream: bool = False,
        follow: bool = True,
    ) -> requests.Response:
        """GET under the policy, following redirects hop by hop when `follow`."""
        seen = {url}
        for _ in range(self.policy.max_redirects + 1):
            host = self.check(url)
            try:
                response = self.session.get(
                    url,
                    headers=headers,
                    auth=auth,
                    stream=stream,
                    timeout=self.policy.timeout_s,
                    allow_redirects=False,
                )
            except (requests.ConnectionError, requests.Timeout) as error:
                raise Unreachable(
                    host, self.policy.retries, _why(error, self.policy.timeout_s)
                ) from None
            self.count(response)
            if not (follow and response.is_redirect):
                return response
            response.close()
            target = urllib.parse.urljoin(url, response.headers.get("Location", ""))
            try:
                self.check(target)
            except Refused as refused:
                raise Refused(
                    "redirect_not_allowed", f"{host} redirected to a refused URL: {refused}"
                ) from None
            if target in seen:
                raise Refused("redirect_loop", f"{host} redirects in a loop")
            seen.add(target)
            url = target
        raise Refused("too_many_redirects", f"more than {self.policy.max_redirects} redirects")

    @staticmethod
    def chunks(response: requests.Response, decode: bool = True) -> Iterator[bytes]:
        """The body in chunks; `decode=False` gives the bytes as sent (no gzip undone)."""
        if decode:
            yield from response.iter_content(CHUNK)
            return
        try:
            yield from response.raw.stream(CHUNK, decode_content=False)
        except Exception as error:  # urllib3's ProtocolError family: the body was cut
            raise Truncated(f"the connection closed mid-body ({type(error).__name__})") from None

    @classmethod
    def read_capped(cls, response: requests.Response, max_bytes: int) -> bytes:
        """The whole body, refusing more than `max_bytes` before reading it all."""
        declared = int(response.headers.get("Content-Length") or 0)
        if declared > max_bytes:
            raise TooLarge(f"{declared} bytes declared, more than the cap of {max_bytes}")
        parts, size = [], 0
        try:
            for chunk in cls.chunks(response):
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(f"more than the cap of {max_bytes} bytes")
                parts.append(chunk)
        except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError):
            raise Truncated("the connection closed mid-body") from None
        data = b"".join(parts)
        if declared and len(data) != declared:
            raise Truncated(f"{len(data)} of {declared} bytes arrived")
        return data
