"""The `tumbletrain` command: each command-line slip is one ERROR line, stages are targets."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import REPO, TINY_CONFIG, write_project
from tumbletrain import runner


def tumbletrain(project, env, *args):
    """`tumbletrain ARGS` as a user types it in the project (this checkout's code)."""
    return subprocess.run(
        [sys.executable, "-m", "tumbletrain.runner", "-s", str(REPO / "Snakefile"), *args],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def last_line(result) -> str:
    assert result.returncode == 1, (result.stdout + result.stderr)[-3000:]
    assert "Traceback" not in result.stdout + result.stderr, result.stdout[-3000:]
    return result.stderr.strip().splitlines()[-1]


@pytest.fixture
def mine(tmp_path):
    write_project(tmp_path, TINY_CONFIG)
    (tmp_path / "mine.yaml").write_text((tmp_path / "config" / "config.yaml").read_text())
    return tmp_path


def test_a_target_after_configfile_says_where_to_put_it(mine, tool_env):
    result = tumbletrain(mine, tool_env, "-n", "--configfile", "mine.yaml", "records")
    assert last_line(result) == (
        "ERROR: 'records' after --configfile is read as a config file (--configfile takes "
        f"every name that follows it); put targets first: tumbletrain records -s {REPO}/Snakefile "
        "-n --configfile mine.yaml"
    )
    # Snakemake alone: a traceback ending in the target taken for a file.
    plain = subprocess.run(
        ["snakemake", "-n", "-s", str(REPO / "Snakefile"), "--configfile", "mine.yaml", "records"],
        cwd=mine,
        capture_output=True,
        text=True,
        env=tool_env,
        timeout=300,
    )
    assert "No such file or directory: 'records'" in plain.stdout + plain.stderr


def test_a_missing_configfile_is_one_line(mine, tool_env):
    assert last_line(tumbletrain(mine, tool_env, "-n", "--configfile", "nope.yaml")) == (
        f"ERROR: --configfile nope.yaml: no such file; check the path (relative to {mine}), "
        "or start from config/own.example.yaml"
    )


def test_an_unreadable_configfile_is_one_line(mine, tool_env):
    """A folder given as the file: read_text fails as for a file without permission."""
    assert last_line(tumbletrain(mine, tool_env, "-n", "--configfile", "config")) == (
        "ERROR: config file config cannot be read: Is a directory"
    )


def test_bad_yaml_names_file_line_and_column(mine, tool_env):
    (mine / "mine.yaml").write_text("classes:\n  a: {demo: {images: 3}\n  b: x\n")
    assert last_line(tumbletrain(mine, tool_env, "-n", "--configfile", "mine.yaml")) == (
        "ERROR: mine.yaml, line 3, column 3: invalid YAML: while parsing a flow mapping; "
        "expected ',' or '}', but got '<scalar>'"
    )


ERRORS = "classes:\n  a: {demo: {images: lots}}\ntrian:\n  steps: 3\nmodel:\n  input_size: 200\n"
ALL_ERRORS = [
    "ERROR: mine.yaml, line 2: config key classes.a.demo.images: 'lots' is not of type 'integer'",
    "ERROR: mine.yaml, line 3: unknown config key trian (did you mean train?)",
    "ERROR: mine.yaml, line 6: config key model.input_size: 200 is not a multiple of 128",
]


def test_every_config_error_of_a_file_at_once(mine, tool_env):
    (mine / "mine.yaml").write_text(ERRORS)
    result = tumbletrain(mine, tool_env, "-n", "--configfile", "mine.yaml")
    last_line(result)
    assert result.stderr.strip().splitlines()[-3:] == ALL_ERRORS


def test_plain_snakemake_gives_every_error_too(mine, tool_env):
    """The Snakefile's own check (config/config.yaml, or a --configfile Snakemake read)."""
    (mine / "config" / "config.yaml").write_text(ERRORS)
    result = subprocess.run(
        ["snakemake", "-n", "-s", str(REPO / "Snakefile")],
        cwd=mine,
        capture_output=True,
        text=True,
        env=tool_env,
        timeout=300,
    )
    assert result.returncode == 1
    expected = [line.replace("mine.yaml", "config/config.yaml") for line in ALL_ERRORS]
    assert result.stderr.strip().splitlines()[-3:] == expected


def planned_jobs(result) -> set[str]:
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return set(re.findall(r"^(?:local)?rule (\w+):", result.stdout, re.MULTILINE))


def test_stage_names_are_targets(mine, tool_env):
    records = planned_jobs(tumbletrain(mine, tool_env, "-n", "records"))
    assert records == {"demo", "harvest", "signatures", "annotations", "records"}
    train = planned_jobs(tumbletrain(mine, tool_env, "-n", "train", "--configfile", "mine.yaml"))
    assert "train" in train and not {"evaluate", "export", "summary"} & train
    report = planned_jobs(tumbletrain(mine, tool_env, "-n", "report"))
    assert {"summary", "report_evaluation", "export"} <= report


def test_predict_is_a_target_of_the_configured_run(mine, tool_env):
    result = tumbletrain(mine, tool_env, "-n", "predict")
    assert "predict" in planned_jobs(result)
    assert f"results/predict/{TINY_CONFIG['train']['run']}/detections.csv" in result.stdout


def test_the_report_target_writes_the_report_after_the_run():
    assert runner.translate(["report"]) == (
        [],
        ["--report", "results/report.html", "--report-after-run"],
    )
    assert runner.translate(["records", "x.txt"]) == (["x.txt"], ["--until", "records"])


def test_a_warmup_longer_than_training_is_a_warning_in_the_dry_run(mine, tool_env):
    text = (mine / "mine.yaml").read_text()
    import yaml

    raw = yaml.safe_load(text)
    raw["train"].update(steps=60, warmup_steps=100)
    (mine / "mine.yaml").write_text(yaml.safe_dump(raw))
    result = tumbletrain(mine, tool_env, "why", "--configfile", "mine.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "WARNING: train.warmup_steps 100 is not below train.steps 60: the learning rate never "
        "reaches train.learning_rate; lower train.warmup_steps or raise train.steps"
    ) in result.stderr
    raw["train"].update(steps=300, warmup_steps=100)
    (mine / "mine.yaml").write_text(yaml.safe_dump(raw))
    result = tumbletrain(mine, tool_env, "-n", "--configfile", "mine.yaml")
    assert (
        "WARNING: train.steps 300 leaves 200 steps after the warm-up: a detector trained from "
        "scratch needs about 500 to find anything; raise train.steps"
    ) in result.stderr


def test_the_starter_config_leaves_the_warmup_and_downloads_nothing(repo):
    from tumbletrain import config

    cfg = config.load(repo / "config" / "own.example.yaml")
    assert cfg.model.checkpoint is None
    assert config.warnings(cfg) == []


def test_why_says_one_line_per_class_without_hashes(mine, tool_env):
    result = tumbletrain(mine, tool_env, "why")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [
        "circle: demo, harvest, signatures, annotations, records would run (demo: not made yet)",
        "square: demo, harvest, signatures, annotations, records would run (demo: not made yet)",
        "all classes: label_map would run (label_map: not made yet)",
        "model tiny: train, evaluate, export would run (train: not made yet, its inputs are "
        "re-made first)",
    ]


# A job block of Snakemake 9.27's dry run after one LabelImg file of class cup
# was touched (the params digest is the class's files' state).
DRY_RUN = """rule annotations:
    output: results/lists/cup/summary.json
    reason: Params have changed since last execution: Union of exclusive params before and now across all output: before: '8542a2d7' now: '232f4e53'
    wildcards: cls=cup
rule records:
    reason: Input files updated by another job: results/lists/cup/training.tsv
    wildcards: cls=cup, split=training
rule train:
    reason: Input files updated by another job: results/records/cup_training.tfrecord
    wildcards: run=own
"""  # noqa: E501


def test_why_words_a_changed_param_by_what_the_rule_reads():
    assert runner.explain(runner.planned(DRY_RUN)) == [
        "cup: annotations, records would run (annotations: its annotation files, or its part "
        "of the config, changed)",
        "model own: train would run (train: its inputs are re-made first)",
    ]
    assert runner.explain([]) == ["nothing would run: everything is up to date"]
