"""The configuration contract: the schema's defaults, and bad configs stopped at start."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml
from conftest import REPO, TINY_CONFIG, snakemake, write_project
from tumbletrain import config


def test_default_config_is_the_offline_demo(repo):
    cfg = config.load(repo / "config" / "config.yaml")
    assert cfg.class_names == ["circle", "square", "triangle"]
    assert all(c.demo is not None for c in cfg.classes)
    assert cfg.model.checkpoint is None, "the demo must not download anything"
    assert [c.label_id for c in cfg.classes] == [1, 2, 3]


def test_schema_fills_defaults():
    cfg = config.parse(
        {"classes": {"pose": {"tumblr": [{"blog": "artcive.tumblr.com", "tag": "pose"}]}}}
    )
    pose = cfg.get_class("pose")
    assert pose.annotation == "labelimg"
    assert pose.annotations_dir == "data/pose"
    assert pose.tumblr == (config.TumblrQuery(tag="pose", blog="artcive.tumblr.com"),)
    assert cfg.tumblr.media_hosts == ("media.tumblr.com",)
    assert cfg.tumblr.full_paging is False, "re-harvests page incrementally by default"
    assert cfg.split.verification_percent == 20
    assert cfg.model.checkpoint.url.endswith("mobilenetv2_ssd_i256_ckpt.tar.gz")
    assert cfg.model.effective_freeze_backbone is True


def test_full_paging_is_a_boolean():
    raw = {"classes": {"pose": {}}, "tumblr": {"full_paging": True}}
    assert config.parse(raw).tumblr.full_paging is True
    with pytest.raises(config.ConfigError, match="full_paging"):
        config.parse({**raw, "tumblr": {"full_paging": "yes"}})


def test_example_tumblr_config_is_valid(repo):
    cfg = config.load(repo / "config" / "tumblr.example.yaml")
    assert cfg.class_names == ["pose"]
    assert cfg.get_class("pose").tumblr[0].blog == "artcive.tumblr.com"


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"classes": {"a": {"demo": {"images": 3}}}, "trian": {}}, "trian"),
        ({"classes": {"a": {"max_images": "many"}}}, "many"),
        ({"split": {"verification_percent": 20}}, "classes"),
        ({"classes": {"a": {"annotation": "boxes"}}}, "boxes"),
        ({"classes": {"a": {}}, "train": {"steps": 0}}, "steps"),
    ],
    ids=["unknown-key", "wrong-type", "missing-classes", "bad-enum", "out-of-range"],
)
def test_bad_config_names_the_key(raw, named):
    with pytest.raises(config.ConfigError) as error:
        config.parse(raw)
    assert named in str(error.value)


def test_stage_config_narrows_to_what_the_stage_reads():
    raw = config.validate(
        {
            "classes": {
                "a": {"demo": {"images": 2}},
                "b": {"aliases": ["B"], "tumblr": [{"tag": "x"}]},
            }
        }
    )
    harvest_a = config.stage_config(raw, "harvest", "a")
    assert set(harvest_a) == {"classes", "tumblr"}
    assert list(harvest_a["classes"]) == ["a"]
    annotations_a = config.stage_config(raw, "annotations", "a")
    # Every class name and alias (objects of b can appear in a's XML), in order.
    assert list(annotations_a["classes"]) == ["a", "b"]
    assert annotations_a["classes"]["b"] == {"aliases": ["B"]}
    assert config.parse(annotations_a).get_class("b").label_id == 2
    checkpoint = config.stage_config(raw, "checkpoint_download")
    assert checkpoint == {"model": {"checkpoint": raw["model"]["checkpoint"]}}


FULL = {
    "classes": {
        "a": {"demo": {"images": 2}, "aliases": ["A1"]},
        "b": {"aliases": ["B"], "tumblr": [{"tag": "x"}]},
    }
}


def stage_view(name: str, class_name: str | None):
    """The stage's config as its command builds it from the JSON its rule passes."""
    declaration = config.declared(name)
    text = config.stage_json(config.validate(FULL), name, class_name)
    args = argparse.Namespace(config_json=text, config=None, class_name=class_name)
    return declaration, config.from_arguments(args, declaration)


def all_stages():
    config.declared("demo")  # imports every stage module
    return sorted(config.STAGES)


@pytest.mark.parametrize("name", all_stages())
@pytest.mark.parametrize("class_name", ["a", None])
def test_a_stage_reads_only_what_its_rule_passes(name, class_name):
    declaration, cfg = stage_view(name, class_name)
    full = config.parse(FULL)
    for section in (f.name for f in dataclasses.fields(config.WorkflowConfig)):
        if section == "classes":
            continue
        keys = declaration.keys(section)
        if keys == set():
            with pytest.raises(config.NotPassed, match=f"stage {name} reads config {section},"):
                getattr(cfg, section)
            continue
        part = getattr(cfg, section)
        for field in dataclasses.fields(part):
            if keys is None or field.name in keys:
                assert getattr(part, field.name) == getattr(getattr(full, section), field.name)
            else:
                with pytest.raises(config.NotPassed, match=f"stage {name} reads config"):
                    getattr(part, field.name)
    if declaration.classes == "none":
        with pytest.raises(config.NotPassed, match=f"stage {name} reads config classes,"):
            cfg.classes  # noqa: B018
    elif declaration.classes in ("names", "all"):
        assert cfg.class_names == ["a", "b"]
        assert [c.label_id for c in cfg.classes] == [1, 2]
        assert cfg.get_class("b").aliases == ("B",)
    else:
        assert cfg.class_names == (["a"] if class_name else ["a", "b"])
        with pytest.raises(config.NotPassed, match=f"stage {name} reads config classes.a.label_id"):
            cfg.get_class("a").label_id  # noqa: B018
    if declaration.classes == "names" and class_name == "a":
        assert cfg.get_class("a").demo == full.get_class("a").demo
        with pytest.raises(config.NotPassed, match=f"stage {name} reads config classes.b.tumblr"):
            cfg.get_class("b").tumblr  # noqa: B018


def test_annotations_get_the_folders_of_the_classes_sharing_one():
    raw = config.validate(
        {
            "classes": {
                "cup": {"folders": ["data/voc"]},
                "ball": {"folders": ["data/voc"], "aliases": ["Ball"]},
                "pose": {"folders": ["data/poses"]},
            }
        }
    )
    args = argparse.Namespace(
        config_json=config.stage_json(raw, "annotations", "cup"), config=None, class_name="cup"
    )
    cfg = config.from_arguments(args, config.declared("annotations"))
    assert [c.name for c in cfg.classes if c.given("folders")] == ["cup", "ball"]
    assert cfg.get_class("ball").folders == ("data/voc",)
    with pytest.raises(config.NotPassed, match="stage annotations reads config classes.pose"):
        cfg.get_class("pose").folders  # noqa: B018


def test_every_rule_passes_the_part_its_stage_declares(repo):
    """A rule's params name its own stage; every declared stage is some rule's."""
    passed = {}
    for smk in (repo / "workflow" / "rules").glob("*.smk"):
        rule = None
        for line in smk.read_text().splitlines():
            if match := re.match(r"(?:rule|checkpoint) (\w+):", line):
                rule = match.group(1)
            if match := re.search(r'stage_json\("(\w+)"', line):
                passed[rule] = match.group(1)
    assert passed, "no rule passes a config part"
    assert {rule: rule for rule in passed} == passed
    assert set(passed) == set(all_stages())


def test_a_standalone_command_gets_the_same_part(tmp_path):
    path = write_project(tmp_path, FULL)
    declaration = config.declared("annotations")
    args = argparse.Namespace(config_json=None, config=path, class_name="a")
    alone = config.from_arguments(args, declaration)
    _, under_snakemake = stage_view("annotations", "a")
    assert alone.split == under_snakemake.split
    assert alone.class_names == under_snakemake.class_names
    with pytest.raises(config.NotPassed, match="stage annotations reads config tumblr,"):
        alone.tumblr  # noqa: B018


def test_stage_json_keeps_the_class_order_and_sorts_the_rest():
    raw = config.validate({"classes": {"square": {}, "circle": {}}, "split": {"salt": "x"}})
    text = config.stage_json(raw, "records")
    assert list(json.loads(text)["classes"]) == ["square", "circle"]
    assert [c.label_id for c in config.parse(json.loads(text)).classes] == [1, 2]
    shuffled = {**raw, "model": dict(reversed(list(raw["model"].items())))}
    assert config.stage_json(shuffled, "train") == config.stage_json(raw, "train")
    swapped = config.validate({"classes": {"circle": {}, "square": {}}, "split": {"salt": "x"}})
    for stage in ("records", "train", "evaluate"):
        assert config.stage_json(swapped, stage) != config.stage_json(raw, stage), stage
    assert config.stage_json(swapped, "harvest", "circle") == config.stage_json(
        raw, "harvest", "circle"
    ), "the harvest of one class does not depend on the order"


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        (
            {"Cat": {}, "cat": {}},
            "classes: class 'Cat' and class 'cat' are the same name after trimming and case "
            "folding; rename one or merge the two classes",
        ),
        (
            {"cat": {}, "dog": {"aliases": [" CAT "]}},
            "classes: class 'cat' and alias ' CAT ' of class 'dog' are the same name after "
            "trimming and case folding; rename one or merge the two classes",
        ),
        (
            {"cat": {"aliases": ["kitty"]}, "dog": {"aliases": ["Kitty"]}},
            "classes: alias 'kitty' of class 'cat' and alias 'Kitty' of class 'dog' are the same "
            "name after trimming and case folding; rename one or merge the two classes",
        ),
    ],
    ids=["two-classes", "alias-and-class", "two-aliases"],
)
def test_classes_equal_after_case_folding_are_an_error(classes, message):
    with pytest.raises(config.ConfigError) as error:
        config.parse({"classes": classes})
    assert str(error.value) == message


def test_an_alias_of_its_own_class_is_fine():
    assert config.parse({"classes": {"pose": {"aliases": ["Pose", "poses"]}}}).class_names == [
        "pose"
    ]


def dry_run(project, env, *args, program="snakemake"):
    """`snakemake -n`, or the same through `tumbletrain` (run as a module: the venv's
    entry point is the installed checkout's, these tests run this one)."""
    command = [sys.executable, "-m", "tumbletrain.runner"] if program == "tumbletrain" else []
    return subprocess.run(
        [*(command or ["snakemake"]), "-n", "-s", str(REPO / "Snakefile"), *args],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def planned_rules(result) -> set[str]:
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return set(re.findall(r"^(?:local)?rule (\w+):", result.stdout, re.MULTILINE))


def classes_planned(result) -> set[str]:
    return set(re.findall(r"wildcards: cls=(\w+)", result.stdout))


@pytest.fixture
def project_with_examples(tmp_path):
    """A project holding the repository's config/ folder (demo config, examples, profiles)."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    return tmp_path


def test_a_configfile_replaces_the_demo(project_with_examples, tool_env):
    demo = dry_run(project_with_examples, tool_env)
    assert classes_planned(demo) == {"circle", "square", "triangle"}
    own = dry_run(project_with_examples, tool_env, "--configfile", "config/tumblr.example.yaml")
    assert classes_planned(own) == {"pose"}, "the demo's classes leaked into the user's config"
    assert "train" in planned_rules(own) and "demo" not in planned_rules(own)


def test_editing_config_yaml_in_place_is_the_whole_config(project_with_examples, tool_env):
    example = project_with_examples / "config" / "tumblr.example.yaml"
    shutil.copy(example, project_with_examples / "config" / "config.yaml")
    assert classes_planned(dry_run(project_with_examples, tool_env)) == {"pose"}


# The commands a page may show: Snakemake's, and ours in front of it (tumbletrain.runner).
COMMANDS = ("snakemake", "tumbletrain")


def documented_commands() -> list[tuple[str, str]]:
    """Every snakemake/tumbletrain command in the README, docs/ and the config files' headers."""
    found = []
    sources = [
        REPO / "README.md",
        *sorted((REPO / "docs").glob("*.md")),
        REPO / "config" / "README.md",
        *sorted((REPO / "config").glob("*.yaml")),
    ]
    for source in sources:
        if not source.exists():
            continue
        text = source.read_text()
        if source.suffix == ".yaml":
            lines = [
                line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")
            ]
        else:
            spans = re.findall(r"`((?:snakemake|tumbletrain)(?: [^`]*)?)`", text)
            blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.DOTALL)
            lines = spans + [line for block in blocks for line in block.splitlines()]
        for line in lines:
            command = " ".join(line.split("#")[0].split())
            if command.split(" ")[0] in COMMANDS:
                found.append((source.relative_to(REPO).as_posix(), command))
    return sorted(set(found))


# Commands that cannot be dry-runs, and the test that runs them for real.
NOT_DRY_RUN = {"--report": "test_workflow.py::test_report_builds", "--lint": "test_workflow.py"}


def test_the_documented_commands_are_found():
    commands = [c for _, c in documented_commands()]
    own = "label_all --cores all --configfile config/tumblr.example.yaml"
    assert any(own in c for c in commands)
    assert any(c.endswith("label_all") and "--configfile" not in c for c in commands)
    found = documented_commands()
    assert ("README.md", "tumbletrain why --configfile config/own.yaml") in found
    assert any(source == "docs/tumblr.md" for source, _ in found)


def planned_commands() -> list[tuple[str, str, str]]:
    """(source, command, example config) for each documented command a dry run can check.

    Left out, each tested elsewhere: `--report` and `--lint` (they are not dry
    runs: test_workflow.py runs both), conda (not installed here: test_envs.py
    checks every rule's environment), and a command naming its own
    `--configfile` with the other example as config/config.yaml (it reads only
    the file it names).
    """
    planned = []
    for source, command in documented_commands():
        if any(flag in command for flag in NOT_DRY_RUN) or "conda" in command.split():
            continue
        for config_file in ("config.yaml", "tumblr.example.yaml"):
            if "--configfile" in command and config_file != "config.yaml":
                continue
            planned.append((source, command, config_file))
    return planned


@pytest.mark.parametrize(("source", "command", "config_file"), planned_commands())
def test_every_documented_command_plans(
    project_with_examples, tool_env, source, command, config_file
):
    """Each command, as written, with each example config as config/config.yaml."""
    configs = project_with_examples / "config"
    if config_file != "config.yaml":
        shutil.copy(configs / config_file, configs / "config.yaml")
    # The README's own config is the starter it copies (`cp config/own.example.yaml ...`).
    command = command.replace("config/own.yaml", "config/own.example.yaml")
    run = config.load(configs / "config.yaml").train.run
    program, *args = shlex.split(command)
    args = [a.replace("{run}", run) for a in args]
    result = dry_run(project_with_examples, tool_env, *args, program=program)
    assert result.returncode == 0, f"{source}: {command}\n{(result.stdout + result.stderr)[-3000:]}"
    if "why" in args:  # the dry run told in words (tumbletrain.runner)
        assert " would run (" in result.stdout, result.stdout[-2000:]
    elif not {"--rulegraph", "--dag", "--summary"} & set(args):
        assert "This was a dry-run" in result.stdout, result.stdout[-2000:]


def test_commands_left_to_other_tests_exist():
    """The commands planned_commands() leaves out are documented ones, not typos."""
    left = {c for _, c in documented_commands()} - {c for _, c, _ in planned_commands()}
    assert any("--report" in c for c in left)
    assert all(any(flag in c for flag in NOT_DRY_RUN) or "conda" in c.split() for c in left), left


def last_line(result) -> str:
    assert result.returncode == 1, (result.stdout + result.stderr)[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("text", "args", "expected"),
    [
        (
            None,
            [],
            "ERROR: config file config/config.yaml does not exist; pass yours with "
            "--configfile FILE, or start from config/tumblr.example.yaml",
        ),
        (
            "classes:\n  a: {demo: {images: 3}\n  b: x\n",
            [],
            "ERROR: config/config.yaml, line 3, column 3: invalid YAML: while parsing a flow "
            "mapping; "
            "expected ',' or '}', but got '<scalar>'",
        ),
        (
            "classes:\n  a:\n    demo: {images: 3}\ntrian:\n  steps: 3\n",
            [],
            "ERROR: config/config.yaml, line 4: unknown config key trian (did you mean train?)",
        ),
        (
            "classes:\n  a:\n    demo: {images: 3}\ntrain:\n  run: x\n  stesp: 3\n",
            ["--configfile", "my.yaml"],
            "ERROR: my.yaml, line 6: unknown config key train.stesp (did you mean train.steps?)",
        ),
        (
            "classes:\n  a: {tumblr: [{tag: x, blgo: y}]}\n",
            ["--configfile", "my.yaml"],
            "ERROR: my.yaml, line 2: unknown config key classes.a.tumblr.0.blgo "
            "(did you mean classes.a.tumblr.0.blog?)",
        ),
        (
            "classes:\n  a: {demo: {images: 3}}\nmodel:\n  input_size: 200\n",
            ["--configfile", "my.yaml"],
            "ERROR: my.yaml, line 4: config key model.input_size: 200 is not a multiple of 128",
        ),
        (
            "classes:\n  a: {demo: {images: 'lots'}}\n",
            [],
            "ERROR: config/config.yaml, line 2: config key classes.a.demo.images: "
            "'lots' is not of type 'integer'",
        ),
        (
            "train: {steps: 5}\n",
            [],
            "ERROR: config/config.yaml: config: 'classes' is a required property",
        ),
        (
            "classes:\n  Cat: {}\n  cat: {}\n",
            [],
            "ERROR: classes: class 'Cat' and class 'cat' are the same name after trimming and "
            "case folding; rename one or merge the two classes",
        ),
        # `$` let a trailing newline through, into the rules' shell commands (issue #27).
        (
            'classes:\n  "cat\\n": {}\n',
            [],
            "ERROR: config/config.yaml, line 1: config key classes: 'cat\\n' does not match "
            "'^[A-Za-z0-9][A-Za-z0-9_-]*\\\\Z'",
        ),
        # Nine levels of nine aliases: 387 million values once written as the stages' JSON.
        (
            "classes:\n  a: {demo: {images: 2}}\nmodel:\n  overrides:\n"
            "    l0: &l0 [x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"    l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9)),
            [],
            "ERROR: config/config.yaml: the config expands to more than 100,000 values "
            "(YAML aliases of aliases?); write the repeated parts out once",
        ),
    ],
    ids=[
        "missing-file",
        "invalid-yaml",
        "mistyped-key",
        "mistyped-key-configfile",
        "mistyped-nested-key",
        "input-size",
        "wrong-type",
        "missing-classes",
        "same-class-twice",
        "class-name-with-newline",
        "alias-bomb",
    ],
)
def test_a_config_mistake_is_one_line_before_anything_runs(
    tmp_path, tool_env, text, args, expected
):
    if text is not None:
        target = tmp_path / (args[1] if args else "config/config.yaml")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        if args:
            write_project(tmp_path, {"classes": {"demo_class": {"demo": {"images": 2}}}})
    assert last_line(dry_run(tmp_path, tool_env, *args)) == expected
    assert not (tmp_path / "results").exists()
    assert not (tmp_path / "resources").exists()


def label_map_alone(config_file, project, env, name="alone"):
    """The standalone label-map command, reading a config file."""
    return subprocess.run(
        [sys.executable, "-m", "tumbletrain.records", "label-map", "--config", str(config_file)]
        + ["--pbtxt", f"{name}.pbtxt", "--csv", f"{name}.csv"],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_a_stage_command_names_the_file_and_line_too(tmp_path, tool_env):
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes:\n  a: {}\nrecords:\n  shard: 2\n")
    assert last_line(label_map_alone(bad, tmp_path, tool_env)) == (
        f"ERROR: {bad}, line 4: unknown config key records.shard (did you mean records.shards?)"
    )


def test_label_ids_follow_the_config_order_under_snakemake_and_alone(tmp_path, tool_env):
    classes = {"square": {"demo": {"images": 2}}, "circle": {"demo": {"images": 2}}}
    path = write_project(tmp_path, {"classes": classes})
    result = snakemake(tmp_path, tool_env, "results/label_map.csv", "results/label_map.pbtxt")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "results" / "label_map.csv").read_text() == "1,square\n2,circle\n"
    alone = label_map_alone(path, tmp_path, tool_env)
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert (tmp_path / "alone.csv").read_text() == "1,square\n2,circle\n"
    assert (tmp_path / "alone.pbtxt").read_text() == (
        tmp_path / "results" / "label_map.pbtxt"
    ).read_text()


@pytest.mark.slow
def test_reordering_classes_reruns_records_and_training(tiny_run, tool_env, tmp_path):
    project, _ = tiny_run
    classes = dict(reversed(list(TINY_CONFIG["classes"].items())))
    reordered = tmp_path / "reordered.yaml"
    reordered.write_text(yaml.safe_dump({**TINY_CONFIG, "classes": classes}, sort_keys=False))
    rules = planned_rules(dry_run(project, tool_env, "--configfile", str(reordered)))
    assert {"records", "label_map", "train", "evaluate"} <= rules, rules
    assert not {"demo", "harvest"} & rules, "the harvest does not depend on the class order"


def test_a_built_wheel_carries_the_schema_and_works_without_the_checkout(tmp_path, tool_env):
    """A non-editable install: the wheel alone (on sys.path as a zip) validates a config."""
    source = tmp_path / "source"  # the build writes beside its sources: a copy
    shutil.copytree(REPO / "scripts", source / "scripts", ignore=shutil.ignore_patterns("*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        env=tool_env,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("tumbletrain-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert "tumbletrain/config.schema.yaml" in archive.namelist()
    check = (
        "import tumbletrain, tumbletrain.config as c; print(tumbletrain.__file__); "
        "print(c.parse({'classes': {'a': {}}}).model.input_size)"
    )
    env = {**tool_env, "PYTHONPATH": str(wheel)}
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    where, size = result.stdout.split()
    assert where.startswith(str(wheel)), where
    assert size == "256", "the schema's default comes from the wheel's schema"


def test_the_job_environments_need_no_snakemake(repo):
    for env in ("harvest", "tensorflow"):
        assert "snakemake" not in (repo / "envs" / f"{env}.yaml").read_text(), env
    for module in (repo / "scripts" / "tumbletrain").glob("*.py"):
        if module.name == "runner.py":  # the `tumbletrain` command runs Snakemake, never a job
            continue
        assert "import snakemake" not in module.read_text(), module.name
        assert "from snakemake" not in module.read_text(), module.name


def test_the_configuration_reference_matches_the_schema(repo):
    for key, spec, _ in config._rows("", config.schema()):
        assert spec.get("description"), f"schema key {key} has no description"
    assert (repo / "config" / "README.md").read_text() == config.reference(), (
        "config/README.md is stale: python -m tumbletrain.config reference > config/README.md"
    )
    for key in ("classes.<class>.aliases", "model.input_size", "train.run", "tumblr.retries"):
        assert f"| `{key}` |" in config.reference()


def test_a_missing_configfile_is_snakemakes_own_error(tmp_path, tool_env):
    """Snakemake reads --configfile before the workflow runs, so no Snakefile can word
    this one: its last line names the file. `tumbletrain` checks it first (test_runner)."""
    result = dry_run(tmp_path, tool_env, "--configfile", "nope.yaml")
    assert result.returncode == 1
    # Snakemake prints this traceback to stdout.
    assert result.stdout.strip().splitlines()[-1] == (
        "FileNotFoundError: [Errno 2] No such file or directory: 'nope.yaml'"
    )
