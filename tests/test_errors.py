"""The common mistakes end a stage with one line that says what went wrong and what to do.

Each test runs the stage command as Snakemake would and reads the last line of
its stderr, which is the last line of the rule's log.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image


def run_stage(module: str, *args: str, config: dict, cwd: Path, env: dict):
    return subprocess.run(
        [sys.executable, "-m", f"tumbletrain.{module}", *args, "--config-json", json.dumps(config)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def stage(module: str, *args: str, config: dict, cwd: Path, env: dict) -> str:
    """Run a stage that must fail; returns the last line of its stderr."""
    result = run_stage(module, *args, config=config, cwd=cwd, env=env)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


def image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), (200, 40, 40)).save(path, "JPEG")
    return path


def labelimg_xml(path: Path, image_name: str, name: str) -> Path:
    path.write_text(
        f"""<annotation><folder>{path.parent.name}</folder><filename>{image_name}</filename>
<size><width>64</width><height>48</height><depth>3</depth></size>
<object><name>{name}</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>40</xmax><ymax>40</ymax>
</bndbox></object></annotation>"""
    )
    return path


def harvest_args(cls: str) -> list[str]:
    """The harvest rule's command line, run from the project folder."""
    manifest = f"resources/manifests/{cls}.tsv"
    return ["--class", cls, "--store", "resources/images", "--manifest", manifest]


def harvest(project: Path, config: dict, env: dict, cls: str = "cat") -> str:
    return stage("harvest", *harvest_args(cls), config=config, cwd=project, env=env)


def harvest_ok(project: Path, config: dict, env: dict, cls: str = "cat") -> None:
    result = run_stage("harvest", *harvest_args(cls), config=config, cwd=project, env=env)
    assert result.returncode == 0, result.stderr[-3000:]


def annotations(project: Path, config: dict, env: dict, cls: str = "cat") -> str:
    return stage(
        "annotations",
        "--class",
        cls,
        "--manifest",
        str(project / "resources" / "manifests" / f"{cls}.tsv"),
        "--outdir",
        str(project / "results" / "lists" / cls),
        config=config,
        cwd=project,
        env=env,
    )


def test_no_credentials(tmp_path, tool_env):
    config = {"classes": {"cat": {"tumblr": [{"tag": "cat"}]}}}
    last = harvest(tmp_path, config, tool_env)
    assert last.startswith("ERROR: TUMBLR_CONSUMER_KEY is not set")
    assert "export TUMBLR_CONSUMER_KEY=" in last


def test_no_images_at_all(tmp_path, tool_env):
    (tmp_path / "data" / "cat").mkdir(parents=True)
    (tmp_path / "data" / "cat" / "notes.txt").write_text("no pictures here")
    config = {"classes": {"cat": {"folders": ["data/cat"]}}}
    last = harvest(tmp_path, config, tool_env)
    # What went wrong: the folder that has no images; what to do: add some or other sources.
    assert last == (
        "ERROR: class 'cat' has no image source with images (folders: data/cat): "
        "put images in its folders "
        "or give it `tumblr:` queries or `demo:` in the config"
    )


def test_a_missing_folder(tmp_path, tool_env):
    config = {"classes": {"cat": {"folders": ["data/kat"]}}}
    last = harvest(tmp_path, config, tool_env)
    assert (
        last == "ERROR: folder data/kat of class 'cat' does not exist; fix `folders:` in the config"
    )


def test_no_annotations_for_a_class(tmp_path, tool_env):
    for i in range(3):
        image(tmp_path / "data" / "cat" / f"{i}.jpg")
    config = {"classes": {"cat": {"folders": ["data/cat"]}}}
    harvest_ok(tmp_path, config, tool_env)
    last = annotations(tmp_path, config, tool_env)
    assert last.startswith("ERROR: class 'cat' has no usable annotations (0 XML files")
    assert "label its images with LabelImg" in last
    assert "annotation: whole_image" in last


def test_a_class_in_xml_not_in_the_config(tmp_path, tool_env):
    folder = tmp_path / "data" / "cat"
    for i in range(2):
        image(folder / f"{i}.jpg")
        labelimg_xml(folder / f"{i}.xml", f"{i}.jpg", "dog")
    config = {"classes": {"cat": {"folders": ["data/cat"]}}}
    harvest_ok(tmp_path, config, tool_env)
    last = annotations(tmp_path, config, tool_env)
    assert last.startswith("ERROR: class 'cat' has no usable annotations (2 XML files")
    # What to do about it: configure the class or an alias, not only "label the images".
    assert "2 unknown_class: the object's class is not configured (add it or an alias)" in last


@pytest.fixture
def empty_http_server(tmp_path):
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    (tmp_path / "www").mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_checkpoint_url_that_404s(tmp_path, tool_env, empty_http_server):
    url = f"{empty_http_server}/mobilenet_ckpt.tar.gz"
    config = {
        "classes": {"cat": {"folders": ["data/cat"]}},
        "model": {"checkpoint": {"url": url}},
    }
    last = stage(
        "model",
        "checkpoint",
        "--output-dir",
        str(tmp_path / "ckpt"),
        config=config,
        cwd=tmp_path,
        env=tool_env,
    )
    assert last == (
        f"ERROR: checkpoint URL {url} answered 404 Not Found; "
        "fix model.checkpoint.url (or set it to null to train from scratch)"
    )
    assert not (tmp_path / "ckpt" / "checkpoint.json").exists()


def test_a_config_error_names_the_key_and_the_allowed_values(tmp_path, tool_env):
    config = {"classes": {"cat": {"folders": ["data/cat"], "annotation": "boxes"}}}
    last = harvest(tmp_path, config, tool_env)
    assert last == (
        "ERROR: config key classes.cat.annotation: 'boxes' is not one of "
        "['labelimg', 'whole_image']"
    )


@pytest.mark.parametrize(
    ("module", "args", "missing", "rule"),
    [
        (
            "records",
            ["write", "--list", "results/lists/cat/training.tsv", "--output", "r", "--stats", "s"],
            "results/lists/cat/training.tsv",
            "annotations",
        ),
        (
            "model",
            ["train", "--training-stats", "results/records/cat_training.json"]
            + ["--model-dir", "m", "--final", "m/final.json"],
            "results/records/cat_training.json",
            "records",
        ),
        (
            "model",
            ["export", "--final", "results/train/default/final.json", "--outdir", "x"],
            "results/train/default/final.json",
            "train",
        ),
    ],
)
def test_a_missing_input_names_the_file_and_the_rule_that_makes_it(
    tmp_path, tool_env, module, args, missing, rule
):
    line = stage(module, *args, config={"classes": {"cat": {}}}, cwd=tmp_path, env=tool_env)
    assert missing in line and f"run the {rule} " in line, line


def test_a_failing_job_shows_its_error_without_a_profile(tmp_path, tool_env):
    """Plain `snakemake --cores 2` loads profiles/default, whose show-failed-logs prints the log."""
    from conftest import snakemake, write_project

    (tmp_path / "data" / "cat").mkdir(parents=True)
    write_project(tmp_path, {"classes": {"cat": {"folders": ["data/cat"]}}})
    result = snakemake(tmp_path, tool_env, "resources/manifests/cat.tsv", timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    terminal = result.stdout + result.stderr
    assert "workflow specific profile" in terminal and "profiles/default" in terminal
    rule = "=" * 80
    shown = terminal.split(f"Logfile logs/harvest/cat.log:\n{rule}\n")[1].split(f"\n{rule}")[0]
    last = (tmp_path / "logs" / "harvest" / "cat.log").read_text().strip().splitlines()[-1]
    assert shown.splitlines()[-1] == last
    assert last == (
        "ERROR: class 'cat' has no image source with images (folders: data/cat): "
        "put images in its folders or give it `tumblr:` queries or `demo:` in the config"
    )


def test_a_feature_cache_it_cannot_use_is_refused_before_any_job(tmp_path, tool_env):
    """Several workers run under srun, which may queue for long before the command could say it."""
    from conftest import TINY_CONFIG, snakemake, write_project

    raw = {**TINY_CONFIG, "train": {**TINY_CONFIG["train"], "feature_cache": True, "workers": 2}}
    raw["model"] = {**TINY_CONFIG["model"], "freeze_backbone": True}
    write_project(tmp_path, raw)
    result = snakemake(tmp_path, tool_env, "-n", timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "ERROR: train.feature_cache trains on one worker; set train.nodes and train.workers to 1, "
        "or train.feature_cache: false"
    ), result.stderr[-2000:]
    assert not (tmp_path / "results").exists()


def test_a_job_the_kernel_kills_says_so_in_its_log_and_on_the_terminal(tmp_path, tool_env):
    """The OOM killer's SIGKILL left a log ending in a progress line (issue #27).

    The harvest job kills itself with SIGKILL, as the OOM killer would, from a
    sitecustomize module on its PYTHONPATH (Snakemake's own process is spared).
    """
    from conftest import snakemake, write_project

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, signal, sys\n"
        "if 'tumbletrain.harvest' in sys.orig_argv:\n"
        "    print('harvest cat: 0 images', file=sys.stderr, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {
        **tool_env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), tool_env.get("PYTHONPATH")])),
    }
    (tmp_path / "data" / "cat").mkdir(parents=True)
    image(tmp_path / "data" / "cat" / "a.jpg")
    write_project(tmp_path, {"classes": {"cat": {"folders": ["data/cat"]}}})
    result = snakemake(tmp_path, env, "resources/manifests/cat.tsv", timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    line = (
        "ERROR: harvest cat was killed (signal 9, SIGKILL: out of memory?); "
        "log: logs/harvest/cat.log"
    )
    assert (tmp_path / "logs" / "harvest" / "cat.log").read_text().splitlines()[-1] == line
    assert line in result.stderr.splitlines()
