"""Pictures, tables and a one-page summary of a run, for the Snakemake report.

Each subcommand reads what a stage wrote and draws with matplotlib or pandas;
`summary` writes the one-page summary (summary.md), which
`make demo` prints at the end.
The readers accept summaries and metrics with keys missing (a stage that wrote
an older format, or an evaluation without objects) and draw what there is.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import cli, fileio, lists, store
from . import config as tt_config

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("tumbletrain.report")


def pyplot():
    """matplotlib, imported when a figure is drawn: Snakemake imports this module
    for its stage declarations at every start, and matplotlib and pandas cost
    0.45 s there."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
# Orbit's train summaries name every loss `*loss`; these three come first.
MAIN_LOSSES = ("total_loss", "cls_loss", "box_loss")
VALIDATION_AP = ("AP", "AP50", "AP75")


def save(fig, path: Path) -> None:
    plt = pyplot()
    fig.tight_layout()
    with fileio.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


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


def plot_counts(counts: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(counts)) + 2.5, 4.2))
    counts.plot.bar(ax=ax, rot=0, width=0.85)
    for container in ax.containers:
        ax.bar_label(
            container, fontsize=7, labels=[str(int(v)) if v else "" for v in container.datavalues]
        )
    ax.set(
        ylabel="images",
        xlabel="",
        title="Images per class: harvested, skipped (by reason), unlabelled, rejected, kept",
    )
    # Outside the axes: the legend would hide the tallest bars.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(axis="y", alpha=0.3)
    save(fig, path)


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


def plot_validation(table: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.5 * max(1, len(table.columns)) + 1.5)))
    if table.empty or table.to_numpy().sum() == 0:
        ax.text(0.5, 0.5, "nothing was repaired or rejected", ha="center", va="center")
        ax.axis("off")
    else:
        table.T.plot.barh(ax=ax, width=0.8)
        ax.set(xlabel="XML files or objects", title="Validation: repairs and rejections by reason")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8)
    save(fig, path)


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


def plot_samples(list_path: Path, path: Path, count: int = 12) -> None:
    """Training images with their boxes: is the labelling right, at a glance?"""
    plt = pyplot()
    from matplotlib.patches import Rectangle
    from PIL import Image, ImageOps, UnidentifiedImageError

    items = lists.read_list(list_path)[:count] if list_path.exists() else []
    columns = max(1, min(4, len(items)))
    rows = max(1, math.ceil(len(items) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, item in zip(axes.flat, items, strict=False):
        try:
            with Image.open(item.image) as image:
                image.seek(0)
                ax.imshow(np.asarray(ImageOps.exif_transpose(image).convert("RGB")))
        except (OSError, UnidentifiedImageError) as error:
            # The list outlives the image (moved or deleted since validation).
            log.warning("cannot show %s: %s", item.image, error)
            ax.text(0.5, 0.5, f"cannot read\n{Path(item.image).name}", ha="center", va="center")
            continue
        for obj in item.objects:
            ax.add_patch(
                Rectangle(
                    (obj.xmin, obj.ymin),
                    obj.xmax - obj.xmin,
                    obj.ymax - obj.ymin,
                    fill=False,
                    ec="yellow",
                    lw=1.5,
                )
            )
            ax.text(
                obj.xmin,
                obj.ymin,
                obj.name,
                color="black",
                fontsize=6,
                bbox={"facecolor": "yellow", "pad": 1, "lw": 0},
            )
    if not items:
        axes.flat[0].text(0.5, 0.5, "no training images", ha="center", va="center")
    fig.suptitle(f"{list_path.parent.name}: training images and their boxes", fontsize=9)
    save(fig, path)


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


def plot_near_duplicates(
    classes: Sequence[ClassFiles], path: Path, groups: int = 6, strip: int = 6
) -> None:
    """A strip of thumbnails per largest near-duplicate group: one row, one split."""
    plt = pyplot()
    from PIL import Image, ImageOps, UnidentifiedImageError

    largest = near_duplicate_groups(classes, groups)
    moved = moved_counts(classes)
    rows = max(1, len(largest))
    fig, axes = plt.subplots(rows, strip, figsize=(1.6 * strip, 1.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for row, group in zip(axes, largest, strict=False):
        row[0].set_title(
            f"{group['size']} images, {group.get('split', '?')} ({', '.join(group['classes'])})",
            fontsize=7,
            loc="left",
        )
        for ax, image_path in zip(row, sorted(group["images"]), strict=False):
            try:
                with Image.open(image_path) as image:
                    image.seek(0)
                    image.draft("RGB", (160, 160))
                    ax.imshow(np.asarray(ImageOps.exif_transpose(image).convert("RGB")))
            except (OSError, UnidentifiedImageError) as error:
                log.warning("cannot show %s: %s", image_path, error)
    if not largest:
        axes.flat[0].text(0.5, 0.5, "no near-duplicates found", ha="center", va="center")
    fig.suptitle(
        "Largest near-duplicate groups (each kept in one split); grouping moved "
        + ", ".join(f"{n} into {split}" for split, n in moved.items())
        + " against content-hash splits",
        fontsize=8,
    )
    save(fig, path)


def plot_series(ax, series: dict, tags) -> list[str]:
    """Plot the tags that were logged; returns them (an empty panel says so)."""
    drawn = [tag for tag in tags if series.get(tag)]
    for tag in drawn:
        steps, values = zip(*sorted(series[tag]), strict=True)
        ax.plot(steps, values, label=tag, marker="o" if len(steps) < 20 else None, ms=3)
    if drawn:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    return drawn


def plot_training(model_dir: Path, path: Path) -> dict[str, list[str]]:
    """Losses and learning rate from TensorBoard's event files; validation AP over steps.

    Returns the tags drawn in each panel.
    """
    plt = pyplot()
    from .training import scalar_summaries

    train = scalar_summaries(model_dir / "train")
    validation = scalar_summaries(model_dir / "validation")
    if not train and not validation:
        log.warning("no TensorBoard event files under %s", model_dir)
    extra_losses = sorted(t for t in train if t.endswith("loss") and t not in MAIN_LOSSES)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    drawn = {
        "loss": plot_series(axes[0], train, [*MAIN_LOSSES, *extra_losses]),
        "learning_rate": plot_series(axes[1], train, ["learning_rate"]),
        "validation": plot_series(axes[2], validation, VALIDATION_AP),
    }
    # Log scale shows the fall of a loss best, but only positive values fit on it.
    if drawn["loss"] and all(v > 0 for tag in drawn["loss"] for _, v in train[tag]):
        axes[0].set_yscale("log")
    axes[0].set(title="training loss", xlabel="step")
    axes[1].set(title="learning rate", xlabel="step")
    axes[2].set(title="validation COCO AP", xlabel="step", ylim=(0, 1))
    for ax in axes:
        ax.grid(alpha=0.3)
    save(fig, path)
    log.info("training curves of %s: %s", model_dir, drawn)
    return drawn


def per_class_ap(metrics: dict) -> dict[str, float | None]:
    """AP per class; None where the verification split has no object of the class."""
    return {
        name: (value if isinstance(value, int | float) and value >= 0 else None)
        for name, value in (metrics.get("AP_per_class") or {}).items()
    }


def plot_ap_per_class(metrics: dict, path: Path) -> None:
    plt = pyplot()
    per_class = per_class_ap(metrics)
    per_class50 = metrics.get("AP50_per_class") or {}
    fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(per_class)), 3.4))
    if not per_class:
        ax.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax.transAxes)
    x = np.arange(len(per_class))
    ap = [v or 0.0 for v in per_class.values()]
    ap50 = [max(0.0, per_class50.get(name) or 0.0) for name in per_class]
    ax.bar(x - 0.2, ap, width=0.4, label="AP", color="tab:blue")
    ax.bar(x + 0.2, ap50, width=0.4, label="AP50", color="tab:orange")
    for i, value in enumerate(per_class.values()):
        if value is None:
            ax.text(i, 0.02, "no objects", ha="center", fontsize=7, rotation=90)
    ax.set_xticks(x, list(per_class))
    ax.set(
        ylim=(0, 1.15),
        yticks=np.linspace(0, 1, 6),
        ylabel="COCO AP",
        title=f"AP per class (all: {number(metrics.get('AP'))}, "
        f"AP50: {number(metrics.get('AP50'))})",
    )
    # Above the bars, in the headroom over AP 1.0.
    ax.legend(fontsize=8, ncols=2, loc="upper center")
    ax.grid(axis="y", alpha=0.3)
    save(fig, path)


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
# More rejected XML files than this share means something systematic (a
# renamed folder, another tool's format), not a few stray mistakes.
MAX_REJECTED_SHARE = 0.10


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def class_lines(files: ClassFiles, summary: dict) -> tuple[str, list[str]]:
    """One line on what validation did with a class's files, and the class's warnings."""
    name = files.name
    per_split = summary.get("per_split", {})
    rejected = summary.get("rejected_files", 0)
    xml_files = summary.get("xml_files", 0)
    rejected_tsv = files.lists / "rejected.tsv"
    line = (
        f"{name}: {xml_files} XML files: {summary.get('kept', 0)} kept "
        f"({summary.get('repaired', 0)} repaired), {rejected} rejected; "
        + ", ".join(f"{per_split.get(split, 0)} {split}" for split in tt_config.SPLITS)
        + " images"
    )
    if summary.get("unlabelled_images"):
        line += f"; {plural(summary['unlabelled_images'], 'image')} without XML"
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
            f"{name}: {rejected} of {xml_files} XML files rejected "
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
) -> str:
    """What a run did, for the terminal (Snakemake's onsuccess) and the end of summary.md.

    Reads only what the stages wrote, so a partial run (only the data stages)
    gets the part that exists.
    """
    lines, warnings = [], []
    for files in classes:
        summary = read_json(files.lists / "summary.json")
        if summary:
            line, class_warnings = class_lines(files, summary)
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
    export = read_json(export_json)
    if export:
        models = [export.get("saved_model", "?")]
        models += [v.get("path", "?") for v in (export.get("tflite") or {}).values()]
        lines.append("exported models: " + ", ".join(models))
    lines.append(f"report: snakemake --report {report_html} writes it")
    lines += [f"WARNING: {warning}" for warning in warnings]
    return "\n".join(lines) + "\n"


def summary_markdown(
    cfg: tt_config.WorkflowConfig,
    classes: Sequence[ClassFiles],
    metrics_json: Path,
    final_json: Path,
    export_json: Path,
    run: str,
    report_html: str | Path = "report.html",
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
        account(classes, metrics_json, export_json, run, report_html).rstrip("\n"),
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
        plot_counts(class_counts(classes), args.counts)
        plot_validation(validation_table(classes), args.validation)
        write_table(
            rejected_rows(classes),
            args.rejected,
            args.rejected_html or args.rejected.with_suffix(".html"),
            "Rejected XML files and objects",
            "No XML file or object was rejected.",
        )
        if args.near_duplicates:
            plot_near_duplicates(classes, args.near_duplicates)
    elif args.what == "samples":
        if args.class_name not in cfg.class_names:
            raise cli.UserError(
                f"class {args.class_name!r} is not in the config ({', '.join(cfg.class_names)}); "
                "pass one of those to --class"
            )
        plot_samples(args.list, args.output)
    elif args.what == "training":
        plot_training(args.model_dir, args.output)
    elif args.what == "evaluation":
        metrics = read_json(args.metrics)
        plot_ap_per_class(metrics, args.ap)
        write_table(
            metrics_table(metrics),
            args.table,
            args.table_html,
            f"COCO metrics of run {run} on the verification split",
            "No metrics yet.",
        )
    else:
        text = summary_markdown(
            cfg, classes, args.metrics, args.final, args.export, run, args.report_html
        )
        fileio.write_text(args.output, text)
    return 0


if __name__ == "__main__":
    cli.run(main)
