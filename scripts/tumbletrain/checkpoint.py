"""Download a checkpoint once: resumable, verified, safely extracted.

The download goes through `net.Net` (retries, timeouts, only http(s) on every
redirect hop) into `downloads/{sha256(url)[:16]}/{name}.part`: the cache is
keyed by the URL, so a changed URL with the same file name is fetched anew.
The body is saved as the server sent it (no content decoding), so its sha256
is the published file's. A `.part` resumes with an HTTP Range request only if
the answer proves it continues the same file (`Content-Range` starting at the
bytes we have, the same total length, `If-Range` on the ETag); anything else
starts again. A finished file's length is checked against `Content-Length` or
the `Content-Range` total; a body without either is confirmed with a range
probe past its end (or by the pinned sha256).

The archive is verified against `model.checkpoint.sha256` (or the hash seen is
logged, so it can be pinned), its total extracted size checked against
`model.checkpoint.max_extract_mb`, then extracted (tarfile's `data` filter, no
path out of the target for zip files) into a staging folder renamed into place
when complete. A folder given as the checkpoint is used as it is.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tarfile
import zipfile
import zlib
from pathlib import Path
from urllib.parse import unquote, urlparse

from . import cli, fileio, net
from . import config as tt_config

log = logging.getLogger("tumbletrain.checkpoint")
CHUNK = 1 << 20
POLICY = net.Policy(timeout_s=60.0, retries=3)
OFFLINE = (
    "to work offline, download it on a machine that can and set model.checkpoint.url to its "
    "file:// path, or set model.checkpoint: null to train from scratch"
)
# A checkpoint is a handful of files (the index, the data shards, a config); an
# archive of more members is refused before extraction, whatever their size.
MAX_MEMBERS = 10_000
# What an archive may hold beyond its members' bytes: a tar's 512-byte header and
# padding per member (zip's entries are smaller).
MEMBER_OVERHEAD = 1024
CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)")


class Restart(Exception):
    """The server's answer does not continue our partial file: start again from byte 0."""


def local_path(url: str) -> Path | None:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "":
        return Path(url).expanduser()
    return None


def content_range(response) -> tuple[int | None, int | None]:
    """(first byte, total length) from `Content-Range`; None where absent or `*`."""
    match = CONTENT_RANGE.fullmatch((response.headers.get("Content-Range") or "").strip())
    if not match:
        return None, None
    first = int(match[1]) if match[1] is not None else None
    total = int(match[3]) if match[3] != "*" else None
    return first, total


class Download:
    """One URL's download into its own cache folder, resumed only when provably the same file."""

    def __init__(self, url: str, root: Path, client: net.Net):
        self.url, self.net = url, client
        name = Path(urlparse(url).path).name or "checkpoint"
        folder = root / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:16]
        self.target = folder / name
        self.part = folder / f"{name}.part"
        self.state_path = folder / f"{name}.part.json"

    def state(self) -> dict:
        try:
            state = fileio.read_json(self.state_path)
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) and state.get("url") == self.url else {}

    def run(self, pinned: bool) -> Path:
        if self.target.exists():
            return self.target  # finished before; fetch_checkpoint verifies its hash
        self.target.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.fetch(resume=True)
        except Restart as why:
            log.info("%s: %s; downloading it again from the start", self.url, why)
            self.part.unlink(missing_ok=True)
            self.fetch(resume=False)
        self.confirm_complete(pinned)
        os.replace(self.part, self.target)
        self.state_path.unlink(missing_ok=True)
        return self.target

    def get(self, headers: dict):
        try:
            return self.net.get(self.url, headers=headers, stream=True)
        except net.Unreachable as error:
            raise cli.UserError(f"{error}; {OFFLINE}") from None
        except net.Refused as refused:
            raise cli.UserError(
                f"checkpoint URL {self.url}: {refused}; fix model.checkpoint.url"
            ) from None

    def fetch(self, resume: bool) -> None:
        state = self.state()
        have = self.part.stat().st_size if resume and state and self.part.exists() else 0
        # Bytes as sent: a gzip Content-Encoding must not be undone, or no sha256 matches.
        headers = {"Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
            if state.get("etag"):
                headers["If-Range"] = state["etag"]
        with self.get(headers) as response:
            status = response.status_code
            if status == 416:
                _, total = content_range(response)
                if total is not None and total == have and state.get("length") in (None, total):
                    return  # the part file was already complete
                raise Restart(f"the server refused the range (HTTP 416, {have} bytes kept)")
            if status == 404:
                raise cli.UserError(
                    f"checkpoint URL {self.url} answered 404 Not Found; "
                    "fix model.checkpoint.url (or set it to null to train from scratch)"
                )
            if status >= 400:
                raise cli.UserError(
                    f"checkpoint URL {self.url} answered HTTP {status}; "
                    "check the URL and the network, then re-run to resume"
                )
            length = self.expected_length(response, have, state)
            fileio.write_json(
                self.state_path,
                {"url": self.url, "etag": response.headers.get("ETag"), "length": length},
            )
            self.stream(response, "ab" if status == 206 else "wb")

    def expected_length(self, response, have: int, state: dict) -> int | None:
        """The whole file's length this answer promises; `Restart` if it is another file."""
        declared = response.headers.get("Content-Length")
        if response.status_code != 206:
            if have:
                log.info("%s: the server ignored the range; starting again", self.url)
            return int(declared) if declared is not None else None
        first, total = content_range(response)
        if first != have:
            raise Restart(f"Content-Range starts at byte {first}, not at {have}")
        if total is None or (state.get("length") not in (None, total)):
            raise Restart(f"the file's length changed ({state.get('length')} -> {total})")
        if declared is not None and int(declared) != total - have:
            raise Restart(f"Content-Length {declared} does not match Content-Range")
        log.info("resuming %s at byte %d of %d", self.url, have, total)
        return total

    def stream(self, response, mode: str) -> None:
        try:
            with open(self.part, mode) as handle:
                for chunk in net.Net.chunks(response, decode=False):
                    handle.write(chunk)
        except net.Truncated as cut:
            raise cli.UserError(
                f"the download of {self.url} stopped ({cut}); re-run to resume it"
            ) from None

    def confirm_complete(self, pinned: bool) -> None:
        size = self.part.stat().st_size
        length = self.state().get("length")
        if length is not None:
            if size != length:
                raise cli.UserError(
                    f"the download of {self.url} stopped at {size} of {length} bytes; "
                    "re-run to resume it"
                )
            return
        if pinned:
            return  # no length was sent, but the pinned sha256 decides
        # No length at all: ask for the bytes past our end; 416 with our size proves the end.
        with self.get({"Accept-Encoding": "identity", "Range": f"bytes={size}-"}) as probe:
            first, total = content_range(probe)
            if probe.status_code == 416 and total == size:
                return
            if probe.status_code == 206 and first == size:
                raise cli.UserError(
                    f"the download of {self.url} stopped at {size} bytes (the server sent no "
                    "length); re-run to resume it"
                )
        raise cli.UserError(
            f"{self.url} was sent without a length and its end cannot be confirmed, so an "
            "incomplete download cannot be told from a complete one; pin model.checkpoint.sha256 "
            f"(or download it yourself and use a file:// URL), then delete {self.part} and re-run"
        )


def sha256_of(path: Path, max_bytes: int) -> str:
    """The file's sha256, reading at most `max_bytes`; a FIFO or device is never read
    (`/dev/zero` as a checkpoint would hash forever). Raises FileProblem."""
    digest, size = hashlib.sha256(), 0
    with fileio.open_regular(path, max_bytes) as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            size += len(chunk)
            if size > max_bytes:
                raise fileio.FileProblem("too_large", f"{path} has more than {max_bytes} bytes")
            digest.update(chunk)
    return digest.hexdigest()


def archive_contents(archive: Path) -> tuple[int, int]:
    """The bytes the archive's members declare (what extraction would write) and how many
    members it has, counted up to MAX_MEMBERS + 1."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            return sum(info.file_size for info in infos), len(infos)
    size = members = 0
    with tarfile.open(archive) as tar:
        for member in tar:
            members += 1
            size += member.size if member.isfile() else 0
            if members > MAX_MEMBERS:
                break
    return size, members


def extract(archive: Path, destination: Path, max_bytes: int, what_to_delete: str) -> None:
    """Extract safely into a staging directory (fileio.atomic_dir), renamed into place."""
    try:
        if zipfile.is_zipfile(archive):
            kind = "zip"
        elif tarfile.is_tarfile(archive):
            kind = "tar"
        else:
            raise cli.UserError(
                f"checkpoint {archive} is neither a tar nor a zip archive; {what_to_delete}"
            )
        size, members = archive_contents(archive)
        if members > MAX_MEMBERS:
            raise cli.UserError(
                f"checkpoint archive {archive} has more than {MAX_MEMBERS} members; a checkpoint "
                f"has a few files: {what_to_delete}"
            )
        if size > max_bytes:
            raise cli.UserError(
                f"checkpoint archive {archive} would expand to {size} bytes, more than "
                f"model.checkpoint.max_extract_mb ({max_bytes // (1024 * 1024)} MB); raise the "
                f"cap if you trust it, or {what_to_delete}"
            )
        with fileio.atomic_dir(destination) as staging:
            if kind == "tar":
                with tarfile.open(archive) as tar:
                    tar.extractall(staging, filter="data")
            else:
                with zipfile.ZipFile(archive) as zf:
                    for member in zf.namelist():
                        resolved = (staging / member).resolve()
                        if not resolved.is_relative_to(staging.resolve()):
                            raise zipfile.BadZipFile(f"{member!r} points outside the folder")
                    zf.extractall(staging)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise cli.UserError(
            f"checkpoint archive {archive} is unsafe or corrupt ({reason}); {what_to_delete}"
        ) from None


def find_prefix(root: Path) -> str:
    """The checkpoint prefix inside a folder (the `.index` file's stem)."""
    import tensorflow as tf

    indexes = sorted(root.rglob("*.index"))
    if not indexes:
        raise cli.UserError(f"no TensorFlow checkpoint (*.index) inside {root}")
    directory = indexes[0].parent
    latest = tf.train.latest_checkpoint(str(directory))
    return latest or str(indexes[-1].with_suffix(""))


def fetch_checkpoint(
    source: tt_config.CheckpointSource, root: Path, output: Path | None = None
) -> dict:
    """Download into `root`, verify and extract there; writes `output` (default
    `root/checkpoint.json`) last."""
    output = output or root / "checkpoint.json"
    root.mkdir(parents=True, exist_ok=True)
    local = local_path(source.url)
    if local is not None:
        if not local.exists():
            raise cli.UserError(f"checkpoint {source.url} does not exist; fix model.checkpoint.url")
        archive, delete = local, f"replace {local} (model.checkpoint.url) with a good copy"
    else:
        archive = Download(source.url, root, net.Net(POLICY)).run(pinned=bool(source.sha256))
        delete = f"delete {archive} and re-run to download it again"
    if archive.is_dir():
        if source.sha256:
            raise cli.UserError(
                f"model.checkpoint.sha256 is set but {archive} is a folder: a sha256 verifies an "
                "archive; remove the sha256 or point model.checkpoint.url at the archive"
            )
        log.info("using the checkpoint folder %s as it is (not verified by a hash)", archive)
        info = {"url": source.url, "sha256": None, "sha256_verified": False}
        info["prefix"] = find_prefix(archive)
        fileio.write_json(output, info)
        return info
    max_bytes = int(source.max_extract_mb * 1024 * 1024)
    try:
        seen = sha256_of(archive, max_bytes + MAX_MEMBERS * MEMBER_OVERHEAD)
    except fileio.FileProblem as problem:
        what = (
            "raise model.checkpoint.max_extract_mb if you trust it"
            if problem.reason == "too_large"
            else "point model.checkpoint.url at the archive file"
        )
        raise cli.UserError(f"checkpoint {source.url} cannot be used: {problem}; {what}") from None
    if source.sha256 and seen != source.sha256:
        raise cli.UserError(
            f"checkpoint {source.url} has sha256 {seen}, but the config expects "
            f"{source.sha256}: the download is corrupt or the file changed; {delete}"
        )
    if not source.sha256:
        log.warning(
            "no sha256 given for %s; saw %s (pin it as model.checkpoint.sha256)", source.url, seen
        )
    extracted = root / "extracted"
    extract(archive, extracted, max_bytes, delete)
    info = {
        "url": source.url,
        "sha256": seen,
        "sha256_verified": bool(source.sha256),
        "prefix": find_prefix(extracted),
    }
    fileio.write_json(output, info)
    return info
