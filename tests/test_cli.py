"""What every stage command shares: progress reporting."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys

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


STAGE = """
import sys
from tumbletrain import cli

def main(argv):
    print("{'total_loss': np.float32(0.5)}")  # what Orbit prints on stdout
    for _ in cli.progress(range(3), "things", 3, "files", every_s=0):
        pass
    cli.tell("what to do next")
    return 0

cli.run(main)
"""


def run_stage_script(tmp_path, stdout, stderr, *args):
    script = tmp_path / "stage.py"
    script.write_text(STAGE)
    return subprocess.run(
        [sys.executable, str(script), *args], stdout=stdout, stderr=stderr, text=True, timeout=60
    )


def test_under_snakemake_chatter_goes_to_the_log_and_progress_to_the_terminal(tmp_path):
    """A rule's shell sends stderr to the log and leaves stdout to Snakemake's terminal."""
    log = tmp_path / "rule.log"
    with open(log, "w") as stderr:
        result = run_stage_script(tmp_path, subprocess.PIPE, stderr, "--class", "cat")
    assert result.returncode == 0
    terminal = result.stdout.splitlines()
    assert [line.split(" files")[0] for line in terminal] == [
        "stage cat: things: 1/3",
        "stage cat: things: 2/3",
        "stage cat: things: 3/3",
        "stage cat: things: 3/3",
        "what to do next",
    ]
    assert "ETA 0:00:00" in terminal[2] and " files in " in terminal[3]
    logged = log.read_text()
    assert "np.float32(0.5)" in logged
    assert all(line.removeprefix("stage cat: ") in logged for line in terminal[:4])
    assert "what to do next" not in logged


def test_by_hand_with_one_output_nothing_is_rerouted(tmp_path):
    result = run_stage_script(tmp_path, subprocess.PIPE, subprocess.STDOUT)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "{'total_loss': np.float32(0.5)}"
    assert len([line for line in lines if "things: " in line]) == 4  # log lines, no copies
    assert lines[-1] == "what to do next"


def test_progress_reaches_the_terminal_only_where_its_logger_shows_info(monkeypatch):
    """A training worker other than the chief logs warnings only: its progress is the chief's."""
    monkeypatch.setattr("sys.stderr", io.StringIO())
    logger = logging.getLogger("tumbletrain.test.worker")
    shown = {}
    for level in (logging.INFO, logging.WARNING):
        terminal = io.StringIO()
        monkeypatch.setattr(cli, "_terminal", terminal)
        logger.setLevel(level)
        list(cli.progress(range(3), "things", 3, "files", logger, every_s=0))
        shown[level] = terminal.getvalue().splitlines()
    logger.setLevel(logging.NOTSET)
    assert len(shown[logging.INFO]) == 4
    assert shown[logging.WARNING] == []


def test_progress_counts_on_from_where_it_resumed(monkeypatch, caplog):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    logger = logging.getLogger("tumbletrain.test")
    with (
        caplog.at_level(logging.INFO, logger="tumbletrain.test"),
        cli.Progress("train", 100, "steps", logger, every_s=0, initial=40) as bar,
    ):
        bar.update(25, total_loss=0.5)
        bar.update(35, total_loss=0.25)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("train: 65/100 steps (65%), ") and "steps/s, ETA " in lines[0]
    assert lines[0].endswith(", total loss 0.5000")
    assert lines[1].startswith("train: 100/100 steps (100%), ") and "ETA 0:00:00" in lines[1]
    assert lines[2].startswith("train: 100/100 steps in ")
    assert lines[2].endswith("steps/s), total loss 0.2500")


def test_a_user_error_stays_the_log_s_last_line_after_printed_chatter(tmp_path):
    script = tmp_path / "failing.py"
    script.write_text(
        "from tumbletrain import cli\n\n"
        "def main(argv):\n"
        "    print('a line of chatter')\n"
        "    raise cli.UserError('what went wrong; what to do')\n\n"
        "cli.run(main)\n"
    )
    log = tmp_path / "rule.log"
    with open(log, "w") as stderr:
        result = subprocess.run(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},  # as a user's
        )
    assert result.returncode == 1 and result.stdout == ""
    lines = log.read_text().splitlines()
    assert lines[-1] == "ERROR: what went wrong; what to do"
    assert lines[-2] == "a line of chatter"


def test_slow_work_says_seconds_each():
    assert cli.speed(4.81, "steps") == "4.8 steps/s"
    assert cli.speed(1 / 36.1, "parts") == "36.1 s each"
    assert cli.speed(0.0, "parts") == "0.0 parts/s"
