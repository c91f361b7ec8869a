"""What every stage command shares: logging, progress, and errors a person can act on.

A rule's log ends with one line that says what went wrong and what to do;
tracebacks are kept for bugs, not for bad input.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """Bad input or environment: the message says what to do; no traceback."""


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a stage's main(); a UserError becomes one clear last line and exit 1."""
    setup_logging()
    try:
        code = main(argv)
    except UserError as error:
        print(f"ERROR: {error}", file=sys.stderr, flush=True)
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


def progress(
    iterable: Iterable[T],
    desc: str,
    total: int | None = None,
    unit: str = "it",
    logger: logging.Logger | None = None,
    every_s: float = 30.0,
    position: int | None = None,
) -> Iterator[T]:
    """A tqdm bar when stderr is a terminal; otherwise a log line every `every_s` seconds.

    A rule's log is a file, where a bar's carriage returns would pile up into
    one unreadable line; plain lines say the same and survive `tail -f`.
    """
    if sys.stderr.isatty():
        # Imported here: a fifth of every stage's start-up, and a job's stderr is a file.
        from tqdm import tqdm

        yield from tqdm(iterable, desc=desc, total=total, unit=unit, position=position)
        return
    logger = logger or logging.getLogger("tumbletrain")
    of = f"/{total}" if total is not None else ""
    start = last = time.monotonic()
    done = 0
    for value in iterable:
        yield value
        done += 1
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            logger.info("%s: %d%s %s (%.1f/s)", desc, done, of, unit, done / (now - start))
    elapsed = time.monotonic() - start
    logger.info("%s: %d%s %s in %.1f s", desc, done, of, unit, elapsed)
