"""The data stages never import TensorFlow: its import alone costs each job 5-10 s."""

from __future__ import annotations

import json

from conftest import TINY_CONFIG, snakemake, write_project

# Loaded by every Python process that has its folder on PYTHONPATH (the `site`
# module imports `sitecustomize`): at exit, a stage command notes whether
# TensorFlow was imported.
SITECUSTOMIZE = """
import atexit, json, os, sys

def _note():
    if "-m" in sys.orig_argv and sys.orig_argv[sys.orig_argv.index("-m") + 1].startswith(
        "tumbletrain."
    ):
        with open(os.environ["TT_MODULES_LOG"], "a") as log:
            line = {"argv": sys.orig_argv, "tensorflow": "tensorflow" in sys.modules}
            log.write(json.dumps(line) + "\\n")

atexit.register(_note)
"""

DATA_COMMANDS = {
    "tumbletrain.demo",
    "tumbletrain.harvest",
    "tumbletrain.labelimg",
    "tumbletrain.neardup",
    "tumbletrain.annotations",
    "tumbletrain.records write",
    "tumbletrain.records label-map",
    "tumbletrain.report data",
}


def test_no_data_stage_command_imports_tensorflow(tmp_path, tool_env):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / "modules.jsonl"
    env = {
        **tool_env,
        "PYTHONPATH": ":".join(filter(None, [str(hook), tool_env.get("PYTHONPATH")])),
        "TT_MODULES_LOG": str(log),
    }
    project = tmp_path / "project"
    write_project(project, TINY_CONFIG)
    classes = list(TINY_CONFIG["classes"])
    targets = [
        f"results/records/{c}_{s}.tfrecord" for c in classes for s in ("training", "verification")
    ]
    targets += ["results/label_map.csv", "results/report/class_counts.png"]
    targets += [f"data/{c}/.tumbletrain.json" for c in classes]
    result = snakemake(project, env, *targets, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ran: dict[str, list[bool]] = {}
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        argv = entry["argv"]
        at = argv.index("-m") + 1
        # The module, and its subcommand if it has one (`records write`).
        command = " ".join(a for a in argv[at : at + 2] if not a.startswith("-"))
        ran.setdefault(command, []).append(entry["tensorflow"])
    assert set(ran) == DATA_COMMANDS
    assert {command: any(imported) for command, imported in ran.items()} == dict.fromkeys(
        DATA_COMMANDS, False
    )
