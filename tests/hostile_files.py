"""Hostile annotation files and images for tests/test_hostile_files.py and test_harvest.py.

The EXIF blocks are laid out by hand (TIFF 6.0, section 2: header, one IFD of
12-byte entries, values over 4 bytes after it): Pillow's own writer packs a
tag by its registered type, so it cannot write an Orientation stored as text.
"""

from __future__ import annotations

import io
import struct

from PIL import Image

ORIENTATION = 0x0112
ASCII = 2


def exif_block(entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """APP1 EXIF data: one IFD of (tag, type, count, value bytes) entries, little-endian."""
    after = 8 + 2 + 12 * len(entries) + 4  # where values that do not fit in 4 bytes go
    table, values = b"", b""
    for tag, kind, count, value in entries:
        if len(value) <= 4:
            field = value.ljust(4, b"\0")
        else:
            field = struct.pack("<I", after + len(values))
            values += value
        table += struct.pack("<HHI", tag, kind, count) + field
    ifd = struct.pack("<H", len(entries)) + table + struct.pack("<I", 0)
    return b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + ifd + values


TEXT_ORIENTATION = exif_block([(ORIENTATION, ASCII, 4, b"abc\0")])


def picture(index: int, fmt: str = "PNG", exif: bytes | None = None) -> bytes:
    """A 40x30 picture of its own colour (no two indexes alike), optionally with EXIF."""
    colour = (index % 251, index // 251 % 251, 200)
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, fmt, **({"exif": exif} if exif else {}))
    return buffer.getvalue()
