"""The README shows what the repository holds."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import TINY_CONFIG


def test_the_readme_s_tumblr_config_is_the_example_file(repo):
    page = (repo / "docs" / "tumblr.md").read_text()
    step = page.split("2. Start from `config/tumblr.example.yaml`")[1]
    shown = step.split("```yaml\n")[1].split("```")[0].rstrip(" ")
    example = (repo / "config" / "tumblr.example.yaml").read_text()
    assert textwrap.dedent(shown) == example[example.index("classes:") :]


def test_the_development_page_and_design_name_every_module(repo):
    """The layout paragraph a newcomer navigates by, and DESIGN's module list, stay whole."""
    page = (repo / "docs" / "development.md").read_text()
    development = page.split("# Development")[1].split("\n## ")[0]
    design = (repo / "docs" / "DESIGN.md").read_text().split("## Layout")[1].split("\n## ")[0]
    for module in sorted((repo / "scripts" / "tumbletrain").glob("*.py")):
        if module.stem != "__init__":
            assert f"`{module.stem}`" in development, f"docs/development.md: {module.stem}"
            assert f"`{module.name}`" in design, f"DESIGN.md's Layout: {module.name}"


def readme_commands(readme: str) -> list[str]:
    """The README's shell commands, top to bottom, as a user types them."""
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.DOTALL)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_the_readme_s_commands_are_found(repo):
    commands = [c.split("#")[0].strip() for c in readme_commands((repo / "README.md").read_text())]
    assert commands[:3] == ["make demo", "make test", ". .venv/bin/activate"]
    assert "tumbletrain --configfile config/own.yaml" in commands
    assert "tumbletrain predict --configfile config/own.yaml" in commands


def clone_venv(clone: Path) -> None:
    """The clone's .venv, as `make demo` leaves it, without downloading 2 GB again.

    A venv of this interpreter that sees the running environment's packages
    (a .pth calling site.addsitedir) and the clone's own sources first (as
    `pip install -e .` of the clone would), with the console scripts of both,
    marked installed so that the Makefile does not reinstall.
    """
    venv = clone / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    (Path(site) / "_tumbletrain_clone.pth").write_text(
        f"{clone / 'scripts'}\nimport site; site.addsitedir({ours!r})\n"
    )
    scripts = {"snakemake": "snakemake.cli:main"}
    pyproject = tomllib.loads((clone / "pyproject.toml").read_text())
    scripts.update(pyproject["project"].get("scripts", {}))
    for name, entry in scripts.items():
        module, function = entry.split(":")
        script = venv / "bin" / name
        script.write_text(
            f"#!{python}\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n"
        )
        script.chmod(0o755)
    (venv / ".installed").touch()


# The README's sizes, shrunk so that the test trains for seconds: the tiny
# project's model and steps for the demo and for the starter config.
def shrink(clone: Path) -> None:
    (clone / "config" / "config.yaml").write_text(yaml.safe_dump(TINY_CONFIG, sort_keys=False))
    own = yaml.safe_load((clone / "config" / "own.example.yaml").read_text())
    own["model"] = TINY_CONFIG["model"]
    own["train"] = {**TINY_CONFIG["train"], "run": own["train"]["run"]}
    (clone / "config" / "own.example.yaml").write_text(yaml.safe_dump(own, sort_keys=False))


def own_data(clone: Path) -> None:
    """What the user brings: labelled images in data/<class>, new images in new/."""
    from tumbletrain import config, demo

    own = config.load(clone / "config" / "own.example.yaml")
    for cls in own.class_names:
        demo.write_demo(cls, 8, config.parse(TINY_CONFIG).demo, clone / "data" / cls)
    new = clone / own.predict.input
    new.mkdir()
    for path in sorted((clone / "data" / own.class_names[0]).glob("*.jpg"))[:2]:
        shutil.copy(path, new / path.name)


@pytest.mark.slow
def test_the_readme_runs_top_to_bottom_in_a_fresh_clone(repo, tmp_path):
    """Every command of the README, in order, in one shell with a new shell's PATH.

    `make test` is left out (it is what runs this test). The user's own part
    is done as the README asks: labelled images in data/<class>/, new images
    in new/.
    """
    clone = tmp_path / "tumbletrain"
    subprocess.run(["git", "clone", "--quiet", str(repo), str(clone)], check=True)
    clone_venv(clone)
    shrink(clone)
    own_data(clone)
    # Left out: `make test` (it is what runs this test) and the command that opens
    # LabelImg's window (test_label.py drives it on Xvfb, as a person would).
    left_out = ("make test", "python -m tumbletrain.label ")
    every = readme_commands((clone / "README.md").read_text())
    commands = [c for c in every if not c.split("#")[0].strip().startswith(left_out)]
    assert len(commands) == len(every) - 2
    # Each command echoed before it runs, and its time after it (the closing note's figures).
    script = "set -euo pipefail\n" + "".join(
        f'echo {shlex.quote("$ " + c)}\nSECONDS=0\n{c}\necho "[$SECONDS s]"\n' for c in commands
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=1700,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    for command in commands:
        assert f"$ {command}\n" in result.stdout, command
    for made in (
        "results/export/tiny/export.json",
        "results/report.html",
        "results/eval/own/metrics.json",
        "results/export/own/saved_model",
        "results/predict/own/detections.csv",
    ):
        assert (clone / made).exists(), made
    assert "Traceback" not in output, output[-5000:]
    # The account of each run: what it did first; predict's is the prediction's own.
    assert "this run: the first run here" in result.stdout
    after_predict = result.stdout.split("$ tumbletrain predict")[1]
    assert "predict with run own: " in after_predict
    assert "verification of run" not in after_predict
