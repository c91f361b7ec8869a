"""What every stage command shares: logging, and errors a person can act on.

A rule's log ends with one line that says what went wrong and what to do;
tracebacks are kept for bugs, not for bad input.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable


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
