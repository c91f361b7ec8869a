"""The report's figures, tables and summary, from small files in the stages' formats."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CONFIG, snakemake, write_project
from PIL import Image
from report_screenshots import CATEGORIES
from tumbletrain import cli, config, fileio, lists, plots, report, store

CONFIG = {"classes": {"cat": {"demo": {"images": 4}}, "dog": {"demo": {"images": 4}}}}
CONFIG_JSON = json.dumps(CONFIG)

SUMMARY = {
    "class": "cat",
    "xml_files": 5,
    "kept": 3,
    "repaired": 1,
    "rejected_files": 2,
    "objects_kept": 4,
    "unlabelled_images": 1,
    "per_split": {"training": 2, "verification": 1},
    "rejected_by_reason": {"not_xml": 1, "unknown_class": 1},
    "repairs_by_kind": {"box_clipped": 1},
    "image_found_by": {"path": 3},
}

METRICS = {
    "checkpoint": "results/train/r1/ckpt-4",
    "images": 3,
    "objects": 4,
    "detections": 9,
    "AP": 0.4321,
    "AP50": 0.75,
    "AP75": 0.5,
    "APs": -1.0,
    "APm": 0.3,
    "APl": None,
    "AP_per_class": {"cat": 0.6, "dog": -1.0},
    "AP50_per_class": {"cat": 0.9, "dog": -1.0},
}


def run_report(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tumbletrain.report", "--config-json", CONFIG_JSON, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def class_files(root: Path, names=("cat", "dog")) -> list[report.ClassFiles]:
    """The classes' files as the workflow lays them out under `root`."""
    return report.class_files(
        list(names),
        [root / "results" / "lists" / n / "summary.json" for n in names],
        [root / "resources" / "manifests" / f"{n}.tsv" for n in names],
        [root / "resources" / "manifests" / f"{n}.skipped.tsv" for n in names],
    )


def class_args(names=("cat", "dog")) -> list[str]:
    """The data report's and the summary's inputs, as the rules pass them."""
    files = class_files(Path("."), names)
    return [
        "--summaries",
        *(str(f.lists / "summary.json") for f in files),
        "--manifests",
        *(str(f.manifest) for f in files),
        "--skipped",
        *(str(f.skipped) for f in files),
    ]


OUT = "results/report"
DATA_ARGS = [
    *class_args(),
    *("--counts", f"{OUT}/class_counts.png", "--validation", f"{OUT}/validation.png"),
    *("--rejected", f"{OUT}/rejected.tsv", "--rejected-html", f"{OUT}/rejected.html"),
    *("--near-duplicates", f"{OUT}/near_duplicates.png"),
]
RUN_FILES = {
    "metrics": Path("results/eval/r1/metrics.json"),
    "final": Path("results/train/r1/final.json"),
    "export": Path("results/export/r1/export.json"),
}


def colours(path: Path) -> int:
    """Distinct colours of a PNG: a blank figure has one or two."""
    with Image.open(path) as image:
        return len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0))


def has_colour(path: Path, rgb: tuple[int, int, int], tolerance: int = 40) -> bool:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    return bool((np.abs(pixels - np.array(rgb)).max(axis=-1) <= tolerance).any())


def jpeg(path: Path, size=(80, 60)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (30, 60, 200)).save(path, "JPEG")
    return path


@pytest.fixture
def project(tmp_path) -> Path:
    """A results folder in the stages' formats: harvest, validation, lists."""
    manifests = tmp_path / "resources" / "manifests"
    images = []
    for i in range(4):
        path = jpeg(tmp_path / "resources" / "images" / f"cat{i}.jpg")
        images.append(store.ManifestRow(f"{i:064x}", str(path), "folder", width=80, height=60))
    store.write_manifest(manifests / "cat.tsv", images)
    store.write_skipped(
        manifests / "cat.skipped.tsv",
        [
            ("https://x/1.gif", "tumblr", "unsupported_format", "GIF images are not accepted"),
            ("https://x/2", "tumblr", "html_not_image", "an HTML page was served instead"),
            ("https://x/3", "tumblr", "html_not_image", "an HTML page was served instead"),
        ],
    )
    store.write_manifest(manifests / "dog.tsv", images[:1])
    cat = tmp_path / "results" / "lists" / "cat"
    fileio.write_json(cat / "summary.json", SUMMARY)
    fileio.write_tsv(
        cat / "rejected.tsv",
        ("file", "object", "reason", "message"),
        [
            ["data/cat/broken.xml", "", "not_xml", "the file is not well-formed XML"],
            ["data/cat/a.xml", "2", "unknown_class", "the object's class is not configured"],
        ],
    )
    lists.write_list(
        cat / "training.tsv",
        [
            lists.ListedImage(
                image=row.file,
                sha256=row.sha256,
                format="jpeg",
                width=80,
                height=60,
                objects=(lists.ListedObject("cat", 10, 10, 60, 50),),
            )
            for row in images[:2]
        ],
    )
    # dog: validation has not run; the report draws what there is.
    return tmp_path


def test_class_counts_split_skipped_images_by_reason(project):
    counts = report.class_counts(class_files(project))
    assert counts.loc["cat"].to_dict() == {
        "harvested": 4,
        "skipped: html_not_image": 2,
        "skipped: unsupported_format": 1,
        "unlabelled": 1,
        "rejected": 2,
        "training": 2,
        "verification": 1,
    }
    assert counts.loc["dog"].to_dict() == {
        "harvested": 1,
        "skipped: html_not_image": 0,
        "skipped: unsupported_format": 0,
        "unlabelled": 0,
        "rejected": 0,
        "training": 0,
        "verification": 0,
    }


def test_validation_table_has_repairs_and_rejections_by_reason(project):
    table = report.validation_table(class_files(project))
    assert table.loc["cat", "rejected: unknown_class"] == 1
    assert table.loc["cat", "repaired: box_clipped"] == 1
    assert table.loc["dog"].sum() == 0


def test_data_command_draws_counts_validation_and_rejected_table(project, tool_env):
    result = run_report("data", *DATA_ARGS, cwd=project, env=tool_env)
    assert result.returncode == 0, result.stderr[-3000:]
    out = project / "results" / "report"
    for png in ("class_counts.png", "validation.png"):
        assert colours(out / png) > 20, f"{png} looks blank"
    assert (out / "near_duplicates.png").is_file()
    rows = fileio.read_tsv(out / "rejected.tsv")
    assert [(r["class"], r["reason"]) for r in rows] == [
        ("cat", "not_xml"),
        ("cat", "unknown_class"),
    ]
    page = (out / "rejected.html").read_text()
    assert "<table" in page and "data/cat/broken.xml" in page and "unknown_class" in page
    assert "the object&#39;s class is not configured" in page or "object's class" in page


def test_nothing_rejected_says_so(tmp_path, tool_env):
    result = run_report("data", *DATA_ARGS, cwd=tmp_path, env=tool_env)
    assert result.returncode == 0, result.stderr[-3000:]
    page = (tmp_path / "results" / "report" / "rejected.html").read_text()
    assert "No XML file or object was rejected." in page
    assert fileio.read_tsv(tmp_path / "results" / "report" / "rejected.tsv") == []


SAMPLES_ARGS = ["--list", "results/lists/cat/training.tsv", "--output", f"{OUT}/samples_cat.png"]


def test_samples_draw_the_boxes(project, tool_env):
    result = run_report("samples", "--class", "cat", *SAMPLES_ARGS, cwd=project, env=tool_env)
    assert result.returncode == 0, result.stderr[-3000:]
    png = project / "results" / "report" / "samples_cat.png"
    # The image is blue; the box and its label are yellow.
    assert has_colour(png, (30, 60, 200))
    assert has_colour(png, (255, 255, 0), tolerance=10)


def test_samples_survive_a_deleted_image(project):
    (project / "resources" / "images" / "cat0.jpg").unlink()
    png = project / "out.png"
    items = lists.read_list(project / "results" / "lists" / "cat" / "training.tsv")
    plots.plot_samples(items, "cat", png)
    assert has_colour(png, (30, 60, 200))


def test_samples_of_an_unknown_class_is_a_user_error(project, tool_env):
    result = run_report("samples", "--class", "cow", *SAMPLES_ARGS, cwd=project, env=tool_env)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ERROR: class 'cow' is not in the config (cat, dog)")


def write_events(logdir: Path, series: dict[str, list[tuple[int, float]]]) -> None:
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        for tag, points in series.items():
            for step, value in points:
                tf.summary.scalar(tag, value, step=step)
    writer.close()


def test_training_curves_from_event_files(tmp_path):
    run = tmp_path / "results" / "train" / "r1"
    steps = range(0, 40, 4)
    write_events(
        run / "train",
        {
            "total_loss": [(s, 3.0 / (1 + s)) for s in steps],
            "cls_loss": [(s, 2.0 / (1 + s)) for s in steps],
            "box_loss": [(s, 0.5 / (1 + s)) for s in steps],
            "l2_regularization_loss": [(s, 0.1) for s in steps],
            "learning_rate": [(s, min(1.0, s / 8) * 0.01) for s in steps],
        },
    )
    write_events(run / "validation", {"AP": [(20, 0.1), (36, 0.3)], "AP50": [(20, 0.2)]})
    png = tmp_path / "training.png"
    drawn = plots.plot_training(*report.training_series(run), png)
    assert drawn == {
        "loss": ["total_loss", "cls_loss", "box_loss", "l2_regularization_loss"],
        "learning_rate": ["learning_rate"],
        "validation": ["AP", "AP50"],
    }
    assert colours(png) > 20


def test_training_without_event_files_still_draws(tmp_path):
    png = tmp_path / "training.png"
    drawn = plots.plot_training(*report.training_series(tmp_path / "nothing"), png)
    assert drawn == {"loss": [], "learning_rate": [], "validation": []}
    assert png.exists()


def test_metrics_table_shows_missing_and_undefined_as_dash():
    table = dict(report.metrics_table(METRICS).itertuples(index=False))
    assert table["AP"] == "0.432"
    assert table["APs"] == "-"  # COCO's -1: no small objects
    assert table["APl"] == "-"  # missing
    assert table["ARmax100"] == "-"
    assert table["detections"] == "9"
    assert table["AP cat"] == "0.600"
    assert table["AP dog"] == "-"
    assert table["AP50 cat"] == "0.900"


def test_evaluation_command_writes_table_and_chart(tmp_path, tool_env):
    fileio.write_json(tmp_path / "results" / "eval" / "r1" / "metrics.json", METRICS)
    outputs = ["--ap", f"{OUT}/ap_per_class_r1.png", "--table", f"{OUT}/metrics_r1.tsv"]
    outputs += ["--table-html", f"{OUT}/metrics_r1.html"]
    result = run_report(
        "evaluation",
        "--run",
        "r1",
        "--metrics",
        str(RUN_FILES["metrics"]),
        *outputs,
        cwd=tmp_path,
        env=tool_env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "results" / "report"
    assert colours(out / "ap_per_class_r1.png") > 20
    assert "0.432" in (out / "metrics_r1.html").read_text()
    assert {"metric": "AP cat", "value": "0.600"} in fileio.read_tsv(out / "metrics_r1.tsv")


def test_evaluation_readers_tolerate_an_empty_metrics_file(tmp_path):
    plots.plot_ap_per_class(report.per_class_ap({}), {}, report.ap_title({}), tmp_path / "ap.png")
    assert (tmp_path / "ap.png").exists()
    assert set(report.metrics_table({})["value"]) == {"-"}


def test_a_corrupt_json_is_a_user_error(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"AP": 0.')
    with pytest.raises(cli.UserError, match="metrics.json is not valid JSON.*re-run"):
        report.read_json(path)


def test_summary_names_classes_counts_metrics_and_the_model(project, tool_env, monkeypatch):
    results = project / "results"
    fileio.write_json(results / "eval" / "r1" / "metrics.json", METRICS)
    fileio.write_json(
        results / "train" / "r1" / "final.json",
        {"step": 40, "checkpoint": "results/train/r1/ckpt-40", "init_checkpoint": None},
    )
    fileio.write_json(results / "export" / "r1" / "export.json", EXPORT)
    inputs = [f"--{k}={v}" for k, v in RUN_FILES.items()] + class_args()
    outputs = ["--report-html", "results/report.html", "--output", "results/summary.md"]
    result = run_report("summary", "--run", "r1", *inputs, *outputs, cwd=project, env=tool_env)
    assert result.returncode == 0, result.stderr[-3000:]
    text = (results / "summary.md").read_text()
    assert "(cat, dog)" in text
    assert "| cat " in text and "| dog " in text
    assert "trained 40 steps from scratch" in text
    assert "AP 0.432, AP50 0.750" in text
    assert "cat 0.600, dog -" in text
    assert "`results/export/r1/saved_model`" in text
    assert "model.tflite` (2.5 MB)" in text
    monkeypatch.chdir(project)  # where the command ran
    account = report.account(
        class_files(Path(".")),
        RUN_FILES["metrics"],
        RUN_FILES["export"],
        "r1",
        "results/report.html",
    )
    assert text.endswith(f"## This run\n\n```text\n{account}```\n")


def test_summary_before_evaluation_and_export(project):
    cfg, files = config.parse(CONFIG), class_files(project)
    run = {k: project / v for k, v in RUN_FILES.items()}
    text = report.summary_markdown(cfg, files, run["metrics"], run["final"], run["export"], "r1")
    assert "trained ? steps" in text
    assert "Verification" not in text and "Exported" not in text
    account = report.account(files, run["metrics"], run["export"], "r1")
    assert text.endswith(f"```text\n{account}```\n")


EXPORT = {
    "saved_model": "results/export/r1/saved_model",
    "tflite": {"float": {"path": "results/export/r1/model.tflite", "bytes": 2_500_000}},
}


def test_account_of_a_run(project):
    """What the terminal shows at the end of a run (Snakemake's onsuccess)."""
    results = project / "results"
    fileio.write_json(results / "eval" / "r1" / "metrics.json", METRICS)
    fileio.write_json(results / "export" / "r1" / "export.json", EXPORT)
    run = {k: project / v for k, v in RUN_FILES.items()}
    text = report.account(
        class_files(project), run["metrics"], run["export"], "r1", "results/report.html"
    )
    rejected = results / "lists" / "cat" / "rejected.tsv"
    assert text.splitlines() == [
        "cat: 5 annotation files: 3 kept (1 repaired), 2 rejected; 2 training, "
        "1 verification images; "
        f"1 image without XML; why: {rejected}",
        "verification of run r1: AP50 0.750, AP 0.432 on 3 images",
        "  cat: AP50 0.900, AP 0.600",
        "  dog: AP50 -, AP -",
        "exported models: results/export/r1/saved_model, results/export/r1/model.tflite",
        "report: snakemake --report results/report.html writes it",
        f"WARNING: cat: 2 of 5 annotation files rejected (40%); the reasons are in {rejected}",
        "WARNING: cat: 2 training images (under 10): too few to learn the class well; add images",
        "WARNING: cat: 1 verification image (under 10): its AP is noise; "
        "add images or raise split.verification_percent",
    ]


def test_account_counts_near_duplicates_and_warns_of_straddling_groups(tmp_path):
    summary = {"xml_files": 40, "kept": 40, "rejected_files": 0, "repaired": 0}
    summary["per_split"] = {"training": 30, "verification": 10}
    summary["near_duplicates"] = {
        "groups": 3,
        "images_in_groups": 7,
        "user_split_straddles": ["0123456789ab"],
    }
    fileio.write_json(tmp_path / "results" / "lists" / "cat" / "summary.json", summary)
    run = {k: tmp_path / v for k, v in RUN_FILES.items()}
    lines = report.account(class_files(tmp_path), run["metrics"], run["export"], "r1").splitlines()
    assert lines[0] == (
        "cat: 40 annotation files: 40 kept (0 repaired), 0 rejected; 30 training, 10 verification "
        "images; 3 near-duplicate groups of 7 images, each in one split"
    )
    assert lines[-1] == (
        "WARNING: cat: 1 near-duplicate group straddle your training/ and verification/ "
        "folders (kept as they are; see near_duplicates in "
        f"{tmp_path / 'results' / 'lists' / 'cat'}"
        "/summary.json)"
    )


def test_account_warns_of_a_class_without_verification_images(tmp_path):
    summary = {"xml_files": 40, "kept": 38, "rejected_files": 2, "repaired": 0}
    summary["per_split"] = {"training": 38, "verification": 0}
    fileio.write_json(tmp_path / "results" / "lists" / "cat" / "summary.json", summary)
    run = {k: tmp_path / v for k, v in RUN_FILES.items()}
    text = report.account(
        class_files(tmp_path), run["metrics"], run["export"], "r1", "results/report.html"
    )
    assert text.splitlines() == [
        "cat: 40 annotation files: 38 kept (0 repaired), 2 rejected; 38 training, "
        "0 verification images",
        "report: snakemake --report results/report.html writes it",
        "WARNING: cat: no verification image, so its AP cannot be measured; "
        "add images or raise split.verification_percent",
    ]


def browser_or_skip() -> None:
    from report_screenshots import chromium

    if chromium() is None:
        pytest.skip(
            "needs Debian's chromium: apt-get is unavailable or not root here; "
            "run `apt-get install chromium` as root"
        )


def check_category_screenshots(report_html: Path, categories: list[str], outdir: Path) -> None:
    from report_screenshots import category_screenshots, shown_title

    pngs = category_screenshots(report_html, outdir, categories)
    assert sorted(pngs) == sorted(categories)
    for category, png in pngs.items():
        # A blank page is one colour; a category has its menu and a picture or table.
        assert colours(png) > 20, f"{category} looks blank"
        assert shown_title(report_html, category).startswith(f"showing {category}: results/")
    pictures = [np.asarray(Image.open(p).convert("RGB")) for p in pngs.values()]
    assert all(not np.array_equal(pictures[0], p) for p in pictures[1:]), "same page shown twice"


# docs/your-labels.md's one command for the data report: no model is trained.
DATA_REPORT = ("data_report", "--report", "results/data_report.html", "--report-after-run")


@pytest.fixture(scope="module")
def data_report_run(tmp_path_factory, tool_env):
    """The tiny project's data report, made with the documented command."""
    project = tmp_path_factory.mktemp("data_report")
    write_project(project, TINY_CONFIG)
    result = snakemake(project, tool_env, *DATA_REPORT)
    assert result.returncode == 0, result.stderr[-3000:]
    return project, result


@pytest.mark.slow
def test_the_data_report_needs_no_model(data_report_run):
    project, _ = data_report_run
    html = (project / "results" / "data_report.html").read_text(errors="replace")
    for figure in ("class_counts.png", "validation.png", "rejected.html", "samples_circle.png"):
        assert figure in html, figure
    assert not (project / "results" / "train").exists(), "the data report trained a model"


@pytest.mark.slow
def test_a_report_before_training_shows_what_exists(data_report_run, tool_env):
    """`snakemake --report` before training: no failure on the evaluation's figures."""
    project, _ = data_report_run
    result = snakemake(project, tool_env, "--report", "results/report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    html = (project / "results" / "report.html").read_text(errors="replace")
    assert "class_counts.png" in html and "samples_square.png" in html
    assert "pr_curves.png" not in html and "training_tiny.png" not in html


@pytest.mark.slow
def test_the_terminal_shows_progress_lines_and_the_account_only(data_report_run, monkeypatch):
    """Jobs' progress lines reach Snakemake's terminal; nothing else of theirs does."""
    project, result = data_report_run
    monkeypatch.chdir(project)
    files = class_files(Path("."), list(config.parse(TINY_CONFIG).class_names))
    run = {k: Path(str(v).replace("r1", "tiny")) for k, v in RUN_FILES.items()}
    account = report.account(files, run["metrics"], run["export"], "tiny", "results/report.html")
    lines = result.stdout.splitlines()
    progress = lines[: lines.index("")]
    assert lines[len(progress) :] == ["", "this run: the first run here", *account.splitlines()]
    # One closing line per long job; a line per 10 s besides, which these jobs are too short for.
    closing = re.compile(
        r"(annotations (\w+): \2 XML: 8/8 files|neardup (\w+): signatures: 8/8 images)"
        r" in [0-9.]+ s \([0-9.]+ ((files|images)/s|s each)\)"
    )
    assert all(closing.fullmatch(line) for line in progress), progress
    jobs = sorted(line.split(":")[0] for line in progress)
    classes = TINY_CONFIG["classes"]
    assert jobs == [f"{stage} {cls}" for stage in ("annotations", "neardup") for cls in classes]


@pytest.mark.slow
def test_data_categories_render_in_a_real_browser(data_report_run, tmp_path):
    """Harvest, Annotations and Records of a real run, without training a model."""
    project, _ = data_report_run
    browser_or_skip()
    check_category_screenshots(
        project / "results" / "data_report.html", list(CATEGORIES[:3]), tmp_path
    )


@pytest.mark.slow
def test_every_category_renders_in_a_real_browser(tiny_run, tool_env, tmp_path):
    project, _ = tiny_run
    report_html = tmp_path / "report.html"
    result = snakemake(project, tool_env, "--report", str(report_html))
    assert result.returncode == 0, result.stderr[-3000:]
    browser_or_skip()
    check_category_screenshots(report_html, list(CATEGORIES), tmp_path)


def test_near_duplicate_groups_are_drawn_once_across_classes(tmp_path):
    lists_dir = tmp_path / "lists"
    images = []
    for i, colour in enumerate(((200, 30, 30), (30, 200, 30))):
        path = tmp_path / f"copy{i}.png"
        Image.new("RGB", (40, 30), colour).save(path)
        images.append(str(path))
    group = {"group": "abc", "size": 2, "split": "training"}
    for name, image, moved in (("cat", images[0], 1), ("dog", images[1], 0)):
        near = {
            "groups": 1,
            "images_in_groups": 1,
            "moved_from_content_split": {"training": moved, "verification": 0},
            "largest": [{**group, "images": [image]}],
        }
        fileio.write_json(lists_dir / name / "summary.json", {**SUMMARY, "near_duplicates": near})
    files = report.class_files(
        ["cat", "dog"], [lists_dir / n / "summary.json" for n in ["cat", "dog"]]
    )
    groups = report.near_duplicate_groups(files, 6)
    assert len(groups) == 1 and groups[0]["classes"] == ["cat", "dog"]
    assert sorted(groups[0]["images"]) == images
    assert report.moved_counts(files) == {"training": 1, "verification": 0}
    plots.plot_near_duplicates(groups, report.moved_counts(files), tmp_path / "near.png")
    assert colours(tmp_path / "near.png") > 20
    summary = report.read_json(lists_dir / "cat" / "summary.json")
    line, _ = report.class_lines(files[0], summary)
    assert "1 near-duplicate group of 1 images" in line


def test_account_names_the_configfile_and_says_when_nothing_was_detected(tmp_path):
    """The report command works as printed after a --configfile run; AP 0 with no
    detection says what to change (a too-short training from scratch, issue #30)."""
    fileio.write_json(
        tmp_path / "results" / "eval" / "r1" / "metrics.json",
        {
            "AP": 0.0,
            "AP50": 0.0,
            "images": 20,
            "detections": 0,
        },
    )
    run = {k: tmp_path / v for k, v in RUN_FILES.items()}
    text = report.account(
        [], run["metrics"], run["export"], "r1", "results/report.html", ["mine.yaml"]
    )
    assert text.splitlines() == [
        "verification of run r1: AP50 0.000, AP 0.000 on 20 images",
        "report: snakemake --report results/report.html --configfile mine.yaml writes it",
        "WARNING: run r1 detected nothing on the verification images (AP 0): the model has not "
        "learnt yet; raise train.steps (from scratch, at config/own.example.yaml's size, 300 "
        "steps found nothing and 600 did) or fine-tune the COCO checkpoint (docs/training.md)",
    ]


def test_the_account_starts_with_what_changed_since_the_last_run(tmp_path):
    """Images added and removed per class, classes added and removed, how training
    started and what was exported, against the state the previous account saved."""
    before = {
        "classes": {"cup": {"images": ["a", "b", "c"], "boxes": "1"}, "old": {"images": []}},
        "model": {"fingerprint": "f1", "step": 600, "checkpoint": "ckpt-600", "start": {}},
        "export": "e1",
    }
    now = {
        "classes": {
            "cup": {"images": ["b", "c", "d", "e"], "boxes": "2"},
            "plate": {"images": ["x"], "boxes": "3"},
        },
        "model": {
            "fingerprint": "f2",
            "step": 150,
            "checkpoint": "best/best_ckpt-1",
            "start": {"source": "previous", "checkpoint": "history/0001/ckpt-600", "steps": 150},
        },
        "export": "e2",
    }
    export = tmp_path / "results" / "export" / "own" / "export.json"
    assert report.what_changed(before, now, "own", export) == [
        "cup: +2, -1 images since the last run (4 now)",
        "plate: 1 image (new class)",
        "old: class removed",
        "training of run own: warm-started from history/0001/ckpt-600 (the last run's model), "
        "150 steps",
        f"exported again: {export.parent}",
    ]
    same = {**now, "classes": {"cup": now["classes"]["cup"]}}
    boxes = {"cup": {**now["classes"]["cup"], "boxes": "9"}}
    assert report.what_changed(same, {**same, "classes": boxes}, "own", export) == [
        "cup: boxes edited, the same 4 images",
        "training of run own: nothing changed, not re-run",
    ]


def test_a_shared_folder_s_class_is_counted_by_its_objects(tmp_path):
    """Images with cups and balls are listed once, under cup; ball's line counts the
    images holding its objects instead of '0 training images ... add images'."""
    from tumbletrain import lists
    from tumbletrain.vocxml import VocObject

    def image(n, *names):
        objects = tuple(VocObject(name, 1, 1, 9, 9) for name in names)
        return lists.ListedImage(f"i{n}.jpg", f"{n:064x}", "jpeg", 10, 10, objects=objects)

    lists_dir = tmp_path / "results" / "lists"
    cup = [image(i, "cup", "ball", "ball") for i in range(12)]
    lists.write_list(lists_dir / "cup" / "training.tsv", cup)
    lists.write_list(lists_dir / "cup" / "verification.tsv", [image(99, "cup", "ball")])
    for name in ("ball",):
        for split in ("training", "verification"):
            lists.write_list(lists_dir / name / f"{split}.tsv", [])
    shared = {"with": ["cup"], "listed_by_other_classes": {"cup": 13}}
    fileio.write_json(
        lists_dir / "ball" / "summary.json",
        {
            "xml_files": 13,
            "kept": 0,
            "rejected_files": 0,
            "per_split": {},
            "shared_folders": shared,
        },
    )
    classes = report.class_files(
        ["cup", "ball"], [lists_dir / c / "summary.json" for c in ("cup", "ball")]
    )
    text = report.account(classes, tmp_path / "m.json", tmp_path / "e.json", "r1")
    assert text.splitlines()[0] == (
        "ball: 13 annotation files: 0 kept (0 repaired), 0 rejected; 12 training, "
        "1 verification images holding its 25 objects (a shared folder: counted by objects)"
    )
    assert not any("ball: 0 training" in line for line in text.splitlines())
