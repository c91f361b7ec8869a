"""The model stage as a command: checkpoint, train, evaluate, export.

Predicting is `python -m tumbletrain.predict`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from . import cli, export, fileio, modelclasses
from . import config as tt_config

log = logging.getLogger("tumbletrain.model")
# The config each command reads; its rule passes exactly this.
CHECKPOINT = tt_config.stage("checkpoint_download", "model.checkpoint", classes="none")
TRAIN = tt_config.stage("train", "model", "train", classes="names")
EVALUATE = tt_config.stage("evaluate", "evaluate", classes="names")
EXPORT = tt_config.stage("export", classes="none")
# The files each command writes, by their usual names (`--outdir` by hand).
EVALUATE_OUTPUTS = {
    "metrics": "metrics.json",
    "detections": "detections.csv",
    "pr_curves": "pr_curves.png",
    "grid": "detections.png",
}


def read_final(path: Path) -> dict:
    if not path.exists():
        raise cli.UserError(f"{path} does not exist; run the train rule first")
    return json.loads(path.read_text())


def cmd_checkpoint(cfg: tt_config.WorkflowConfig, args) -> None:
    from .checkpoint import fetch_checkpoint

    if cfg.model.checkpoint is None:
        raise cli.UserError("model.checkpoint is null: there is nothing to download")
    info = fetch_checkpoint(cfg.model.checkpoint, args.output_dir, args.output)
    log.info("checkpoint ready: %s (sha256 %s)", info["prefix"], info["sha256"])


def cmd_train(cfg: tt_config.WorkflowConfig, args) -> None:
    from . import training

    init = None
    if args.checkpoint_json:
        init = json.loads(Path(args.checkpoint_json).read_text())["prefix"]
    inputs = training.TrainInputs(
        training=training.data_split(args.training_stats),
        validation=training.data_split(args.validation_stats) if args.validation_stats else None,
        init_checkpoint=init,
    )
    result = training.train(cfg, inputs, args.model_dir, args.final, args.feature_cache)
    if result:  # a worker other than the chief has nothing to report
        log.info("trained to step %d: %s", result["step"], result["checkpoint"])


def cmd_evaluate(cfg: tt_config.WorkflowConfig, args) -> None:
    from . import evaluation, training

    final = read_final(args.final)
    classes = modelclasses.of_training(args.final)
    modelclasses.check_config(classes, cfg.classes, str(args.final))
    split = training.data_split(args.verification_stats)
    if split.images == 0:
        raise cli.UserError(
            "there are no verification images; lower split.verification_percent or add images"
        )
    metrics = evaluation.evaluate(
        Path(final["params"]),
        final["checkpoint"],
        split.files,
        split.images,
        modelclasses.names(classes),
        evaluation.images_by_source(args.verification_lists),
        args.outputs,
        cfg.evaluate.min_score,
        cfg.evaluate.grid_images,
    )
    log.info(
        "AP %.3f, AP50 %.3f on %d verification images", metrics["AP"], metrics["AP50"], split.images
    )


def cmd_export(cfg: tt_config.WorkflowConfig, args) -> None:
    from . import experiment

    final = read_final(args.final)
    classes = modelclasses.of_training(args.final)
    params = experiment.load_params(Path(final["params"]), [], 1)
    summary = export.export(
        params, final["checkpoint"], classes, args.outputs, args.calibration_images
    )
    log.info("exported %s and %s", summary["saved_model"], ", ".join(summary["tflite"]))


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(
        "model",
        "Train, evaluate, export and apply the detector (Model Garden RetinaNet "
        "with a MobileNet backbone).",
    )
    sub = cli.subcommands(parser)

    p = sub.add_parser("checkpoint", help="download, verify and extract model.checkpoint")
    tt_config.add_config_arguments(p)
    p.add_argument(
        "--output-dir",
        type=Path,
        required=True,
        help="where the archive is downloaded and extracted (kept: a re-run resumes)",
    )
    p.add_argument(
        "--output", type=Path, help="checkpoint.json, written last (default: in OUTPUT_DIR)"
    )
    p.set_defaults(run=cmd_checkpoint, stage=CHECKPOINT)

    p = sub.add_parser("train", help="train from the records (resumes from the last checkpoint)")
    tt_config.add_config_arguments(p)
    p.add_argument(
        "--training-stats",
        type=Path,
        nargs="+",
        required=True,
        help="the records stage's stats of every training record (CLASS_training.json)",
    )
    p.add_argument(
        "--validation-stats",
        type=Path,
        nargs="*",
        default=[],
        help="the stats of every verification record, to evaluate while training",
    )
    p.add_argument(
        "--checkpoint-json", type=Path, help="the downloaded checkpoint's checkpoint.json"
    )
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--final", type=Path, required=True)
    p.add_argument(
        "--feature-cache",
        type=Path,
        help="where train.feature_cache keeps the frozen backbone's outputs (shared by runs)",
    )
    p.set_defaults(run=cmd_train, stage=TRAIN)

    p = sub.add_parser("evaluate", help="COCO metrics, curves and a detection grid")
    tt_config.add_config_arguments(p)
    p.add_argument("--final", type=Path, required=True, help="the train command's final.json")
    p.add_argument("--verification-stats", type=Path, nargs="+", required=True)
    p.add_argument(
        "--verification-lists",
        type=Path,
        nargs="*",
        default=[],
        help="the annotations stage's verification.tsv of every class: detections.csv "
        "names each image as they do",
    )
    cli.add_outputs(p, **EVALUATE_OUTPUTS)
    p.set_defaults(run=cmd_evaluate, stage=EVALUATE)

    p = sub.add_parser("export", help="SavedModel and TFLite (float, int8)")
    tt_config.add_config_arguments(p)
    p.add_argument("--final", type=Path, required=True)
    cli.add_outputs(p, **export.OUTPUTS)
    p.add_argument(
        "--calibration-images",
        type=int,
        default=export.CALIBRATION_IMAGES,
        help="training images that calibrate the int8 model (default: %(default)s)",
    )
    p.set_defaults(run=cmd_export, stage=EXPORT)

    args = parser.parse_args(argv)
    cfg = tt_config.from_arguments(args, args.stage)
    args.outputs = cli.outputs(args) if "output_files" in args else {}
    fileio.clean_leftovers(
        *sorted({path.parent for path in args.outputs.values()}),
        *(getattr(args, key, None) for key in ("outdir", "model_dir", "output_dir")),
        logger=log,
    )
    args.run(cfg, args)
    return 0


if __name__ == "__main__":
    cli.run(main)
