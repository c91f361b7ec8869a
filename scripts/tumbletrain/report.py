"""Pictures and a one-page summary of a run, for the Snakemake report.

Each subcommand reads what a stage wrote and draws one figure with matplotlib;
`summary` writes results/summary.md, which `make demo` prints at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from . import cli, fileio, lists  # noqa: E402
from . import config as tt_config  # noqa: E402

log = logging.getLogger("tumbletrain.report")


def save(fig, path: Path) -> None:
    fig.tight_layout()
    with fileio.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}


def class_counts(classes: list[str], manifests: Path, lists_dir: Path) -> pd.DataFrame:
    rows = []
    for name in classes:
        manifest = manifests / f"{name}.tsv"
        skipped = manifests / f"{name}.skipped.tsv"
        summary = read_json(lists_dir / name / "summary.json")
        per_split = summary.get("per_split", {})
        rows.append(
            {
                "class": name,
                "harvested": len(fileio.read_tsv(manifest)) if manifest.exists() else 0,
                "skipped": len(fileio.read_tsv(skipped)) if skipped.exists() else 0,
                "unlabelled": summary.get("unlabelled_images", 0),
                "rejected": summary.get("rejected_files", 0),
                "training": per_split.get("training", 0),
                "verification": per_split.get("verification", 0),
            }
        )
    return pd.DataFrame(rows).set_index("class")


def plot_counts(counts: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(counts)), 3.8))
    counts.plot.bar(ax=ax, rot=0, width=0.85)
    ax.set(ylabel="images", xlabel="", title="Images per class: harvested, skipped, kept per split")
    ax.legend(fontsize=8, ncols=3)
    ax.grid(axis="y", alpha=0.3)
    save(fig, path)


def validation_table(classes: list[str], lists_dir: Path) -> pd.DataFrame:
    rows = {}
    for name in classes:
        summary = read_json(lists_dir / name / "summary.json")
        row = {f"repaired: {k}": v for k, v in summary.get("repairs_by_kind", {}).items()}
        row.update({f"rejected: {k}": v for k, v in summary.get("rejected_by_reason", {}).items()})
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index").fillna(0).astype(int)


def plot_validation(table: pd.DataFrame, path: Path) -> None:
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


def rejected_rows(classes: list[str], lists_dir: Path) -> pd.DataFrame:
    frames = []
    for name in classes:
        path = lists_dir / name / "rejected.tsv"
        if path.exists():
            frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
            frame.insert(0, "class", name)
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["class", "file", "object", "reason", "message"])
    return pd.concat(frames, ignore_index=True)


def plot_samples(list_path: Path, path: Path, count: int = 12) -> None:
    """Training images with their boxes: is the labelling right, at a glance?"""
    from matplotlib.patches import Rectangle
    from PIL import Image, ImageOps

    items = lists.read_list(list_path)[:count] if list_path.exists() else []
    columns = max(1, min(4, len(items)))
    rows = max(1, math.ceil(len(items) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, item in zip(axes.flat, items, strict=False):
        with Image.open(item.image) as image:
            image.seek(0)
            ax.imshow(np.asarray(ImageOps.exif_transpose(image).convert("RGB")))
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


def plot_training(model_dir: Path, path: Path) -> None:
    """Losses and learning rate from TensorBoard's event files; validation AP over steps."""
    from .training import scalar_summaries

    train = scalar_summaries(model_dir / "train")
    validation = scalar_summaries(model_dir / "validation")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for tag in ("total_loss", "cls_loss", "box_loss"):
        if tag in train:
            steps, values = zip(*train[tag], strict=True)
            axes[0].plot(steps, values, label=tag)
    axes[0].set(title="training loss", xlabel="step", yscale="log")
    axes[0].legend(fontsize=8)
    if "learning_rate" in train:
        steps, values = zip(*train["learning_rate"], strict=True)
        axes[1].plot(steps, values)
    axes[1].set(title="learning rate", xlabel="step")
    for tag in ("AP", "AP50"):
        if tag in validation:
            steps, values = zip(*validation[tag], strict=True)
            axes[2].plot(steps, values, marker="o", label=tag)
    axes[2].set(title="validation COCO AP", xlabel="step", ylim=(0, 1))
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    save(fig, path)


def plot_ap_per_class(metrics: dict, path: Path) -> None:
    per_class = metrics.get("AP_per_class", {})
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(per_class)), 3.2))
    ax.bar(list(per_class), list(per_class.values()), color="tab:blue")
    ax.set(
        ylim=(0, 1),
        ylabel="COCO AP",
        title=f"AP per class (all: {metrics.get('AP', 0):.3f}, AP50: {metrics.get('AP50', 0):.3f})",
    )
    ax.grid(axis="y", alpha=0.3)
    save(fig, path)


def metrics_table(metrics: dict) -> pd.DataFrame:
    from .evaluation import SUMMARY_METRICS

    rows = [(key, metrics.get(key)) for key in SUMMARY_METRICS]
    rows += [(f"AP {name}", value) for name, value in metrics.get("AP_per_class", {}).items()]
    return pd.DataFrame(rows, columns=["metric", "value"])


def summary_markdown(
    cfg: tt_config.WorkflowConfig,
    counts: pd.DataFrame,
    metrics: dict,
    final: dict,
    export: dict,
    run: str,
) -> str:
    lines = [f"# tumbletrain run `{run}`", "", "## Images", "", counts.to_markdown(), ""]
    lines += [
        "## Model",
        "",
        f"- backbone {cfg.model.backbone}, input {cfg.model.input_size} px, "
        f"{len(cfg.classes)} classes ({', '.join(cfg.class_names)})",
        f"- trained {final.get('step', '?')} steps from "
        f"{final.get('init_checkpoint') or 'scratch'}"
        f"{' (backbone frozen)' if final.get('freeze_backbone') else ''}; "
        f"final checkpoint `{final.get('checkpoint')}`",
        "",
    ]
    if metrics:
        lines += [
            "## Verification (COCO)",
            "",
            f"- AP {metrics.get('AP', 0):.3f}, AP50 {metrics.get('AP50', 0):.3f}, "
            f"AP75 {metrics.get('AP75', 0):.3f} on {metrics.get('images')} images",
            "- AP per class: "
            + ", ".join(f"{k} {v:.3f}" for k, v in metrics.get("AP_per_class", {}).items()),
            "",
        ]
    if export:
        lines += ["## Exported", "", f"- SavedModel `{export.get('saved_model')}`"]
        lines += [
            f"- TFLite `{v['path']}` ({v['bytes'] / 1e6:.1f} MB)"
            for v in export.get("tflite", {}).values()
        ]
        lines += [""]
    lines += [
        "Report: `snakemake --report results/report.html`; "
        f"TensorBoard: `tensorboard --logdir results/train/{run}`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tumbletrain.report", description="Figures and the summary of a run."
    )
    tt_config.add_config_arguments(parser)
    parser.add_argument("what", choices=["data", "samples", "training", "evaluation", "summary"])
    parser.add_argument("--class", dest="class_name")
    parser.add_argument("--run", default=None)
    parser.add_argument("--outdir", type=Path, default=Path("results/report"))
    parser.add_argument("--output", type=Path, help="summary.md path")
    args = parser.parse_args(argv)
    cfg = tt_config.from_arguments(args)
    run = args.run or cfg.train.run
    results = Path("results")
    if args.what == "data":
        counts = class_counts(cfg.class_names, Path("resources/manifests"), results / "lists")
        plot_counts(counts, args.outdir / "class_counts.png")
        plot_validation(
            validation_table(cfg.class_names, results / "lists"), args.outdir / "validation.png"
        )
        table = rejected_rows(cfg.class_names, results / "lists")
        fileio.write_tsv(args.outdir / "rejected.tsv", table.columns, table.to_numpy().tolist())
    elif args.what == "samples":
        if not args.class_name:
            raise cli.UserError("samples needs --class")
        plot_samples(
            results / "lists" / args.class_name / "training.tsv",
            args.outdir / f"samples_{args.class_name}.png",
        )
    elif args.what == "training":
        plot_training(results / "train" / run, args.outdir / f"training_{run}.png")
    elif args.what == "evaluation":
        metrics = read_json(results / "eval" / run / "metrics.json")
        plot_ap_per_class(metrics, args.outdir / f"ap_per_class_{run}.png")
        table = metrics_table(metrics)
        fileio.write_tsv(
            args.outdir / f"metrics_{run}.tsv", table.columns, table.to_numpy().tolist()
        )
    else:
        counts = class_counts(cfg.class_names, Path("resources/manifests"), results / "lists")
        text = summary_markdown(
            cfg,
            counts,
            read_json(results / "eval" / run / "metrics.json"),
            read_json(results / "train" / run / "final.json"),
            read_json(results / "export" / run / "export.json"),
            run,
        )
        fileio.write_text(args.output or results / "summary.md", text)
    return 0


if __name__ == "__main__":
    cli.run(main)
