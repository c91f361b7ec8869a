"""What every stage command shares: logging, progress, and errors a person can act on.

A rule's log ends with one line that says what went wrong and what to do;
tracebacks are kept for bugs, not for bad input.
"""

from __future__ import annotations

import argparse
import base64
import errno
import logging
import os
import re
import sys
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TextIO, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """Bad input or environment: the message says what to do; no traceback."""


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    install_redaction()


# -- no secret in any log ---------------------------------------------------------------------
#
# Every log line is made as a LogRecord by the one record factory, whatever the
# logger (urllib3's "Retrying (...) after connection broken by ...: /v2/...?api_key=..."
# warnings, requests', TensorFlow's, ours), whatever its handlers: secrets are
# taken out there. Python's warnings go through logging; tracebacks and the
# ERROR line are redacted on their way out. Snakemake's log and the terminal only
# ever see what a job wrote.

REDACTED = "<redacted>"
# Query parameters and OAuth1 header fields that carry a credential or are made from one.
SECRET_FIELDS = re.compile(r"\b(api_key|oauth_[a-z_]+)=(\"?)[^&\s\"',;)]+", re.IGNORECASE)
_secrets: set[str] = set()
_installed = False


def register_secret(value: str) -> None:
    """Keep `value` out of every log line: as it is, URL-encoded and in base64."""
    if len(value) < 4:  # too short to hide without hiding ordinary words
        return
    raw = value.encode()
    _secrets.update(
        {
            value,
            urllib.parse.quote(value, safe=""),
            urllib.parse.quote_plus(value),
            base64.b64encode(raw).decode().rstrip("="),
            base64.urlsafe_b64encode(raw).decode().rstrip("="),
        }
    )
    install_redaction()


def redact(text: str) -> str:
    """`text` without any registered secret or credential query parameter."""
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return SECRET_FIELDS.sub(rf"\1=\2{REDACTED}", text)


def _redacted_record(factory: Callable[..., logging.LogRecord]):
    def make(*args, **kwargs) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: logging reports it itself, unformatted
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    return make


def _redacted_excepthook(kind, value, tb) -> None:
    sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))


def _redacted_thread_excepthook(args) -> None:
    if args.exc_type is not SystemExit:
        _redacted_excepthook(args.exc_type, args.exc_value, args.exc_traceback)


def install_redaction() -> None:
    """Redact every log record, warning and traceback of this process (once)."""
    global _installed
    if _installed:
        return
    _installed = True
    logging.setLogRecordFactory(_redacted_record(logging.getLogRecordFactory()))
    logging.captureWarnings(True)
    sys.excepthook = _redacted_excepthook
    threading.excepthook = _redacted_thread_excepthook


# A full disk or a spent quota: the user's to fix, not a bug.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NEARLY_FULL = 1 << 20  # bytes free under which a folder's disk counts as the full one


def no_space(error: OSError, folders: Iterable[str | os.PathLike] = ()) -> UserError:
    """Disk full as one line naming the folder: the file's, when the error names one, or
    those of `folders` (the ones the command writes) whose disk is (nearly) full."""
    if error.filename:
        where = [os.path.dirname(os.path.abspath(error.filename))]
    else:
        folders = [os.path.abspath(f) for f in folders]
        where = [f for f in folders if _free_bytes(f) < NEARLY_FULL] or folders
    return UserError(
        f"no space left on the disk of {' or '.join(where) or 'the folders it writes'} "
        f"({error.strerror or error}): free some space there and re-run; what was finished "
        "is kept and nothing is half-written"
    )


def _free_bytes(folder: str) -> int:
    try:
        st = os.statvfs(folder)
    except OSError:
        return NEARLY_FULL
    return st.f_bavail * st.f_frsize


def parser(module: str, description: str) -> argparse.ArgumentParser:
    """A command's parser, named as the command is run: `python -m tumbletrain.<module>`."""
    return argparse.ArgumentParser(prog=f"python -m tumbletrain.{module}", description=description)


def subcommands(command: argparse.ArgumentParser) -> argparse._SubParsersAction:
    """A command's subcommands (`records write`, `model train`): one is required."""
    return command.add_subparsers(dest="command", required=True)


def add_outputs(parser: argparse.ArgumentParser, **files: str) -> None:
    """One argument per file (or folder) the command writes, `--NAME PATH`, which its rule
    passes; and `--outdir DIR` for running it by hand: those not given go into DIR under
    their usual names (the `files` values)."""
    for name, file in files.items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=Path, help=f"default: OUTDIR/{file}")
    parser.add_argument(
        "--outdir",
        type=Path,
        help="the folder of the outputs not given: " + ", ".join(files.values()),
    )
    parser.set_defaults(output_files=files)


def outputs(args: argparse.Namespace) -> dict[str, Path]:
    """The paths of `add_outputs`: each as given, or in --outdir under its usual name."""
    files = args.output_files
    missing = ["--" + name.replace("_", "-") for name in files if getattr(args, name) is None]
    if missing and args.outdir is None:
        raise UserError(f"give {', '.join(missing)}, or --outdir for the ones not given")
    usual = in_folder(files, args.outdir) if missing else {}
    return {name: getattr(args, name) or usual[name] for name in files}


def in_folder(files: dict[str, str], folder: Path) -> dict[str, Path]:
    """The paths of `add_outputs` with every file in `folder` under its usual name."""
    return {name: Path(folder) / file for name, file in files.items()}


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a stage's main(); a UserError becomes one clear last line and exit 1."""
    setup_logging()
    route_output(sys.argv[1:] if argv is None else argv)
    try:
        try:
            code = main(argv)
        except OSError as error:
            if error.errno not in NO_SPACE:
                raise
            raise no_space(error) from None
    except UserError as error:
        sys.stdout.flush()  # into the log (route_output) before the error
        print(f"ERROR: {redact(str(error))}", file=sys.stderr, flush=True)
        # Libraries log from their finalisers at exit (TensorFlow does, about
        # objects a failed restore left behind); the error stays the last line.
        logging.disable(logging.CRITICAL)
        sys.exit(1)
    except KeyboardInterrupt:
        print(
            "ERROR: interrupted; re-run the same command to continue where it stopped",
            file=sys.stderr,
        )
        sys.exit(130)
    sys.exit(code or 0)


# One line per interval, in the log and (under Snakemake) on the terminal: often
# enough to see a job move, rare enough that a 30-minute training fits a scroll.
PROGRESS_EVERY_S = 10.0

# Where progress lines go besides the log: the job's stdout, when its stderr is
# a log file (see route_output); None otherwise.
_terminal: TextIO | None = None
_job = ""


# The first of these a command has names its job: a class, a run, the file or
# folder it writes (named after its class or run by the rule), or the run whose
# final.json (in the run's folder) it reads.
JOB_NAMES = ("--class", "--run")
JOB_PATHS = ("--output", "--outdir", "--model-dir", "--output-dir")
JOB_FOLDERS = ("--final", "--detections")


def job_label(argv: list[str]) -> str:
    """`harvest circle`, `model train tiny`: which job a terminal line comes from."""
    words = [Path(sys.argv[0]).stem]  # the stage's module, run with -m
    if argv and not argv[0].startswith("-"):
        words.append(argv[0])  # a subcommand
    for flag in (*JOB_NAMES, *JOB_PATHS, *JOB_FOLDERS):
        if flag in argv[:-1]:
            value = argv[argv.index(flag) + 1]
            if flag in JOB_NAMES:
                words.append(value)
            else:
                words.append(Path(value).parent.name if flag in JOB_FOLDERS else Path(value).stem)
            break
    return " ".join(words)


def route_output(argv: list[str]) -> None:
    """Under Snakemake: library chatter to the job's log, progress lines to the terminal.

    A rule sends the command's stderr to its log and leaves its stdout to
    Snakemake's (the terminal, run locally; the job's output file, on SLURM).
    Libraries print there too (Orbit's loss dictionaries, pycocotools' tables):
    stdout is pointed at the log, and only progress lines keep the terminal.
    Run by hand in a terminal (stderr a terminal), nothing changes.
    """
    global _terminal, _job
    if sys.stderr.isatty() or {"-h", "--help"} & set(argv):
        return
    try:
        if os.path.samestat(os.fstat(1), os.fstat(2)):
            return  # both already go to one place
    except OSError:
        return  # a closed stdout or stderr: nothing to route
    sys.stdout.flush()
    _terminal = open(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
    os.dup2(2, 1)
    # Prints land in the log between its lines in the order they were made.
    sys.stdout.reconfigure(line_buffering=True)
    _job = job_label(argv)


def tell(line: str) -> None:
    """A line for the person running the workflow: on the terminal, not in the log.

    Under Snakemake (route_output) the job's original stdout; otherwise stdout.
    One write, so that the lines of jobs running side by side never interleave.
    """
    stream = _terminal or sys.stdout
    stream.write(f"{line}\n")
    stream.flush()


def speed(rate: float, unit: str) -> str:
    """`4.8 steps/s`, or `36.1 s each` for work slower than one a second."""
    return f"{rate:.1f} {unit}/s" if rate >= 1 or rate == 0 else f"{1 / rate:.1f} s each"


class Progress:
    """Count, rate and ETA of a long job: a tqdm bar in a terminal, else a line per interval.

    A rule's log is a file, where a bar's carriage returns would pile up into
    one unreadable line; plain lines say the same and survive `tail -f`. Under
    Snakemake the same lines also reach the terminal (route_output).
    `update(n, **figures)` counts n more; figures (a loss) end the line.
    """

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        unit: str = "it",
        logger: logging.Logger | None = None,
        every_s: float = PROGRESS_EVERY_S,
        initial: int = 0,
        position: int | None = None,
    ):
        self.desc, self.total, self.unit = desc, total, unit
        self.logger = logger or logging.getLogger("tumbletrain")
        self.every_s = every_s
        self.initial = self.done = initial
        self.figures: dict[str, str] = {}
        self.start = self.last = time.monotonic()
        self.bar = None
        if sys.stderr.isatty():
            # Imported here: a fifth of every stage's start-up, and a job's stderr is a file.
            from tqdm import tqdm

            self.bar = tqdm(desc=desc, total=total, initial=initial, unit=unit, position=position)

    def update(self, n: int = 1, **figures: float | str) -> None:
        self.done += n
        self.figures.update(
            {k: f"{v:.4f}" if isinstance(v, float) else v for k, v in figures.items()}
        )
        if self.bar is not None:
            self.bar.update(n)
            if figures:
                self.bar.set_postfix(self.figures)
            return
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self.emit(self.line(now))

    def rate(self, now: float) -> float:
        return (self.done - self.initial) / max(now - self.start, 1e-9)

    def line(self, now: float) -> str:
        rate = self.rate(now)
        text = f"{self.desc}: {self.done}"
        if self.total:
            text += f"/{self.total} {self.unit} ({100 * self.done // self.total}%)"
        else:
            text += f" {self.unit}"
        text += f", {speed(rate, self.unit)}"
        if self.total and rate > 0:
            text += f", ETA {timedelta(seconds=round(max(self.total - self.done, 0) / rate))}"
        return text + self.figures_text()

    def figures_text(self) -> str:
        return "".join(f", {k.replace('_', ' ')} {v}" for k, v in self.figures.items())

    def emit(self, line: str) -> None:
        self.logger.info("%s", line)
        # A logger that keeps info back keeps it off the terminal too: a training
        # worker other than the chief would repeat the chief's lines.
        if _terminal is not None and self.logger.isEnabledFor(logging.INFO):
            tell(f"{_job}: {line}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            return
        now = time.monotonic()
        of = f"/{self.total}" if self.total is not None else ""
        self.emit(
            f"{self.desc}: {self.done}{of} {self.unit} in {now - self.start:.1f} s "
            f"({speed(self.rate(now), self.unit)}){self.figures_text()}"
        )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(
    iterable: Iterable[T],
    desc: str,
    total: int | None = None,
    unit: str = "it",
    logger: logging.Logger | None = None,
    every_s: float = PROGRESS_EVERY_S,
    position: int | None = None,
) -> Iterator[T]:
    """Progress of a loop over `iterable` (see Progress)."""
    with Progress(desc, total, unit, logger, every_s, position=position) as bar:
        for value in iterable:
            yield value
            bar.update()
