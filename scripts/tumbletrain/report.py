"""Pictures, tables and a one-page summary of a run, for the Snakemake report.

Each subcommand reads what a stage wrote, draws it with `plots` and tables it
with pandas; `summary` writes the one-page summary (summary.md), which
`make demo` prints at the end.
The readers accept summaries and metrics with keys missing (a stage that wrote
an older format, or an evaluation without objects) and draw what there is.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import logging
import math
import re
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import cli, fileio, lists, plots, store
from . import config as tt_config

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("tumbletrain.report")


# The config each command reads; its rule passes exactly this.
STAGES = {
    "data": tt_config.stage("report_data", classes="names"),
    "samples": tt_config.stage("report_samples", classes="names"),
    "training": tt_config.stage("report_training", "train.run", classes="none"),
    "evaluation": tt_config.stage("report_evaluation", "train.run", classes="none"),
    "summary": tt_config.stage(
        "summary", "model.backbone", "model.input_size", "train.run", classes="names"
    ),
}

REJECTED_COLUMNS = ("class", *lists.REJECTED_COLUMNS)
# Training images a class's samples figure shows; near-duplicate groups the data figure shows.
SAMPLES = 12
NEAR_DUPLICATE_GROUPS = 6


def read_json(path: Path) -> dict:
    """A stage's JSON, or {} when the stage has not written it (yet)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise cli.UserError(
            f"{path} is not valid JSON ({error}); delete it and re-run the workflow to rewrite it"
        ) from error
    if not isinstance(data, dict):
        raise cli.UserError(f"{path} holds no JSON object; delete it and re-run the workflow")
    return data


def number(value, digits: int = 3) -> str:
    """A metric for people: '-' when it is missing or COCO's -1 (no ground truth)."""
    if value is None or (isinstance(value, int | float) and (value < 0 or math.isnan(value))):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def read_rows(path: Path) -> list[dict[str, str]]:
    return fileio.read_tsv(path) if path.exists() else []


@dataclass(frozen=True)
class ClassFiles:
    """One class's files the report reads, each as its rule passes it."""

    name: str
    lists: Path  # the annotations stage's folder: summary.json, rejected.tsv, the lists
    manifest: Path | None = None  # the harvest's manifest
    skipped: Path | None = None  # the harvest's skipped images


def class_files(
    names: Sequence[str],
    summaries: Sequence[Path],
    manifests: Sequence[Path] = (),
    skipped: Sequence[Path] = (),
) -> list[ClassFiles]:
    """The classes' files from the paths a rule passes, each list in class order."""
    for given, what in ((manifests, "--manifests"), (skipped, "--skipped")):
        if given and len(given) != len(names):
            raise cli.UserError(f"{what} names {len(given)} files for {len(names)} classes")
    if len(summaries) != len(names):
        raise cli.UserError(f"--summaries names {len(summaries)} files for {len(names)} classes")
    return [
        ClassFiles(
            name,
            Path(summaries[i]).parent,
            Path(manifests[i]) if manifests else None,
            Path(skipped[i]) if skipped else None,
        )
        for i, name in enumerate(names)
    ]


def class_counts(classes: Sequence[ClassFiles]) -> pd.DataFrame:
    """Images per class at each step; skipped images by the harvest's reason code."""
    import pandas as pd

    rows = []
    for files in classes:
        name = files.name
        summary = read_json(files.lists / "summary.json")
        per_split = summary.get("per_split", {})
        skipped = read_rows(files.skipped) if files.skipped else []
        manifest = files.manifest
        harvested = len(store.read_manifest(manifest)) if manifest and manifest.exists() else 0
        row = {"class": name, "harvested": harvested}
        reasons = pd.Series([r.get("reason") or "unknown" for r in skipped], dtype=object)
        row.update({f"skipped: {k}": int(v) for k, v in reasons.value_counts().items()})
        row["unlabelled"] = summary.get("unlabelled_images", 0)
        row["rejected"] = summary.get("rejected_files", 0)
        row.update({split: per_split.get(split, 0) for split in tt_config.SPLITS})
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("class").fillna(0).astype(int)
    # Pipeline order: harvested, skipped (by reason), unlabelled, rejected, splits.
    skipped_columns = sorted(c for c in frame.columns if c.startswith("skipped: "))
    ordered = ["harvested", *skipped_columns, "unlabelled", "rejected", *tt_config.SPLITS]
    return frame[ordered]


def validation_table(classes: Sequence[ClassFiles]) -> pd.DataFrame:
    import pandas as pd

    rows = {}
    for files in classes:
        name = files.name
        summary = read_json(files.lists / "summary.json")
        row = {f"repaired: {k}": v for k, v in summary.get("repairs_by_kind", {}).items()}
        row.update({f"rejected: {k}": v for k, v in summary.get("rejected_by_reason", {}).items()})
        rows[name] = row
    # A class with nothing to report has an empty row; reindex keeps it.
    table = pd.DataFrame.from_dict(rows, orient="index").reindex([c.name for c in classes])
    return table.fillna(0).astype(int)


def rejected_rows(classes: Sequence[ClassFiles]) -> pd.DataFrame:
    import pandas as pd

    frames = []
    for files in classes:
        name, path = files.name, files.lists / "rejected.tsv"
        if path.exists():
            frame = pd.DataFrame(fileio.read_tsv(path), columns=list(lists.REJECTED_COLUMNS))
            frame.insert(0, "class", name)
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=list(REJECTED_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def write_html_table(frame: pd.DataFrame, path: Path, title: str, empty: str) -> None:
    """A table the Snakemake report shows inline (it only offers TSV as a download)."""
    body = (
        frame.to_html(index=False, border=0, classes="table", na_rep="-")
        if len(frame)
        else f"<p>{html.escape(empty)}</p>"
    )
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;font-size:14px;margin:1em}"
        "table{border-collapse:collapse}th,td{padding:3px 8px;text-align:left}"
        "tr:nth-child(even){background:#f2f2f2}th{border-bottom:2px solid #888}"
        f"</style></head><body><h3>{html.escape(title)}</h3>\n{body}\n</body></html>\n"
    )
    fileio.write_text(path, page)


def write_table(frame: pd.DataFrame, tsv: Path, html_path: Path, title: str, empty: str) -> None:
    fileio.write_tsv(tsv, frame.columns, frame.to_numpy().tolist())
    write_html_table(frame, html_path, title, empty)


def near_duplicate_groups(classes: Sequence[ClassFiles], count: int) -> list[dict]:
    """The largest near-duplicate groups of all classes (a group in two classes once)."""
    groups: dict[str, dict] = {}
    for files in classes:
        name = files.name
        found = read_json(files.lists / "summary.json").get("near_duplicates") or {}
        for group in found.get("largest", []):
            entry = groups.setdefault(group["group"], {**group, "images": [], "classes": []})
            entry["images"] += group.get("images", [])
            entry["classes"].append(name)
    ordered = sorted(groups.values(), key=lambda g: (-g.get("size", 0), g["group"]))
    return ordered[:count]


def moved_counts(classes: Sequence[ClassFiles]) -> dict[str, int]:
    moved = dict.fromkeys(tt_config.SPLITS, 0)
    for files in classes:
        found = read_json(files.lists / "summary.json").get("near_duplicates") or {}
        for split, n in (found.get("moved_from_content_split") or {}).items():
            moved[split] = moved.get(split, 0) + n
    return moved


def training_series(model_dir: Path) -> tuple[dict, dict]:
    """The train and validation scalars of a run's TensorBoard event files."""
    from .training import scalar_summaries

    train = scalar_summaries(model_dir / "train")
    validation = scalar_summaries(model_dir / "validation")
    if not train and not validation:
        log.warning("no TensorBoard event files under %s", model_dir)
    return train, validation


def per_class_ap(metrics: dict) -> dict[str, float | None]:
    """AP per class; None where the verification split has no object of the class."""
    return {
        name: (value if isinstance(value, int | float) and value >= 0 else None)
        for name, value in (metrics.get("AP_per_class") or {}).items()
    }


def ap_title(metrics: dict) -> str:
    return f"AP per class (all: {number(metrics.get('AP'))}, AP50: {number(metrics.get('AP50'))})"


def metrics_table(metrics: dict) -> pd.DataFrame:
    import pandas as pd

    from .evaluation import SUMMARY_METRICS

    rows = [(key, number(metrics.get(key))) for key in SUMMARY_METRICS]
    rows += [(key, number(metrics.get(key))) for key in ("images", "objects", "detections")]
    rows += [(f"AP {name}", number(value)) for name, value in per_class_ap(metrics).items()]
    rows += [
        (f"AP50 {name}", number(value))
        for name, value in (metrics.get("AP50_per_class") or {}).items()
    ]
    return pd.DataFrame(rows, columns=["metric", "value"])


# Below these, a split's figures are noise: one verification image moves COCO
# AP by a tenth, and a few training images teach the class little.
MIN_SPLIT_IMAGES = 10
# More rejected annotation files than this share means something systematic (a
# renamed folder, another tool's format), not a few stray mistakes.
MAX_REJECTED_SHARE = 0.10


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def objects_by_split(classes: Sequence[ClassFiles]) -> dict[str, dict[str, tuple[int, int]]]:
    """Per class name, per split: (images holding its objects, objects), in every class's
    lists: a shared folder lists an image once, under the first class with an object in it."""
    found: dict[str, dict[str, list]] = {}
    for files in classes:
        for split in tt_config.SPLITS:
            path = files.lists / f"{split}.tsv"
            for image in lists.read_list(path) if path.exists() else []:
                for name in {o.name for o in image.objects}:
                    counts = found.setdefault(name, {}).setdefault(split, [0, 0])
                    counts[0] += 1
                    counts[1] += sum(o.name == name for o in image.objects)
    return {n: {s: (c[0], c[1]) for s, c in splits.items()} for n, splits in found.items()}


def class_lines(
    files: ClassFiles, summary: dict, objects: dict[str, tuple[int, int]] | None = None
) -> tuple[str, list[str]]:
    """One line on what validation did with a class's files, and the class's warnings.

    `objects` (per split: images, objects of the class in every class's lists)
    counts a class of a shared folder, whose images other classes may list.
    """
    name = files.name
    per_split = summary.get("per_split", {})
    if objects is not None:
        per_split = {split: objects.get(split, (0, 0))[0] for split in tt_config.SPLITS}
    # Review pre-labels no person has checked yet are not the user's mistakes.
    waiting = summary.get("rejected_by_reason", {}).get("prelabel_unreviewed", 0)
    rejected = summary.get("rejected_files", 0) - waiting
    xml_files = summary.get("xml_files", 0) - waiting
    rejected_tsv = files.lists / "rejected.tsv"
    line = (
        f"{name}: {xml_files} annotation files: {summary.get('kept', 0)} kept "
        f"({summary.get('repaired', 0)} repaired), {rejected} rejected; "
        + ", ".join(f"{per_split.get(split, 0)} {split}" for split in tt_config.SPLITS)
        + " images"
    )
    if objects is not None:
        total = sum(o for _, o in objects.values())
        line += f" holding its {plural(total, 'object')} (a shared folder: counted by objects)"
    sources = summary.get("labels_by_source") or {}
    if sources:
        line += "; labels: " + ", ".join(f"{n} {s.replace('_', '-')}" for s, n in sources.items())
    if summary.get("unlabelled_images"):
        line += f"; {plural(summary['unlabelled_images'], 'image')} without XML"
    if waiting:
        line += f"; {plural(waiting, 'review pre-label')} waiting for a person"
    near = summary.get("near_duplicates") or {}
    if near.get("groups"):
        line += (
            f"; {plural(near['groups'], 'near-duplicate group')} of "
            f"{near.get('images_in_groups', '?')} images, each in one split"
        )
    if sum(summary.get("rejected_by_reason", {}).values()):
        line += f"; why: {rejected_tsv}"
    warnings = []
    if xml_files and rejected / xml_files > MAX_REJECTED_SHARE:
        warnings.append(
            f"{name}: {rejected} of {xml_files} annotation files rejected "
            f"({rejected / xml_files:.0%}); the reasons are in {rejected_tsv}"
        )
    if near.get("user_split_straddles"):
        warnings.append(
            f"{name}: {plural(len(near['user_split_straddles']), 'near-duplicate group')} "
            "straddle your training/ and verification/ folders (kept as they are; "
            f"see near_duplicates in {files.lists / 'summary.json'})"
        )
    for split in tt_config.SPLITS:
        images = per_split.get(split, 0)
        if split == "verification" and images == 0:
            warnings.append(
                f"{name}: no verification image, so its AP cannot be measured; "
                "add images or raise split.verification_percent"
            )
        elif images < MIN_SPLIT_IMAGES:
            warnings.append(
                f"{name}: {plural(images, split + ' image')} (under {MIN_SPLIT_IMAGES}): "
                + (
                    "its AP is noise; add images or raise split.verification_percent"
                    if split == "verification"
                    else "too few to learn the class well; add images"
                )
            )
    return line, warnings


def account(
    classes: Sequence[ClassFiles],
    metrics_json: Path,
    export_json: Path,
    run: str,
    report_html: str | Path = "report.html",
    configfiles: Sequence[str] = (),
) -> str:
    """What a run did, for the terminal (Snakemake's onsuccess) and the end of summary.md.

    Reads only what the stages wrote, so a partial run (only the data stages)
    gets the part that exists. `configfiles` are the run's --configfile files:
    the report command it prints names them, or it would report another config.
    """
    lines, warnings = [], []
    summaries = {files.name: read_json(files.lists / "summary.json") for files in classes}
    shared = any(s.get("shared_folders") for s in summaries.values())
    objects = objects_by_split(classes) if shared else {}
    for files in classes:
        summary = summaries[files.name]
        if summary:
            by_objects = objects.get(files.name, {}) if summary.get("shared_folders") else None
            line, class_warnings = class_lines(files, summary, by_objects)
            lines.append(line)
            warnings += class_warnings
    metrics = read_json(metrics_json)
    if metrics:
        lines.append(
            f"verification of run {run}: AP50 {number(metrics.get('AP50'))}, "
            f"AP {number(metrics.get('AP'))} on {metrics.get('images', '?')} images"
        )
        ap50 = metrics.get("AP50_per_class") or {}
        lines += [
            f"  {name}: AP50 {number(ap50.get(name))}, AP {number(value)}"
            for name, value in per_class_ap(metrics).items()
        ]
        if metrics.get("detections") == 0:
            warnings.append(
                f"run {run} detected nothing on the verification images (AP 0): the model has "
                "not learnt yet; raise train.steps (from scratch, at config/own.example.yaml's "
                "size, 300 steps found nothing and 600 did) or fine-tune the COCO checkpoint "
                "(docs/training.md)"
            )
    export = read_json(export_json)
    if export:
        models = [export.get("saved_model", "?")]
        models += [v.get("path", "?") for v in (export.get("tflite") or {}).values()]
        lines.append("exported models: " + ", ".join(models))
    given = f" --configfile {' '.join(configfiles)}" if configfiles else ""
    lines.append(f"report: snakemake --report {report_html}{given} writes it")
    lines += [f"WARNING: {warning}" for warning in warnings]
    return "\n".join(lines) + "\n"


# How Snakemake's log tells of a shell job that failed: its command (the rule's
# log after `2>`) and its end, an exit status (128 + the signal, from the shell)
# or the signal itself (when the shell was killed).
FAILED_COMMAND = re.compile(
    r"Command '(?P<command>.*?)' (?:returned non-zero exit status (?P<status>-?\d+)"
    r"|died with <Signals\.\w+: (?P<signal>\d+)>)",
    re.DOTALL,
)


def killed_jobs(snakemake_log: str) -> list[tuple[str, int]]:
    """(the job's log, the signal) of each shell job of a Snakemake log that a signal ended."""
    killed = []
    for match in FAILED_COMMAND.finditer(snakemake_log):
        if match["signal"]:
            number = int(match["signal"])
        elif int(match["status"]) > 128:
            number = int(match["status"]) - 128
        else:
            continue  # the command's own error: it said so in its log
        logs = re.findall(r"2>>?\s*(\S+)", match["command"])
        if logs:
            killed.append((logs[-1].strip("'\""), number))
    return killed


def report_killed(snakemake_logs: Sequence[str | Path]) -> list[str]:
    """One `ERROR:` line per job the kernel (or anyone) killed, appended to the job's log.

    A job killed by the OOM killer leaves a log ending in a progress line and a
    Snakemake error that says only "non-zero exit code" (Snakemake's onerror).
    """
    lines = []
    for path in snakemake_logs:
        try:
            text = Path(path).read_text(errors="replace")
        except OSError:
            continue
        for job_log, number in dict.fromkeys(killed_jobs(text)):
            try:
                name = signal.Signals(number).name
            except ValueError:
                name = "signal"
            guess = ": out of memory?" if number == signal.SIGKILL else ""
            job = f"{Path(job_log).parent.name} {Path(job_log).stem}"
            line = f"ERROR: {job} was killed (signal {number}, {name}{guess}); log: {job_log}"
            lines.append(line)
            try:
                with open(job_log, "a", encoding="utf-8") as handle:
                    handle.write(line + "\n")
            except OSError:
                pass  # the line is on the terminal all the same
    return lines


def run_state(classes: Sequence[ClassFiles], final_json: Path, export_json: Path) -> dict:
    """What a finished run left: each class's images and boxes, the model, the export.

    The account compares it with the previous run's to say what changed."""
    from . import lists

    state: dict = {"classes": {}}
    for files in classes:
        images, boxes = set(), hashlib.sha256()
        for split in tt_config.SPLITS:
            path = files.lists / f"{split}.tsv"
            if path.exists():
                for image in lists.read_list(path):
                    images.add(image.sha256)
                    boxes.update(f"{split}\t{image.sha256}\t{image.objects}\n".encode())
        state["classes"][files.name] = {"images": sorted(images), "boxes": boxes.hexdigest()}
    final = read_json(final_json)
    state["model"] = {k: final.get(k) for k in ("fingerprint", "step", "checkpoint", "start")}
    export = Path(export_json)
    state["export"] = hashlib.sha256(export.read_bytes()).hexdigest() if export.exists() else None
    return state


def what_changed(before: dict, now: dict, run: str, export_json: Path) -> list[str]:
    """The account's first lines: what this run did and why, in words."""
    lines = []
    old_classes = before.get("classes", {})
    for name, state in now["classes"].items():
        if name not in old_classes:
            lines.append(f"{name}: {plural(len(state['images']), 'image')} (new class)")
            continue
        old = set(old_classes[name]["images"])
        added, removed = set(state["images"]) - old, old - set(state["images"])
        if added or removed:
            change = ", ".join(
                part
                for part in (
                    f"+{len(added)}" if added else "",
                    f"-{len(removed)}" if removed else "",
                )
                if part
            )
            noun = "image" if len(added) + len(removed) == 1 else "images"
            lines.append(f"{name}: {change} {noun} since the last run ({len(state['images'])} now)")
        elif state["boxes"] != old_classes[name]["boxes"]:
            lines.append(f"{name}: boxes edited, the same {plural(len(old), 'image')}")
        else:
            lines.append(f"{name}: unchanged")
    lines += [f"{name}: class removed" for name in old_classes if name not in now["classes"]]
    model, old_model = now.get("model") or {}, before.get("model") or {}
    if model.get("step") is None:
        pass
    elif model == old_model:
        lines.append(f"training of run {run}: nothing changed, not re-run")
    else:
        start = model.get("start") or {}
        steps = start.get("steps", model.get("step"))
        how = {
            "previous": f"warm-started from {start.get('checkpoint')} (the last run's model)",
            "checkpoint": f"fine-tuned from {start.get('checkpoint')}",
            "none": "trained from scratch",
        }.get(start.get("source"), "trained")
        lines.append(f"training of run {run}: {how}, {steps} steps")
    if now.get("export") and now["export"] != before.get("export"):
        lines.append(f"exported again: {Path(export_json).parent}")
    return lines


def account_with_changes(
    state_json: Path, classes: Sequence[ClassFiles], final_json: Path, export_json: Path, run: str
) -> str:
    """What this run did (against the state the previous account saved), then remember it."""
    now = run_state(classes, final_json, export_json)
    before = read_json(state_json) if Path(state_json).exists() else {}
    lines = what_changed(before, now, run, export_json) if before else ["the first run here"]
    fileio.write_json(state_json, now)
    return "this run: " + "\n  ".join(lines) + "\n"


def summary_markdown(
    cfg: tt_config.WorkflowConfig,
    classes: Sequence[ClassFiles],
    metrics_json: Path,
    final_json: Path,
    export_json: Path,
    run: str,
    report_html: str | Path = "report.html",
    configfiles: Sequence[str] = (),
) -> str:
    metrics, final, export = (read_json(p) for p in (metrics_json, final_json, export_json))
    counts = class_counts(classes)
    lines = [f"# tumbletrain run `{run}`", "", "## Images", "", counts.to_markdown(), ""]
    lines += [
        "## Model",
        "",
        f"- backbone {cfg.model.backbone}, input {cfg.model.input_size} px, "
        f"{len(cfg.classes)} classes ({', '.join(cfg.class_names)})",
        f"- trained {final.get('step', '?')} steps from "
        f"{final.get('init_checkpoint') or 'scratch'}"
        f"{' (backbone frozen)' if final.get('freeze_backbone') else ''}; "
        f"final checkpoint `{final.get('checkpoint', '?')}`",
        "",
    ]
    if metrics:
        per_class = per_class_ap(metrics)
        lines += [
            "## Verification (COCO)",
            "",
            f"- AP {number(metrics.get('AP'))}, AP50 {number(metrics.get('AP50'))}, "
            f"AP75 {number(metrics.get('AP75'))} on {metrics.get('images', '?')} images",
            "- AP per class: " + ", ".join(f"{k} {number(v)}" for k, v in per_class.items()),
            "",
        ]
    if export:
        lines += ["## Exported", "", f"- SavedModel `{export.get('saved_model', '?')}`"]
        lines += [
            f"- TFLite `{v.get('path', '?')}` ({v.get('bytes', 0) / 1e6:.1f} MB)"
            for v in (export.get("tflite") or {}).values()
        ]
        lines += [""]
    lines += [
        f"TensorBoard: `tensorboard --logdir {Path(final_json).parent}`",
        "",
        "## This run",
        "",
        "```text",
        account(classes, metrics_json, export_json, run, report_html, configfiles).rstrip("\n"),
        "```",
        "",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = tt_config.command_parser(
        "report",
        "Figures and tables for the Snakemake report, and the one-page summary. "
        "Every file read or written is named on the command line.",
    )
    parser.add_argument(
        "what",
        choices=["data", "samples", "training", "evaluation", "summary"],
        help="data: class counts, validation, rejected files, near-duplicates; samples: one "
        "class's training images with boxes; training: curves; evaluation: metrics and AP per "
        "class; summary: the one-page summary",
    )
    parser.add_argument("--class", dest="class_name", help="the class (samples)")
    parser.add_argument("--run", default=None, help="the training run (default: train.run)")
    read = parser.add_argument_group("what it reads")
    read.add_argument(
        "--summaries", type=Path, nargs="*", default=[], help="each class's summary.json"
    )
    read.add_argument("--manifests", type=Path, nargs="*", default=[], help="each class's manifest")
    read.add_argument(
        "--skipped", type=Path, nargs="*", default=[], help="each class's skipped images"
    )
    read.add_argument("--list", type=Path, help="the class's training list (samples)")
    read.add_argument("--model-dir", type=Path, help="the run's model folder (training)")
    read.add_argument("--metrics", type=Path, help="the run's metrics.json")
    read.add_argument("--final", type=Path, help="the run's final.json (summary)")
    read.add_argument("--export", type=Path, help="the run's export.json (summary)")
    read.add_argument(
        "--report-html",
        default="report.html",
        help="where `snakemake --report` writes the report (named in the summary)",
    )
    read.add_argument(
        "--configfiles",
        nargs="*",
        default=[],
        help="the run's --configfile files, for the report command the summary prints",
    )
    write = parser.add_argument_group("what it writes")
    write.add_argument("--output", type=Path, help="the figure (samples, training) or summary")
    for flag, what in (
        ("--counts", "class counts figure"),
        ("--validation", "validation figure"),
        ("--rejected", "rejected files table (TSV)"),
        ("--rejected-html", "rejected files table (HTML)"),
        ("--near-duplicates", "near-duplicate groups figure"),
        ("--ap", "AP per class figure"),
        ("--table", "metrics table (TSV)"),
        ("--table-html", "metrics table (HTML)"),
    ):
        write.add_argument(flag, type=Path, help=f"the {what}")
    return parser


# The arguments that name a file the command writes.
OUTPUTS = (
    "output",
    "counts",
    "validation",
    "rejected",
    "rejected_html",
    "near_duplicates",
    "ap",
    "table",
    "table_html",
)
# What each command needs on its command line.
REQUIRED = {
    "data": ("summaries", "manifests", "skipped", "counts", "validation", "rejected"),
    "samples": ("class_name", "list", "output"),
    "training": ("model_dir", "output"),
    "evaluation": ("metrics", "ap", "table", "table_html"),
    "summary": ("summaries", "manifests", "skipped", "metrics", "final", "export", "output"),
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = [name for name in REQUIRED[args.what] if not getattr(args, name)]
    if missing:
        flags = ", ".join(
            "--" + ("class" if m == "class_name" else m.replace("_", "-")) for m in missing
        )
        raise cli.UserError(f"report {args.what} needs {flags}")
    cfg = tt_config.from_arguments(args, STAGES[args.what])
    run = args.run or cfg.train.run if args.what in ("training", "evaluation", "summary") else ""
    outputs = [getattr(args, name) for name in OUTPUTS if getattr(args, name)]
    fileio.clean_leftovers(*sorted({Path(path).parent for path in outputs}), logger=log)
    if args.what in ("data", "summary"):
        classes = class_files(cfg.class_names, args.summaries, args.manifests, args.skipped)
    if args.what == "data":
        plots.plot_counts(class_counts(classes), args.counts)
        plots.plot_validation(validation_table(classes), args.validation)
        write_table(
            rejected_rows(classes),
            args.rejected,
            args.rejected_html or args.rejected.with_suffix(".html"),
            "Rejected annotation files and objects",
            "No XML file or object was rejected.",
        )
        if args.near_duplicates:
            plots.plot_near_duplicates(
                near_duplicate_groups(classes, NEAR_DUPLICATE_GROUPS),
                moved_counts(classes),
                args.near_duplicates,
            )
    elif args.what == "samples":
        if args.class_name not in cfg.class_names:
            raise cli.UserError(
                f"class {args.class_name!r} is not in the config ({', '.join(cfg.class_names)}); "
                "pass one of those to --class"
            )
        plots.plot_samples(
            lists.read_list(args.list)[:SAMPLES] if args.list.exists() else [],
            f"{args.class_name}: training images and their boxes",
            args.output,
        )
    elif args.what == "training":
        drawn = plots.plot_training(*training_series(args.model_dir), args.output)
        log.info("training curves of %s: %s", args.model_dir, drawn)
    elif args.what == "evaluation":
        metrics = read_json(args.metrics)
        plots.plot_ap_per_class(
            per_class_ap(metrics), metrics.get("AP50_per_class") or {}, ap_title(metrics), args.ap
        )
        write_table(
            metrics_table(metrics),
            args.table,
            args.table_html,
            f"COCO metrics of run {run} on the verification split",
            "No metrics yet.",
        )
    else:
        text = summary_markdown(
            cfg,
            classes,
            args.metrics,
            args.final,
            args.export,
            run,
            args.report_html,
            args.configfiles,
        )
        fileio.write_text(args.output, text)
    return 0


if __name__ == "__main__":
    cli.run(main)
