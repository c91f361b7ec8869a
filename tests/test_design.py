"""The layout lives in the rules only: DESIGN.md's file table agrees with them, and the
package names no workflow folder."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import REPO

PACKAGE = REPO / "scripts" / "tumbletrain"


def test_no_module_knows_the_workflow_layout():
    """Paths reach the commands from the rules; a module naming results/ or resources/ would
    write there whatever the rule declares."""
    found = [
        f"{module.name}:{number}: {line.strip()}"
        for module in sorted(PACKAGE.glob("*.py"))
        for number, line in enumerate(module.read_text().splitlines(), start=1)
        if re.search(r"\b(results|resources)/|[\"'](results|resources)[\"']", line)
        # Where `snakemake --report` writes is Snakemake's command line, not a rule's output.
        and not (module.name == "runner.py" and line.startswith("REPORT_HTML = "))
    ]
    assert not found, "\n".join(found)


def test_every_figure_is_drawn_in_plots():
    """One home for plotting: no other module imports matplotlib."""
    found = [
        f"{module.name}:{number}"
        for module in sorted(PACKAGE.glob("*.py"))
        if module.name != "plots.py"
        for number, line in enumerate(module.read_text().splitlines(), start=1)
        if re.match(r"\s*(import|from) matplotlib", line)
    ]
    assert not found, found


@dataclass(frozen=True)
class Row:
    files: tuple[str, ...]
    rules: tuple[str, ...]
    state: bool  # written by the rule, not declared: state outside the DAG

    def pattern(self) -> re.Pattern:
        folder = self.files[0].rsplit("/", 1)[0]
        paths = [f if "/" in f else f"{folder}/{f}" for f in self.files]
        return re.compile("|".join(f"(?:{_regex(p)})" for p in paths))


def _regex(path: str) -> str:
    """A table path as a regex: {a,b} either, {name} and * any part of a name, a folder
    (ending in /) itself or anything in it."""
    parts = []
    for token in re.findall(r"\{[^}]*\}|\*|[^{*]+", path.rstrip("/")):
        if token.startswith("{") and "," in token:
            parts.append("(?:" + "|".join(map(re.escape, token[1:-1].split(","))) + ")")
        elif token.startswith("{") or token == "*":
            parts.append("[^/]*")
        else:
            parts.append(re.escape(token))
    regex = "".join(parts)
    return regex + "(?:/.*)?" if path.endswith("/") else regex


def table() -> list[Row]:
    section = (REPO / "docs" / "DESIGN.md").read_text().split("## Files between stages")[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows.append(
                Row(
                    tuple(re.findall(r"`([^`]+)`", cells[0])),
                    tuple(re.findall(r"`(\w+)`", cells[1])),
                    "not an output" in cells[1],
                )
            )
    return rows


def snakemake_stdout(project: Path, env: dict, *args: str) -> str:
    result = subprocess.run(
        ["snakemake", "-s", str(REPO / "Snakefile"), *args],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def summary(project: Path, env: dict, *targets: str) -> list[tuple[str, str]]:
    """(output, rule) of every job the targets need: `snakemake --summary`."""
    lines = snakemake_stdout(project, env, "--summary", *targets).splitlines()
    return [(row[0], row[2]) for row in (line.split("\t") for line in lines[1:] if "\t" in line)]


@dataclass(frozen=True)
class Job:
    rule: str
    outputs: tuple[str, ...]
    command: str


def commands(project: Path, env: dict, *targets: str) -> list[Job]:
    """The rule, declared outputs and shell command of every job the targets need: a
    forced dry run."""
    found, rule, outputs = [], None, ()
    for line in snakemake_stdout(project, env, "-n", "-p", "-F", *targets).splitlines():
        if match := re.match(r"(?:local)?rule (\w+):", line):
            rule, outputs = match.group(1), ()
        elif match := re.match(r"\s+output: (.*)", line):
            outputs = tuple(match.group(1).split(", "))
        elif line.startswith("Shell command: "):
            found.append(Job(rule, outputs, line.removeprefix("Shell command: ")))
    return found


@pytest.fixture(scope="module")
def workflow(tmp_path_factory, tool_env) -> tuple[list[tuple[str, str]], list[Job]]:
    """The outputs of every rule and the commands of its jobs, from the demo (sharded, with
    predict) and the Tumblr example."""
    outputs, shells = [], []
    for name, changes, targets in (
        (
            "config.yaml",
            {"records": {"shards": 2}, "predict": {"input": "x"}},
            ["label_all", "review"],
        ),
        ("tumblr.example.yaml", {}, []),
    ):
        project = tmp_path_factory.mktemp("design")
        (project / "config").mkdir()
        raw = yaml.safe_load((REPO / "config" / name).read_text())
        raw.update(changes)
        (project / "config" / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        predict = f"results/predict/{raw['train']['run']}/detections.csv"
        targets = ["all", "data_report", predict, *targets]
        outputs += summary(project, tool_env, *targets)
        shells += commands(project, tool_env, *targets)
    assert shutil.which("snakemake") or outputs
    return outputs, shells


@pytest.fixture(scope="module")
def outputs(workflow) -> list[tuple[str, str]]:
    return workflow[0]


def test_every_output_is_in_the_design_table_under_its_rule(outputs):
    rows = table()
    for output, rule in outputs:
        matching = [r for r in rows if not r.state and r.pattern().fullmatch(output)]
        assert matching, f"{output} ({rule}) is not in docs/DESIGN.md's file table"
        assert any(rule in r.rules for r in matching), (
            f"{output} is written by rule {rule}; DESIGN.md says {[r.rules for r in matching]}"
        )


def test_every_row_of_the_design_table_is_an_output_of_its_rule(outputs):
    for row in table():
        if row.state:
            continue
        written = [o for o, rule in outputs if rule in row.rules and row.pattern().fullmatch(o)]
        assert written, f"DESIGN.md lists {row.files} under {row.rules}: no such output"


def holds(folder: str, files: tuple[str, ...]) -> bool:
    """A folder on a command line that holds one of the table's paths."""
    depth = len(folder.split("/"))
    return any(
        len(path.rstrip("/").split("/")) > depth
        and re.fullmatch(_regex("/".join(path.split("/")[:depth])), folder)
        for path in files
    )


def test_every_path_that_is_no_output_is_named_on_its_rules_command_line(workflow):
    """State kept outside the DAG (the store, resume files, caches, checkpoints) still
    reaches the command from the rule: the path itself, or a folder holding it."""
    _, shells = workflow
    for row in table():
        if not row.state:
            continue
        named = [
            token.rstrip("/")
            for job in shells
            if job.rule in row.rules
            for token in shlex.split(job.command)
        ]
        held = [t for t in named if row.pattern().fullmatch(t) or holds(t, row.files)]
        assert held, f"DESIGN.md's {row.files} ({row.rules}) is on no command line of its rule"


def test_every_output_is_named_on_its_jobs_command_line(workflow):
    """The command writes what the rule declares: each output reaches it as an argument
    (a file, or a directory output as the folder), so renaming one in a rule moves it."""
    _, jobs = workflow
    assert {"annotations", "evaluate", "export", "predict", "checkpoint_download"} <= {
        job.rule for job in jobs
    }
    unnamed = []
    for job in jobs:
        named = {token.rstrip("/") for token in shlex.split(job.command)}
        for output in job.outputs:
            in_folder = job.rule in MARKS_ITS_FOLDER and str(Path(output).parent) in named
            if output not in named and not in_folder:
                unnamed.append(f"{job.rule}: {output}")
    assert not unnamed, unnamed


# A rule whose output is a file its command puts in the folder it is given: `label`'s
# hand-off file marks the LabelImg folder (which files it created there), so it lies in
# that folder by definition.
MARKS_ITS_FOLDER = {"label"}


# Written by Snakemake itself (`snakemake --report`), or by the Snakefile's onsuccess
# (the account's record of the last run, common.smk's ACCOUNT_STATE), not by a job.
SNAKEMAKE_REPORTS = ("results/report.html", "results/data_report.html", "results/account.json")


@pytest.mark.slow
def test_every_file_a_run_writes_is_an_output_or_a_row_that_is_not(tiny_run, tool_env):
    """What the jobs of a whole run left behind: each file is a declared output (or lies
    in one) or a row of DESIGN.md's table marked not an output. Nothing else."""
    project, _ = tiny_run
    declared = [o.rstrip("/") for o, _ in summary(project, tool_env, "all", "data_report")]
    state = [row.pattern() for row in table() if row.state]
    unexplained = []
    for top in ("results", "resources", "data"):
        for path in sorted((project / top).rglob("*")) if (project / top).is_dir() else []:
            name = path.relative_to(project).as_posix()
            if path.is_dir() or name in SNAKEMAKE_REPORTS:
                continue
            if not any(name == o or name.startswith(o + "/") for o in declared) and not any(
                p.fullmatch(name) for p in state
            ):
                unexplained.append(name)
    assert not unexplained, unexplained
