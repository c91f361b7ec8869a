"""Harvest against a real HTTP server standing in for Tumblr (tests/fake_tumblr.py), plus folders.

Every post the fake serves is built from a documented example
(tests/fixtures/tumblr/); each test asserts the exact image URLs chosen per
post and the exact requests made.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import fake_tumblr as ft
import hostile_files
import pytest
from fake_tumblr import FakeTumblr, bomb_png, image_bytes
from tumbletrain import cli, config, fileio, harvest, net, store, tumblr

API_KEY = "ck-5ecret-consumer-key-000"
SECRETS = {
    "TUMBLR_CONSUMER_KEY": API_KEY,
    "TUMBLR_CONSUMER_SECRET": "cs-5ecret-consumer-secret-111",
    "TUMBLR_OAUTH_TOKEN": "ot-5ecret-oauth-token-222",
    "TUMBLR_OAUTH_SECRET": "os-5ecret-oauth-secret-333",
}
BLOG = "npf-spec-examples.tumblr.com"
TAG = "figure drawing"
T0 = 1_700_000_000


def photo_500(key: str) -> str:
    """The rendition the default media_hosts allows in api.md's legacy photo example."""
    return f"http://30.media.tumblr.com/tumblr_{key}o1_500.jpg"


def npf_1280(key: str, host: str = "69.media.tumblr.com") -> str:
    return f"http://{host}/{key}/tumblr_{key}_1280.jpg"


def inline_1280(key: str) -> str:
    return f"http://64.media.tumblr.com/{key}/tumblr_inline_{key}_1280.jpg"


def with_image(item: dict, key: str) -> dict:
    """A documented trail item, with an image block added to its content."""
    item["content"].append(ft.npf_image(key))
    return item


def blog_posts() -> tuple[list[dict], dict[str, set[str]]]:
    """One post of every shape, newest first, and the images each must yield."""
    text = "legacy-text-post.json"
    broken, _ = ft.fixture("npf-broken-trail.json")["trail"]
    root, parent = ft.fixture("npf-trail.json")["trail"]
    rows = ft.fixture("npf-rows-layout.json")
    ask = ft.fixture("npf-ask-layout.json")
    answer = ft.fixture("legacy-answer-post.json")["answer"]
    quote = ft.fixture("legacy-quote-post.json")["text"]
    reblog = {
        "reblogged_from_id": "3456",
        "parent_post_url": "https://npf-parent.tumblr.com/post/3456",
    }
    cases = [
        (ft.legacy_photo_post(20, T0 + 20, ["pose"], ["p1"]), {photo_500("p1")}),
        (
            ft.legacy_photo_post(19, T0 + 19, ["pose"], ["s1", "s2"]),
            {photo_500("s1"), photo_500("s2")},
        ),
        (
            ft.legacy_post(text, 18, T0 + 18, ["pose"]),
            {"http://media.tumblr.com/tumblr_lh6x8d7LBB1qa6gy3.jpg"},  # the bare domain
        ),
        (
            ft.legacy_post(text, 17, T0 + 17, ["pose"], body=ft.img_html("body")),
            {inline_1280("body")},
        ),
        (
            ft.legacy_post(
                "legacy-answer-post.json", 16, T0 + 16, ["pose"], answer=answer + ft.img_html("ans")
            ),
            {inline_1280("ans")},
        ),
        (
            ft.legacy_post("legacy-link-post.json", 15, T0 + 15, ["pose"]),
            {
                "http://40.media.tumblr.com/1393850e5c331da2e3c9fb478a30310d/"
                "tumblr_inline_nm3lwntw8k1rplry2_500.jpg"
            },
        ),
        (
            ft.legacy_post(
                "legacy-quote-post.json", 14, T0 + 14, ["pose"], text=quote + ft.img_html("quote")
            ),
            {inline_1280("quote")},
        ),
        (
            ft.npf_post(
                13,
                T0 + 13,
                ["pose"],
                [ft.npf_image("r1"), ft.npf_image("r2"), rows["content"][2]],
                layout=rows["layout"],
            ),
            {npf_1280("r1"), npf_1280("r2")},
        ),
        (
            ft.npf_post(
                12,
                T0 + 12,
                ["pose"],
                [ft.npf_image("own")],
                trail=[
                    with_image(broken, "broken"),
                    with_image(root, "root"),
                    with_image(parent, "parent"),
                ],
                **reblog,
            ),
            {npf_1280(k) for k in ("own", "broken", "root", "parent")},
        ),
        (
            ft.legacy_post(
                text,
                11,
                T0 + 11,
                ["pose"],
                body=ft.img_html("lr2"),
                trail=[
                    ft.legacy_trail_item("npf-root", "1234", ft.img_html("lr1")),
                    ft.legacy_trail_item("npf-parent", "3456", ft.img_html("lr2")),
                ],
                **reblog,
            ),
            {inline_1280("lr1"), inline_1280("lr2")},
        ),
        (ft.npf_post(10, T0 + 10, ["pose"], [{"type": "text", "text": "no image"}]), set()),
        (
            ft.npf_post(9, T0 + 9, ["pose"], [ft.npf_gif("gif")]),
            {"http://69.media.tumblr.com/gif/tumblr_gif_500.gif"},
        ),
        (
            ft.npf_post(
                8, T0 + 8, ["pose"], [*ask["content"], ft.npf_image("ask")], layout=ask["layout"]
            ),
            {npf_1280("ask")},
        ),
    ]
    return [post for post, _ in cases], {str(post["id"]): urls for post, urls in cases}


def tagged_posts(count: int = 45) -> tuple[list[dict], dict[str, set[str]]]:
    """A site-wide tag over three pages, NPF and legacy posts side by side."""
    posts, expected = [], {}
    for i in range(count):
        key, stamp = f"t{i}", T0 - 1000 - i
        if i % 2:
            post, url = ft.legacy_photo_post(1000 + i, stamp, [TAG], [key]), photo_500(key)
        else:
            post, url = ft.npf_post(1000 + i, stamp, [TAG], [ft.npf_image(key)]), npf_1280(key)
        posts.append(post)
        expected[str(1000 + i)] = {url}
    return posts, expected


@pytest.fixture
def fake(monkeypatch):
    server = FakeTumblr(api_key=API_KEY)
    server.blogs[BLOG], _ = blog_posts()
    server.tagged[TAG], _ = tagged_posts()
    server.start()
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    yield server
    server.stop()


@pytest.fixture
def secrets(monkeypatch):
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)


def raw_config(**tumblr_extra) -> dict:
    return {
        "classes": {"pose": {"tumblr": [{"blog": BLOG, "tag": "pose"}, {"tag": TAG}]}},
        "tumblr": {
            "api_host": "http://api.tumblr.com",
            "max_image_mb": 2,
            # Generous: a loaded CI machine can stall the in-process fake server.
            "timeout_s": 30,
            "retries": 2,
            "max_wait_s": 5,
            **tumblr_extra,
        },
    }


def run_harvest(root: Path, raw: dict) -> dict:
    return harvest.harvest_class(
        config.parse(raw), "pose", root / "images", root / "manifests" / "pose.tsv"
    )


def manifest(root: Path) -> list[store.ManifestRow]:
    return store.read_manifest(root / "manifests" / "pose.tsv")


def skipped(root: Path) -> dict[str, str]:
    return {
        r["image_url"]: r["reason"]
        for r in fileio.read_tsv(root / "manifests" / "pose.skipped.tsv")
    }


def chosen(root: Path) -> dict[str, set[str]]:
    by_post: dict[str, set[str]] = {}
    for row in manifest(root):
        by_post.setdefault(row.post_id, set()).add(row.image_url)
    return by_post


def befores(requests, path: str) -> list[str | None]:
    return [r.params().get("before") for r in requests if r.path == path]


BLOG_PATH = f"/v2/blog/{BLOG}/posts"


def test_every_documented_post_shape_yields_exactly_its_largest_allowed_renditions(
    tmp_path, fake, secrets
):
    run_harvest(tmp_path, raw_config())
    _, blog_expected = blog_posts()
    _, tagged_expected = tagged_posts()
    expected = {k: v for k, v in {**blog_expected, **tagged_expected}.items() if v}
    assert chosen(tmp_path) == expected
    # Each chosen rendition fetched once; no smaller one, no GIF poster, no link, no other host.
    assert sorted(fake.media_requests()) == sorted(set().union(*expected.values()))
    reasons = skipped(tmp_path)
    assert (
        reasons["http://farm5.static.flickr.com/4006/4445161463_31da0327c2_o.jpg"]
        == "host_not_allowed"
    )
    assert reasons["http://npf-spec-examples.tumblr.com/post/10"] == "no_image"
    # The requests: NPF asked for on every call, pages by `before` until a page brings nothing new.
    api = fake.api_requests()
    assert {r.params()["npf"] for r in api} == {"true"}
    assert all(r.params()["limit"] == "20" for r in api)
    assert befores(api, BLOG_PATH) == [None, str(T0 + 8 + 1)]
    assert {r.params()["reblog_info"] for r in api if r.path == BLOG_PATH} == {"true"}
    stamps = [T0 - 1000 - i for i in range(45)]
    assert befores(api, "/v2/tagged") == [None, *(str(stamps[i] + 1) for i in (19, 38, 44))]
    assert {r.params()["tag"] for r in api} == {"pose", TAG}
    assert len(api) == 6


def test_the_fallback_rendition_is_recorded_and_the_largest_taken_when_allowed(
    tmp_path, fake, secrets
):
    run_harvest(tmp_path / "default", raw_config())
    rows = {r.post_id: r for r in manifest(tmp_path / "default")}
    assert rows["20"].rendition == (
        "largest allowed: 1280x722 on derekg.org is not in tumblr.media_hosts"
    )
    assert rows["13"].rendition == "largest"
    run_harvest(tmp_path / "blog", raw_config(media_hosts=["media.tumblr.com", "derekg.org"]))
    rows = {r.post_id: r for r in manifest(tmp_path / "blog")}
    assert rows["20"].image_url == "http://derekg.org/photo/1280/7431599279/1/tumblr_p1"
    assert rows["20"].rendition == "largest"


def test_a_response_without_npf_yields_the_same_images(tmp_path, fake, secrets):
    """A server that ignores npf=true sends NPF posts as legacy text posts (<img srcset>)."""
    run_harvest(tmp_path / "npf", raw_config())
    fake.faults.ignore_npf = True
    run_harvest(tmp_path / "legacy", raw_config())
    assert chosen(tmp_path / "legacy") == chosen(tmp_path / "npf")


def add_faulty_posts(fake: FakeTumblr) -> dict[str, str]:
    """A photoset whose images fail in every way a download can; returns URL -> reason."""
    bad = {
        "html": ("html_not_image", b"<!DOCTYPE html><html><body>login</body></html>"),
        "text": ("not_an_image", b"just some text, not an image at all" * 3),
        "huge": ("too_large", image_bytes(99) + b"\0" * 3 * 1024 * 1024),
        "bomb": ("decompression_bomb", bomb_png()),
        "trunc": ("truncated", image_bytes(77, "JPEG", (300, 300))),
        # Pillow's ValueError stopped the harvest at every re-run (issue #27).
        "exif": (
            "bad_orientation",
            hostile_files.picture(3, "JPEG", hostile_files.TEXT_ORIENTATION),
        ),
    }
    for key, (_, data) in bad.items():
        fake.media[photo_500(key)] = (data, "image/jpeg")
    fake.faults.truncate = {photo_500("trunc")}
    fake.media_status[photo_500("gone")] = 404
    fake.blogs[BLOG].append(ft.legacy_photo_post(5, T0 + 5, ["pose"], [*bad, "gone", "dup"]))
    fake.media[photo_500("dup")] = ft.url_image(photo_500("p1"))  # p1's bytes under another URL
    return {photo_500(k): reason for k, (reason, _) in bad.items()} | {
        photo_500("gone"): "http_error"
    }


def test_faults_are_skipped_with_reasons_and_a_second_run_asks_for_nothing(tmp_path, fake, secrets):
    reasons = add_faulty_posts(fake)
    result = run_harvest(tmp_path, raw_config())
    assert {url: skipped(tmp_path)[url] for url in reasons} == reasons
    rows = manifest(tmp_path)
    # p1 and dup have the same bytes: stored once, listed once.
    assert result["images"] == len(rows) == len({r.sha256 for r in rows})
    assert photo_500("dup") not in {r.image_url for r in rows}
    stored = [p for p in (tmp_path / "images").rglob("*") if p.is_file()]
    assert len(stored) == len(rows)
    assert not [p for p in (tmp_path / "images").rglob(".*")], "no partial file in the store"
    first = (tmp_path / "manifests" / "pose.tsv").read_bytes()
    fake.clear()
    run_harvest(tmp_path, raw_config())
    # Only the transient failures are tried again; the pagings stop at the newest post known.
    assert sorted(fake.media_requests()) == sorted([photo_500("trunc"), photo_500("gone")])
    assert [(r.path, r.params().get("before")) for r in fake.api_requests()] == [
        (BLOG_PATH, None),
        ("/v2/tagged", None),
    ]
    assert (tmp_path / "manifests" / "pose.tsv").read_bytes() == first


def test_reblogs_can_be_excluded(tmp_path, fake, secrets):
    _, parent = ft.fixture("npf-trail.json")["trail"]
    # An NPF reblog known by its trail alone (no reblog_info fields).
    fake.blogs[BLOG].append(
        ft.npf_post(7, T0 + 7, ["pose"], [ft.npf_image("rb")], trail=[with_image(parent, "p")])
    )
    run_harvest(tmp_path / "all", raw_config())
    assert {"7", "11", "12"} <= set(chosen(tmp_path / "all"))
    run_harvest(tmp_path / "own", raw_config(include_reblogs=False))
    posts = chosen(tmp_path / "own")
    assert not {"7", "11", "12"} & set(posts) and "13" in posts and "20" in posts


def test_server_errors_dropped_connections_and_an_hourly_limit_are_waited_out(
    tmp_path, fake, secrets
):
    fake.faults.server_errors = 2
    fake.faults.dropped_connections = 1
    fake.faults.rate_limit, fake.faults.rate_limit_after = "hourly", 2
    run_harvest(tmp_path / "faulty", raw_config())
    faulty = fake.api_requests()
    fake.faults = ft.Faults()
    fake.clear()
    run_harvest(tmp_path / "clean", raw_config())
    assert chosen(tmp_path / "faulty") == chosen(tmp_path / "clean")
    # Two 503s and one 429 were asked again, nothing else.
    assert len(faulty) == len(fake.api_requests()) + 3


def harvest_command(raw: dict) -> list[str]:
    """The harvest as its rule runs it: from the project folder, with relative paths."""
    return [
        sys.executable,
        "-m",
        "tumbletrain.harvest",
        "--config-json",
        json.dumps(raw),
        "--class",
        "pose",
        "--store",
        "images",
        "--manifest",
        "manifests/pose.tsv",
    ]


def run_command(
    root: Path, raw: dict, fake: FakeTumblr | None, **env
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **SECRETS, **(fake.env() if fake else {}), **env}
    root.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        harvest_command(raw), cwd=root, env=full_env, capture_output=True, text=True, timeout=120
    )


def last_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


def manifest_bytes(root: Path) -> bytes:
    return (root / "manifests" / "pose.tsv").read_bytes()


def same_manifest(a: Path, b: Path) -> bool:
    """The manifests of two harvests into different folders, paths aside."""
    # The store's paths are written relative to the working folder when they can
    # be (a checkout under /tmp, as in CI, gives ../pytest-of-.../inc/images/...).
    first, second = (
        (root / "manifests" / "pose.tsv")
        .read_text()
        .replace(str(root), "ROOT")
        .replace(os.path.relpath(root), "ROOT")
        for root in (a, b)
    )
    if first != second:
        # Say how they differ, and why an image may be missing.
        diff = difflib.unified_diff(first.splitlines(), second.splitlines(), lineterm="")
        print("\n".join(diff))
        for root in (a, b):
            print(root.name, (root / "manifests" / "pose.skipped.tsv").read_text())
    return first == second


def test_a_spent_daily_budget_stops_with_one_line_and_a_rerun_resumes(tmp_path, fake):
    reference = tmp_path / "reference"
    assert run_command(reference, raw_config(), fake).returncode == 0
    uninterrupted = fake.api_requests()
    fake.clear()
    # Mid-paging of the tag: the blog's two pages and the tag's first are answered.
    fake.faults = ft.Faults(rate_limit="daily", rate_limit_after=3, rate_limit_reset_s=43200)
    stopped = tmp_path / "stopped"
    line = last_line(run_command(stopped, raw_config(), fake))
    assert line.startswith(
        "ERROR: api.tumblr.com: the daily API budget of this consumer key is spent (HTTP 429, "
        "X-Ratelimit-Perday-Remaining: 0); it resets at "
    )
    assert line.endswith(
        " UTC (in 43200 s). What was fetched is kept: re-run to resume after the reset"
    )
    first = fake.api_requests()
    first_media = fake.media_requests()
    assert first_media, "images were fetched while paging"
    fake.clear()
    rerun = run_command(stopped, raw_config(), fake)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert manifest_bytes(stopped) == manifest_bytes(reference)
    # No page paged twice, no image fetched twice: the two runs' calls are the uninterrupted run's.
    assert first[:-1] + fake.api_requests() == uninterrupted
    assert not set(first_media) & set(fake.media_requests())
    assert f"{len(fake.api_requests())} Tumblr API calls made" in rerun.stderr


def test_a_stopped_full_paging_resumes_without_repaging_a_finished_query(tmp_path, fake, secrets):
    run_harvest(tmp_path, raw_config())
    uninterrupted = fake.api_requests()
    fake.clear()
    fake.faults = ft.Faults(rate_limit="daily", rate_limit_after=3, rate_limit_reset_s=60)
    with pytest.raises(net.RateLimited):
        run_harvest(tmp_path, raw_config(full_paging=True))
    stopped = fake.api_requests()
    fake.clear()
    run_harvest(tmp_path, raw_config(full_paging=True))
    # The blog's finished paging and the tag's first page are not asked for again.
    assert stopped[:-1] + fake.api_requests() == uninterrupted


def test_a_wait_longer_than_max_wait_stops_with_the_reset_time(tmp_path, fake, secrets):
    fake.faults.rate_limit, fake.faults.rate_limit_reset_s = "hourly", 3600
    with pytest.raises(net.RateLimited) as error:
        run_harvest(tmp_path, raw_config())
    message = str(error.value)
    assert "in 3600 s), longer than tumblr.max_wait_s (5 s)" in message
    assert message.endswith("re-run to resume after the reset")


def test_a_limit_that_outlasts_the_retries_stops(tmp_path, fake, secrets):
    fake.faults = ft.Faults(rate_limit="hourly", rate_limit_times=10, rate_limit_reset_s=0)
    with pytest.raises(net.RateLimited, match=r"still rate limited \(HTTP 429\) after 2 waits"):
        run_harvest(tmp_path, raw_config())
    assert len(fake.api_requests()) == 3  # the call and its two retries


@pytest.mark.parametrize(
    ("fault", "line"),
    [
        (
            {"key": "wrong"},
            "ERROR: Tumblr refused the credentials (HTTP 401 Unauthorized) for tag 'pose' on blog "
            f"{BLOG}: check TUMBLR_CONSUMER_KEY (and, for OAuth1, the three other TUMBLR_ "
            "variables)",
        ),
        (
            {"blog": "nosuchblog.tumblr.com"},
            "ERROR: tag 'pose' on blog nosuchblog.tumblr.com: Tumblr has no such blog (HTTP 404 "
            "Not Found) (Not Found): fix `blog:` in the config (a blog name like staff, or a host "
            "like staff.tumblr.com)",
        ),
        (
            {"blog_error": (403, "Forbidden")},
            f"ERROR: tag 'pose' on blog {BLOG}: the blog can only be read when logged in (HTTP 403 "
            "Forbidden) (Forbidden): set TUMBLR_CONSUMER_SECRET, TUMBLR_OAUTH_TOKEN and "
            "TUMBLR_OAUTH_SECRET of an account that can see it, or remove the query",
        ),
        (
            {"meta_error": (404, "Not Found")},
            f"ERROR: tag 'pose' on blog {BLOG}: Tumblr has no such blog (HTTP 404 Not Found) (Not "
            "Found): fix `blog:` in the config (a blog name like staff, or a host like "
            "staff.tumblr.com)",
        ),
    ],
)
def test_api_errors_end_in_one_line_naming_the_query(tmp_path, fake, fault, line):
    raw = raw_config()
    env = {}
    if "key" in fault:
        env = {"TUMBLR_CONSUMER_KEY": fault["key"], "TUMBLR_CONSUMER_SECRET": ""}
    if "blog" in fault:
        raw["classes"]["pose"]["tumblr"][0]["blog"] = fault["blog"]
    if "blog_error" in fault:
        fake.blog_errors[BLOG] = fault["blog_error"]
    if "meta_error" in fault:
        fake.meta_errors[BLOG] = fault["meta_error"]
    assert last_line(run_command(tmp_path, raw, fake, **env)) == line


def test_an_unreachable_api_is_one_line_naming_the_host_and_the_retries(tmp_path):
    raw = raw_config(api_host="http://127.0.0.1:9", retries=1)
    assert last_line(run_command(tmp_path, raw, None)) == (
        "ERROR: cannot reach 127.0.0.1 after 1 retries (connection refused); check the network "
        "connection (and tumblr.api_host), then re-run to resume"
    )


def test_an_api_host_without_scheme_is_one_line(tmp_path, secrets):
    with pytest.raises(cli.UserError) as error:
        run_harvest(tmp_path, raw_config(api_host="api.tumblr.com"))
    assert str(error.value) == (
        "tumblr.api_host 'api.tumblr.com': a relative URL refused; it must be an http(s) URL "
        "such as https://api.tumblr.com"
    )


def test_redirects_are_checked_on_every_hop(tmp_path, fake, secrets):
    keys = ["elsewhere", "loop", "file", "fine"]
    fake.blogs[BLOG] = [ft.legacy_photo_post(1, T0, ["pose"], keys)]
    fake.redirects[photo_500("elsewhere")] = "http://evil.example.com/x.jpg"
    fake.redirects[photo_500("loop")] = photo_500("loop2")
    fake.redirects[photo_500("loop2")] = photo_500("loop")
    fake.redirects[photo_500("file")] = "file:///etc/passwd"
    fake.redirects[photo_500("fine")] = "http://65.media.tumblr.com/moved.jpg"
    raw = raw_config()
    raw["classes"]["pose"]["tumblr"] = [{"blog": BLOG, "tag": "pose"}]
    run_harvest(tmp_path, raw)
    reasons = skipped(tmp_path)
    assert reasons[photo_500("elsewhere")] == "redirect_not_allowed"
    assert reasons[photo_500("loop")] == "redirect_loop"
    assert reasons[photo_500("file")] == "redirect_not_allowed"
    assert [r.image_url for r in manifest(tmp_path)] == [photo_500("fine")]
    assert "http://evil.example.com/x.jpg" not in fake.media_requests()
    assert sorted(fake.media_requests()) == sorted(
        [photo_500(k) for k in keys] + [photo_500("loop2"), "http://65.media.tumblr.com/moved.jpg"]
    )


def test_rate_limit_waits_follow_the_documented_headers():
    hourly, daily = (
        ft.fixture("rate-limit-headers.json")[k] for k in ("hourly_spent", "daily_spent")
    )
    now = 1_700_000_000.0
    assert net.rate_limit_wait(hourly, "h", 3600, now) == 1800
    assert net.rate_limit_wait({**hourly, "Retry-After": "12"}, "h", 3600, now) == 12
    http_date = "Tue, 14 Nov 2023 22:13:27 GMT"  # now + 7 s
    assert net.rate_limit_wait({**hourly, "Retry-After": http_date}, "h", 3600, now) == 7
    # Neither budget spent and no Retry-After: another limit; a minute, not the hour's reset.
    assert (
        net.rate_limit_wait({**hourly, "X-Ratelimit-Perhour-Remaining": "3"}, "h", 3600, now) == 60
    )
    with pytest.raises(net.RateLimited, match="longer than tumblr.max_wait_s"):
        net.rate_limit_wait(hourly, "h", 600, now)
    with pytest.raises(net.RateLimited, match="resets at 2023-11-15 10:13:20 UTC"):
        net.rate_limit_wait(daily, "h", 10**9, now)


def test_media_hosts_match_a_bare_domain_and_its_subdomains():
    hosts = ("media.tumblr.com",)
    assert net.host_allowed("media.tumblr.com", hosts)
    assert net.host_allowed("64.media.tumblr.com", hosts)
    assert not net.host_allowed("evilmedia.tumblr.com", hosts)
    assert not net.host_allowed("media.tumblr.com.evil.example", hosts)
    assert not net.host_allowed("media.tumblr.com", ("*.media.tumblr.com",))


def test_killed_while_paging_resumes_without_repaging_to_the_same_manifest(tmp_path, fake):
    reference = tmp_path / "reference"
    assert run_command(reference, raw_config(), fake).returncode == 0
    uninterrupted = fake.api_requests()
    fake.clear()
    fake.faults.api_latency_s = 0.4
    interrupted = tmp_path / "interrupted"
    env = {**os.environ, **SECRETS, **fake.env()}
    interrupted.mkdir()
    process = subprocess.Popen(
        harvest_command(raw_config()),
        cwd=interrupted,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = interrupted / "manifests" / "pose.paging.log"
    deadline = time.time() + 60
    while time.time() < deadline and (not log.exists() or log.read_text().count("page") < 3):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (interrupted / "manifests" / "pose.tsv").exists(), "killed before the end"
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    tag_pages = sum(1 for entry in logged if "page" in entry and TAG in entry["query"])
    fake.faults.api_latency_s = 0
    fake.clear()
    rerun = run_command(interrupted, raw_config(), fake)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert manifest_bytes(interrupted) == manifest_bytes(reference)
    # The re-run asks only for the pages the killed run had not logged: the blog's paging
    # (two calls) was complete, the tag's continues after its last logged page.
    assert tag_pages >= 2
    assert fake.api_requests() == uninterrupted[2 + tag_pages :]
    assert not log.exists()
    leftovers = [p for p in (interrupted / "images").rglob("*") if p.name.startswith(".")]
    assert not leftovers, leftovers


def test_credentials_never_reach_a_written_file_or_the_log(tmp_path, fake):
    result = run_command(tmp_path, raw_config(), fake)
    assert result.returncode == 0, result.stderr[-2000:]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written
    for secret in SECRETS.values():
        assert secret not in result.stderr + result.stdout
        for path in written:
            assert secret.encode() not in path.read_bytes(), f"{secret} in {path}"


def test_missing_key_names_the_variable(tmp_path, monkeypatch):
    for key in SECRETS:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(cli.UserError, match="TUMBLR_CONSUMER_KEY"):
        run_harvest(tmp_path, raw_config())


def test_oauth_only_when_all_four_are_set():
    assert tumblr.credentials_from_env({"TUMBLR_CONSUMER_KEY": "k"}).consumer_secret == ""
    full = tumblr.credentials_from_env(SECRETS)
    assert full.oauth_secret == SECRETS["TUMBLR_OAUTH_SECRET"]
    assert "5ecret" not in repr(full)


def test_renditions_by_pixels_with_documented_defaults_and_original_dimensions():
    media = ft.fixture("npf-media-object.json")
    block = {
        "type": "image",
        "media": [
            {**media, "url": "a", "width": 500, "height": 400},
            {**media, "url": "b", "width": 400, "height": 500, "has_original_dimensions": False},
            {"url": "c", "type": "image/jpeg", "original_dimensions_missing": True},
            {"url": "d", "type": "image/jpeg", "width": 600, "height": 100},
        ],
    }
    # a and b have 200,000 pixels; a has the original dimensions; c counts as 540x405.
    assert [r.url for r in tumblr.npf_media(block)] == ["c", "a", "b", "d"]
    assert tumblr.post_images({"type": "blocks", **ft.fixture("npf-trail.json")}) == []
    legacy = ft.fixture("legacy-photo-post.json")
    assert tumblr.post_images(legacy)[0][0].url.startswith("https://derekg.org/photo/1280/")


def test_folders_are_ingested_with_the_same_store(tmp_path):
    folder = tmp_path / "poses"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(image_bytes(1))
    (folder / "sub" / "b.png").write_bytes(image_bytes(2, "PNG"))
    (folder / "sub" / "copy_of_a.jpg").write_bytes(image_bytes(1))
    (folder / "notes.jpg").write_bytes(b"not an image")
    (folder / "readme.txt").write_text("ignored by extension")
    raw = {"classes": {"pose": {"folders": [str(folder)]}}}
    result = run_harvest(tmp_path, raw)
    assert result == {"class": "pose", "images": 2, "skipped": 1}
    rows = manifest(tmp_path)
    assert {r.source for r in rows} == {"folder"}
    before = (tmp_path / "manifests" / "pose.tsv").read_bytes()
    run_harvest(tmp_path, raw)
    assert (tmp_path / "manifests" / "pose.tsv").read_bytes() == before
    assert (folder / "notes.jpg").read_bytes() == b"not an image", "inputs are never changed"


def test_a_folder_harvest_flushes_the_store_once_before_the_manifest(tmp_path, flush_log):
    """Not one fsync per image (8 s for 2,500 here): the stored images reach the disk
    in one flush of the store, before the manifest that names them."""
    folder = tmp_path / "poses"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i}.jpg").write_bytes(image_bytes(i))
    events = flush_log
    run_harvest(tmp_path, {"classes": {"pose": {"folders": [str(folder)]}}})
    assert events == [
        f"sync {tmp_path / 'images'}",
        "fsync pose.tsv",
        "fsync pose.skipped.tsv",
    ]
    assert len(manifest(tmp_path)) == 5


def test_sync_folders_flushes_and_names_a_folder_it_cannot_open(tmp_path):
    (tmp_path / "a").write_bytes(b"x")
    fileio.sync_folders([tmp_path, tmp_path])  # one file system: flushed once
    with pytest.raises(OSError):
        fileio.sync_folders([tmp_path / "gone"])


def test_a_bmp_in_a_folder_is_seen_by_every_stage(tmp_path):
    """One set of image suffixes (store.IMAGE_SUFFIXES): a .bmp (LabelImg opens them) is
    harvested, found by the annotations scan and predicted on; a .tiff by none of them."""
    from tumbletrain import annotations, predict

    folder = tmp_path / "poses"
    folder.mkdir()
    (folder / "a.bmp").write_bytes(image_bytes(1, "BMP"))
    (folder / "b.tiff").write_bytes(image_bytes(2, "TIFF"))
    result = run_harvest(tmp_path, {"classes": {"pose": {"folders": [str(folder)]}}})
    assert result == {"class": "pose", "images": 1, "skipped": 0}
    assert manifest(tmp_path)[0].file.endswith(".bmp")
    assert annotations.scan(folder)[1] == [str(folder / "a.bmp")]
    assert predict.scan_images(folder)[0] == [folder / "a.bmp"]


def test_the_manifest_reads_back_as_the_typed_rows_written(tmp_path):
    """store.read_manifest is every stage's reader: rows as written, sizes as numbers."""
    rows = [
        store.ManifestRow("b" * 64, "/s/b.png", "folder", tags="a\tb", width=3, height=4),
        store.ManifestRow("a" * 64, "/s/a.jpg", "tumblr", post_id="1", rendition="largest"),
    ]
    path = tmp_path / "pose.tsv"
    store.write_manifest(path, rows)
    assert store.read_manifest(path) == rows[::-1]
    # A manifest from before a column existed still reads: the column's default.
    fileio.write_tsv(path, ("sha256", "file", "source"), [["c" * 64, "/s/c.gif", "demo"]])
    assert store.read_manifest(path) == [store.ManifestRow("c" * 64, "/s/c.gif", "demo")]
    fileio.write_tsv(path, ("sha256", "file", "width"), [["c" * 64, "/s/c.gif", "wide"]])
    with pytest.raises(fileio.TableError, match="line 2 is not a manifest row"):
        store.read_manifest(path)


def test_a_class_without_sources_is_a_clear_error(tmp_path):
    with pytest.raises(cli.UserError, match="no image source"):
        run_harvest(tmp_path, {"classes": {"pose": {}}})


def test_labelimg_folder_adds_and_never_overwrites(tmp_path):
    from tumbletrain import labelimg

    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(image_bytes(1))
    raw = {"classes": {"pose": {"folders": [str(folder)]}, "hand": {}}}
    run_harvest(tmp_path, raw)
    rows = manifest(tmp_path)
    target = tmp_path / "data" / "pose"
    target.mkdir(parents=True)
    (target / "predefined_classes.txt").write_text("my own list\n")
    (target / "mine.xml").write_text("<annotation/>")
    counts = labelimg.materialise(rows, target, ["pose", "hand"])
    assert counts["copied"] == 1
    assert (target / "predefined_classes.txt").read_text() == "my own list\n"
    assert (target / "mine.xml").read_text() == "<annotation/>"
    (folder / "b.png").write_bytes(image_bytes(2, "PNG"))
    run_harvest(tmp_path, raw)
    counts = labelimg.materialise(manifest(tmp_path), target, ["pose", "hand"])
    assert counts["present"] == 1 and counts["copied"] == 1
    assert len(list(target.glob("*.jpg")) + list(target.glob("*.png"))) == 2


def test_leftovers_of_killed_writers_are_removed_and_live_ones_kept(tmp_path, dead_writer):
    folder = tmp_path / "images" / "ab"
    folder.mkdir(parents=True)
    stale = folder / f".abc.jpg.{dead_writer}.x1y2z3.tmp"
    live = folder / f".abd.jpg.{fileio.writer()}.q9w8e7.tmp"
    finished = folder / "abc.jpg"
    for path in (stale, live, finished):
        path.write_bytes(b"x")
    assert fileio.remove_leftovers(tmp_path / "images") == 1
    assert not stale.exists() and live.exists() and finished.exists()


def add_new_posts(fake: FakeTumblr) -> None:
    """A post newer than any harvested, on the blog and under the tag."""
    fake.blogs[BLOG].insert(0, ft.npf_post(21, T0 + 21, ["pose"], [ft.npf_image("new1")]))
    fake.tagged[TAG].insert(0, ft.npf_post(999, T0 - 999, [TAG], [ft.npf_image("new2")]))


def test_rerun_pages_only_posts_newer_than_the_last_complete_paging(tmp_path, fake, secrets):
    run_harvest(tmp_path / "inc", raw_config())
    add_new_posts(fake)
    fake.clear()
    run_harvest(tmp_path / "inc", raw_config())
    # One page per query finds the newest post known; the old posts come from the state.
    assert [(r.path, r.params().get("before")) for r in fake.api_requests()] == [
        (BLOG_PATH, None),
        ("/v2/tagged", None),
    ]
    assert sorted(fake.media_requests()) == sorted([npf_1280("new1"), npf_1280("new2")])
    run_harvest(tmp_path / "full", raw_config())
    assert same_manifest(tmp_path / "inc", tmp_path / "full")


def test_tags_added_to_old_posts_need_full_paging(tmp_path, fake, secrets):
    run_harvest(tmp_path, raw_config())
    # An old post tagged only now: it sorts below the newest post already seen.
    fake.blogs[BLOG].append(ft.npf_post(3, T0 + 3, ["pose"], [ft.npf_image("late")]))
    run_harvest(tmp_path, raw_config())
    assert npf_1280("late") not in (tmp_path / "manifests" / "pose.tsv").read_text()
    run_harvest(tmp_path, raw_config(full_paging=True))
    assert npf_1280("late") in (tmp_path / "manifests" / "pose.tsv").read_text()
    # A changed query (here the reblog setting) pages afresh too.
    fake.clear()
    run_harvest(tmp_path, raw_config(include_reblogs=False))
    assert len(fake.api_requests()) == 6


def test_the_harvest_rule_under_snakemake_stops_and_resumes(tmp_path, fake, tool_env):
    """The store and the resume state are no outputs of the harvest rule (docs/DESIGN.md):
    Snakemake deletes a failed job's outputs, and these must outlive it."""
    from conftest import snakemake, write_project

    raw = raw_config()
    write_project(tmp_path, raw)
    env = {**tool_env, **SECRETS, **fake.env()}
    fake.faults = ft.Faults(rate_limit="daily", rate_limit_after=3, rate_limit_reset_s=600)
    stopped = snakemake(tmp_path, env, "resources/manifests/pose.tsv", timeout=300)
    assert stopped.returncode != 0
    log_lines = (tmp_path / "logs" / "harvest" / "pose.log").read_text().strip().splitlines()
    assert log_lines[-1].startswith("ERROR: api.tumblr.com: the daily API budget")
    assert log_lines[-1].endswith("re-run to resume after the reset")
    manifests = tmp_path / "resources" / "manifests"
    assert not (manifests / "pose.tsv").exists()
    image_store = store.ImageStore(tmp_path / "resources" / "images")
    fetched = [r for r in fileio.read_tsv(manifests / "pose.fetched.tsv") if r["sha256"]]
    assert fetched and all(image_store.path_for(r["sha256"], r["ext"]).exists() for r in fetched)
    assert (manifests / "pose.paging.log").exists()
    first_api, first_media = fake.api_requests(), fake.media_requests()
    fake.clear()
    resumed = snakemake(tmp_path, env, "resources/manifests/pose.tsv", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # Resumed, not restarted: no page and no image asked for twice (the last call was the 429).
    assert not set(first_api[:-1]) & set(fake.api_requests())
    assert not set(first_media) & set(fake.media_requests())
    assert not (manifests / "pose.paging.log").exists()
    _, blog_expected = blog_posts()
    _, tagged_expected = tagged_posts()
    expected = {k: v for k, v in {**blog_expected, **tagged_expected}.items() if v}
    assert chosen(tmp_path / "resources") == expected


class Hidden:
    """A server on 127.0.0.1 that a hostile image URL hides behind a media host's name:
    a host inside the user's network that no post may make the harvest reach."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from threading import Thread

        hits = self.hits = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server API)
                hits.append(self.path)
                body = image_bytes(5)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hidden(monkeypatch):
    server = Hidden()
    # The user's own network is reached directly, as it would be (no proxy for it).
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    yield server
    server.close()


def hiding_urls(address: str) -> dict[str, str]:
    """Image URLs whose host is a media host to one parser and `address` to another."""
    path = "64.media.tumblr.com/admin.png"
    return {
        # urlsplit: 64.media.tumblr.com; urllib3 (the connection): 127.0.0.1
        "backslash": f"http://{address}\\@{path}",
        "encoded_backslash": f"http://{address}%5C@{path}",
        "userinfo": f"http://64.media.tumblr.com@{address}/admin.png",
        "userinfo_backslash": f"http://64.media.tumblr.com\\@{address}/admin.png",
        # urlsplit drops tabs and newlines; urllib3 keeps them
        "tab": f"http://{address}\t@{path}",
        "newline": f"http://{address}\n@{path}",
        "crlf_backslash": f"http://{address}\r\n\\@{path}",
        "non_ascii_host": "http://64.media.tumblr.com\u2024evil.example/admin.png",
    }


def npf_block(url: str) -> dict:
    block = ft.npf_image("hiding")
    block["media"] = [dict(block["media"][0], url=url)]
    return block


def test_urls_that_hide_another_host_are_refused_and_it_gets_no_request(
    tmp_path, fake, secrets, hidden
):
    urls = hiding_urls(hidden.address)
    # The issue's post body, as HTML, and every other URL as an NPF image block.
    html = f'<p>look</p><img src="{urls["backslash"]}">'
    fake.blogs[BLOG] = [
        ft.legacy_post("legacy-text-post.json", 2, T0 + 2, ["pose"], body=html),
        ft.npf_post(1, T0 + 1, ["pose"], [npf_block(u) for k, u in urls.items()]),
        ft.legacy_photo_post(3, T0 + 3, ["pose"], ["redirected", "fine"]),
    ]
    # A redirect hop hiding the host the same way.
    fake.redirects[photo_500("redirected")] = urls["backslash"].replace("admin", "moved")
    raw = raw_config()
    raw["classes"]["pose"]["tumblr"] = [{"blog": BLOG, "tag": "pose"}]
    run_harvest(tmp_path, raw)
    assert hidden.hits == []
    reasons = skipped(tmp_path)
    assert {k: reasons.get(u) for k, u in urls.items()} == dict.fromkeys(urls, "ambiguous_url")
    assert reasons[photo_500("redirected")] == "redirect_not_allowed"
    assert [r.image_url for r in manifest(tmp_path)] == [photo_500("fine")]
    # Nothing reached any host but Tumblr's, through the proxy either.
    assert {urllib.parse.urlsplit(u).hostname for u in fake.media_requests()} == {
        "30.media.tumblr.com"
    }


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://64.media.tumblr.com/a/tumblr_a_1280.jpg", "64.media.tumblr.com"),
        ("HTTP://64.Media.Tumblr.COM/x.jpg", "64.media.tumblr.com"),
        ("http://[::1]:8080/x", "[::1]"),
        ("http://xn--exmple-cua.com/x", "xn--exmple-cua.com"),
        # A tag's backslash, as urlencode sends it in the API's query.
        ("http://api.tumblr.com/v2/tagged?tag=a%5Cb&api_key=k", "api.tumblr.com"),
    ],
)
def test_a_plain_url_has_the_host_the_connection_uses(url, host):
    assert net.url_host(url) == host


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        *((u, "ambiguous_url") for u in hiding_urls("10.11.12.13:8080").values()),
        ("http://%36%34.media.tumblr.com/x.jpg", "ambiguous_url"),
        ("http://exämple.com/x.jpg", "ambiguous_url"),
        ("http://64.media.tumblr.com/a\\b.jpg", "ambiguous_url"),
        ("http://64.media.tumblr.com%5c.evil.example/x.jpg", "ambiguous_url"),
        ("http://64.media.tumblr.com/a\x00.jpg", "ambiguous_url"),
        ("http://[::1/x", "ambiguous_url"),
        ("file:///etc/passwd", "scheme_not_allowed"),
        ("//64.media.tumblr.com/x.jpg", "scheme_not_allowed"),
    ],
)
def test_a_url_two_parsers_could_read_differently_is_refused(url, reason):
    with pytest.raises(net.Refused) as refused:
        net.url_host(url)
    assert refused.value.reason == reason


def secret_forms(environ: dict[str, str]) -> dict[str, str]:
    """Each credential as it could leak: plain, URL-encoded, base64 (padded or not)."""
    import base64

    forms = {}
    for name, value in environ.items():
        if value:
            encoded = base64.b64encode(value.encode()).decode()
            forms[f"{name} plain"] = value
            forms[f"{name} url-encoded"] = urllib.parse.quote(value, safe="")
            forms[f"{name} base64"] = encoded.rstrip("=")
    return forms


def leaks(root: Path, environ: dict[str, str], *outputs: str) -> list[str]:
    """Where any form of a credential appears: every file under `root`, and the outputs."""
    found = []
    texts = {f"output {i}": text.encode() for i, text in enumerate(outputs)}
    texts |= {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    for what, form in secret_forms(environ).items():
        found += [f"{what} in {where}" for where, data in texts.items() if form.encode() in data]
    return found


# The secrets in key (API-key reads) and OAuth1 mode; the three others empty in key mode.
MODES = {
    "api_key": {**SECRETS, **dict.fromkeys(list(SECRETS)[1:], "")},
    "oauth1": SECRETS,
}
# Each fault as the harvest meets it: (faults of the fake, tumblr config, exit code).
NETWORK_FAULTS = {
    "dropped_connection": ({"api_dropped": 1}, {}, 0),
    "read_timeout": ({"api_latency_s": 3.0}, {"timeout_s": 1, "retries": 1}, 1),
    "redirect": ({"api_redirect": "http://api.tumblr.com/v2/moved"}, {}, 1),
    "unreachable": ({}, {"api_host": "http://127.0.0.1:{closed}", "retries": 1}, 1),
}
NO_PROXY_ENV = dict.fromkeys(("HTTP_PROXY", "http_proxy"), "")


@pytest.mark.parametrize("fault", NETWORK_FAULTS)
@pytest.mark.parametrize("mode", MODES)
def test_no_credential_reaches_the_log_whatever_the_network_does(tmp_path, fake, mode, fault):
    faults, tumblr_extra, code = NETWORK_FAULTS[fault]
    fake.faults = ft.Faults(**faults)
    tumblr_extra = {
        k: v.format(closed=free_port()) if isinstance(v, str) else v
        for k, v in tumblr_extra.items()
    }
    env = {**MODES[mode], **(NO_PROXY_ENV if fault == "unreachable" else {})}
    result = run_command(tmp_path, raw_config(**tumblr_extra), fake, **env)
    assert result.returncode == code, result.stderr[-3000:]
    if fault in ("dropped_connection", "unreachable"):
        # The line that used to carry the key: urllib3's retry warning, with the query.
        retry = [line for line in result.stderr.splitlines() if "Retrying" in line]
        assert retry and all("api_key=<redacted>" in line for line in retry), result.stderr
    assert leaks(tmp_path, MODES[mode], result.stdout, result.stderr) == []


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("mode", "fault"), [("oauth1", "dropped_connection"), ("api_key", "unreachable")]
)
def test_no_credential_reaches_snakemakes_logs(tmp_path, fake, tool_env, mode, fault):
    from conftest import snakemake, write_project

    faults, tumblr_extra, code = NETWORK_FAULTS[fault]
    fake.faults = ft.Faults(**faults)
    tumblr_extra = {
        k: v.format(closed=free_port()) if isinstance(v, str) else v
        for k, v in tumblr_extra.items()
    }
    write_project(tmp_path, raw_config(**tumblr_extra))
    env = {**tool_env, **fake.env(), **MODES[mode]}
    env.update(NO_PROXY_ENV if fault == "unreachable" else {})
    result = snakemake(tmp_path, env, "resources/manifests/pose.tsv", timeout=300)
    assert (result.returncode == 0) == (code == 0), result.stderr[-3000:]
    log = (tmp_path / "logs" / "harvest" / "pose.log").read_text()
    assert "api_key=<redacted>" in log
    assert list((tmp_path / ".snakemake" / "log").glob("*.log"))
    assert leaks(tmp_path, MODES[mode], result.stdout, result.stderr) == []


def test_redaction_covers_every_logger_warnings_and_tracebacks(caplog):
    import base64
    import logging
    import warnings

    secret = "rd-5ecret/with+chars=="
    cli.register_secret(secret)
    url = f"http://h/v2/x?tag=a&api_key={urllib.parse.quote(secret)}"
    with caplog.at_level(logging.INFO):
        logging.getLogger("urllib3.connectionpool").warning(
            "Retrying (%r) after connection broken by %r: %s", "Retry()", OSError("x"), url
        )
        try:
            raise ConnectionError(f'failed: {url} oauth_token="tok" {secret}')
        except ConnectionError:
            logging.getLogger("requests").exception("request failed")
        warnings.warn(f"insecure {secret}", stacklevel=1)
        logging.getLogger("any.other").info("basic auth %s", base64.b64encode(secret.encode()))
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert "api_key=<redacted>" in text and 'oauth_token="<redacted>' in text
    assert leaks(Path("/nonexistent"), {"k": secret}, text) == []
    assert "rd-5ecret" not in text


def test_absurd_dimensions_in_a_post_rank_as_unknown_and_the_harvest_goes_on(
    tmp_path, fake, secrets
):
    # JSON's 1e400 and Infinity are an infinite float to Python's json; NaN, a string.
    parsed = json.loads('{"width": 1e400, "height": Infinity, "w2": NaN}')
    blocks = []
    for key, (width, height) in {
        "huge": (parsed["width"], 10),
        "inf": (10, parsed["height"]),
        "nan": (parsed["w2"], "wide"),
        "big": (10**400, 10**400),
    }.items():
        block = ft.npf_image(key)
        block["media"] = [dict(block["media"][0], width=width, height=height)]
        blocks.append(block)
    fake.blogs[BLOG] = [ft.npf_post(1, T0, ["pose"], blocks)]
    raw = raw_config()
    raw["classes"]["pose"]["tumblr"] = [{"blog": BLOG, "tag": "pose"}]
    run_harvest(tmp_path, raw)
    assert sorted(r.image_url for r in manifest(tmp_path)) == sorted(
        npf_1280(k) for k in ("huge", "inf", "nan", "big")
    )
    assert tumblr.npf_media({"media": [{"url": "u", "width": parsed["width"]}]}) == (
        tumblr.Rendition("u", tumblr.DEFAULT_WIDTH, tumblr.DEFAULT_HEIGHT),
    )


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KB file system (tmpfs; the test suite runs as root, as the SLURM tests do)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    assert mounted.returncode == 0, f"cannot mount a tmpfs (needs root): {mounted.stderr}"
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_full_disk_is_one_line_naming_the_folder_and_nothing_half_written(tmp_path, small_disk):
    import random

    from PIL import Image

    images = tmp_path / "photos"
    images.mkdir()
    noise = random.Random(0)
    for i in range(40):  # about 800 KB of PNGs that do not compress
        pixels = bytes(noise.randrange(256) for _ in range(96 * 96 * 3))
        Image.frombytes("RGB", (96, 96), pixels).save(images / f"p{i:02d}.png")
    raw = {"classes": {"pose": {"folders": [str(images)]}}}
    result = run_command(small_disk, raw, None)
    line = last_line(result)
    assert line.startswith(f"ERROR: no space left on the disk of {small_disk}/images"), line
    assert "free some space there and re-run" in line
    # Every image stored is whole (its name is its sha256); no temporary is left.
    stored = [p for p in (small_disk / "images").rglob("*") if p.is_file()]
    assert stored
    for path in stored:
        assert not path.name.startswith("."), path
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.stem
    assert not (small_disk / "manifests" / "pose.tsv").exists()
