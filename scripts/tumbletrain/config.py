"""Typed configuration, read from the same schema Snakemake validates against.

The schema (workflow/schemas/config.schema.yaml) is the single source of the
defaults: `parse` fills them in with Snakemake's own validator, then builds
frozen dataclasses so stage code never indexes into raw dicts.

Each stage receives only the part of the configuration it reads
(`stage_config`), so that Snakemake's params-based rerun trigger rebuilds a
stage when, and only when, something it depends on changes.
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from . import cli

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"
SPLITS = ("training", "verification")


class ConfigError(cli.UserError, ValueError):
    """The configuration does not match the schema; a stage command says so in one line."""


@dataclass(frozen=True)
class TumblrQuery:
    tag: str
    blog: str | None = None


@dataclass(frozen=True)
class DemoSource:
    images: int


@dataclass(frozen=True)
class ClassConfig:
    name: str
    label_id: int
    tumblr: tuple[TumblrQuery, ...]
    folders: tuple[str, ...]
    demo: DemoSource | None
    max_images: int | None
    annotation: str
    annotations_dir: str
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class DemoConfig:
    seed: int
    min_side: int
    max_side: int
    max_objects: int


@dataclass(frozen=True)
class TumblrConfig:
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


@dataclass(frozen=True)
class SplitConfig:
    verification_percent: float
    salt: str
    group_near_duplicates: bool
    near_duplicate_distance: int


@dataclass(frozen=True)
class RecordsConfig:
    shards: int


@dataclass(frozen=True)
class CheckpointSource:
    url: str
    sha256: str | None = None


@dataclass(frozen=True)
class ModelConfig:
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
class TrainConfig:
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
    threads: int


@dataclass(frozen=True)
class EvaluateConfig:
    min_score: float
    grid_images: int


@dataclass(frozen=True)
class PredictConfig:
    input: str | None
    min_score: float


@dataclass(frozen=True)
class WorkflowConfig:
    classes: tuple[ClassConfig, ...]
    demo: DemoConfig
    tumblr: TumblrConfig
    split: SplitConfig
    records: RecordsConfig
    model: ModelConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    predict: PredictConfig

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def get_class(self, name: str) -> ClassConfig:
        for cls in self.classes:
            if cls.name == name:
                return cls
        raise ConfigError(f"class {name!r} is not configured; classes are {self.class_names}")


def default_annotations_dir(name: str, spec: dict) -> str:
    """Where LabelImg XML lives: the demo generates its own, users label data/{class}."""
    return f"resources/demo/{name}" if spec.get("demo") else f"data/{name}"


def _build(cls, data: dict):
    """Build a flat dataclass from a dict whose keys the schema has checked."""
    kwargs = {}
    for f in fields(cls):
        if f.name in data:
            value = data[f.name]
            kwargs[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


def validate(raw: dict) -> dict:
    """Validate against the schema and fill in defaults; returns a new dict."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate as snakemake_validate

    data = copy.deepcopy(raw)
    try:
        snakemake_validate(data, str(SCHEMA), set_default=True)
    except WorkflowError as error:
        raise ConfigError(schema_message(error)) from None
    return data


def schema_message(error: Exception) -> str:
    """One line with the key and what is wrong with it; Snakemake's message is a page."""
    import jsonschema

    # snakemake.utils.validate raises inside its except clause: the cause is the context.
    cause = error.__context__
    if not isinstance(cause, jsonschema.ValidationError):
        return " ".join(str(error).split())
    key = ".".join(str(part) for part in cause.absolute_path) or "(top level)"
    return f"config key {key}: {cause.message}; fix it in the config file"


def parse(raw: dict) -> WorkflowConfig:
    """Validate a configuration mapping (full or a stage's part) into typed objects."""
    data = validate(raw)
    # Label ids follow the order of `classes`; a stage's part of the config
    # carries the full order under `class_order` so ids never shift.
    order = list(data["classes"])
    classes = []
    for name, spec in data["classes"].items():
        spec = spec or {}
        classes.append(
            ClassConfig(
                name=name,
                label_id=order.index(name) + 1,
                tumblr=tuple(_build(TumblrQuery, q) for q in spec.get("tumblr", [])),
                folders=tuple(spec.get("folders", [])),
                demo=_build(DemoSource, spec["demo"]) if spec.get("demo") else None,
                max_images=spec.get("max_images"),
                annotation=spec.get("annotation", "labelimg"),
                annotations_dir=spec.get("annotations_dir") or default_annotations_dir(name, spec),
                aliases=tuple(spec.get("aliases", [])),
            )
        )
    model = data["model"]
    checkpoint = model.get("checkpoint")
    return WorkflowConfig(
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
    )


def load(path: str | Path = DEFAULT_CONFIG) -> WorkflowConfig:
    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle) or {}
    return parse(raw)


# Which top-level sections each stage reads. `classes` is narrowed to the
# stage's class where a rule works on one class.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "demo": ("demo",),
    "harvest": ("tumblr",),
    "annotations": ("split",),
    "records": ("records",),
    "train": ("model", "train"),
    "evaluate": ("model", "train", "evaluate"),
    "export": ("model", "train"),
    "predict": ("model", "predict"),
    "report": ("evaluate",),
    "summary": ("model", "train", "evaluate"),
}


def stage_config(raw: dict, stage: str, class_name: str | None = None) -> dict:
    """The part of a validated config that one stage (and class) depends on."""
    if stage == "checkpoint":
        # Only the download itself: tuning the model must not fetch it again.
        return {"classes": raw["classes"], "model": {"checkpoint": raw["model"]["checkpoint"]}}
    part: dict[str, Any] = {key: raw[key] for key in STAGE_SECTIONS[stage] if key in raw}
    if class_name is None:
        part["classes"] = raw["classes"]
    else:
        spec = dict(raw["classes"][class_name] or {})
        part["classes"] = {class_name: spec}
        if stage in ("annotations", "records"):
            # Objects of other classes can appear in this class's XML: the
            # stage needs every name, alias and label id, not just its own.
            part["classes"] = {
                name: {"aliases": (other or {}).get("aliases", [])}
                for name, other in raw["classes"].items()
            }
            part["classes"][class_name] = spec
    return part


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


def from_arguments(args: argparse.Namespace) -> WorkflowConfig:
    if args.config_json:
        return parse(json.loads(args.config_json))
    return load(args.config)
