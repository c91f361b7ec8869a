"""The conda environments in envs/ pin what pyproject.toml pins, at the same versions."""

from __future__ import annotations

import tomllib

import pytest
import yaml
from packaging.requirements import Requirement


def pins(requirements):
    result = {}
    for text in requirements:
        if text.startswith("-"):
            continue
        requirement = Requirement(text)
        specs = list(requirement.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{text} is not pinned with =="
        result[requirement.name.lower()] = specs[0].version
    return result


@pytest.fixture(scope="module")
def project_pins(repo):
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    return pins(project["dependencies"])


@pytest.mark.parametrize("env", ["harvest", "tensorflow"])
def test_env_pins_agree_with_pyproject(repo, project_pins, env):
    spec = yaml.safe_load((repo / "envs" / f"{env}.yaml").read_text())
    pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
    env_pins = pins(pip)
    assert env_pins, f"envs/{env}.yaml pins nothing"
    for name, version in env_pins.items():
        assert name in project_pins, f"envs/{env}.yaml pins {name}, pyproject.toml does not"
        assert project_pins[name] == version, (
            f"{name}: envs/{env}.yaml has {version}, pyproject.toml {project_pins[name]}"
        )
    assert any("-e .." in line for line in pip), "the env must install tumbletrain itself"


def test_every_rule_names_an_existing_env(repo):
    for smk in (repo / "workflow" / "rules").glob("*.smk"):
        for line in smk.read_text().splitlines():
            if line.strip().startswith('"../../envs/'):
                target = (smk.parent / line.strip().strip('",')).resolve()
                assert target.exists(), f"{smk.name} names missing env {target}"


def test_the_gpu_extra_is_tensorflow_with_cuda_at_the_same_version(repo, project_pins):
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    (gpu,) = [Requirement(r) for r in project["optional-dependencies"]["gpu"]]
    assert gpu.name == "tensorflow" and gpu.extras == {"and-cuda"}
    assert [s.version for s in gpu.specifier] == [project_pins["tensorflow"]]


def test_mediapipe_is_pinned_alike_in_the_makefile_and_the_env(repo):
    """MediaPipe is installed without its dependencies (it cannot resolve beside the Model
    Garden), by the Makefile and by the tensorflow env: the same version in both."""
    import re

    make = re.search(r"^MEDIAPIPE := (\S+)$", (repo / "Makefile").read_text(), re.M)
    spec = yaml.safe_load((repo / "envs" / "tensorflow.yaml").read_text())
    pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
    assert make and f"--no-deps {make[1]}" in pip, (make, pip)
    assert make[1] == "mediapipe==1.2.2"
