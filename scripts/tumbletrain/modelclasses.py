"""A model's classes: the one record every reader of a trained or exported model uses.

Training writes the classes it trained into `final.json`; the export copies
them into `export.json` and writes them for other programs beside the
SavedModel (`labels.txt`, one name a line, line i for the TFLite models' class
i, which is label id i + 1; `label_map.pbtxt`, the Object Detection API's label
map) and into the TFLite models' metadata. Evaluation, predict and the review of
pre-labels take the names from the model, never from a config: a config's
classes are only checked against them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from . import cli

EXPORT_SUMMARY = "export.json"
LABELS_FILE = "labels.txt"
LABEL_MAP_FILE = "label_map.pbtxt"


@dataclass(frozen=True)
class ModelClass:
    label_id: int
    name: str


def record(classes: Iterable) -> list[dict]:
    """How final.json and export.json store the classes (anything with label_id and name)."""
    return [{"id": c.label_id, "name": c.name} for c in classes]


def from_record(rows: list[dict]) -> tuple[ModelClass, ...]:
    return tuple(ModelClass(int(row["id"]), str(row["name"])) for row in rows)


def names(classes: Iterable[ModelClass]) -> dict[int, str]:
    return {c.label_id: c.name for c in classes}


def labels_txt(classes: Iterable[ModelClass]) -> str:
    """The label file of MediaPipe and LiteRT clients: the TFLite output class i is line i."""
    ordered = sorted(classes, key=lambda c: c.label_id)
    if [c.label_id for c in ordered] != list(range(1, len(ordered) + 1)):
        raise ValueError(f"label ids must be 1..N, got {[c.label_id for c in ordered]}")
    return "".join(f"{c.name}\n" for c in ordered)


def of_training(final_json: Path) -> tuple[ModelClass, ...]:
    """The classes a training run's final.json records."""
    if not final_json.exists():
        raise cli.UserError(f"{final_json} does not exist; run the train rule first")
    return recorded(final_json, "delete it and train again")


def export_folder(model: Path) -> Path:
    """The export folder of `model`: that folder itself, or the one holding its saved_model/."""
    for folder in (model, model.parent):
        if (folder / EXPORT_SUMMARY).is_file():
            return folder
    raise cli.UserError(
        f"{model} holds no {EXPORT_SUMMARY}; give the folder the export rule writes "
        "(or its saved_model/)"
    )


def of_export(model: Path) -> tuple[ModelClass, ...]:
    """The classes of an exported model (its export folder or its saved_model/)."""
    return recorded(export_folder(model) / EXPORT_SUMMARY, "run the export again")


def recorded(path: Path, remedy: str) -> tuple[ModelClass, ...]:
    """The classes a final.json or export.json records."""
    data = json.loads(path.read_text())
    if "classes" not in data:
        raise cli.UserError(
            f"{path} does not record the model's classes (made before tumbletrain recorded "
            f"them); {remedy}"
        )
    return from_record(data["classes"])


def check_config(model: tuple[ModelClass, ...], configured: Iterable, source: str) -> None:
    """One ERROR line when a config's classes (ids and names) are not the model's."""
    wanted = names(model)
    given = {c.label_id: c.name for c in configured}
    if given != wanted:
        shown = ", ".join(f"{i}={n}" for i, n in sorted(wanted.items()))
        mine = ", ".join(f"{i}={n}" for i, n in sorted(given.items()))
        raise cli.UserError(
            f"the config's classes ({mine}) are not the model's ({shown}, from {source}); "
            "leave --config out to use the model's, or give the config it was trained with"
        )
