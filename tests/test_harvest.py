"""Harvest against a real HTTP server standing in for Tumblr, plus folders and the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_tumblr import FakeTumblr, bomb_png, image_bytes
from tumbletrain import cli, config, fileio, harvest, tumblr

API_KEY = "ck-5ecret-consumer-key-000"
SECRETS = {
    "TUMBLR_CONSUMER_KEY": API_KEY,
    "TUMBLR_CONSUMER_SECRET": "cs-5ecret-consumer-secret-111",
    "TUMBLR_OAUTH_TOKEN": "ot-5ecret-oauth-token-222",
    "TUMBLR_OAUTH_SECRET": "os-5ecret-oauth-secret-333",
}
BLOG = "artcive.tumblr.com"
GOOD = [
    "p1.jpg",
    "p2.png",
    "npf.jpg",
    "trail.jpg",
    "body.jpg",
    "reblog.jpg",
    "anim.gif",
    "tagged1.jpg",
    "tagged2.jpg",
]
BAD = {
    "html.jpg": "html_not_image",
    "text.jpg": "not_an_image",
    "huge.jpg": "too_large",
    "bomb.png": "decompression_bomb",
    "trunc.jpg": "truncated",
}


def build_fake(fake: FakeTumblr) -> FakeTumblr:
    for seed, name in enumerate(GOOD, start=1):
        fmt = {"png": "PNG", "gif": "GIF"}.get(name.rsplit(".", 1)[1], "JPEG")
        fake.add_media(name, image_bytes(seed, fmt))
    fake.add_media("dup_of_p1.jpg", fake.media["p1.jpg"][0])  # same bytes, another URL
    fake.add_media("html.jpg", b"<!DOCTYPE html><html><body>login</body></html>", "image/jpeg")
    fake.add_media("text.jpg", b"just some text, not an image at all" * 3, "image/jpeg")
    fake.add_media("huge.jpg", image_bytes(99, "JPEG", (64, 48)) + b"\0" * 3 * 1024 * 1024)
    fake.add_media("bomb.png", bomb_png(), "image/png")
    fake.add_media("trunc.jpg", image_bytes(77, "JPEG", (300, 300)))
    fake.faults.truncate = {"trunc.jpg"}
    posts = [
        fake.legacy_photo_post(10, "artcive", ["p1.jpg", "p2.png"], ["pose"], 1_700_000_010),
        fake.npf_post(9, "artcive", "npf.jpg", "trail.jpg", ["pose"], 1_700_000_009),
        fake.text_post(8, "artcive", "body.jpg", ["pose"], 1_700_000_008),
        fake.legacy_photo_post(
            7,
            "artcive",
            ["reblog.jpg"],
            ["pose"],
            1_700_000_007,
            reblogged_from_id="123",
            parent_post_url="https://x/1",
        ),
        fake.legacy_photo_post(
            6, "artcive", ["anim.gif", "dup_of_p1.jpg"], ["pose"], 1_700_000_006
        ),
        fake.legacy_photo_post(5, "artcive", list(BAD), ["pose"], 1_700_000_005),
        {
            "id": 4,
            "type": "photo",
            "blog_name": "artcive",
            "post_url": "u",
            "tags": ["pose"],
            "timestamp": 1_700_000_004,
            "photos": [{"original_size": {"url": "http://elsewhere.invalid/x.jpg"}}],
        },
    ]
    # The API repeats a post across pages now and then.
    fake.blog_posts[(BLOG, "pose")] = posts[:3] + [posts[2]] + posts[3:]
    fake.page_sizes = [2, 3]
    fake.tagged_posts["figure drawing"] = [
        fake.legacy_photo_post(30, "someone", ["tagged1.jpg"], ["figure drawing"], 1_700_000_030),
        fake.legacy_photo_post(
            29, "someone", ["tagged2.jpg", "p1.jpg"], ["figure drawing"], 1_700_000_029
        ),
    ]
    return fake


@pytest.fixture
def fake():
    server = build_fake(FakeTumblr(api_key=API_KEY)).start()
    yield server
    server.stop()


def raw_config(fake: FakeTumblr, **tumblr_extra) -> dict:
    return {
        "classes": {"pose": {"tumblr": [{"blog": BLOG, "tag": "pose"}, {"tag": "figure drawing"}]}},
        "tumblr": {
            "api_host": fake.base,
            "media_hosts": ["127.0.0.1"],
            "max_image_mb": 2,
            "timeout_s": 5,
            "retries": 3,
            "max_wait_s": 5,
            **tumblr_extra,
        },
    }


def run_harvest(tmp_path: Path, raw: dict) -> dict:
    return harvest.harvest_class(
        config.parse(raw), "pose", tmp_path / "images", tmp_path / "manifests"
    )


@pytest.fixture
def secrets(monkeypatch):
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)


def manifest(tmp_path: Path) -> list[dict]:
    return fileio.read_tsv(tmp_path / "manifests" / "pose.tsv")


def test_every_image_arrives_once_and_faults_are_skipped_with_reasons(tmp_path, fake, secrets):
    result = run_harvest(tmp_path, raw_config(fake))
    rows = manifest(tmp_path)
    urls = {r["image_url"].rsplit("/", 1)[1] for r in rows}
    # dup_of_p1.jpg has p1's bytes: stored once, listed once.
    assert urls == set(GOOD)
    assert result["images"] == len(GOOD)
    stored = [p for p in (tmp_path / "images").rglob("*") if p.is_file()]
    assert len(stored) == len(GOOD)
    for row in rows:
        assert Path(row["file"]).name.startswith(row["sha256"])
        assert int(row["width"]) > 0 and row["source"] == "tumblr"
    skipped = {
        r["image_url"].rsplit("/", 1)[1]: r["reason"]
        for r in fileio.read_tsv(tmp_path / "manifests" / "pose.skipped.tsv")
    }
    assert {k: v for k, v in skipped.items() if k in BAD} == BAD
    assert skipped["x.jpg"] == "host_not_allowed"
    # The largest rendition: no "small_" URL was ever fetched.
    assert not [p for p in fake.image_requests() if "small_" in p]
    # No temp files are left in the store.
    assert not [p for p in (tmp_path / "images").rglob(".*")]


def test_second_run_makes_no_image_requests_and_same_manifest(tmp_path, fake, secrets):
    run_harvest(tmp_path, raw_config(fake))
    first = (tmp_path / "manifests" / "pose.tsv").read_bytes()
    fake.requests.clear()
    run_harvest(tmp_path, raw_config(fake))
    # Only the transient failure (a truncated body) is worth another try.
    assert [p.rsplit("/", 1)[1] for p in fake.image_requests()] == ["trunc.jpg"]
    assert (tmp_path / "manifests" / "pose.tsv").read_bytes() == first
    fake.faults.truncate = set()
    run_harvest(tmp_path, raw_config(fake))
    fake.requests.clear()
    run_harvest(tmp_path, raw_config(fake))
    assert fake.image_requests() == [], "a harvest with nothing new asks for no image"
    assert "trunc.jpg" in (tmp_path / "manifests" / "pose.tsv").read_text()


def test_reblogs_can_be_excluded(tmp_path, fake, secrets):
    run_harvest(tmp_path, raw_config(fake, include_reblogs=False))
    urls = {r["image_url"].rsplit("/", 1)[1] for r in manifest(tmp_path)}
    assert "reblog.jpg" not in urls and "p1.jpg" in urls


def test_rate_limit_and_server_errors_are_waited_out(tmp_path, fake, secrets):
    fake.faults.rate_limit_once = True
    fake.faults.rate_limit_reset_s = 1
    fake.faults.server_errors = 2
    fake.faults.dropped_connections = 1
    run_harvest(tmp_path, raw_config(fake))
    assert {r["image_url"].rsplit("/", 1)[1] for r in manifest(tmp_path)} == set(GOOD)


def test_a_long_rate_limit_stops_cleanly(tmp_path, fake, secrets):
    fake.faults.rate_limit_once = True
    fake.faults.rate_limit_reset_s = 3600
    with pytest.raises(tumblr.RateLimited) as error:
        run_harvest(tmp_path, raw_config(fake))
    assert "re-run" in str(error.value)


def test_missing_key_names_the_variable(tmp_path, fake, monkeypatch):
    for key in SECRETS:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(cli.UserError, match="TUMBLR_CONSUMER_KEY"):
        run_harvest(tmp_path, raw_config(fake))


def test_oauth_only_when_all_four_are_set():
    assert tumblr.credentials_from_env({"TUMBLR_CONSUMER_KEY": "k"}).consumer_secret == ""
    full = tumblr.credentials_from_env(SECRETS)
    assert full.oauth_secret == SECRETS["TUMBLR_OAUTH_SECRET"]
    assert "5ecret" not in repr(full)


def harvest_command(tmp_path: Path, raw: dict) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tumbletrain.harvest",
        "--config-json",
        json.dumps(raw),
        "--class",
        "pose",
        "--store",
        str(tmp_path / "images"),
        "--manifests",
        str(tmp_path / "manifests"),
    ]


def test_credentials_never_reach_a_written_file_or_the_log(tmp_path, fake):
    env = {**os.environ, **SECRETS}
    result = subprocess.run(
        harvest_command(tmp_path, raw_config(fake)), env=env, capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written
    for secret in SECRETS.values():
        assert secret.encode() not in result.stderr + result.stdout
        for path in written:
            assert secret.encode() not in path.read_bytes(), f"{secret} in {path}"


def test_killed_harvest_resumes_to_the_same_manifest(tmp_path, fake):
    env = {**os.environ, **SECRETS}
    reference = tmp_path / "reference"
    subprocess.run(
        harvest_command(reference, raw_config(fake)),
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    interrupted = tmp_path / "interrupted"
    fake.faults.slow_media_s = 0.4
    process = subprocess.Popen(
        harvest_command(interrupted, raw_config(fake, concurrency=2)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline and len(list((interrupted / "images").rglob("*.*"))) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (interrupted / "manifests" / "pose.tsv").exists(), "killed before the end"
    fake.faults.slow_media_s = 0
    rerun = subprocess.run(
        harvest_command(interrupted, raw_config(fake)),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (interrupted / "manifests" / "pose.tsv").read_bytes() == (
        reference / "manifests" / "pose.tsv"
    ).read_bytes().replace(b"reference", b"interrupted")
    leftovers = [p for p in (interrupted / "images").rglob("*") if p.name.startswith(".")]
    assert not leftovers, leftovers


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
    assert {r["source"] for r in rows} == {"folder"}
    before = (tmp_path / "manifests" / "pose.tsv").read_bytes()
    run_harvest(tmp_path, raw)
    assert (tmp_path / "manifests" / "pose.tsv").read_bytes() == before
    assert (folder / "notes.jpg").read_bytes() == b"not an image", "inputs are never changed"


def test_a_class_without_sources_is_a_clear_error(tmp_path):
    with pytest.raises(cli.UserError, match="no image source"):
        run_harvest(tmp_path, {"classes": {"pose": {}}})


def test_post_images_finds_every_kind():
    fake = FakeTumblr()
    try:
        npf = fake.npf_post(1, "b", "n.jpg", "t.jpg", [], 1)
        text = fake.text_post(2, "b", "body.jpg", [], 1)
        assert [u.rsplit("/", 1)[1] for u in tumblr.post_images(npf)] == ["n.jpg", "t.jpg"]
        assert [u.rsplit("/", 1)[1] for u in tumblr.post_images(text)] == ["body.jpg"]
        legacy = {
            "photos": [{"alt_sizes": [{"url": "s", "width": 100}, {"url": "l", "width": 500}]}]
        }
        assert tumblr.post_images(legacy) == ["l"]
    finally:
        fake.server.server_close()


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
    assert counts["linked"] + counts["copied"] == 1
    assert (target / "predefined_classes.txt").read_text() == "my own list\n"
    assert (target / "mine.xml").read_text() == "<annotation/>"
    (folder / "b.png").write_bytes(image_bytes(2, "PNG"))
    run_harvest(tmp_path, raw)
    counts = labelimg.materialise(manifest(tmp_path), target, ["pose", "hand"])
    assert counts["present"] == 1 and counts["linked"] + counts["copied"] == 1
    assert len(list(target.glob("*.jpg")) + list(target.glob("*.png"))) == 2


def test_leftovers_of_killed_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    folder = tmp_path / "images" / "ab"
    folder.mkdir(parents=True)
    stale = folder / f".abc.jpg.{fileio.host()}-{dead}.x1y2z3.tmp"
    live = folder / f".abd.jpg.{fileio.writer()}.q9w8e7.tmp"
    finished = folder / "abc.jpg"
    for path in (stale, live, finished):
        path.write_bytes(b"x")
    assert fileio.remove_leftovers(tmp_path / "images") == 1
    assert not stale.exists() and live.exists() and finished.exists()


def api_requests(fake: FakeTumblr) -> list[str]:
    with fake.lock:
        return [p for p in fake.requests if not p.startswith("/media/")]


def add_new_posts(fake: FakeTumblr) -> None:
    """A post newer than any harvested, on the blog and under the tag."""
    fake.add_media("new1.jpg", image_bytes(41))
    fake.add_media("new2.jpg", image_bytes(42))
    fake.blog_posts[(BLOG, "pose")].insert(
        0, fake.legacy_photo_post(11, "artcive", ["new1.jpg"], ["pose"], 1_700_000_011)
    )
    fake.tagged_posts["figure drawing"].insert(
        0, fake.legacy_photo_post(31, "x", ["new2.jpg"], ["figure drawing"], 1_700_000_031)
    )


def same_manifest(a: Path, b: Path) -> bool:
    """The manifests of two harvests into different folders, paths aside."""
    first = (a / "manifests" / "pose.tsv").read_text().replace(str(a.name), "ROOT")
    second = (b / "manifests" / "pose.tsv").read_text().replace(str(b.name), "ROOT")
    return first == second


def test_rerun_pages_only_posts_newer_than_the_last_complete_paging(tmp_path, fake, secrets):
    run_harvest(tmp_path / "inc", raw_config(fake))
    full_api_calls = len(api_requests(fake))
    add_new_posts(fake)
    fake.requests.clear()
    run_harvest(tmp_path / "inc", raw_config(fake))
    # One page per query finds the newest post known; the old posts come from the state.
    assert len(api_requests(fake)) == 2 < full_api_calls
    fetched = {p.rsplit("/", 1)[1] for p in fake.image_requests()}
    assert fetched == {"new1.jpg", "new2.jpg", "trunc.jpg"}  # trunc.jpg: retried, as ever
    run_harvest(tmp_path / "full", raw_config(fake))
    assert same_manifest(tmp_path / "inc", tmp_path / "full")


def test_an_interrupted_paging_is_not_trusted(tmp_path, fake, secrets):
    run_harvest(tmp_path / "inc", raw_config(fake))
    state = fileio.read_json(tmp_path / "inc" / "manifests" / "pose.paging.json")
    add_new_posts(fake)
    fake.faults.rate_limit_once = True
    fake.faults.rate_limit_reset_s = 3600
    with pytest.raises(tumblr.RateLimited):
        run_harvest(tmp_path / "inc", raw_config(fake))
    # The state is still that of the last complete paging ...
    assert fileio.read_json(tmp_path / "inc" / "manifests" / "pose.paging.json") == state
    run_harvest(tmp_path / "inc", raw_config(fake))
    # ... so the next run pages down to it and misses nothing.
    run_harvest(tmp_path / "full", raw_config(fake))
    assert same_manifest(tmp_path / "inc", tmp_path / "full")
    assert "new1.jpg" in (tmp_path / "inc" / "manifests" / "pose.tsv").read_text()


def test_tags_added_to_old_posts_need_full_paging(tmp_path, fake, secrets):
    run_harvest(tmp_path, raw_config(fake))
    fake.add_media("late.jpg", image_bytes(43))
    # An old post tagged only now: it sorts below the newest post already seen.
    fake.blog_posts[(BLOG, "pose")].append(
        fake.legacy_photo_post(3, "artcive", ["late.jpg"], ["pose"], 1_700_000_003)
    )
    run_harvest(tmp_path, raw_config(fake))
    assert "late.jpg" not in (tmp_path / "manifests" / "pose.tsv").read_text()
    run_harvest(tmp_path, raw_config(fake, full_paging=True))
    assert "late.jpg" in (tmp_path / "manifests" / "pose.tsv").read_text()
    # A changed query (here the reblog setting) pages afresh too.
    fake.requests.clear()
    run_harvest(tmp_path, raw_config(fake, include_reblogs=False))
    assert len(api_requests(fake)) > 2
