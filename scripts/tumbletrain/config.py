"""Typed configuration, checked against the schema that ships inside this package.

The schema (`config.schema.yaml`, package data) is the single source of the
defaults: `validate` checks a config with jsonschema and fills them in, then
`build` makes frozen dataclasses so stage code never indexes into raw dicts.

Each stage command declares beside its code the part of the configuration it
reads (`stage(...)`); its rule passes exactly that part (`stage_json`), so that
Snakemake's params-based rerun trigger rebuilds a stage when, and only when,
something it depends on changes, and the stage's config object holds nothing
else (reading another part raises `NotPassed`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import functools
import importlib
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import jsonschema
import yaml

from . import cli

# Relative to the working directory, where Snakemake reads it too.
DEFAULT_CONFIG = Path("config/config.yaml")
SPLITS = ("training", "verification")


class ConfigError(cli.UserError, ValueError):
    """The configuration does not match the schema; a stage command says so in one line."""


class NotPassed(LookupError):
    """A stage read a part of the config that its rule does not pass (a bug: declare it)."""


@dataclass(frozen=True)
class _Absent:
    stage: str
    key: str


class _Strict:
    """Reading a part of the config the stage was not given raises at once, naming the stage.

    Otherwise the stage would silently see the schema's default instead of
    the user's value, and Snakemake would not re-run it when the value changes.
    """

    def given(self, name: str) -> bool:
        """Whether the stage was given this part (see Stage.others)."""
        return type(object.__getattribute__(self, name)) is not _Absent

    def __getattribute__(self, name: str):
        value = object.__getattribute__(self, name)
        if type(value) is _Absent:
            raise NotPassed(
                f"stage {value.stage} reads config {value.key}, which its rule does not pass; "
                f"add it to the stage's declaration (config.stage({value.stage!r}, ...))"
            )
        return value


@dataclass(frozen=True)
class TumblrQuery(_Strict):
    tag: str
    blog: str | None = None


@dataclass(frozen=True)
class DemoSource(_Strict):
    images: int


@dataclass(frozen=True)
class ClassConfig(_Strict):
    name: str
    label_id: int
    tumblr: tuple[TumblrQuery, ...]
    folders: tuple[str, ...]
    demo: DemoSource | None
    max_images: int | None
    annotation: str
    annotations_dir: str
    aliases: tuple[str, ...]
    pseudo_labels: float | None = None


@dataclass(frozen=True)
class DemoConfig(_Strict):
    seed: int
    min_side: int
    max_side: int
    max_objects: int


@dataclass(frozen=True)
class TumblrConfig(_Strict):
    api_host: str
    media_hosts: tuple[str, ...]
    include_reblogs: bool
    since: str | None
    until: str | None
    refresh: Any
    full_paging: bool
    concurrency: int
    max_image_mb: float
    max_wait_s: float
    timeout_s: float
    retries: int

    @property
    def max_image_bytes(self) -> int:
        """The cap on one image, from Tumblr or from a folder."""
        return int(self.max_image_mb * 1024 * 1024)


@dataclass(frozen=True)
class SplitConfig(_Strict):
    verification_percent: float
    salt: str
    group_near_duplicates: bool
    near_duplicate_distance: int


@dataclass(frozen=True)
class RecordsConfig(_Strict):
    shards: int


@dataclass(frozen=True)
class CheckpointSource(_Strict):
    url: str
    sha256: str | None = None
    max_extract_mb: float = 1024


@dataclass(frozen=True)
class ModelConfig(_Strict):
    backbone: str
    input_size: int
    checkpoint: CheckpointSource | None
    freeze_backbone: bool | None
    init_modules: tuple[str, ...]
    overrides: dict = field(default_factory=dict)

    @property
    def effective_freeze_backbone(self) -> bool:
        if self.freeze_backbone is None:
            return self.checkpoint is not None
        return self.freeze_backbone


@dataclass(frozen=True)
class TrainConfig(_Strict):
    run: str
    steps: int
    batch_size: int
    learning_rate: float
    warmup_steps: int
    mixed_precision: bool | None
    checkpoint_every: int
    eval_every: int
    gpus: int
    nodes: int
    workers: int
    threads: int
    warm_start: str
    warm_start_steps: int | None
    keep_runs: int
    select: str
    feature_cache: bool | Literal["auto"]
    feature_cache_max_gb: float


@dataclass(frozen=True)
class EvaluateConfig(_Strict):
    min_score: float
    grid_images: int


@dataclass(frozen=True)
class PredictConfig(_Strict):
    input: str | None
    min_score: float
    max_image_mb: float


@dataclass(frozen=True)
class ReviewConfig(_Strict):
    batch: int


@dataclass(frozen=True)
class WorkflowConfig(_Strict):
    classes: tuple[ClassConfig, ...]
    demo: DemoConfig
    tumblr: TumblrConfig
    split: SplitConfig
    records: RecordsConfig
    model: ModelConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    predict: PredictConfig
    review: ReviewConfig

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def feature_cache_unmet(self) -> list[tuple[str, str]]:
        """What stops train.feature_cache: (why `auto` leaves it off, what `true` must change)."""
        needs = [
            (
                self.model.effective_freeze_backbone,
                "the backbone trains",
                "caches the frozen backbone's outputs: set model.freeze_backbone: true",
            ),
            (
                self.train.nodes * self.train.workers == 1,
                "several workers train",
                "trains on one worker; set train.nodes and train.workers to 1",
            ),
        ]
        return [(why, fix) for met, why, fix in needs if not met]

    def get_class(self, name: str) -> ClassConfig:
        for cls in self.classes:
            if cls.name == name:
                return cls
        raise ConfigError(f"class {name!r} is not configured; classes are {self.class_names}")


# A class's LabelImg folder: the `label` rule's hand-off (class list, images
# copied from the store) and, by default, its annotations_dir. The annotations
# stage reads it whatever the annotations_dir (`sources.annotation_folders`).
LABELLING_FOLDER = "data/{name}"


def default_annotations_dir(name: str, spec: dict) -> str:
    """Where LabelImg XML lives: users label data/{class} (the workflow sets the demo's)."""
    return LABELLING_FOLDER.format(name=name)


def _build(cls, data: dict):
    """Build a flat dataclass from a dict whose keys the schema has checked."""
    kwargs = {}
    for f in fields(cls):
        if f.name in data:
            value = data[f.name]
            kwargs[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


# --- the schema ---------------------------------------------------------------


@functools.cache
def schema() -> dict:
    """The schema, read from the package (works from a wheel as from a checkout)."""
    text = resources.files(__package__).joinpath("config.schema.yaml").read_text("utf-8")
    # libyaml's loader: every stage command reads the schema, 10x faster than pure Python.
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _filling_defaults(validator_class):
    """A validator that also sets each missing property's default (the jsonschema FAQ's recipe)."""
    check_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, props, instance, subschema):
        if isinstance(instance, dict):
            for name, spec in props.items():
                if "default" in spec:
                    instance.setdefault(name, copy.deepcopy(spec["default"]))
        yield from check_properties(validator, props, instance, subschema)

    return jsonschema.validators.extend(validator_class, {"properties": properties})


@functools.cache
def _validator():
    cls = jsonschema.validators.validator_for(schema())
    return _filling_defaults(cls)(schema())


# --- reading files, with errors that name the file and line ---------------------


def read_file(path: str | Path) -> dict:
    """A config file as a mapping; a missing or malformed file is one line naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist; pass yours with --configfile FILE, "
            "or start from config/tumblr.example.yaml"
        ) from None
    except OSError as error:
        raise ConfigError(f"config file {path} cannot be read: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        what = "; ".join(str(part) for part in (error.context, error.problem) if part)
        raise ConfigError(f"{where}: invalid YAML: {what}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config is a mapping of keys (classes:, model:, ...)")
    return data


def _line_of(path: Path, keys: list) -> int | None:
    """The line where a key path is set in a YAML file, if it is set there."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    line = None
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            found = [(k, v) for k, v in node.value if k.value == str(key)]
            if not found:
                return None
            line, node = found[-1][0].start_mark.line + 1, found[-1][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return None
    return line


def _where(files: tuple[Path, ...], keys: list) -> str:
    """'FILE, line N: ' for the file that sets a key (the last, as in the merge), or ''."""
    for path in reversed(files):
        line = _line_of(Path(path), keys)
        if line is not None:
            return f"{path}, line {line}: "
    return f"{files[-1]}: " if files else ""


def _dotted(keys: list) -> str:
    return ".".join(str(k) for k in keys)


def _message(error: jsonschema.ValidationError, files: tuple[Path, ...]) -> str:
    """One line: where, which key, what is wrong, and the closest valid key for a typo."""
    keys = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = list(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in allowed]
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = (
                f"did you mean {_dotted([*keys, close[0]])}?"
                if close
                else f"valid keys: {', '.join(allowed)}"
            )
            where = _where(files, [*keys, key])
            return f"{where}unknown config key {_dotted([*keys, key])} ({hint})"
    key = f"config key {_dotted(keys)}" if keys else "config"
    return f"{_where(files, keys)}{key}: {error.message}"


# Values (mappings, lists and scalars) a config may hold with its YAML aliases
# expanded: a real one holds hundreds. Aliases of aliases (`b: [*a, *a, ...]`)
# load as shared objects in kilobytes, but JSON (the stages' --config-json)
# writes every copy: nine levels of nine are 387 million values.
MAX_CONFIG_VALUES = 100_000


def _expanded_values(value: Any, known: dict[int, int], open_: set[int]) -> int:
    """How many values `value` holds with shared objects counted at each use (up to the cap)."""
    if not isinstance(value, (dict, list)):
        return 1
    key = id(value)
    if key in known:
        return known[key]
    if key in open_:
        raise ValueError("refers to itself")
    open_.add(key)
    total = 1
    for item in value.values() if isinstance(value, dict) else value:
        total += _expanded_values(item, known, open_)
        if total > MAX_CONFIG_VALUES:
            break
    open_.discard(key)
    known[key] = total
    return total


def check_size(raw: Any, files: tuple[Path, ...] = ()) -> None:
    """Refuse a config that expands (YAML aliases written out) beyond MAX_CONFIG_VALUES."""
    where = f"{files[0]}: " if files else ""
    try:
        size = _expanded_values(raw, {}, set())
    except ValueError as error:  # an alias inside its own anchor
        raise ConfigError(f"{where}the config {error} (a YAML alias inside its anchor)") from None
    except RecursionError:
        raise ConfigError(f"{where}the config is nested too deep") from None
    if size > MAX_CONFIG_VALUES:
        raise ConfigError(
            f"{where}the config expands to more than {MAX_CONFIG_VALUES:,} values "
            "(YAML aliases of aliases?); write the repeated parts out once"
        )


def validate(raw: dict, files: tuple[Path, ...] = (), part: bool = False) -> dict:
    """Validate against the schema and fill in defaults; returns a new dict.

    `files` are where the config came from, for the error's file and line;
    a stage's `part` may leave out the classes.
    """
    check_size(raw, files)
    data = copy.deepcopy(raw)
    errors = _validator().iter_errors(data)
    if part and "classes" not in data:
        errors = (e for e in errors if not (e.validator == "required" and not e.path))
    error = jsonschema.exceptions.best_match(errors)
    if error is not None:
        raise ConfigError(_message(error, tuple(files)))
    return data


# --- typed objects ----------------------------------------------------------------


def name_key(name: str) -> str:
    """Class names and aliases match after trimming and case folding."""
    return name.strip().casefold()


def _check_distinct(classes: dict) -> None:
    """Two classes (or aliases) that match each other would merge silently: refuse."""
    seen: dict[str, tuple[str, str]] = {}
    for name, spec in classes.items():
        for alias in (name, *(spec or {}).get("aliases", [])):
            other = seen.setdefault(name_key(alias), (name, alias))
            if other[0] != name:
                raise ConfigError(
                    f"classes: {_naming(*other)} and {_naming(name, alias)} are the same name "
                    "after trimming and case folding; rename one or merge the two classes"
                )


def _naming(cls: str, alias: str) -> str:
    return f"class {cls!r}" if cls == alias else f"alias {alias!r} of class {cls!r}"


def build(data: dict) -> WorkflowConfig:
    """Typed objects from a validated config (defaults filled in)."""
    _check_distinct(data.get("classes", {}))
    # Label ids follow the order of `classes` (the stages' JSON keeps it).
    classes = []
    for label_id, (name, spec) in enumerate(data.get("classes", {}).items(), start=1):
        spec = spec or {}
        classes.append(
            ClassConfig(
                name=name,
                label_id=label_id,
                tumblr=tuple(_build(TumblrQuery, q) for q in spec.get("tumblr", [])),
                folders=tuple(spec.get("folders", [])),
                demo=_build(DemoSource, spec["demo"]) if spec.get("demo") else None,
                max_images=spec.get("max_images"),
                annotation=spec.get("annotation", "labelimg"),
                annotations_dir=spec.get("annotations_dir") or default_annotations_dir(name, spec),
                aliases=tuple(spec.get("aliases", [])),
                pseudo_labels=spec.get("pseudo_labels"),
            )
        )
    model = data["model"]
    checkpoint = model.get("checkpoint")
    cfg = WorkflowConfig(
        classes=tuple(classes),
        demo=_build(DemoConfig, data["demo"]),
        tumblr=_build(TumblrConfig, data["tumblr"]),
        split=_build(SplitConfig, data["split"]),
        records=_build(RecordsConfig, data["records"]),
        model=ModelConfig(
            backbone=model["backbone"],
            input_size=model["input_size"],
            checkpoint=_build(CheckpointSource, checkpoint) if checkpoint else None,
            freeze_backbone=model["freeze_backbone"],
            init_modules=tuple(model["init_modules"]),
            overrides=model["overrides"],
        ),
        train=_build(TrainConfig, data["train"]),
        evaluate=_build(EvaluateConfig, data["evaluate"]),
        predict=_build(PredictConfig, data["predict"]),
        review=_build(ReviewConfig, data["review"]),
    )
    # Before any job starts: a multi-worker job could otherwise wait in the queue to say it.
    unmet = cfg.feature_cache_unmet() if cfg.train.feature_cache is True else []
    if unmet:
        raise ConfigError(f"train.feature_cache {unmet[0][1]}, or train.feature_cache: false")
    return cfg


def parse(raw: dict, files: tuple[Path, ...] = ()) -> WorkflowConfig:
    """Validate a configuration mapping (full or a stage's part) into typed objects."""
    return build(validate(raw, files))


def load(path: str | Path = DEFAULT_CONFIG) -> WorkflowConfig:
    return parse(read_file(path), (Path(path),))


@contextlib.contextmanager
def _one_line_exit():
    """In the Snakefile: a config mistake ends Snakemake with one ERROR line, no traceback."""
    try:
        yield
    except ConfigError as error:
        print(f"ERROR: {error}", file=sys.stderr, flush=True)
        sys.exit(1)


def checked_file(path: str | Path = DEFAULT_CONFIG) -> str:
    """The Snakefile's config file, once it reads as a config (Snakemake's own
    message for a missing or malformed file names neither the file nor the line)."""
    with _one_line_exit():
        read_file(path)
    return str(path)


def for_snakemake(config: dict, files: list, demo_dir: str | None = None) -> WorkflowConfig:
    """Validate Snakemake's config once, filling in the defaults in place.

    `demo_dir` (a pattern with {cls}) is where the workflow's demo rule draws a
    demo class's images and XML: that class's annotations_dir unless set.
    """
    # Snakemake makes --configfile paths absolute; the user typed them relative.
    named = tuple(Path(os.path.relpath(f)) if Path(f).is_absolute() else Path(f) for f in files)
    with _one_line_exit():
        messages = all_errors(config, named)
        if messages:
            raise ConfigError("\nERROR: ".join(messages))
        data = validate(config, named)
        for name, spec in data["classes"].items():
            if demo_dir and spec.get("demo") and not spec.get("annotations_dir"):
                spec["annotations_dir"] = demo_dir.format(cls=name)
        parsed = build(data)
    config.update(data)
    return parsed


def all_errors(raw: dict, files: tuple[Path, ...] = ()) -> list[str]:
    """Every schema error of a config, one line each in the files' line order: a
    user fixes them in one pass instead of one per run."""
    found = []
    for error in _validator().iter_errors(copy.deepcopy(raw)):
        found.append(_message(jsonschema.exceptions.best_match([error]), tuple(files)))
    return sorted(set(found), key=_line_number)


def _line_number(message: str) -> tuple[int, str]:
    match = re.search(r", line (\d+)", message)
    return (int(match.group(1)) if match else 0, message)


def warnings(cfg: WorkflowConfig) -> list[str]:
    """Settings that run but cannot learn: said in every dry run, before any job."""
    train = cfg.train
    found = []
    if train.warmup_steps >= train.steps:
        found.append(
            f"train.warmup_steps {train.warmup_steps} is not below train.steps "
            f"{train.steps}: the learning rate never reaches train.learning_rate; "
            "lower train.warmup_steps or raise train.steps"
        )
    elif cfg.model.checkpoint is None and train.steps - train.warmup_steps < MIN_STEPS_AFTER_WARMUP:
        found.append(
            f"train.steps {train.steps} leaves {train.steps - train.warmup_steps} steps after "
            f"the warm-up: a detector trained from scratch needs about "
            f"{MIN_STEPS_AFTER_WARMUP} to find anything; raise train.steps"
        )
    return found


# Measured with config/own.example.yaml (2 classes of 40 images, warm-up 100):
# 300 steps found nothing (AP50 0, no detection), 600 reached AP50 0.98.
MIN_STEPS_AFTER_WARMUP = 500


# --- what each stage reads -------------------------------------------------------

CLASS_MODES = ("all", "own", "names", "none")
# The modules that declare stages; importing them fills STAGES.
STAGE_MODULES = (
    "demo",
    "harvest",
    "labelimg",
    "annotations",
    "records",
    "model",
    "predict",
    "report",
    "review",
)


@dataclass(frozen=True)
class Stage:
    """The part of the config one stage command reads, declared beside its code.

    `sections` are top-level sections, or `section.key` for one key of one.
    `classes`: "all" every class in full; "own" only the rule's class (no
    label id); "names" the rule's class in full and every class's name,
    aliases and label id (objects of other classes appear in any XML);
    "none" no classes. The stage's rule passes exactly this part, and the
    stage can read nothing else.
    """

    name: str
    sections: tuple[str, ...]
    classes: str
    # In "names" mode, what the stage also gets of the other classes:
    # (classes, class_name) -> {other class: {key: value}}.
    others: Callable[[dict, str], dict] | None = None

    def keys(self, section: str) -> set[str] | None:
        """The keys of `section` the stage reads: None for all, empty for none."""
        if section in self.sections:
            return None
        return {s.split(".", 1)[1] for s in self.sections if s.split(".", 1)[0] == section}


STAGES: dict[str, Stage] = {}


def stage(
    name: str,
    *sections: str,
    classes: str = "all",
    others: Callable[[dict, str], dict] | None = None,
) -> Stage:
    """Declare a stage: its rule's name, the sections it reads, which classes."""
    unknown = [s for s in sections if s.split(".", 1)[0] not in schema()["properties"]]
    if unknown or classes not in CLASS_MODES or name in STAGES:
        raise ValueError(f"stage {name}: bad declaration {sections} / {classes!r}")
    STAGES[name] = Stage(name, sections, classes, others)
    return STAGES[name]


def declared(name: str) -> Stage:
    if name not in STAGES:
        for module in STAGE_MODULES:
            importlib.import_module(f"{__package__}.{module}")
    return STAGES[name]


def stage_config(raw: dict, stage_name: str, class_name: str | None = None) -> dict:
    """The part of a validated config that one stage (and class) depends on."""
    declaration = declared(stage_name)
    part: dict[str, Any] = {}
    for section in schema()["properties"]:
        keys = declaration.keys(section)
        if section == "classes" or section not in raw or keys == set():
            continue
        part[section] = raw[section] if keys is None else {k: raw[section][k] for k in keys}
    classes = raw.get("classes", {})
    mode = declaration.classes
    if mode == "own" and class_name is not None:
        part["classes"] = {class_name: classes[class_name]}
    elif mode == "names":
        part["classes"] = {
            name: spec if name == class_name else {"aliases": (spec or {}).get("aliases", [])}
            for name, spec in classes.items()
        }
        if declaration.others and class_name is not None:
            for name, extra in declaration.others(classes, class_name).items():
                part["classes"][name].update(extra)
    elif mode == "all" or mode == "own":
        part["classes"] = classes
    return part


def narrow(cfg: WorkflowConfig, declaration: Stage, part: dict) -> WorkflowConfig:
    """The config as a stage sees it: what its `part` (stage_config) does not hold is absent."""

    def keep_only(obj, keep: set[str] | None, prefix: str):
        if keep is None:
            return obj
        gone = {f.name for f in fields(obj)} - keep
        return replace(obj, **{k: _Absent(declaration.name, f"{prefix}{k}") for k in gone})

    changes: dict[str, Any] = {}
    for f in fields(WorkflowConfig):
        keys = declaration.keys(f.name)
        if f.name == "classes":
            continue
        if keys == set():
            changes[f.name] = _Absent(declaration.name, f.name)
        else:
            changes[f.name] = keep_only(getattr(cfg, f.name), keys, f"{f.name}.")
    if declaration.classes == "none":
        changes["classes"] = _Absent(declaration.name, "classes")
    else:
        # A class alone ("own") has no label id: that depends on the others.
        ids = set() if declaration.classes == "own" else {"label_id"}
        changes["classes"] = tuple(
            keep_only(c, {"name", *ids, *part["classes"][c.name]}, f"classes.{c.name}.")
            for c in cfg.classes
            if c.name in part["classes"]
        )
    return replace(cfg, **changes)


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def stage_json(raw: dict, stage: str, class_name: str | None = None) -> str:
    """A stage's part of the config as canonical JSON (Snakemake compares it as a param).

    Keys are sorted, so that reordering a mapping in the file changes nothing,
    except the classes: their order fixes the label ids, so reordering them
    is a change that re-runs what depends on the ids.
    """
    part = stage_config(raw, stage, class_name)
    canonical = _sorted(part)
    if "classes" in part:
        canonical["classes"] = {name: _sorted(spec) for name, spec in part["classes"].items()}
    return json.dumps(canonical, separators=(",", ":"))


def command_parser(module: str, description: str) -> argparse.ArgumentParser:
    """A stage command's parser: `python -m tumbletrain.<module>` and the config arguments."""
    parser = cli.parser(module, description)
    add_config_arguments(parser)
    return parser


def class_command_parser(module: str, description: str) -> argparse.ArgumentParser:
    """The parser of a command that works on one class: `command_parser` and `--class`."""
    parser = command_parser(module, description)
    parser.add_argument(
        "--class", dest="class_name", required=True, help="the class (its name under classes:)"
    )
    return parser


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The two ways every stage command takes its configuration."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="workflow config file (default: %(default)s)",
    )
    group.add_argument(
        "--config-json",
        help="the stage's part of the config as JSON (how the Snakemake rules call it)",
    )


def from_arguments(args: argparse.Namespace, declaration: Stage) -> WorkflowConfig:
    """The stage's config from its command line: exactly the part it declares."""
    if args.config_json:
        try:
            raw, files = json.loads(args.config_json), ()
        except json.JSONDecodeError as error:
            raise ConfigError(f"--config-json is not JSON: {error}") from None
    else:
        raw, files = read_file(args.config), (args.config,)
    data = validate(raw, files, part=declaration.classes == "none")
    part = stage_config(data, declaration.name, getattr(args, "class_name", None))
    return narrow(build(data), declaration, part)


# --- the configuration reference ------------------------------------------------------


def _rows(prefix: str, spec: dict):
    """(key, spec, required) for every key under `prefix`, depth first, in the schema's order."""
    if "$ref" in spec:
        spec = schema()["$defs"][spec["$ref"].rsplit("/", 1)[1]]
    for name, sub in spec.get("properties", {}).items():
        key = f"{prefix}.{name}" if prefix else name
        yield key, sub, name in spec.get("required", [])
        yield from _rows(key, sub)
    if isinstance(spec.get("additionalProperties"), dict):
        yield from _rows(f"{prefix}.<class>", spec["additionalProperties"])
    if isinstance(spec.get("items"), dict):
        yield from _rows(f"{prefix}[]", spec["items"])


def _kind(spec: dict) -> str:
    if "enum" in spec:
        # YAML's spelling: true, not Python's True.
        return " \\| ".join(f"`{v if isinstance(v, str) else json.dumps(v)}`" for v in spec["enum"])
    if "$ref" in spec:
        return "object"
    kinds = spec.get("type", "any")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "items" in spec:
        kinds = [f"list of {_kind(spec['items'])}" if k == "array" else k for k in kinds]
    return " or ".join(kinds)


def reference() -> str:
    """config/README.md: every key of the schema, its type, default and meaning."""
    lines = [
        "# Configuration",
        "",
        "Every key of the workflow's config, with its default and meaning. Generated from",
        "the schema (`scripts/tumbletrain/config.schema.yaml`) by",
        "`python -m tumbletrain.config reference > config/README.md`; a test checks that",
        "it matches. `config/config.yaml` is the offline demo; your own config replaces it",
        "(edit it in place, or pass `--configfile FILE`, which is then the whole config).",
        "Start from `config/tumblr.example.yaml`. A key left out takes its default; a",
        "mistyped key stops the run with one line naming the file, line and the closest",
        "valid key.",
        "",
    ]
    for section, spec in schema()["properties"].items():
        lines += [f"## `{section}`", "", spec["description"][0].upper() + spec["description"][1:]]
        lines += ["", "| key | type | default | meaning |", "|---|---|---|---|"]
        for key, sub, required in _rows(section, spec):
            default = "required" if required else "(none)"
            if "default" in sub:
                default = f"`{json.dumps(sub['default'])}`"
            meaning = sub["description"].replace("|", "\\|")
            lines.append(f"| `{key}` | {_kind(sub)} | {default} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("config", "The configuration's reference.")
    parser.add_argument("what", choices=["reference"], help="reference: config/README.md")
    parser.parse_args(argv)
    # On the command's own stdout even when its stderr goes to a log (cli.route_output).
    cli.tell(reference().rstrip("\n"))
    return 0


if __name__ == "__main__":
    cli.run(main)
