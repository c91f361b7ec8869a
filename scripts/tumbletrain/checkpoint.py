"""Download a checkpoint once: resumable, verified, safely extracted.

The download streams into `{name}.part` and continues with an HTTP Range
request after an interruption. The archive is verified against the sha256
given in the config (or the one seen is recorded, and the log says so), then
extracted with tarfile's `data` filter (no absolute paths, no `..`, no links
out of the target) into a staging directory that is renamed into place only
when complete.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from . import cli, fileio
from . import config as tt_config

log = logging.getLogger("tumbletrain.checkpoint")
CHUNK = 1 << 20


def session() -> requests.Session:
    retry = Retry(
        total=5,
        backoff_factor=1.0,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=("GET", "HEAD"),
        respect_retry_after_header=True,
    )
    s = requests.Session()
    s.mount("http://", HTTPAdapter(max_retries=retry))
    s.mount("https://", HTTPAdapter(max_retries=retry))
    return s


def local_path(url: str) -> Path | None:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "":
        return Path(url).expanduser()
    return None


def download(url: str, target: Path, timeout: float = 60.0) -> Path:
    """Fetch `url` to `target`, resuming a previous partial download."""
    source = local_path(url)
    if source is not None:
        if not source.exists():
            raise cli.UserError(f"checkpoint {url} does not exist; fix model.checkpoint.url")
        return source
    if target.exists():
        return target  # a finished download; fetch_checkpoint verifies its hash
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with session().get(url, headers=headers, stream=True, timeout=timeout) as response:
        if response.status_code == 416:  # the part file is already complete
            os.replace(part, target)
            return target
        if response.status_code == 404:
            raise cli.UserError(
                f"checkpoint URL {url} answered 404 Not Found; "
                "fix model.checkpoint.url (or set it to null to train from scratch)"
            )
        if response.status_code >= 400:
            raise cli.UserError(
                f"checkpoint URL {url} answered HTTP {response.status_code}; "
                "check the URL and the network, then re-run to resume"
            )
        mode = "ab" if have and response.status_code == 206 else "wb"
        if mode == "wb" and have:
            log.info("%s does not support resuming; starting again", url)
        elif have:
            log.info("resuming %s at byte %d", url, have)
        with open(part, mode) as handle:
            for chunk in response.iter_content(CHUNK):
                handle.write(chunk)
    os.replace(part, target)
    return target


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def extract(archive: Path, destination: Path) -> None:
    """Extract safely into a staging directory, then rename it into place."""
    staging = destination.with_name(f".{destination.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                tar.extractall(staging, filter="data")
        elif zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    resolved = (staging / member).resolve()
                    if not resolved.is_relative_to(staging.resolve()):
                        raise tarfile.OutsideDestinationError(member, str(resolved))
                zf.extractall(staging)
        elif archive.is_dir():
            shutil.copytree(archive, staging, dirs_exist_ok=True)
        else:
            raise cli.UserError(f"{archive} is neither a tar nor a zip archive")
    except (tarfile.FilterError, tarfile.TarError, zipfile.BadZipFile) as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise cli.UserError(
            f"unsafe or corrupt checkpoint archive {archive.name}: {error}"
        ) from None
    if destination.exists():
        shutil.rmtree(destination)
    os.replace(staging, destination)


def find_prefix(root: Path) -> str:
    """The checkpoint prefix inside an extracted archive (the `.index` file's stem)."""
    import tensorflow as tf

    indexes = sorted(root.rglob("*.index"))
    if not indexes:
        raise cli.UserError(f"no TensorFlow checkpoint (*.index) inside {root}")
    directory = indexes[0].parent
    latest = tf.train.latest_checkpoint(str(directory))
    return latest or str(indexes[-1].with_suffix(""))


def fetch_checkpoint(source: tt_config.CheckpointSource, root: Path) -> dict:
    """Download, verify and extract; writes `checkpoint.json` beside the files last."""
    root.mkdir(parents=True, exist_ok=True)
    name = Path(urlparse(source.url).path).name or "checkpoint"
    archive = download(source.url, root / name)
    seen = sha256_of(archive) if archive.is_file() else None
    if source.sha256 and seen != source.sha256:
        if archive.parent == root:
            archive.unlink()  # a corrupt download must not be resumed from
        raise cli.UserError(
            f"checkpoint {source.url} has sha256 {seen}, but the config expects "
            f"{source.sha256}; the download is corrupt or the URL changed"
        )
    if not source.sha256:
        log.warning(
            "no sha256 given for %s; saw %s (pin it as model.checkpoint.sha256)", source.url, seen
        )
    extracted = root / "extracted"
    extract(archive, extracted)
    info = {
        "url": source.url,
        "sha256": seen,
        "sha256_verified": bool(source.sha256),
        "prefix": find_prefix(extracted),
    }
    fileio.write_json(root / "checkpoint.json", info)
    return info
