"""Atomic writes: every output appears complete or not at all.

A file is written under a temporary name in its final directory (so the rename
stays on one file system) and renamed into place only once it is complete and
flushed, so a killed run never leaves a half-written output for a later run to
trust.

Flushed means on disk (fsync), so that a power loss cannot leave an output
empty under its final name either. A job that writes thousands of small files
(the images a folder harvest stores, the whole-image XML of a class) writes
them with `sync=False` and then calls `sync_folders` once, before it writes
the table that names them: one flush of the file system instead of one per
file (a class of 2,500 images: 8 s of fsync, 1 s of syncfs here).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import logging
import os
import re
import secrets
import shutil
import socket
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO

from .cli import UserError


# Temporary names carry the writer's host and pid, so a later run can tell the
# leftovers of a killed writer from files another live process is writing.
def host() -> str:
    return socket.gethostname().replace(".", "_")


def writer() -> str:
    return f"{host()}-{os.getpid()}"


_LEFTOVER = re.compile(r"^\..+\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+(\.[A-Za-z]+)$")


def remove_leftovers(root: str | os.PathLike) -> int:
    """Delete temporary files and folders that killed writers on this host left under `root`."""
    removed = 0
    here = host()
    for path in sorted(Path(root).rglob(".*"), reverse=True):  # a folder's files first
        match = _LEFTOVER.match(path.name)
        if not match or match["host"] != here or path.is_symlink() or not path.exists():
            continue
        try:
            os.kill(int(match["pid"]), 0)
            continue  # the writer is alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, another user's
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    return removed


def clean_leftovers(*folders: str | os.PathLike | None, logger: logging.Logger) -> None:
    """What a stage does first: remove the partial outputs a killed run of it left."""
    for folder in folders:
        if folder is not None and Path(folder).is_dir():
            removed = remove_leftovers(folder)
            if removed:
                logger.info("removed %d partial files a killed run left in %s", removed, folder)


class FileProblem(ValueError):
    """A path that is no readable regular file; `reason` is the code tables record."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


FILE_PROBLEMS = {
    "special_file": "not a regular file (a FIFO, socket, device or folder): never read",
    "dangling_symlink": "a symbolic link to nothing",
    "symlink_loop": "a symbolic link that loops",
    "unreadable": "the file cannot be opened for reading",
    "too_large": "larger than the configured cap",
}
_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)


def _problem_of_error(path: str | os.PathLike, error: OSError) -> FileProblem:
    if error.errno == errno.ENXIO:  # a socket cannot be opened
        with contextlib.suppress(OSError):
            return _problem_of_stat(path, os.stat(path), None) or FileProblem(
                "unreadable", f"{path}: {error.strerror}"
            )
    if error.errno == errno.ELOOP:
        return FileProblem("symlink_loop", f"{path} is a symbolic link that loops")
    if error.errno == errno.ENOENT and os.path.islink(path):
        return FileProblem(
            "dangling_symlink", f"{path} links to {os.readlink(path)}, which is gone"
        )
    return FileProblem("unreadable", f"{path}: {error.strerror or error}")


def _problem_of_stat(path, st: os.stat_result, max_bytes: int | None) -> FileProblem | None:
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        return FileProblem("special_file", f"{path} is {kind}, not a regular file")
    if max_bytes is not None and st.st_size > max_bytes:
        return FileProblem("too_large", f"{path} has {st.st_size} bytes, more than {max_bytes}")
    return None


def file_problem(path: str | os.PathLike, max_bytes: int | None = None) -> FileProblem | None:
    """Why a file found in a folder scan must not be read, or None (symlinks followed)."""
    try:
        st = os.stat(path)
    except OSError as error:
        return _problem_of_error(path, error)
    problem = _problem_of_stat(path, st, max_bytes)
    if problem is None and not os.access(path, os.R_OK):
        return FileProblem("unreadable", f"{path}: permission denied")
    return problem


@contextlib.contextmanager
def open_regular(path: str | os.PathLike, max_bytes: int | None = None) -> Iterator[BinaryIO]:
    """A regular file opened for reading; a FIFO or device is never read (it could block
    forever). Opened non-blocking and checked on the open file, so a file swapped for a
    FIFO after a scan cannot hang the reader either. Raises FileProblem."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise _problem_of_error(path, error) from None
    with os.fdopen(fd, "rb") as handle:
        problem = _problem_of_stat(path, os.fstat(fd), max_bytes)
        if problem is not None:
            raise problem
        yield handle


def read_regular(path: str | os.PathLike, max_bytes: int | None = None) -> bytes:
    """A regular file's bytes, at most `max_bytes` (open_regular). Raises FileProblem."""
    with open_regular(path, max_bytes) as handle:
        data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise FileProblem("too_large", f"{path} has more than {max_bytes} bytes")
    return data


def real_roots(folders: Iterable[str | os.PathLike]) -> tuple[str, ...]:
    """Folders resolved (symlinks followed), each ending in a separator for `inside`."""
    return tuple(sorted({os.path.join(os.path.realpath(f), "") for f in folders}))


def inside(real_path: str, roots: Sequence[str]) -> bool:
    """Whether a resolved path lies under one of `real_roots`' folders."""
    return any(real_path.startswith(root) for root in roots)


def _temporary_name(target: Path, suffix: str) -> Path:
    return target.with_name(f".{target.name}.{writer()}.{secrets.token_hex(4)}{suffix}")


def _create_temporary(target: Path, suffix: str, make: Callable[[Path], None]) -> Path:
    """Create a fresh temporary file or folder beside `target` with `make`.

    Not `tempfile.mkstemp`/`mkdtemp`: they create 0600/0700 whatever the
    umask, so outputs on a shared file system would be the owner's only. A
    plain create asks for 0666/0777 and the kernel applies the umask (and a
    directory's default ACL), as it does for any file a program opens.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = _temporary_name(target, suffix)
        try:
            make(tmp)
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {target}")


def _create_file(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


@contextlib.contextmanager
def _atomic(
    path: str | os.PathLike,
    suffix: str,
    make: Callable[[Path], None],
) -> Iterator[Path]:
    target = Path(path)
    tmp = _create_temporary(target, suffix, make)
    try:
        yield tmp
        if tmp.is_dir() and target.exists():
            # os.replace cannot replace a non-empty folder: the old one steps aside under
            # a leftover's name (a kill now loses nothing clean_leftovers cannot remove)
            # and is deleted once the new one is in place.
            old = _temporary_name(target, ".old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def atomic_path(
    path: str | os.PathLike, suffix: str = ""
) -> contextlib.AbstractContextManager[Path]:
    """A temporary path beside `path`, renamed to `path` on success.

    The file has the permissions a plain `open()` would give it.
    """
    return _atomic(path, suffix or ".tmp", _create_file)


def atomic_dir(path: str | os.PathLike) -> contextlib.AbstractContextManager[Path]:
    """A fresh folder beside `path` that replaces `path` (if any) on success.

    The folder has the permissions a plain `mkdir` would give it.
    """
    return _atomic(path, ".tmpdir", Path.mkdir)


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "w", sync: bool = True, **kwargs: Any
) -> Iterator[IO]:
    """Open a temporary file beside `path` and rename it into place on success.

    `sync=False`: not flushed to disk here; the caller calls `sync_folders` later.
    """
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
        kwargs.setdefault("newline", "")
    created: list[int] = []

    def create(tmp: Path) -> None:  # kept open: no second open of each file
        created.append(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))

    with _atomic(path, ".tmp", create), open(created[0], mode, **kwargs) as handle:
        yield handle
        handle.flush()
        if sync:
            os.fsync(handle.fileno())


def write_bytes(path: str | os.PathLike, data: bytes, sync: bool = True) -> None:
    with atomic_open(path, "wb", sync=sync) as handle:
        handle.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def sync_folders(folders: Iterable[str | os.PathLike]) -> None:
    """Flush to disk what was written under the folders: the files written with
    `sync=False` and their names. One `syncfs` per file system on Linux (all of
    that file system's writes, not only ours), a `sync` of every file system
    elsewhere. Raises OSError when the kernel reports a write error.
    """
    import ctypes  # only the jobs that write many files pay its import

    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (AttributeError, OSError):  # no syncfs(2): not Linux
        os.sync()
        return
    flushed: set[int] = set()
    for folder in folders:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            device = os.fstat(fd).st_dev
            if device not in flushed and syncfs(fd) != 0:
                number = ctypes.get_errno()
                raise OSError(number, f"flushing {folder} to disk: {os.strerror(number)}")
            flushed.add(device)
        finally:
            os.close(fd)


class TableError(UserError, ValueError):
    """Text a table cannot hold, or a table file that is not one we wrote."""


# One file's field may be as long as its content: an image with thousands of
# boxes has a long `objects` cell (csv's default limit is 128 KiB).
csv.field_size_limit(2**31 - 1)


def _quoted(text: str, delimiter: str) -> str:
    """csv's QUOTE_MINIMAL rule, with a carriage return also forcing quotes."""
    if delimiter in text or '"' in text or "\n" in text or "\r" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def format_table(header: Sequence[str], rows: Iterable[Sequence[Any]], delimiter: str) -> str:
    """The table as text: csv's own writer, byte for byte, for every cell it quotes right.

    csv leaves a carriage return unquoted (its reader then ends the row there),
    so a table holding one is written by the same rule with `\r` quoted too.
    """
    rows = [header, *rows]
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\n").writerows(rows)
    text = buffer.getvalue()
    if "\0" in text:
        number, cell = next(
            (n, c)
            for n, row in enumerate(rows)
            for c, value in enumerate(row)
            if "\0" in str(value)
        )
        raise TableError(
            f"row {number} column {header[cell]!r} holds a NUL character, which no table "
            "can store; remove it from the input"
        )
    if "\r" not in text:
        return text
    return "".join(_line(row, delimiter) for row in rows)


def _line(row: Sequence[Any], delimiter: str) -> str:
    cells = ["" if v is None else str(v) for v in row]
    if cells == [""]:
        return '""\n'  # as csv writes it: a blank line would be no row at all
    return delimiter.join(_quoted(cell, delimiter) for cell in cells) + "\n"


def write_table(
    path: str | os.PathLike,
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    delimiter: str = "\t",
) -> None:
    """A header line and rows; any text but NUL comes back from `read_table` as it went in."""
    text = format_table(header, rows, delimiter)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise TableError(
            f"{path}: {text[max(0, error.start - 40) : error.start]!r} is followed by text that "
            "is not valid Unicode (a lone surrogate); remove it from the input"
        ) from None
    write_bytes(path, data)


def write_tsv(
    path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    write_table(path, header, rows, "\t")


def write_csv(
    path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    write_table(path, header, rows, ",")


def read_table(path: str | os.PathLike, delimiter: str = "\t") -> list[dict[str, str]]:
    """The rows of a table `write_table` wrote, as dicts keyed by the header."""
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, strict=True)
        try:
            header = next(reader, [])
            rows = []
            for row in reader:
                if len(row) != len(header):
                    raise TableError(
                        f"{path} line {reader.line_num} has {len(row)} fields, its header "
                        f"{len(header)}: the file is damaged; delete it and re-run the stage "
                        "that writes it"
                    )
                rows.append(dict(zip(header, row, strict=True)))
        except csv.Error as error:
            raise TableError(
                f"{path} line {reader.line_num} is not a table row ({error}); delete the file "
                "and re-run the stage that writes it"
            ) from None
    return rows


def read_tsv(path: str | os.PathLike) -> list[dict[str, str]]:
    return read_table(path, "\t")


def copy_file(source: str | os.PathLike, target: str | os.PathLike) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
