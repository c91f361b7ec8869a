"""Checkpoint downloads against a server on 127.0.0.1 that misbehaves in each way it can."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tumbletrain import checkpoint, cli, config


def tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# A checkpoint's files (the prefix is what the model stage restores); contents are opaque here.
CKPT = tar_gz(
    {"ckpt/ckpt-1.index": b"index" * 100, "ckpt/ckpt-1.data-00000-of-00001": os.urandom(50_000)}
)


@dataclass
class Served:
    data: bytes
    etag: str = '"v1"'
    ranges: bool = True  # honours Range
    range_from_zero: bool = False  # answers every Range with a 206 from byte 0
    no_length: bool = False  # no Content-Length, the body ends when the connection closes
    cut_at: int | None = None  # the connection closes after this many bytes
    gzip_encoding: bool = False  # labelled Content-Encoding: gzip (as some servers do for .gz)
    location: str | None = None  # a redirect
    seen: list[dict] = field(default_factory=list)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    files: dict[str, Served] = {}

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        served = self.files.get(self.path)
        if served is None:
            return self.reply(404, b"", {})
        served.seen.append({k: self.headers[k] for k in ("Range", "If-Range") if k in self.headers})
        if served.location:
            return self.reply(302, b"", {"Location": served.location})
        data, headers, status = served.data, {"ETag": served.etag}, 200
        wanted = self.headers.get("Range")
        same = self.headers.get("If-Range") in (None, served.etag)
        if wanted and served.ranges and same:
            start = 0 if served.range_from_zero else int(wanted.split("=")[1].split("-")[0])
            if start >= len(data):
                return self.reply(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            status, headers["Content-Range"] = 206, f"bytes {start}-{len(data) - 1}/{len(data)}"
            data = data[start:]
        if served.gzip_encoding:
            headers["Content-Encoding"] = "gzip"
        if served.cut_at is not None and status == 200:
            return self.reply(status, data[: served.cut_at], headers, length=len(data), close=True)
        return self.reply(status, data, headers, length=None if served.no_length else len(data))

    def reply(self, status, body, headers, length: int | None = -1, close=False):
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if length is None:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body) if length == -1 else length))
        self.end_headers()
        self.wfile.write(body)
        if close:
            self.close_connection = True


@pytest.fixture
def server():
    Handler.files = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", Handler.files
    httpd.shutdown()
    httpd.server_close()


def source(url: str, data: bytes | None = None, **extra) -> config.CheckpointSource:
    digest = hashlib.sha256(data).hexdigest() if data is not None else None
    return config.CheckpointSource(url, digest, **extra)


def fetch(root: Path, src: config.CheckpointSource) -> dict:
    return checkpoint.fetch_checkpoint(src, root)


def part_of(root: Path, url: str) -> Path:
    download = checkpoint.Download(url, root, None)
    download.part.parent.mkdir(parents=True, exist_ok=True)
    return download.part


def start_partial(root: Path, url: str, data: bytes, length: int, etag='"v1"') -> Path:
    """The state a killed download leaves: half a part file and what its server said."""
    part = part_of(root, url)
    part.write_bytes(data)
    state = {"url": url, "etag": etag, "length": length}
    Path(str(part) + ".json").write_text(json.dumps(state))
    return part


def test_an_honest_resume_continues_and_verifies(tmp_path, server):
    base, files = server
    files["/ckpt.tar.gz"] = Served(CKPT)
    url = f"{base}/ckpt.tar.gz"
    start_partial(tmp_path, url, CKPT[:1000], len(CKPT))
    info = fetch(tmp_path, source(url, CKPT))
    assert files["/ckpt.tar.gz"].seen == [{"Range": "bytes=1000-", "If-Range": '"v1"'}]
    assert info["sha256_verified"] and info["prefix"].endswith("ckpt/ckpt-1")
    assert Path(info["prefix"] + ".index").read_bytes() == b"index" * 100


@pytest.mark.parametrize(
    "served",
    [
        Served(CKPT, range_from_zero=True),  # a 206 from byte 0: appending it would corrupt
        Served(CKPT, ranges=False),  # the range ignored: a 200 with the whole file
        Served(CKPT, etag='"v2"'),  # the file changed: If-Range fails, a 200 with the new file
    ],
    ids=["206-from-zero", "range-ignored", "changed-file"],
)
def test_a_resume_that_is_not_a_continuation_starts_again(tmp_path, server, served):
    base, files = server
    files["/ckpt.tar.gz"] = served
    url = f"{base}/ckpt.tar.gz"
    start_partial(tmp_path, url, b"X" * 1000, len(CKPT))
    info = fetch(tmp_path, source(url, CKPT))
    assert info["sha256_verified"]


def test_a_changed_length_restarts(tmp_path, server):
    base, files = server
    files["/ckpt.tar.gz"] = Served(CKPT, etag="")  # no ETag: only the total tells
    url = f"{base}/ckpt.tar.gz"
    start_partial(tmp_path, url, b"X" * 1000, len(CKPT) + 5, etag=None)
    fetch(tmp_path, source(url, CKPT))
    assert [s.get("Range") for s in files["/ckpt.tar.gz"].seen] == ["bytes=1000-", None]


def test_416_means_complete_only_when_the_lengths_agree(tmp_path, server):
    base, files = server
    files["/ckpt.tar.gz"] = Served(CKPT)
    url = f"{base}/ckpt.tar.gz"
    start_partial(tmp_path, url, CKPT, len(CKPT))
    assert fetch(tmp_path / ".." / tmp_path.name, source(url, CKPT))["sha256_verified"]
    assert files["/ckpt.tar.gz"].seen == [{"Range": f"bytes={len(CKPT)}-", "If-Range": '"v1"'}]
    # A part longer than the file: the 416 does not say complete; start again.
    other = tmp_path / "other"
    start_partial(other, url, CKPT + b"junk", len(CKPT) + 4)
    assert fetch(other, source(url, CKPT))["sha256_verified"]


def test_a_short_body_is_never_complete(tmp_path, server):
    base, files = server
    files["/cut.tar.gz"] = Served(CKPT, cut_at=1000)
    url = f"{base}/cut.tar.gz"
    with pytest.raises(cli.UserError, match="re-run to resume it"):
        fetch(tmp_path, source(url, CKPT))
    files["/cut.tar.gz"].cut_at = None
    assert fetch(tmp_path, source(url, CKPT))["sha256_verified"]
    assert files["/cut.tar.gz"].seen[-1]["Range"].startswith("bytes=")


def test_a_body_without_length_is_confirmed_by_a_range_probe(tmp_path, server):
    base, files = server
    files["/nolen.tar.gz"] = Served(CKPT, no_length=True)
    url = f"{base}/nolen.tar.gz"
    info = fetch(tmp_path, source(url))  # unpinned: only the probe can tell
    assert info["sha256"] == hashlib.sha256(CKPT).hexdigest()
    assert files["/nolen.tar.gz"].seen[-1] == {"Range": f"bytes={len(CKPT)}-"}
    files["/norange.tar.gz"] = Served(CKPT, no_length=True, ranges=False)
    with pytest.raises(cli.UserError, match="without a length and its end cannot be confirmed"):
        fetch(tmp_path, source(f"{base}/norange.tar.gz"))


def test_bodies_are_saved_as_sent_and_the_cache_is_keyed_by_url(tmp_path, server):
    base, files = server
    files["/a/ckpt.tar.gz"] = Served(CKPT, gzip_encoding=True)
    info = fetch(tmp_path, source(f"{base}/a/ckpt.tar.gz", CKPT))
    assert info["sha256_verified"], "a gzip Content-Encoding is not undone"
    other = tar_gz({"ckpt/ckpt-2.index": b"other"})
    files["/b/ckpt.tar.gz"] = Served(other)
    info = fetch(tmp_path, source(f"{base}/b/ckpt.tar.gz", other))
    assert info["prefix"].endswith("ckpt/ckpt-2"), "same file name, another URL: fetched anew"
    assert files["/b/ckpt.tar.gz"].seen == [{}]


def test_the_default_is_unpinned_and_logs_the_hash_it_saw(tmp_path, server, caplog):
    base, files = server
    files["/ckpt.tar.gz"] = Served(CKPT)
    assert config.parse({"classes": {"a": {}}}).model.checkpoint.sha256 is None
    info = fetch(tmp_path, source(f"{base}/ckpt.tar.gz"))
    assert not info["sha256_verified"]
    assert (
        f"saw {hashlib.sha256(CKPT).hexdigest()} (pin it as model.checkpoint.sha256)" in caplog.text
    )


def zip_with(name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(name, b"x")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "why"),
    [
        ("evil.zip", zip_with("../../escaped"), "unsafe or corrupt"),
        ("cut.tar.gz", CKPT[: len(CKPT) // 2], "unsafe or corrupt"),
        ("bomb.tar.gz", tar_gz({"zeros": bytes(3 * 1024 * 1024)}), "would expand to 3145728 bytes"),
        ("notes.txt.gz", gzip.compress(b"not an archive"), "neither a tar nor a zip"),
    ],
)
def test_archive_errors_are_one_line_saying_what_to_delete(tmp_path, server, name, data, why):
    base, files = server
    files[f"/{name}"] = Served(data)
    url = f"{base}/{name}"
    with pytest.raises(cli.UserError) as error:
        fetch(tmp_path, source(url, data, max_extract_mb=1))
    message = str(error.value)
    archive = checkpoint.Download(url, tmp_path, None).target
    assert why in message and message.endswith(f"delete {archive} and re-run to download it again")
    assert not (tmp_path / "extracted").exists() and not list(tmp_path.glob(".extracted*"))
    assert not list(tmp_path.parent.rglob("escaped"))


def test_a_folder_is_a_checkpoint(tmp_path):
    folder = tmp_path / "my_ckpt"
    folder.mkdir()
    (folder / "ckpt-7.index").write_bytes(b"i")
    info = fetch(tmp_path / "out", config.CheckpointSource(str(folder)))
    assert info["prefix"] == str(folder / "ckpt-7") and not info["sha256_verified"]
    with pytest.raises(cli.UserError, match="a sha256 verifies an archive"):
        fetch(tmp_path / "out", config.CheckpointSource(f"file://{folder}", "0" * 64))


def test_a_redirect_to_a_file_url_is_refused(tmp_path, server):
    base, files = server
    files["/ckpt.tar.gz"] = Served(CKPT, location="file:///etc/passwd")
    with pytest.raises(cli.UserError, match="redirected to a refused URL"):
        fetch(tmp_path, source(f"{base}/ckpt.tar.gz"))


@pytest.mark.parametrize("output", [None, "elsewhere/ready.json"])
def test_the_command_removes_a_killed_extraction_and_extracts_again(
    tmp_path, tool_env, dead_writer, output
):
    """... and writes checkpoint.json where --output says (the rule's output), by default
    beside the extracted checkpoint."""
    archive = tmp_path / "ckpt.tar.gz"
    archive.write_bytes(CKPT)
    out = tmp_path / "out"
    stale = out / f".extracted.{dead_writer}.a1b2c3d4.tmpdir"
    stale.mkdir(parents=True)
    (stale / "half-written").write_bytes(b"x")
    raw = {"classes": {"cat": {}}, "model": {"checkpoint": {"url": f"file://{archive}"}}}
    result = subprocess.run(
        [sys.executable, "-m", "tumbletrain.model", "checkpoint", "--output-dir", str(out)]
        + ["--config-json", json.dumps(raw)]
        + (["--output", str(tmp_path / output)] if output else []),
        env=tool_env,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((tmp_path / (output or "out/checkpoint.json")).read_text())
    assert Path(info["prefix"]).is_relative_to(out / "extracted")
    written = ["extracted"] if output else ["checkpoint.json", "extracted"]
    assert sorted(p.name for p in out.iterdir()) == written


def test_offline_is_one_line_with_the_offline_options(tmp_path, tool_env):
    url = "http://127.0.0.1:9/mobilenet_ckpt.tar.gz"
    raw = {"classes": {"cat": {"folders": ["data/cat"]}}, "model": {"checkpoint": {"url": url}}}
    result = subprocess.run(
        [sys.executable, "-m", "tumbletrain.model", "checkpoint", "--output-dir", str(tmp_path)]
        + ["--config-json", json.dumps(raw)],
        capture_output=True,
        text=True,
        env=tool_env,
        timeout=300,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "ERROR: cannot reach 127.0.0.1 after 3 retries (connection refused); to work offline, "
        "download it on a machine that can and set model.checkpoint.url to its file:// path, "
        "or set model.checkpoint: null to train from scratch"
    )


def in_time(function, *args, timeout_s: float = 30):
    """`function(*args)`'s exception, failing the test if it does not return in time."""
    outcome: list = []

    def call():
        try:
            function(*args)
            outcome.append(None)
        except Exception as error:  # the test asserts which
            outcome.append(error)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert outcome, f"still reading after {timeout_s} s"
    return outcome[0]


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "dev_zero_url"])
def test_a_checkpoint_that_is_a_special_file_is_refused_not_read(tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "ckpt.tar.gz"
        os.mkfifo(path)
        url = str(path)
    else:
        url = "/dev/zero" if kind == "dev_zero" else "file:///dev/zero"
    error = in_time(fetch, tmp_path / "out", config.CheckpointSource(url))
    assert isinstance(error, cli.UserError)
    assert "not a regular file" in str(error) and str(error).endswith("at the archive file")


def test_an_archive_larger_than_the_cap_is_not_hashed_to_the_end(tmp_path):
    archive = tmp_path / "big.tar"
    with open(archive, "wb") as handle:
        handle.truncate(3 * 1024 * 1024 + checkpoint.MAX_MEMBERS * checkpoint.MEMBER_OVERHEAD)
    with pytest.raises(cli.UserError, match="more than .* raise model.checkpoint.max_extract_mb"):
        fetch(tmp_path / "out", config.CheckpointSource(str(archive), max_extract_mb=1))


def test_an_archive_of_too_many_members_is_not_extracted(tmp_path):
    archive = tmp_path / "many.tar"
    with tarfile.open(archive, "w") as tar:
        for i in range(checkpoint.MAX_MEMBERS + 1):
            tar.addfile(tarfile.TarInfo(f"m{i}"), io.BytesIO(b""))
    with pytest.raises(cli.UserError, match=f"more than {checkpoint.MAX_MEMBERS} members"):
        fetch(tmp_path / "out", config.CheckpointSource(str(archive)))
    assert not (tmp_path / "out" / "extracted").exists()
