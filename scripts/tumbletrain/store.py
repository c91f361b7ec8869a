"""The content-addressed image store and the per-class manifest.

Every image is stored once, at `{root}/{sha256[:2]}/{sha256}.{ext}`, however
many tags, blogs or classes it was found under. A file appears under its final
name only when complete and verified, so a killed run leaves no partial image.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from . import fileio

# The image formats the package takes (Pillow's names) and the suffixes their files go
# by; the first names the file in the store. The harvest's folders, the annotations scan
# and predict all pick images by IMAGE_SUFFIXES, so a picture one of them sees, all see.
IMAGE_FORMATS = {
    "JPEG": (".jpg", ".jpeg"),
    "PNG": (".png",),
    "GIF": (".gif",),
    "WEBP": (".webp",),
    "BMP": (".bmp",),
}
IMAGE_SUFFIXES = frozenset(suffix for suffixes in IMAGE_FORMATS.values() for suffix in suffixes)
ROTATING_ORIENTATIONS = {5, 6, 7, 8}
EXIF_ORIENTATION = 0x0112
# The `info` keys Pillow's getexif() takes an orientation from.
ORIENTATION_SOURCES = frozenset({"exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp"})


# What Pillow's header parsers raise on malformed bytes, besides OSError: an EXIF
# block of a stranger's picture can hold any type where a number belongs.
HEADER_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    EOFError,
    ZeroDivisionError,
    OverflowError,
    struct.error,
)


class RejectedImage(ValueError):
    """Bytes that are not an image we accept; `reason` is the manifest's code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class CheckedImage:
    sha256: str
    ext: str
    width: int
    height: int
    bytes: int


@dataclass(frozen=True)
class ManifestRow:
    sha256: str
    file: str
    source: str  # tumblr | folder | demo
    blog: str = ""
    post_id: str = ""
    post_url: str = ""
    image_url: str = ""
    timestamp: str = ""
    tags: str = ""
    width: int = 0
    height: int = 0
    bytes: int = 0
    rendition: str = ""  # Tumblr: "largest", or why a smaller rendition was taken


MANIFEST_COLUMNS = tuple(f.name for f in fields(ManifestRow))
_MANIFEST_TYPES = {f.name: int if f.type == "int" else str for f in fields(ManifestRow)}
SKIPPED_COLUMNS = ("image_url", "source", "reason", "message")


@contextlib.contextmanager
def pixel_limit() -> Iterator[None]:
    """Pillow's decompression-bomb limit, its warning included, as a RejectedImage."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RejectedImage("decompression_bomb", "the image declares too many pixels") from None


def upright_size(image: Image.Image) -> tuple[int, int, int]:
    """Width and height as the image is shown (its EXIF orientation applied), and the orientation.

    Header only: Pillow reads the size and EXIF without decoding pixels. An
    orientation that is no number (text, a list) is a RejectedImage: which way
    is up cannot be told.
    """
    width, height = image.size
    fmt = (image.format or "").lower()
    orientation = 1
    # A JPEG's EXIF and XMP come before its pixels, so Pillow's header read
    # has found them or there are none: most images skip the EXIF parse.
    if fmt in ("png", "webp", "tiff") or (
        fmt == "jpeg" and not ORIENTATION_SOURCES.isdisjoint(image.info)
    ):
        raw = image.getexif().get(EXIF_ORIENTATION, 1)
        try:
            orientation = int(raw or 1)
        except (TypeError, ValueError, OverflowError):
            raise RejectedImage(
                "bad_orientation", f"its EXIF orientation is {str(raw)[:20]!r}, not a number"
            ) from None
    if orientation in ROTATING_ORIENTATIONS:
        width, height = height, width
    return width, height, orientation


def check_image(data: bytes) -> CheckedImage:
    """Identify the bytes from the image header, with Pillow's bomb limit on."""
    if not data:
        raise RejectedImage("empty", "the response was empty")
    try:
        with pixel_limit(), Image.open(io.BytesIO(data)) as image:
            # Upright: whole-image boxes and the XML checks use this size.
            fmt, (width, height, _) = image.format, upright_size(image)
    except RejectedImage:
        raise
    except (UnidentifiedImageError, *HEADER_ERRORS):
        head = data[:64].lstrip().lower()
        if head.startswith((b"<!doctype html", b"<html")):
            raise RejectedImage("html_not_image", "an HTML page was served instead") from None
        raise RejectedImage("not_an_image", "the bytes are not an image Pillow can read") from None
    if fmt not in IMAGE_FORMATS:
        raise RejectedImage("unsupported_format", f"{fmt} images are not accepted")
    ext = IMAGE_FORMATS[fmt][0].lstrip(".")
    return CheckedImage(hashlib.sha256(data).hexdigest(), ext, width, height, len(data))


class ImageStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path_for(self, sha256: str, ext: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.{ext}"

    def put(self, data: bytes, sync: bool = True) -> tuple[CheckedImage, Path]:
        """Check and store the bytes (once); returns what they are and where they live.

        `sync=False`: the caller flushes the store (`sync`) before naming the file anywhere.
        """
        checked = check_image(data)
        path = self.path_for(checked.sha256, checked.ext)
        # A stored file of another size was changed after storing (an edit through
        # a hard link an older `label` made), or is one a power loss emptied before a
        # flush: the bytes its name promises go back.
        if not path.exists() or path.stat().st_size != len(data):
            fileio.write_bytes(path, data, sync=sync)
        return checked, path

    def sync(self) -> None:
        """Flush the files `put(sync=False)` stored to disk."""
        if self.root.is_dir():
            fileio.sync_folders([self.root])


def storable(
    rows: list[ManifestRow],
) -> tuple[list[ManifestRow], list[tuple[str, str, str, str]]]:
    """The rows a table can hold, and the others as skipped rows: a NUL character
    (a Tumblr tag may carry one) has no place in any text file."""
    kept, skipped = [], []
    for row in rows:
        if not any(isinstance(v, str) and "\0" in v for v in vars(row).values()):
            kept.append(row)
            continue
        url = row.image_url.replace("\0", "\\0")
        skipped.append((url, row.source, "nul_character", "the post's text holds a NUL character"))
    return kept, skipped


def write_manifest(path: Path, rows: list[ManifestRow]) -> None:
    """One row per image, sorted: an unchanged harvest gives identical bytes."""
    unique: dict[str, ManifestRow] = {}
    for row in sorted(rows, key=lambda r: (r.sha256, r.source, r.post_id, r.image_url)):
        unique.setdefault(row.sha256, row)
    # Not dataclasses.asdict: it deep-copies every value (a third of this table's time).
    fileio.write_tsv(
        path, MANIFEST_COLUMNS, ([getattr(r, c) for c in MANIFEST_COLUMNS] for r in unique.values())
    )


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """The rows `write_manifest` wrote, typed. Every reader of a manifest reads it here; a
    column it lacks takes its default (a manifest from before the column still reads)."""
    rows = []
    for number, raw in enumerate(fileio.read_tsv(path), start=2):
        try:
            values = {
                name: kind(raw[name]) for name, kind in _MANIFEST_TYPES.items() if name in raw
            }
            rows.append(ManifestRow(**values))
        except (TypeError, ValueError) as error:
            raise fileio.TableError(
                f"{path} line {number} is not a manifest row ({error}); delete the file "
                "and re-run the harvest"
            ) from None
    return rows


def write_skipped(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    fileio.write_tsv(path, SKIPPED_COLUMNS, sorted(set(rows)))
