"""The review queue: the images a person should label next, pre-labelled by the model.

    python -m tumbletrain.review --model SAVED_MODEL --manifests ... --lists ...
        --labelling ... --queues ... [--signatures ...]

For each class (the arguments in `classes:` order), the exported model
predicts on the class's images that no person has labelled, and they are
ranked by `uncertainty`: 1 - the top score of a box of the class the image
was harvested for. The tag says the object is there; an image on which the
model finds it with 0.95 teaches little, one on which it finds nothing (or
only at 0.2) is where it is wrong. The `review.batch` most uncertain, at most
one of each near-duplicate group (`neardup` signatures), get an unverified
pre-label (`prelabels`) where LabelImg opens and saves them (the class's
`label` hand-off), and a row in the class's queue (`QUEUE_COLUMNS`); the
command that opens LabelImg on the batch is printed.

A file a person touched is never written over, and is no candidate: the next
`annotations` run lists it. An untouched pre-label of an image that left the
queue is deleted, so only the current model's batch waits in the folder.
Same model and data, same queue (ties go by content hash).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import (
    annotations,
    cli,
    fileio,
    label,
    lists,
    modelclasses,
    neardup,
    predict,
    prelabels,
    pseudo,
    store,
)
from . import config as tt_config

log = logging.getLogger("tumbletrain.review")
# Every class in full (its folders and hand-off), the batch, the pre-labels' threshold,
# and the near-duplicate distance.
CONFIG = tt_config.stage("review", "review", "predict.min_score", "split", classes="all")
QUEUE_COLUMNS = ("rank", "image", "sha256", "score", "xml", "boxes")


@dataclass(frozen=True)
class Candidate:
    """An image of a class no person has labelled, where LabelImg opens and saves it."""

    sha256: str
    image: Path  # the file LabelImg opens
    xml: Path  # where LabelImg saves its boxes: `<save folder>/<image stem>.xml`
    group: str  # its near-duplicate group (its own sha256 when alone)
    stored: str = ""  # the manifest's file (the store's): what a pseudo-label lists


@dataclass(frozen=True)
class Ranked:
    candidate: Candidate
    score: float  # the ranking measure: higher, sooner
    detections: tuple[predict.Detection, ...]


def uncertainty(class_name: str, detections: Sequence[predict.Detection]) -> float:
    """1 - the top score of a box of the class the image was harvested for (1 for none)."""
    return 1.0 - max((d.score for d in detections if d.name == class_name), default=0.0)


def batch(ranked: Sequence[Ranked], size: int) -> list[Ranked]:
    """The `size` highest scores, ties by content hash, one image per near-duplicate group."""
    taken: list[Ranked] = []
    groups: set[str] = set()
    for item in sorted(ranked, key=lambda r: (-r.score, r.candidate.sha256)):
        if len(taken) == size:
            break
        if item.candidate.group not in groups:
            groups.add(item.candidate.group)
            taken.append(item)
    return taken


def ledger_of(ledgers: dict[Path, dict], folder: Path) -> dict:
    """A folder's pre-label ledger, read once per run (`ledgers`: those read so far)."""
    if folder not in ledgers:
        ledgers[folder] = prelabels.read_ledger(folder)
    return ledgers[folder]


def human_labelled(list_paths: Sequence[Path]) -> set[str]:
    """The images (sha256) a person's boxes describe in the class's lists."""
    return {
        item.sha256
        for path in list_paths
        if Path(path).is_file()
        for item in lists.read_list(path)
        if item.source == "human"
    }


def candidates(
    rows: Sequence[store.ManifestRow],
    labelled: set[str],
    handoff: Path,
    class_name: str,
    ledgers: dict[Path, dict],
) -> list[Candidate]:
    """The class's images no person labelled, as the hand-off opens them in LabelImg.

    A harvested file is found as the hand-off's copy (`{sha256[:16]}{suffix}` in its
    folder) or in place (a folder the class reads); an image the hand-off does not
    open is left out, with a line in the log.
    """
    entries, _ = label.read_handoff(handoff.parent, class_name)
    save_of = {os.path.realpath(image): save for image, save in entries}
    found, missing = [], 0
    for row in rows:
        if row.sha256 in labelled:
            continue
        places = [handoff.parent / f"{row.sha256[:16]}{Path(row.file).suffix}"]
        if row.image_url and "://" not in row.image_url:
            places.insert(0, Path(row.image_url))
        place = next((p for p in places if os.path.realpath(p) in save_of), None)
        if place is None:
            missing += 1
            continue
        image = Path(os.path.realpath(place))
        xml = save_of[str(image)] / f"{image.stem}.xml"
        if not prelabels.touched(xml, ledger_of(ledgers, xml.parent)):
            found.append(Candidate(row.sha256, image, xml, row.sha256, row.file))
    if missing:
        log.warning(
            "%s: %d unlabelled images are not in the hand-off %s (re-run its `label` rule)",
            class_name,
            missing,
            handoff,
        )
    return found


def grouped(
    found: list[Candidate],
    split: tt_config.SplitConfig,
    tables: Sequence[Path],
    labelled: set[str] = frozenset(),
) -> list[Candidate]:
    """The candidates with their near-duplicate groups, from every class's signatures,
    less those whose group a person labelled already: a near copy of a labelled image
    teaches little, and it trains in the labelled one's split anyway."""
    members = [m for table in tables for m in neardup.read_members(table)]
    wanted = [c.sha256 for c in found] + sorted(labelled)
    placed = neardup.place(members, split, split.near_duplicate_distance, wanted)

    def group(sha256: str) -> str:
        return placed[sha256].group if sha256 in placed else sha256

    taken = {group(sha256) for sha256 in labelled}
    return [
        dataclasses.replace(c, group=group(c.sha256)) for c in found if group(c.sha256) not in taken
    ]


def queue_rows(queued: Sequence[Ranked]) -> list[list]:
    rows = []
    for rank, item in enumerate(queued, 1):
        boxes = [
            {
                "name": d.name,
                "score": round(d.score, 4),
                **{k: round(getattr(d, k), 1) for k in prelabels.BOX_TAGS},
            }
            for d in item.detections
        ]
        rows.append(
            [
                rank,
                str(item.candidate.image),
                item.candidate.sha256,
                f"{item.score:.4f}",
                str(item.candidate.xml),
                json.dumps(boxes, separators=(",", ":")),
            ]
        )
    return rows


def open_command(queued: Sequence[Ranked], class_file: Path) -> str:
    """The launcher's command that opens the batch in LabelImg, saving where the stage reads."""
    saves = sorted({str(item.candidate.xml.parent) for item in queued})
    images = " ".join(shlex.quote(str(item.candidate.image)) for item in queued)
    save = f" --save-dir {shlex.quote(saves[0])}" if len(saves) == 1 else ""
    classes = shlex.quote(str(class_file))
    return f"python -m tumbletrain.label --classes {classes}{save} --images {images}"


def review_class(
    serve,
    cfg: tt_config.WorkflowConfig,
    class_name: str,
    found: list[Candidate],
    ledgers: dict[Path, dict],
    names: dict[int, str],
) -> tuple[list[Ranked], list[Ranked]]:
    """Predict, rank and batch a class's candidates; write the batch's pre-labels and
    delete the untouched ones of the candidates left out. The batch, and every image
    predicted."""
    ranked = []
    for candidate in cli.progress(found, f"{class_name} review", len(found), "images", log):
        try:
            pixels = predict.load_upright(candidate.image)
        except (fileio.FileProblem, store.RejectedImage, OSError) as problem:
            log.warning("skipping %s: %s", candidate.image, problem)
            continue
        # Every box, however unsure: the ranking reads the low scores too.
        detections = predict.detect(serve, pixels, names, 0.0)
        height, width = pixels.shape[:2]
        ranked.append(
            (
                Ranked(candidate, uncertainty(class_name, detections), tuple(detections)),
                (width, height),
            )
        )
    size_of = {r.candidate.sha256: size for r, size in ranked}
    queued = batch([r for r, _ in ranked], cfg.review.batch)
    kept = {item.candidate.xml for item in queued}
    for item in queued:
        xml = item.candidate.xml
        shown = [d for d in item.detections if d.score >= cfg.predict.min_score]
        ledger = ledger_of(ledgers, xml.parent)
        prelabels.write(
            xml,
            item.candidate.image,
            size_of[item.candidate.sha256],
            [(d.name, d.xmin, d.ymin, d.xmax, d.ymax) for d in shown],
            ledger,
        )
    for candidate in found:
        ledger = ledger_of(ledgers, candidate.xml.parent)
        if candidate.xml not in kept and candidate.xml.name in ledger:
            if prelabels.untouched(candidate.xml, ledger):
                candidate.xml.unlink(missing_ok=True)
            del ledger[candidate.xml.name]
    return queued, [r for r, _ in ranked]


def pseudo_labels(class_name: str, threshold: float, ranked: Sequence[Ranked]):
    """The pseudo-labels of the predicted images (`pseudo.py`), in the store's files."""
    items = []
    for item in ranked:
        info = annotations.read_image_info(item.candidate.image)
        boxes = [(d.name, d.score, d.xmin, d.ymin, d.xmax, d.ymax) for d in item.detections]
        image = item.candidate.stored or str(item.candidate.image)
        listed = pseudo.listed(image, item.candidate.sha256, info, class_name, threshold, boxes)
        if listed is not None:
            items.append(listed)
    return items


def main(argv: list[str] | None = None) -> int:
    parser = tt_config.command_parser(
        "review",
        "Queue each class's most uncertain unlabelled images for labelling, with the "
        "model's boxes as unverified LabelImg pre-labels.",
    )
    parser.add_argument("--model", type=Path, required=True, help="the export's saved_model/")
    parser.add_argument("--manifests", type=Path, nargs="+", required=True, help="per class")
    parser.add_argument(
        "--lists", type=Path, nargs="+", required=True, help="per class: training, verification"
    )
    parser.add_argument(
        "--labelling",
        type=Path,
        nargs="+",
        required=True,
        help=f"per class: its LabelImg folder, which holds the `label` hand-off ({label.MARKER})",
    )
    parser.add_argument("--queues", type=Path, nargs="+", required=True, help="per class")
    parser.add_argument(
        "--signatures", type=Path, nargs="*", default=[], help="every class's signature table"
    )
    parser.add_argument(
        "--pseudo",
        type=Path,
        nargs="+",
        required=True,
        help="per class: its pseudo-label list, written when the class sets pseudo_labels",
    )
    args = parser.parse_args(argv)
    cfg = tt_config.from_arguments(args, CONFIG)
    classes = cfg.class_names
    per_class = {"--manifests": 1, "--labelling": 1, "--queues": 1, "--lists": 2, "--pseudo": 1}
    for flag, count in per_class.items():
        given = getattr(args, flag[2:])
        if len(given) != count * len(classes):
            raise cli.UserError(
                f"{flag}: {len(given)} paths for {len(classes)} classes ({', '.join(classes)}); "
                f"give {count} per class, in the config's order"
            )
    fileio.clean_leftovers(*{p.parent for p in [*args.queues, *args.pseudo]}, logger=log)
    import tensorflow as tf

    serve = tf.saved_model.load(str(predict.saved_model_of(args.model))).signatures[
        "serving_default"
    ]
    # The model's own classes (a class added to the config since is not among them).
    names = modelclasses.names(modelclasses.of_export(args.model))
    ledgers: dict[Path, dict] = {}
    commands = []
    for i, name in enumerate(classes):
        if cfg.get_class(name).annotation == "whole_image":
            # Its lists are the generated boxes: a person's file would not be read.
            log.info("%s: annotation whole_image, nothing to review", name)
            fileio.write_tsv(args.queues[i], QUEUE_COLUMNS, [])
            continue
        rows = store.read_manifest(args.manifests[i])
        labelled = human_labelled(args.lists[2 * i : 2 * i + 2])
        found = candidates(rows, labelled, args.labelling[i] / label.MARKER, name, ledgers)
        found = grouped(found, cfg.split, args.signatures, labelled)
        queued, predicted = review_class(serve, cfg, name, found, ledgers, names)
        threshold = cfg.get_class(name).pseudo_labels
        if threshold is not None:
            items = pseudo_labels(name, threshold, predicted)
            pseudo.write(args.pseudo[i], items)
            log.info("%s: %d pseudo-labelled images (score >= %s)", name, len(items), threshold)
        for folder, ledger in ledgers.items():
            prelabels.write_ledger(folder, ledger)
        fileio.write_tsv(args.queues[i], QUEUE_COLUMNS, queue_rows(queued))
        log.info("%s: %d unlabelled, %d queued", name, len(found), len(queued))
        if queued:
            commands.append(
                f"{name} ({len(queued)} images): "
                + open_command(queued, args.labelling[i] / label.CLASSES_FILE)
            )
    for line in commands:
        cli.tell(line)
    return 0


if __name__ == "__main__":
    cli.run(main)
