"""What every stage command shares: progress reporting."""

from __future__ import annotations

import io
import logging

from tumbletrain import cli


def test_progress_in_a_log_is_plain_lines(monkeypatch, caplog):
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal, like a rule's log
    logger = logging.getLogger("tumbletrain.test")
    with caplog.at_level(logging.INFO, logger="tumbletrain.test"):
        items = list(cli.progress(range(3), "things", 3, "files", logger, every_s=0))
    assert items == [0, 1, 2]
    lines = [r.getMessage() for r in caplog.records]
    # every_s=0: a line per item, then the closing one.
    assert [line.split(" files")[0] for line in lines] == [
        "things: 1/3",
        "things: 2/3",
        "things: 3/3",
        "things: 3/3",
    ]
    assert lines[-1].startswith("things: 3/3 files in ")
    assert "\r" not in "".join(lines)


def test_progress_on_a_terminal_is_a_bar(monkeypatch, caplog):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    with caplog.at_level(logging.INFO):
        assert list(cli.progress(range(5), "things", 5, "files")) == list(range(5))
    assert "things: 100%" in terminal.getvalue() and "\r" in terminal.getvalue()
    assert not caplog.records, "a bar, not log lines"
