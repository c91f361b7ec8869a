"""The whole workflow, for real: Snakemake runs every stage on a tiny demo in a temp dir."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess

import pytest
from conftest import TINY_CONFIG, WORKFLOW_RULES, snakemake, write_project
from tumbletrain import config as tt_config


def test_dry_run_lists_the_whole_dag(repo, tmp_path, tool_env):
    write_project(tmp_path, TINY_CONFIG)
    result = snakemake(tmp_path, tool_env, "-n", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    listed = result.stdout + result.stderr
    for rule in (*WORKFLOW_RULES, "all"):
        assert rule in listed, f"{rule} missing from the dry run:\n{listed[-3000:]}"
    assert not (tmp_path / "results").exists(), "a dry run wrote outputs"


def test_lint_is_clean(repo, tool_env):
    result = subprocess.run(
        ["snakemake", "--lint"], cwd=repo, capture_output=True, text=True, env=tool_env, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_snakefmt_and_ruff_are_clean(repo, tool_env):
    for command in (["snakefmt", "--check", "."], ["ruff", "check", "scripts", "tests"]):
        result = subprocess.run(command, cwd=repo, capture_output=True, text=True, env=tool_env)
        assert result.returncode == 0, f"{command}: {result.stdout[-3000:]}{result.stderr[-3000:]}"


@pytest.mark.slow
def test_every_stage_produces_its_outputs(tiny_run):
    project, _ = tiny_run
    cfg = tt_config.parse(TINY_CONFIG)
    for cls in cfg.class_names:
        assert (project / f"resources/manifests/{cls}.tsv").stat().st_size > 0
        summary = json.loads((project / f"results/lists/{cls}/summary.json").read_text())
        assert summary, f"empty validation summary for {cls}"
        for split in tt_config.SPLITS:
            assert (project / f"results/records/{cls}_{split}.tfrecord").exists()
    label_map = (project / "results/label_map.csv").read_text().splitlines()
    assert label_map == ["1,circle", "2,square"]
    final = json.loads((project / "results/train/tiny/final.json").read_text())
    assert final["step"] == TINY_CONFIG["train"]["steps"]
    metrics = json.loads((project / "results/eval/tiny/metrics.json").read_text())
    assert "AP50" in json.dumps(metrics)
    assert (project / "results/export/tiny/export.json").exists()
    assert (project / "results/summary.md").read_text().strip()


@pytest.mark.slow
def test_every_job_has_a_log_and_a_benchmark(tiny_run):
    project, _ = tiny_run
    logs = list((project / "logs").rglob("*.log"))
    benchmarks = list((project / "benchmarks").rglob("*.tsv"))
    assert logs and benchmarks
    assert len(benchmarks) >= len(logs) - 1 or len(benchmarks) >= 10
    header = benchmarks[0].read_text().splitlines()[0].split("\t")
    assert "s" in header and "max_rss" in header
    # Long steps write plain progress lines to their logs (a bar in a terminal).
    steps = TINY_CONFIG["train"]["steps"]
    assert f"train: {steps}/{steps} steps in " in (project / "logs/train/tiny.log").read_text()


@pytest.mark.slow
def test_a_finished_run_gives_its_account_on_the_terminal(tiny_run):
    """Snakemake's onsuccess prints what ends results/summary.md (issue #17)."""
    project, terminal = tiny_run
    summary = (project / "results" / "summary.md").read_text()
    account = summary.split("## This run\n\n```text\n")[1].removesuffix("```\n")
    assert f"\nthis run: the first run here\n{account}" in terminal
    lines = account.splitlines()
    assert lines[0].startswith("circle: 8 annotation files: 8 kept (")
    assert lines[1].startswith("square: 8 annotation files: 8 kept (")
    assert lines[2].startswith("verification of run tiny: AP50 ")
    assert lines[5] == (
        "exported models: results/export/tiny/saved_model, "
        "results/export/tiny/model_float.tflite, results/export/tiny/model_int8.tflite"
    )
    # 8 images a class, a quarter for verification: both splits are under the minimum.
    assert any(line.startswith("WARNING: circle: ") for line in lines), account


@pytest.mark.slow
def test_library_chatter_stays_in_the_job_logs(tiny_run):
    """Orbit's loss dictionaries and pycocotools' tables: in the logs, not on the terminal.

    Run locally, a job's stdout is Snakemake's terminal; through SLURM, the job's output file.
    """
    project, terminal = tiny_run
    shown = terminal + "".join(
        p.read_text(errors="replace") for p in (project / ".snakemake").rglob("slurm_logs/**/*.log")
    )
    logged = {
        rule: (project / "logs" / rule / "tiny.log").read_text() for rule in ("train", "evaluate")
    }
    for chatter, rule in (("np.float32(", "train"), ("Average Precision  (AP)", "evaluate")):
        assert chatter not in shown, chatter
        assert chatter in logged[rule], chatter
    # Evaluation and export count their work (the tiny verification split is one batch).
    assert re.search(r"verification: 1/1 batches in [0-9.]+ s", logged["evaluate"])
    exported = (project / "logs" / "export" / "tiny.log").read_text()
    assert re.search(r"export: 3/3 parts in [0-9.]+ s .*, done TFLite checked", exported)


@pytest.mark.slow
def test_a_second_run_does_nothing(tiny_run, tool_env):
    project, _ = tiny_run
    result = snakemake(project, tool_env, "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.slow
def test_nothing_is_written_outside_results_resources_logs(tiny_run):
    project, _ = tiny_run
    top = {p.name for p in project.iterdir()}
    assert top <= {"config", "results", "resources", "logs", "benchmarks", ".snakemake"}, top


@pytest.mark.slow
def test_outputs_are_readable_as_the_umask_says(tiny_run):
    """Atomic writes and the demo's folders get what a plain open()/mkdir gives (issue #17)."""
    project, _ = tiny_run
    umask = os.umask(0)
    os.umask(umask)  # the run inherited the session's umask
    wrong = {}
    for top in ("results", "resources", "logs", "benchmarks"):
        for path in (project / top).rglob("*"):
            full = 0o777 if path.is_dir() else 0o666
            # Execute bits are the writer's business; read and write follow the umask.
            if stat.S_IMODE(path.stat().st_mode) & 0o666 != full & ~umask & 0o666:
                wrong[str(path.relative_to(project))] = oct(stat.S_IMODE(path.stat().st_mode))
    assert not wrong, f"umask {umask:03o}: {wrong}"


@pytest.mark.slow
def test_report_builds(tiny_run, tool_env):
    project, _ = tiny_run
    report = project / "results" / "report.html"
    result = snakemake(project, tool_env, "--report", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    html = report.read_text(errors="replace")
    from report_screenshots import CATEGORIES

    for category in CATEGORIES:
        assert category in html, f"report has no {category} category"


@pytest.mark.slow
def test_report_renders_in_a_real_browser(tiny_run, tool_env, tmp_path):
    from PIL import Image
    from report_screenshots import chromium, screenshot

    project, _ = tiny_run
    report = project / "results" / "report_for_browser.html"
    result = snakemake(project, tool_env, "--report", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    if chromium() is None:
        pytest.skip(
            "needs Debian's chromium (apt-get install chromium), which could not be installed here"
        )
    png = screenshot(report, tmp_path / "report.png")
    pixels = Image.open(png).convert("L")
    # A blank page is one colour; the report has text, navigation and pictures.
    assert len(set(pixels.getdata())) > 20


@pytest.mark.slow
def test_editing_one_xml_rebuilds_only_that_class(tmp_path, tool_env):
    import time

    from tumbletrain import demo

    classes = ("circle", "square")
    for cls in classes:
        demo.write_demo(cls, 6, tt_config.DemoConfig(5, 96, 128, 2), tmp_path / "data" / cls)
    write_project(tmp_path, {"classes": {c: {"folders": [f"data/{c}"]} for c in classes}})
    targets = [f"results/records/{c}_{s}.tfrecord" for c in classes for s in tt_config.SPLITS]
    assert snakemake(tmp_path, tool_env, *targets).returncode == 0

    def stamps(cls):
        outputs = [
            *(tmp_path / "results" / "lists" / cls).iterdir(),
            *(tmp_path / "results" / "records").glob(f"{cls}_*"),
        ]
        return {p.name: p.stat().st_mtime_ns for p in outputs}

    for change in ("edit", "delete"):
        before = {c: stamps(c) for c in classes}
        time.sleep(1.1)
        xml = sorted((tmp_path / "data" / "circle").glob("*.xml"))[-1]
        if change == "edit":
            xml.write_text(
                xml.read_text().replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1)
            )
        else:
            xml.unlink()
        result = snakemake(tmp_path, tool_env, *targets)
        assert result.returncode == 0, result.stderr[-3000:]
        after = {c: stamps(c) for c in classes}
        assert after["square"] == before["square"], f"{change}: square was rebuilt"
        assert after["circle"]["summary.json"] > before["circle"]["summary.json"], change
