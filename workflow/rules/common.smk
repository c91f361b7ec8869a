import functools
import hashlib
import os
import shlex
import sys
from pathlib import Path
from urllib.parse import urlparse

from snakemake.settings.types import DeploymentMethod

from tumbletrain import config as tt_config
from tumbletrain import distribute
from tumbletrain import records as tt_records
from tumbletrain import annotations, predict, prelabels, runner, sources

# The report's categories, numbered: its menu sorts them by name, and a reader
# should meet them in the order of the stages.
CATEGORY = {
    stage: f"{number}. {stage.capitalize()}"
    for number, stage in enumerate(
        ("harvest", "annotations", "records", "training", "evaluation"), 1
    )
}

# The demo rule draws a demo class's images and XML here (its annotations_dir).
DEMO_DIR = "resources/demo/{cls}"
# Validated once, here: defaults are filled into `config`, and a mistake ends
# the run with one line naming the file, line and key.
CFG = tt_config.for_snakemake(config, workflow.configfiles, demo_dir=DEMO_DIR)
CLASSES = CFG.class_names
# Settings that run but cannot learn: said before any job, in dry runs too.
for warning in tt_config.warnings(CFG):
    print(f"WARNING: {warning}", file=sys.stderr, flush=True)
SPLITS = list(tt_config.SPLITS)
# The content-addressed store every class's harvest adds to: no one rule's
# output, so the rules pass it as a path.
IMAGE_STORE = "resources/images"
RUN = CFG.train.run


def use_snakemakes_python():
    """Let the rules' `python` be the interpreter running Snakemake.

    Without --software-deployment-method conda, the stage commands run with
    the same environment as Snakemake itself, so a venv works whether or not
    it is activated (on cluster nodes too, when it lives on a shared file
    system). With conda, each rule's environment provides `python`.
    """
    if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
        bindir = shlex.quote(str(Path(sys.executable).parent))
        shell.prefix(f'set -euo pipefail; export PATH={bindir}:"$PATH"; ')


use_snakemakes_python()


wildcard_constraints:
    cls="|".join(CLASSES),
    split="|".join(SPLITS),
    run=RUN,


def stage_json(stage, cls=None):
    """The stage's part of the config, quoted for the shell.

    Passed as a param, so Snakemake re-runs a rule when (and only when) the
    part of the config it reads changes.
    """
    return shlex.quote(tt_config.stage_json(config, stage, cls))


def output_folder(key=0):
    """A param: the folder of one of the rule's outputs, for what the command keeps
    there undeclared (a run's model directory, the checkpoint's download, the LabelImg
    folder the hand-off file marks): a renamed output moves it along."""

    def folder(wildcards, output):
        return Path(output[key]).parent

    return folder


def class_config(cls):
    return CFG.get_class(cls)


def demo_classes():
    return [c.name for c in CFG.classes if c.demo is not None]


def annotations_dir(cls):
    return class_config(cls).annotations_dir


@functools.cache
def scanned(folders):
    """`annotations.scan` of the folders that exist: (annotation files, images), once per run."""
    files, images = set(), set()
    for folder in map(Path, folders):
        if folder.expanduser().is_dir():
            # Regular files only: a broken link would stop Snakemake, a FIFO hang it;
            # the stages skip those with a reason.
            found, pictures, _ = annotations.scan(folder.expanduser())
            files.update(found)
            images.update(pictures)
    return sorted(files), sorted(images)


def files_state(files):
    """A digest of the files' paths, sizes and modification times.

    A rule takes it as a param, so Snakemake's params trigger re-runs the rule
    when one of the files is added, changed or removed. Listing 50,000 files
    as inputs instead cost every `snakemake -n` 6 s more; this is a stat each.
    """
    digest = hashlib.sha256()
    for path in files:
        stat = os.stat(path)
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def annotation_state(wildcards):
    """The class's annotation files and the images beside them."""
    cls = class_config(wildcards.cls)
    if cls.demo is not None:
        return ""
    files, images = scanned(sources.annotation_folders(cls))
    # Review's untouched pre-labels are no labels: writing them re-runs nothing.
    files = [f for f in files if not prelabels.untouched(f)]
    return files_state(files + images)


# Where `review` writes a class's pseudo-labels for its next annotations run.
PSEUDO_LIST = "resources/pseudo/{cls}.tsv"


def pseudo_state(wildcards):
    """The class's pseudo-label list, when the class uses one (`pseudo_labels`)."""
    path = Path(PSEUDO_LIST.format(cls=wildcards.cls))
    if class_config(wildcards.cls).pseudo_labels is None or not path.is_file():
        return ""
    return files_state([str(path)])


def image_state(wildcards):
    """The images of the folders a class is harvested from; a change re-harvests the
    class (and, when its manifest changes, rebuilds what follows)."""
    return files_state(scanned(sources.image_folders(class_config(wildcards.cls)))[1])


def predict_inputs():
    """The images `predict.input` names: adding, changing or removing one re-runs predict."""
    given = config["predict"]["input"]
    if not given or not Path(given).expanduser().exists():
        return []
    images, _ = predict.collect_images([Path(given).expanduser()])
    return [str(path) for path, _ in images]


def signature_tables(wildcards):
    """Every class's signatures: near-duplicate groups span classes.

    Another class's new images do not re-run this class: they are younger than
    this class's images, so they join its groups' splits without moving them
    (docs/your-labels.md, "Near-duplicates and splits"). Only this class's own table is a
    timestamped input; the others are read as they are when the job runs.
    """
    if not config["split"]["group_near_duplicates"]:
        return []
    return [
        path if cls == wildcards.cls else ancient(path)
        for cls in CLASSES
        for path in [f"results/signatures/{cls}.tsv"]
    ]


def demo_input(wildcards):
    cls = class_config(wildcards.cls)
    return [DEMO_DIR.format(cls=cls.name)] if cls.demo is not None else []


def record_outputs():
    """The records rule's outputs as patterns: one file, or `records.shards` shards."""
    return record_files("{cls}", "{split}")


def record_files(cls, split):
    """The record files of a class and split: one, or `records.shards` shards."""
    base = Path(f"results/records/{cls}_{split}.tfrecord")
    return [str(p) for p in tt_records.shard_paths(base, CFG.records.shards)]


def training_records():
    return [f for cls in CLASSES for f in record_files(cls, "training")]


def verification_records():
    return [f for cls in CLASSES for f in record_files(cls, "verification")]


def checkpoint_input():
    """The extracted checkpoint, or nothing when training from scratch."""
    if CFG.model.checkpoint is None:
        return []
    return [f"resources/checkpoints/{checkpoint_name()}/checkpoint.json"]


def checkpoint_name():
    return Path(urlparse(CFG.model.checkpoint.url).path).name.split(".")[0]


def gpu_resources():
    """GPUs for the TensorFlow rules, only when the config asks for them."""
    gpus = config["train"]["gpus"]
    return {"gpu": gpus} if gpus > 0 else {}


# Where the Snakemake report goes (`snakemake --report` is given this path).
REPORT_HTML = runner.REPORT_HTML
# The run's --configfile files as the user typed them (Snakemake makes them
# absolute): the report command the account prints must name them.
CONFIGFILES = (
    [os.path.relpath(f) for f in workflow.overwrite_configfiles]
    if workflow.overwrite_configfiles
    else []
)


def data_report_inputs():
    """What the data report and the summary read of every class, in class order."""
    return {
        "summaries": expand("results/lists/{cls}/summary.json", cls=CLASSES),
        "manifests": expand("resources/manifests/{cls}.tsv", cls=CLASSES),
        "skipped": expand("resources/manifests/{cls}.skipped.tsv", cls=CLASSES),
    }


def run_outputs():
    """The files of the configured run the summary reads."""
    return {
        "metrics": f"results/eval/{RUN}/metrics.json",
        "final": f"results/train/{RUN}/final.json",
        "export": f"results/export/{RUN}/export.json",
    }


def data_report_figures():
    """The Harvest, Annotations and Records categories: nothing needs a model."""
    return [
        "results/report/class_counts.png",
        "results/report/validation.png",
        "results/report/rejected.tsv",
    ] + expand("results/report/samples_{cls}.png", cls=CLASSES)


def report_figures():
    """Every figure the Snakemake report shows."""
    return data_report_figures() + [
        f"results/report/training_{RUN}.png",
        f"results/report/ap_per_class_{RUN}.png",
        f"results/report/metrics_{RUN}.tsv",
    ]


def all_targets():
    targets = expand("results/lists/{cls}/summary.json", cls=CLASSES)
    targets += training_records() + verification_records()
    targets += ["results/label_map.pbtxt", "results/label_map.csv"]
    targets += [
        f"results/train/{RUN}/final.json",
        f"results/eval/{RUN}/metrics.json",
        f"results/export/{RUN}/export.json",
        "results/summary.md",
    ]
    return targets


# What the last account saw, for the next one's "this run: ..." lines.
ACCOUNT_STATE = "results/account.json"


def predicting_only():
    """True when the run's targets are the pre-labels alone (`tumbletrain predict`)."""
    targets = set(workflow.dag_settings.targets)
    return bool(targets) and all(
        t == "prediction" or t.startswith("results/predict/") for t in targets
    )


def print_prediction():
    """A predict run's account: the prediction's own summary line (its log's last)."""
    log = Path(expand(rules.predict.log[0], run=RUN)[0])
    said = [
        line.split(": ", 1)[1]
        for line in (log.read_text().splitlines() if log.exists() else [])
        if " INFO tumbletrain.predict: " in line
    ]
    outputs = Path(expand(rules.predict.output.detections, run=RUN)[0]).parent
    summary = said[-1] if said else f"see {log}"
    print(f"\npredict with run {RUN}: {summary}\nin {outputs}/", flush=True)


def print_account():
    """What the run made, on the terminal: the text that ends results/summary.md.

    A run that only made the data gets the data's part; a predict run, the
    prediction's.
    """
    if predicting_only():
        print_prediction()
        return
    from tumbletrain import cli
    from tumbletrain import report as tt_report

    data = data_report_inputs()
    classes = tt_report.class_files(CLASSES, data["summaries"])
    run = run_outputs()
    try:
        text = tt_report.account_with_changes(
            ACCOUNT_STATE, classes, run["final"], run["export"], RUN
        )
        text += tt_report.account(
            classes, run["metrics"], run["export"], RUN, REPORT_HTML, CONFIGFILES
        )
    except cli.UserError as error:  # a damaged JSON must not fail a finished run
        text = f"WARNING: no account of this run: {error}\n"
    print(f"\n{text}", end="", flush=True)


def print_killed(snakemake_logs):
    """A job the kernel killed (out of memory) says so in one line, on the terminal
    and at the end of its log, instead of Snakemake's "non-zero exit code" alone."""
    from tumbletrain import report as tt_report

    for line in tt_report.report_killed(snakemake_logs):
        print(line, file=sys.stderr, flush=True)


def making_report():
    """True while `snakemake --report` (without --report-after-run) makes a report.

    Snakemake tells a Snakefile nothing about it; its command line does.
    """
    args = sys.argv[1:]
    asked = any(a == "--report" or a.startswith("--report=") for a in args)
    return asked and "--report-after-run" not in args


def reportable(targets):
    """The targets; while a report is made, only those (and figures) that exist.

    The report shows every file marked report() in the targets' jobs and
    fails on a missing one: before training, `snakemake --report` would fail
    on the evaluation's figures. It shows what the run has made so far.
    """
    if not making_report():
        return targets
    return [t for t in [*targets, *report_figures()] if Path(t).exists()]
