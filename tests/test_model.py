"""Training, checkpoints, evaluation, export and predict, for real on tiny configs."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY_CONFIG
from tumbletrain import (
    annotations,
    cli,
    config,
    demo,
    experiment,
    export,
    records,
)

TINY_MODEL = TINY_CONFIG["model"]
# A user's own classes, not the demo's: the model must carry these names to every reader.
TINY_CLASSES = ("apple", "book")
TINY_TRAIN = {
    "run": "tiny",
    "steps": 6,
    "batch_size": 4,
    "warmup_steps": 1,
    "checkpoint_every": 3,
    "eval_every": 6,
    "learning_rate": 0.01,
}
# An untrained tiny model scores every box near its prior; with no score
# threshold both the SavedModel and the TFLite models still return boxes, so
# the two can be compared.
NO_SCORE_THRESHOLD = {
    "detection_generator": {
        "pre_nms_score_threshold": 0.0,
        "tflite_post_processing": {"nms_score_threshold": 0.0},
    }
}


def tiny_raw(**sections) -> dict:
    raw = {
        "classes": {name: {"demo": {"images": 10}} for name in TINY_CLASSES},
        "demo": {"seed": 1, "min_side": 96, "max_side": 128, "max_objects": 2},
        "split": {"verification_percent": 30},
        "model": json.loads(json.dumps(TINY_MODEL)),
        "train": dict(TINY_TRAIN),
    }
    raw["model"]["overrides"]["task"]["model"].update(NO_SCORE_THRESHOLD)
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return raw


def make_records(base: Path, raw: dict, draw: bool = True) -> None:
    """Demo images (when `draw`) -> lists -> records and label map, in-process, as the rules do."""
    cwd = os.getcwd()
    os.chdir(base)
    try:
        cfg = config.parse(raw)
        ids = {c.name: c.label_id for c in cfg.classes}
        for cls in cfg.classes:
            if draw or not Path(cls.annotations_dir).exists():
                demo.write_demo(cls.name, cls.demo.images, cfg.demo, Path(cls.annotations_dir))
            annotations.validate_class(cfg, cls.name, None, Path(f"results/lists/{cls.name}"))
            for split in config.SPLITS:
                items = records.lists.read_list(f"results/lists/{cls.name}/{split}.tsv")
                stats = records.write_records(
                    items, Path(f"results/records/{cls.name}_{split}.tfrecord"), ids
                )
                Path(f"results/records/{cls.name}_{split}.json").write_text(json.dumps(stats))
        Path("results/label_map.csv").write_text(records.label_map_csv(cfg.classes))
    finally:
        os.chdir(cwd)


def model_cli(
    base: Path, raw: dict, *args: str, timeout=600, check=True, module="tumbletrain.model"
):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            module,
            args[0],
            "--config-json",
            json.dumps(raw),
            *args[1:],
        ],
        cwd=base,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def train_args(run: str, extra=(), classes=TINY_CLASSES) -> list[str]:
    return [
        "train",
        "--training-stats",
        *(f"results/records/{name}_training.json" for name in classes),
        "--validation-stats",
        *(f"results/records/{name}_verification.json" for name in classes),
        "--model-dir",
        f"results/train/{run}",
        "--final",
        f"results/train/{run}/final.json",
        *extra,
    ]


def test_default_architecture_is_the_published_checkpoints():
    cfg = config.parse({"classes": {"pose": {}}})
    params = experiment.build_experiment(
        cfg.model, cfg.train, 1, experiment.DataSplit(("x",), 10), None
    )
    m = params.task.model
    assert m.backbone.type == "mobilenet"
    assert (m.backbone.mobilenet.model_id, m.backbone.mobilenet.filter_size_scale) == (
        "MobileNetV2",
        1.0,
    )
    assert m.decoder.type == "fpn"
    assert (
        m.decoder.fpn.num_filters,
        m.decoder.fpn.use_separable_conv,
        m.decoder.fpn.use_keras_layer,
    ) == (128, True, True)
    assert (m.head.num_convs, m.head.num_filters, m.head.use_separable_conv) == (4, 128, True)
    assert (m.min_level, m.max_level) == (3, 7)
    assert (m.anchor.anchor_size, m.anchor.num_scales, list(m.anchor.aspect_ratios)) == (
        3,
        3,
        [0.5, 1.0, 2.0],
    )
    assert m.input_size == [256, 256, 3]
    assert (
        m.norm_activation.activation,
        m.norm_activation.norm_epsilon,
        m.norm_activation.norm_momentum,
    ) == ("relu6", 0.001, 0.99)
    assert m.num_classes == 2, "one class plus the background"
    assert params.task.freeze_backbone is True, "a checkpoint is given by default"
    # The head too, but not its classifier layer (MediaPipe Model Maker's choice).
    assert list(params.task.init_checkpoint_modules) == ["backbone", "decoder", "head"]


def tiny_inputs(base: Path, classes=TINY_CLASSES):
    from tumbletrain import training

    return training.TrainInputs(
        training.data_split([base / f"results/records/{n}_training.json" for n in classes]),
        training.data_split([base / f"results/records/{n}_verification.json" for n in classes]),
        None,
    )


def test_the_fingerprint_follows_records_classes_and_model_config(tiny_records, tmp_path):
    from tumbletrain import training

    def fingerprint(raw, base=tiny_records):
        return training.fingerprint(config.parse(raw), tiny_inputs(base), False, cached=False)

    first = fingerprint(tiny_raw())
    assert fingerprint(tiny_raw()) == first
    # Where and how a run goes, and which checkpoint is picked, do not start another.
    for train in ({"threads": 1}, {"eval_every": 2}, {"select": "last"}, {"keep_runs": 0}):
        assert fingerprint(tiny_raw(train=train))["fingerprint"] == first["fingerprint"], train
    reordered = tiny_raw()
    reordered["classes"] = dict(reversed(reordered["classes"].items()))
    for raw in (tiny_raw(train={"steps": 7}), tiny_raw(model={"input_size": 256}), reordered):
        assert fingerprint(raw)["fingerprint"] != first["fingerprint"]
    copy = tmp_path / "copy"
    shutil.copytree(tiny_records / "results/records", copy / "results/records")
    record = copy / "results/records/book_verification.tfrecord"
    record.write_bytes(record.read_bytes()[:-1] + b"x")
    changed = fingerprint(tiny_raw(), copy)
    assert changed["fingerprint"] != first["fingerprint"]
    assert training.changes(first, changed) == "records changed: book_verification.tfrecord"
    # As read back from run.json: only what changed is named.
    stored = json.loads(json.dumps(first))
    assert training.changes(stored, fingerprint(tiny_raw(train={"steps": 7}))) == (
        "train config changed"
    )


def test_a_new_training_starts_where_warm_start_and_the_previous_run_allow(tmp_path):
    from tumbletrain import training

    cfg = config.parse(tiny_raw(train={"steps": 40}))
    inputs = training.TrainInputs(experiment.DataSplit(("x",), 8), None, "base/ckpt-1")
    current = {"parts": {"label_map": [[1, "circle"], [2, "square"]]}}
    arch = {"input_size": [128, 128, 3]}

    def plan(raw_train=None, label_map=None, architecture=None, finished=True):
        run = tmp_path / "history" / "0001"
        run.mkdir(parents=True, exist_ok=True)
        state = {
            "parts": {"label_map": label_map or current["parts"]["label_map"]},
            "architecture": architecture or arch,
            "finished": {"checkpoint": "best/best_ckpt-3"} if finished else None,
        }
        (run / "run.json").write_text(json.dumps(state))
        used = config.parse(tiny_raw(train={"steps": 40, **(raw_train or {})}))
        return training.plan_start(used, inputs, tmp_path, current, arch)

    previous = plan()
    assert previous == training.Start(
        "previous", str(tmp_path / "history/0001/best/best_ckpt-3"), experiment.MODULES, 10
    )
    assert plan({"warm_start_steps": 5}).steps == 5
    reordered = plan(label_map=[[1, "square"], [2, "circle"]])
    assert reordered.modules == ("backbone", "decoder", "head")
    # A fresh classifier layer gets half the steps by default; a set number wins.
    assert reordered.steps == 20
    assert plan({"warm_start_steps": 5}, label_map=[[1, "square"]]).steps == 5
    checkpoint = training.Start("checkpoint", "base/ckpt-1", ("backbone", "decoder", "head"), 40)
    assert plan(architecture={"input_size": [256, 256, 3]}) == checkpoint
    assert plan(finished=False) == checkpoint
    assert plan({"warm_start": "checkpoint"}) == checkpoint
    assert plan({"warm_start": "none"}) == training.Start("none", None, (), 40)
    assert cfg.train.warm_start == "previous"


def test_history_keeps_the_newest_keep_runs_trainings(tmp_path):
    """Each new training archives the last into history/NNNN; the oldest beyond keep_runs go."""
    from tumbletrain import training

    def history():
        return sorted(p.name for p in (tmp_path / training.HISTORY).iterdir())

    for number in range(1, 5):
        (tmp_path / "run.json").write_text(json.dumps({"training": number}))
        (tmp_path / f"ckpt-{number}.index").write_bytes(b"")
        training.archive(tmp_path)
        training.prune_history(tmp_path, keep=2)
        assert history() == [f"{n:04d}" for n in range(max(1, number - 1), number + 1)]
        assert [p.name for p in tmp_path.iterdir()] == [training.HISTORY]
    assert sorted(p.name for p in (tmp_path / "history/0003").iterdir()) == [
        "ckpt-3.index",
        "run.json",
    ]
    assert json.loads((tmp_path / "history/0004/run.json").read_text()) == {"training": 4}
    training.prune_history(tmp_path, keep=0)
    assert history() == []


def test_input_size_must_fit_the_levels():
    # The schema asks for a multiple of 128 (the default max_level 7); the
    # experiment checks it again against a max_level set in model.overrides.
    with pytest.raises(cli.UserError, match="not a multiple of 128"):
        config.parse({"classes": {"pose": {}}, "model": {"input_size": 200}})
    cfg = config.parse(
        {
            "classes": {"pose": {}},
            "model": {"input_size": 256, "overrides": {"task": {"model": {"max_level": 9}}}},
        }
    )
    with pytest.raises(cli.UserError, match="multiple of 2\\*\\*max_level = 512"):
        experiment.build_experiment(cfg.model, cfg.train, 1, experiment.DataSplit(("x",), 1), None)


@pytest.mark.slow
def test_train_from_scratch_writes_final_and_params(trained):
    base, final = trained
    assert final["step"] == TINY_TRAIN["steps"]
    assert (base / final["checkpoint"]).with_suffix(".index").exists()
    params = yaml.safe_load((base / final["params"]).read_text())
    assert params["task"]["model"]["num_classes"] == 3
    assert "results/records/apple_training.tfrecord" in params["task"]["train_data"]["input_path"]
    assert list((base / "results/train/tiny/train").glob("events.out.tfevents*"))
    assert final["losses"]["total_loss"] > 0


@pytest.mark.slow
def test_params_yaml_reruns_with_the_model_gardens_own_trainer(trained, tmp_path):
    """What docs/training.md promises: official/vision/train.py runs the written experiment."""
    import tensorflow as tf

    base, final = trained
    garden = tmp_path / "garden"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "official.vision.train",
            "--experiment=retinanet_mobile_coco",
            "--mode=train",
            f"--model_dir={garden}",
            f"--config_file={base / final['params']}",
            "--params_override=trainer.train_steps=2,trainer.steps_per_loop=1,"
            "trainer.checkpoint_interval=2,trainer.summary_interval=1",
        ],
        cwd=base,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert tf.train.latest_checkpoint(str(garden)).endswith("ckpt-2")
    assert list((garden / "train").glob("events.out.tfevents*"))


def test_training_progress_lines_count_steps_from_the_resumed_one(caplog):
    from tumbletrain import training

    progress = training.TrainingProgress(start=40, total=100, steps_per_loop=25, every_s=0)
    with caplog.at_level("INFO", logger="tumbletrain.training"):
        for _ in range(3):
            progress({"total_loss": 0.5})
        progress.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("train: 65/100 steps (65%)") and "steps/s, ETA" in lines[0]
    # The last loop is cut at the total, and nothing is left to do.
    assert lines[-2].startswith("train: 100/100 steps (100%)") and "ETA 0:00:00" in lines[-2]
    assert lines[-1].startswith("train: 100/100 steps in ") and "total loss 0.5000" in lines[-1]


@pytest.mark.slow
def test_killed_training_resumes_from_its_last_checkpoint(tiny_records):
    raw = tiny_raw(train={"run": "resume", "steps": 40, "checkpoint_every": 5, "eval_every": 40})
    command = [
        sys.executable,
        "-m",
        "tumbletrain.model",
        *train_args("resume")[:1],
        "--config-json",
        json.dumps(raw),
        *train_args("resume")[1:],
    ]
    process = subprocess.Popen(
        command, cwd=tiny_records, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    model_dir = tiny_records / "results/train/resume"
    deadline = time.time() + 300
    while time.time() < deadline and not list(model_dir.glob("ckpt-*.index")):
        time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (model_dir / "final.json").exists()
    saved = sorted(int(p.stem.split("-")[1]) for p in model_dir.glob("ckpt-*.index"))
    assert saved and saved[-1] < 40
    result = model_cli(tiny_records, raw, *train_args("resume"))
    resumed = re.search(r"resuming from \S+/ckpt-(\d+)", result.stderr)
    assert resumed and 0 < int(resumed[1]) <= saved[-1], result.stderr[-3000:]
    # Progress counts on from the resumed step: counted from 0 it would end at 40 - resumed.
    assert "train: 40/40 steps in " in result.stderr, result.stderr[-3000:]
    assert json.loads((model_dir / "final.json").read_text())["step"] == 40


# A demo that learns in a few hundred steps on 2 cores: one large shape per
# image, and a model a little wider than the tiny one.
LEARN_STEPS = 500


LEARN_CLASSES = ("circle", "square")


def learn_raw(classes=LEARN_CLASSES, **train) -> dict:
    return {
        "classes": {name: {"demo": {"images": 40}} for name in classes},
        "demo": {"seed": 5, "min_side": 96, "max_side": 128, "max_objects": 1},
        "split": {"verification_percent": 25},
        "model": {
            "checkpoint": None,
            "input_size": 128,
            "overrides": {
                "task": {
                    "model": {
                        "backbone": {"mobilenet": {"filter_size_scale": 0.35}},
                        "decoder": {"fpn": {"num_filters": 32}},
                        "head": {"num_convs": 2, "num_filters": 32},
                    }
                }
            },
        },
        "train": {
            "run": "learn",
            "steps": LEARN_STEPS,
            "batch_size": 8,
            "learning_rate": 0.08,
            "warmup_steps": 20,
            # Two validations a full run (each cost about as much as 30-40 steps here),
            # one in a warm start of half the steps or fewer.
            "checkpoint_every": LEARN_STEPS // 2,
            "eval_every": LEARN_STEPS // 2,
            **train,
        },
    }


@pytest.fixture(scope="session")
def learned(tmp_path_factory):
    """The learning demo, trained with validation every 250 steps."""
    base = tmp_path_factory.mktemp("learn")
    make_records(base, learn_raw())
    model_cli(base, learn_raw(), *train_args("learn", classes=LEARN_CLASSES))
    return base


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.slow
def test_the_demo_learns_and_the_best_checkpoint_is_used(learned, tmp_path):
    from tumbletrain import plots, report, training

    final = read_json(learned / "results/train/learn/final.json")
    assert final["step"] == LEARN_STEPS
    # Periodic validation wrote its metrics, and the best AP picks the checkpoint.
    validation = training.scalar_summaries(learned / "results/train/learn/validation")
    curve = validation["AP"]
    assert [step for step, _ in curve] == [LEARN_STEPS // 2, LEARN_STEPS]
    best_step, best_ap = max(curve, key=lambda point: point[1])
    assert final["selected"] == {"select": "best", "step": best_step, "AP": pytest.approx(best_ap)}
    assert final["best"]["step"] == best_step
    assert final["checkpoint"] == f"results/train/learn/{final['best']['checkpoint']}"
    assert final["last"] == {"step": LEARN_STEPS, "checkpoint": f"ckpt-{LEARN_STEPS}"}
    # The Model Garden's COCO evaluation of the verification split, at the best step
    # (test_retraining_follows_the_data runs the evaluate command on the same model).
    assert dict(validation["AP50"])[best_step] >= 0.5, validation["AP50"]
    # The report draws the same validation curve.
    series = report.training_series(learned / "results/train/learn")
    drawn = plots.plot_training(*series, tmp_path / "training.png")
    assert drawn["validation"] == ["AP", "AP50", "AP75"]


@pytest.mark.slow
def test_a_new_class_restores_everything_but_the_classifier(learned):
    import tensorflow as tf
    from official.core import task_factory

    checkpoint = str(learned / read_json(learned / "results/train/learn/final.json")["checkpoint"])

    def built(classes):
        cfg = config.parse(learn_raw(classes))
        params = experiment.build_experiment(
            cfg.model, cfg.train, len(classes), experiment.DataSplit(("x",), 8), None
        )
        return task_factory.get_task(params.task).build_model()

    two = built(("circle", "square"))
    experiment.restore_modules(two, checkpoint, experiment.MODULES)
    three = built(("circle", "square", "triangle"))
    experiment.restore_modules(three, checkpoint, ("backbone", "decoder", "head"))
    classifier = three.head._classifier
    fresh = {classifier.pointwise_kernel.ref(), classifier.bias.ref()}
    compared = 0
    for part in ("backbone", "decoder", "head"):
        pairs = zip(getattr(two, part).weights, getattr(three, part).weights, strict=True)
        for trained, restored in pairs:
            if restored.ref() in fresh:
                assert trained.shape != restored.shape, restored.name
                continue
            np.testing.assert_array_equal(trained.numpy(), restored.numpy(), err_msg=restored.name)
            compared += 1
    assert compared > 50
    # The classifier's depthwise kernel does not depend on the classes: restored too.
    assert tf.reduce_any(classifier.depthwise_kernel != 0)


def tree_state(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.mark.slow
def test_retraining_follows_the_data(learned, tmp_path):
    """Unchanged: nothing trains. An edited XML: a warm start. A new class: a new classifier."""
    from lxml import etree

    base = tmp_path / "project"
    shutil.copytree(learned, base)
    run_dir = base / "results/train/learn"
    first = read_json(run_dir / "final.json")

    before = tree_state(run_dir)
    result = model_cli(base, learn_raw(), *train_args("learn", classes=LEARN_CLASSES))
    assert "nothing to train" in result.stderr
    assert tree_state(run_dir) == before, "an unchanged re-run rewrote something"

    # One box of one training image moves by a few pixels.
    listed = (base / "results/lists/circle/training.tsv").read_text().splitlines()[1]
    xml = base / listed.split("\t")[6]
    tree = etree.parse(str(xml))
    xmax = tree.find("object/bndbox/xmax")
    xmax.text = str(int(float(xmax.text)) - 3)
    tree.write(str(xml))
    make_records(base, learn_raw(), draw=False)
    # A short fine-tune is enough to see it happen (the default is a quarter of the steps).
    result = model_cli(
        base, learn_raw(warm_start_steps=25), *train_args("learn", classes=LEARN_CLASSES)
    )
    assert "records changed: circle_training.tfrecord" in result.stderr, result.stderr[-3000:]
    second = read_json(run_dir / "final.json")
    assert second["fingerprint"] != first["fingerprint"]
    assert second["start"]["source"] == "previous"
    assert second["start"]["modules"] == list(experiment.MODULES)
    assert second["start"]["checkpoint"].endswith(first["checkpoint"].split("learn/")[1])
    assert second["step"] == 25
    assert (
        second["checkpoint"] != first["checkpoint"]
        and (base / second["checkpoint"]).with_suffix(".index").exists()
    )
    assert (
        (run_dir / "history/0001" / first["checkpoint"].split("learn/")[1])
        .with_suffix(".index")
        .exists()
    )

    three = ("circle", "square", "triangle")
    make_records(base, learn_raw(three), draw=False)
    # A new classifier layer for every class: by default half the steps, not a quarter
    # (at a quarter, 125 steps, circle's AP50 was 0.49, square's 0.61, triangle's 0.64).
    # keep_runs is not in the fingerprint: only the newest earlier training is kept.
    raw = learn_raw(three, keep_runs=1)
    result = model_cli(base, raw, *train_args("learn", classes=three))
    assert "the classifier layer starts fresh" in result.stderr, result.stderr[-3000:]
    third = read_json(run_dir / "final.json")
    assert third["step"] == LEARN_STEPS // 2
    assert third["start"]["modules"] == ["backbone", "decoder", "head"]
    assert yaml.safe_load((base / third["params"]).read_text())["task"]["model"]["num_classes"] == 4
    # Three trainings, two of them archived, one kept: the one this run started from.
    assert sorted(p.name for p in (run_dir / "history").iterdir()) == ["0002"]
    assert read_json(run_dir / "history/0002/run.json")["fingerprint"] == second["fingerprint"]
    metrics = evaluate_cli(base, raw, "learn", three)
    assert metrics["AP50_per_class"]["circle"] >= 0.5, metrics
    assert metrics["AP50_per_class"]["square"] >= 0.5, metrics


class RangeHandler(BaseHTTPRequestHandler):
    """Serves files from a dict, honouring `Range: bytes=N-` as real servers do."""

    files: dict[str, bytes] = {}
    ranges: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        data = self.files.get(self.path)
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        if "Range" in self.headers:
            RangeHandler.ranges.append(self.headers["Range"])
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture(scope="module")
def checkpoint_server(tiny_records):
    """A tar.gz of a tiny model of the same architecture, and one of another."""
    import tensorflow as tf
    from official.core import task_factory

    def archive(raw, name):
        cfg = config.parse(raw)
        params = experiment.build_experiment(
            cfg.model, cfg.train, 2, experiment.DataSplit(("x",), 8), None
        )
        model = task_factory.get_task(params.task).build_model()
        folder = tiny_records / "made" / name
        tf.train.Checkpoint(**model.checkpoint_items).save(str(folder / "ckpt"))
        backbone = {v.name: v.numpy() for v in model.backbone.weights}
        path = tiny_records / "made" / f"{name}.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            tar.add(folder, arcname=name)
        return path.read_bytes(), backbone

    same, backbone = archive(tiny_raw(), "same")
    other_raw = tiny_raw(model={"backbone": "MobileNetV1"})
    other, _ = archive(other_raw, "other")
    RangeHandler.files = {"/same.tar.gz": same, "/other.tar.gz": other}
    server = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", same, backbone
    server.shutdown()


@pytest.mark.slow
def test_fine_tune_with_frozen_backbone_keeps_it_unchanged(checkpoint_server, tiny_records):
    import tensorflow as tf

    base, same, backbone = checkpoint_server
    raw = tiny_raw(
        model={"checkpoint": {"url": f"{base}/same.tar.gz"}},
        train={"run": "finetune", "steps": 3, "checkpoint_every": 3, "eval_every": 3},
    )
    model_cli(tiny_records, raw, "checkpoint", "--output-dir", "resources/checkpoints/same")
    model_cli(
        tiny_records,
        raw,
        *train_args(
            "finetune", ["--checkpoint-json", "resources/checkpoints/same/checkpoint.json"]
        ),
    )
    final = json.loads((tiny_records / "results/train/finetune/final.json").read_text())
    assert final["freeze_backbone"] is True and final["step"] == 3
    reader = tf.train.load_checkpoint(str(tiny_records / final["checkpoint"]))
    names = [
        n
        for n, _ in tf.train.list_variables(str(tiny_records / final["checkpoint"]))
        if n.startswith("backbone/")
        and n.endswith(".ATTRIBUTES/VARIABLE_VALUE")
        and "OPTIMIZER_SLOT" not in n
    ]
    assert names
    trained_values = sorted(reader.get_tensor(n).tobytes() for n in names)
    initial_values = sorted(v.tobytes() for v in backbone.values())
    assert trained_values == initial_values, "the frozen backbone changed"


@pytest.mark.slow
def test_a_checkpoint_of_another_architecture_fails_before_training(
    checkpoint_server, tiny_records
):
    base, _, _ = checkpoint_server
    raw = tiny_raw(model={"checkpoint": {"url": f"{base}/other.tar.gz"}}, train={"run": "other"})
    model_cli(tiny_records, raw, "checkpoint", "--output-dir", "resources/checkpoints/other")
    result = model_cli(
        tiny_records,
        raw,
        *train_args("other", ["--checkpoint-json", "resources/checkpoints/other/checkpoint.json"]),
        check=False,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ERROR:") and "does not match the model" in last
    assert not list((tiny_records / "results/train/other").glob("ckpt-*"))


def evaluate_cli(base: Path, raw: dict, run: str, classes=TINY_CLASSES) -> dict:
    model_cli(
        base,
        raw,
        "evaluate",
        "--final",
        f"results/train/{run}/final.json",
        "--verification-stats",
        *(f"results/records/{name}_verification.json" for name in classes),
        "--verification-lists",
        *(f"results/lists/{name}/verification.tsv" for name in classes),
        "--outdir",
        f"results/eval/{run}",
    )
    return json.loads((base / f"results/eval/{run}/metrics.json").read_text())


@pytest.fixture(scope="session")
def evaluated(trained):
    base, _ = trained
    evaluate_cli(base, tiny_raw(), "tiny")
    return base


@pytest.mark.slow
def test_evaluation_writes_every_metric(evaluated):
    from tumbletrain import fileio, lists

    metrics = json.loads((evaluated / "results/eval/tiny/metrics.json").read_text())
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "ARmax1", "ARmax10", "ARmax100"):
        assert isinstance(metrics[key], float), key
    assert set(metrics["AP_per_class"]) == set(TINY_CLASSES)
    assert metrics["objects"] > 0
    for name in ("pr_curves.png", "detections.png"):
        assert (evaluated / "results/eval/tiny" / name).read_bytes()[:4] == b"\x89PNG"
    detections = evaluated / "results/eval/tiny/detections.csv"
    header = detections.read_text().splitlines()[0]
    assert header == "image,source_id,class,score,xmin,ymin,xmax,ymax"
    rows = fileio.read_table(detections, ",")
    # Each detection names its image as the lists do, beside the records' source id.
    listed = {
        records.source_id(item.sha256): item.image
        for name in TINY_CLASSES
        for item in lists.read_list(evaluated / f"results/lists/{name}/verification.tsv")
    }
    assert rows and all(row["image"] == listed[row["source_id"]] for row in rows)
    assert {row["class"] for row in rows} <= set(TINY_CLASSES)


@pytest.mark.slow
def test_evaluate_refuses_a_config_with_other_classes(trained):
    """The names come from the model; a config that names them otherwise is one ERROR line."""
    base, _ = trained
    raw = tiny_raw()
    raw["classes"] = {"circle": {}, "square": {}}
    result = model_cli(
        base,
        raw,
        "evaluate",
        "--final=results/train/tiny/final.json",
        "--verification-stats=results/records/apple_verification.json",
        "--outdir=results/eval/other",
        check=False,
    )
    assert_refused_for_classes(result, "1=circle, 2=square")
    assert not (base / "results/eval/other/metrics.json").exists()


def assert_refused_for_classes(result, configured: str) -> None:
    """One ERROR line naming the config's classes and the model's (apple and book)."""
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ERROR: the config's classes ({configured}) are not the model's")
    assert "1=apple, 2=book" in last


def trained_params(base: Path) -> tuple:
    """The tiny run's experiment config and the path of its final checkpoint."""
    params = experiment.load_params(base / "results/train/tiny/params.yaml", [], 1)
    final = json.loads((base / "results/train/tiny/final.json").read_text())
    return params, str(base / final["checkpoint"])


def test_tflite_post_processing_gives_one_class_per_detection(tmp_path):
    """TFLite_Detection_PostProcess strides its outputs by max_classes_per_detection: one
    class per box is the layout TFLite clients read (the first `count` entries), and
    normalised anchors give boxes as fractions of the input, as MediaPipe maps them."""
    for classes in ({"pose": {}}, {f"c{i}": {} for i in range(7)}):
        cfg = config.parse({"classes": classes})
        built = experiment.build_experiment(
            cfg.model, cfg.train, 1, experiment.DataSplit(("x",), 10), None
        )
        # As export gets it: the training run's params.yaml, loaded again.
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(built.as_dict()))
        params = experiment.load_params(tmp_path / "params.yaml", ["x"], 1)
        post = export.tflite_params(params).task.model.detection_generator
        assert post.nms_version == "tflite"
        assert post.tflite_post_processing.max_classes_per_detection == 1
        assert post.tflite_post_processing.normalize_anchor_coordinates is True


@pytest.mark.slow
def test_the_export_records_its_classes_and_what_clients_need(exported):
    """export.json, labels.txt and label_map.pbtxt carry the classes; export.json says
    each file's input and outputs."""
    from tumbletrain import modelclasses

    folder = exported / "results/export/tiny"
    summary = json.loads((folder / "export.json").read_text())
    assert summary["classes"] == [{"id": 1, "name": "apple"}, {"id": 2, "name": "book"}]
    assert (folder / "labels.txt").read_text() == "apple\nbook\n"
    label_map = (folder / "label_map.pbtxt").read_text()
    assert label_map == records.label_map_pbtxt(modelclasses.from_record(summary["classes"]))
    assert "id: 2\n  name: 'book'" in label_map
    tflite = summary["clients"]["tflite"]
    assert tflite["input"]["shape"] == [1, 128, 128, 3] and tflite["input"]["dtype"] == "float32"
    assert "stretched to 128x128" in tflite["input"]["resize"]
    assert [output["name"] for output in tflite["outputs"]] == list(export.TFLITE_OUTPUTS)
    assert tflite["labels"] == ["apple", "book"]
    assert "aspect ratio" in summary["clients"]["saved_model"]["preprocessing"]
    assert summary["calibration_images"] == 8
    assert set(summary["seconds"]) == {
        "saved_model_s",
        "read_images_s",
        "tflite_saved_model_s",
        "tflite_float_s",
        "tflite_int8_s",
        "check_s",
    }


@pytest.mark.slow
def test_export_signatures_agree(exported):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(exported / "results/export/tiny/saved_model"))
    image_path = sorted((exported / "data/apple").glob("*.jpg"))[0]
    # TensorFlow's own JPEG decoder, as the image_bytes signature uses: same pixels.
    pixels = tf.io.decode_jpeg(image_path.read_bytes(), channels=3).numpy()
    by_tensor = loaded.signatures["serving_default"](inputs=tf.constant(pixels[None]))
    by_bytes = loaded.signatures["serve_image_bytes"](inputs=tf.constant([image_path.read_bytes()]))
    np.testing.assert_allclose(
        by_tensor["detection_boxes"].numpy(), by_bytes["detection_boxes"].numpy(), atol=1e-3
    )


def garden_input(params, pixels):
    """A uint8 image as the Model Garden's serving preprocesses it (the SavedModel's way)."""
    import tensorflow as tf
    from official.vision.serving import detection

    size = list(params.task.model.input_size[:2])
    module = detection.DetectionModule(
        params=params, batch_size=1, input_image_size=size, input_type="image_tensor"
    )
    images, _, image_info = module.preprocess(tf.constant(pixels[None], dtype=tf.uint8))
    return images.numpy(), image_info.numpy()


@pytest.mark.slow
def test_saved_model_detects_what_the_checkpoint_detects(exported):
    import tensorflow as tf

    params, checkpoint = trained_params(exported)
    _, model = experiment.restore_model(params, checkpoint)
    loaded = tf.saved_model.load(str(exported / "results/export/tiny/saved_model"))
    for image_path in sorted((exported / "data/book").glob("*.jpg"))[:3]:
        pixels = tf.io.decode_jpeg(image_path.read_bytes(), channels=3).numpy()
        images, image_info = garden_input(params, pixels)
        ours = model(
            tf.constant(images), image_shape=tf.constant(image_info[:, 1, :]), training=False
        )
        served = loaded.signatures["serving_default"](inputs=tf.constant(pixels[None]))
        # The untrained model's scores differ by less than rounding, so near
        # ties may swap places: compare sorted scores, and each served box
        # with the nearest of the checkpoint's boxes of the same class.
        np.testing.assert_allclose(
            np.sort(served["detection_scores"][0].numpy()),
            np.sort(ours["detection_scores"][0].numpy()),
            atol=1e-6,
        )
        top = 20
        for box, cls in zip(
            served["detection_boxes"][0][:top].numpy(),
            served["detection_classes"][0][:top].numpy(),
            strict=True,
        ):
            same_class = ours["detection_boxes"][0].numpy()[
                ours["detection_classes"][0].numpy() == cls
            ]
            assert np.abs(same_class - box).max(axis=1).min() < 1e-3, (image_path.name, box)


@pytest.mark.slow
def test_tflite_networks_compute_what_the_checkpoint_computes(exported):
    """Every anchor's box encoding and class score, as TFLite's post-processing op gets them.

    The export measures this on training images and records it; here it is
    checked again on verification images the export did not see. Float agrees
    to rounding; int8 within its quantisation (sigmoid scores are quantised in
    steps of 1/256).
    """
    summary = json.loads((exported / "results/export/tiny/export.json").read_text())
    recorded = summary["tflite_agreement_with_checkpoint"]
    assert recorded["images"] == 4
    params, checkpoint = trained_params(exported)
    paths = sorted((exported / "results/records").glob("*_verification.tfrecord"))
    images = export.first_record_images(",".join(map(str, paths)), 3)
    inputs = export.client_images(images, [128, 128])
    tflite = {
        name: exported / "results/export/tiny" / name
        for name in ("model_float.tflite", "model_int8.tflite")
    }
    measured = export.tflite_agreement(params, checkpoint, tflite, inputs)
    for agreement in (recorded, measured):
        float_error = agreement["max_abs_difference"]["model_float.tflite"]
        int8_error = agreement["max_abs_difference"]["model_int8.tflite"]
        box_range = agreement["checkpoint_range"]["box_encoding"]
        assert box_range > 0
        assert float_error["box_encoding"] < 1e-4 and float_error["score"] < 1e-5, agreement
        assert int8_error["box_encoding"] < 0.05 * box_range, agreement
        assert int8_error["score"] < 2 / 256, agreement
    # The checks above are not vacuous: int8 differs from float where float does not.
    assert measured["max_abs_difference"]["model_int8.tflite"]["score"] > 1e-4


def predict_cli(base: Path, *args: str, raw: dict | None = None, check=True):
    """`python -m tumbletrain.predict` as a user runs it: with --config-json only if given."""
    config_args = ["--config-json", json.dumps(raw)] if raw is not None else []
    result = subprocess.run(
        [sys.executable, "-m", "tumbletrain.predict", *config_args, *args],
        cwd=base,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.mark.slow
def test_predict_names_the_models_classes_without_a_config(exported, tmp_path):
    """The issue's case: a user's own two-class model, predict with no --config, in a
    project whose config/config.yaml is the demo's: the user's names in the CSV and XML."""
    import csv

    from labelimg_files import read

    project = tmp_path / "project"
    shutil.copytree(exported / "results/export/tiny", project / "results/export/own")
    (project / "config").mkdir()
    shutil.copy(Path(__file__).parents[1] / "config/config.yaml", project / "config")
    shutil.copytree(exported / "data/book", project / "new")
    predict_cli(
        project,
        "--model",
        "results/export/own",
        "--outdir",
        "predicted",
        "--min-score",
        "0",
        "new/",
    )
    with open(project / "predicted/detections.csv", newline="") as handle:
        classes = {row["class"] for row in csv.DictReader(handle)}
    assert classes and classes <= set(TINY_CLASSES), classes
    xml = sorted((project / "predicted/prelabels").glob("*.xml"))[0]
    shown = {name for name, *_ in read("voc", xml, xml)}
    assert shown and shown <= set(TINY_CLASSES), shown
    # A config given whose classes are not the model's: one ERROR line, nothing written.
    result = predict_cli(
        project,
        "--config",
        "config/config.yaml",
        "--model",
        "results/export/own/saved_model",
        "--outdir",
        "other",
        "new/",
        check=False,
    )
    assert_refused_for_classes(result, "1=circle, 2=square, 3=triangle")
    assert not (project / "other").exists()


@pytest.mark.slow
def test_predict_writes_labelimg_prelabels(exported):
    """Files and folders named on the command line; LabelImg's own reader reads the boxes."""
    import csv

    from labelimg_files import read

    raw = tiny_raw(predict={"min_score": 0.0})
    one = sorted((exported / "data/apple").glob("*.jpg"))[0]
    predict_cli(
        exported,
        "--model=results/export/tiny",
        "--outdir=results/predict/tiny",
        "data/book",
        str(one),
        raw=raw,
    )
    out = exported / "results/predict/tiny"
    xmls = sorted((out / "prelabels").glob("*.xml"))
    images = [p for p in (exported / "data/book").iterdir() if p.suffix != ".xml"]
    assert {x.stem for x in xmls} == {p.stem for p in [*images, one]}
    assert len(list((out / "images").glob("*.jpg"))) == len(xmls)
    detected: dict[str, list] = {}
    with open(out / "detections.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            box = [float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
            detected.setdefault(Path(row["image"]).stem, []).append((row["class"], *box))
    assert detected, "min_score 0 keeps detections"
    for xml in xmls:
        shown, wanted = read("voc", xml, one), detected.get(xml.stem, [])
        assert [s[0] for s in shown] == [w[0] for w in wanted], xml.name
        # Pixels in the XML, tenths in detections.csv.
        np.testing.assert_allclose([s[1:] for s in shown], [w[1:] for w in wanted], atol=0.56)


@pytest.mark.slow
def test_predict_skips_bad_files_with_a_reason_and_predicts_the_rest(
    exported, tmp_path, dead_writer
):
    """a.jpg and a.png in one folder get a.jpg.xml and a.png.xml; a decompression bomb, a
    FIFO, a file over the byte cap (refused before it is read) and a name XML cannot hold
    are skipped with their reasons, the other images still predicted; a killed run's
    temporary files in the outputs are removed."""
    from fake_tumblr import bomb_png
    from lxml import etree
    from PIL import Image
    from tumbletrain import predict

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.jpg", "a.png", "b.jpg", "bell\x07.jpg", "big.jpg"):
        fmt = "PNG" if name.endswith(".png") else "JPEG"
        Image.new("RGB", (64 + len(name), 48), (200, 30, 30)).save(folder / name, fmt)
    with open(folder / "big.jpg", "ab") as handle:
        handle.truncate(2_000_001)  # over a 2 MB cap
    (folder / "bomb.png").write_bytes(bomb_png())
    os.mkfifo(folder / "fifo.jpg")
    out = tmp_path / "out"
    (out / "prelabels").mkdir(parents=True)
    leftover = out / "prelabels" / f".b.xml.{dead_writer}.x1.tmp"
    leftover.write_text("partial")
    result = predict.main(
        ["--model", str(exported / "results/export/tiny"), "--outdir", str(out), str(folder)]
        + ["--min-score", "0"]
        + ["--config-json", json.dumps(tiny_raw(predict={"max_image_mb": 2}))]
    )
    assert result == 0
    assert not leftover.exists()
    prelabels = out / "prelabels"
    assert sorted(p.name for p in prelabels.iterdir()) == ["a.jpg.xml", "a.png.xml", "b.xml"]
    for xml in ("a.jpg.xml", "a.png.xml"):
        filename = etree.parse(str(prelabels / xml)).getroot().findtext("filename")
        assert filename == xml.removesuffix(".xml")
    drawn = sorted(p.name for p in (out / "images").iterdir())
    assert drawn == ["a.jpg.jpg", "a.png.jpg", "b.jpg"]
    found = predict.predict_folder(
        exported / "results/export/tiny", folder, tmp_path / "again", 0.0, 2_000_000
    )
    assert found["images"] == 3
    assert found["skipped"] == {
        "decompression_bomb": 1,
        "name_not_xml": 1,
        "special_file": 1,
        "too_large": 1,
    }


@pytest.mark.slow
def test_predicted_boxes_are_in_image_pixels(exported, tmp_path):
    """The model sees a resized image; predict maps its boxes back to the image's pixels."""
    import tensorflow as tf
    from PIL import Image
    from tumbletrain import predict

    folder = tmp_path / "one"
    folder.mkdir()
    source = sorted((exported / "data/apple").glob("*.jpg"))[0]
    (folder / source.name).write_bytes(source.read_bytes())
    predict.predict_folder(
        exported / "results/export/tiny/saved_model", folder, tmp_path / "out", 0
    )
    rows = (tmp_path / "out" / "detections.csv").read_text().splitlines()[1:]
    assert rows
    pixels = np.asarray(Image.open(source).convert("RGB"))
    serve = tf.saved_model.load(str(exported / "results/export/tiny/saved_model"))
    out = serve.signatures["serving_default"](inputs=tf.constant(pixels[None]))
    scale = out["image_info"][0][2].numpy()
    assert not np.allclose(scale, 1.0), "pick an image whose size differs from the input"
    ymin, xmin, ymax, xmax = out["detection_boxes"][0][0].numpy()
    first = [float(v) for v in rows[0].split(",")[3:7]]
    np.testing.assert_allclose(
        first, [xmin / scale[1], ymin / scale[0], xmax / scale[1], ymax / scale[0]], atol=0.11
    )


def test_best_of_nothing_found_is_the_last_checkpoint(tmp_path):
    """With AP 0 at both validations the Model Garden keeps the first as 'best'; the
    run uses the last, which trained longer (issue #30: a too-short training)."""
    import json

    from tumbletrain import experiment, training

    best = tmp_path / experiment.BEST_SUBDIR
    best.mkdir()
    for folder, name in ((tmp_path, "ckpt-600"), (best, "best_ckpt-2")):
        (folder / f"{name}.index").write_bytes(b"")
        (folder / "checkpoint").write_text(f'model_checkpoint_path: "{name}"\n')
    info = {"best_ckpt_global_step": 300, experiment.BEST_METRIC: 0.0}
    (best / "info.json").write_text(json.dumps(info))
    assert training.selected_checkpoint(tmp_path, "best")["checkpoint"] == "ckpt-600"
    info[experiment.BEST_METRIC] = 0.4
    (best / "info.json").write_text(json.dumps(info))
    chosen = training.selected_checkpoint(tmp_path, "best")
    assert chosen["checkpoint"] == f"{experiment.BEST_SUBDIR}/best_ckpt-2"


@pytest.fixture(scope="session")
def learned_export(learned, tmp_path_factory):
    """The learning demo exported: a model whose top detections mean something."""
    base = tmp_path_factory.mktemp("learned_export")
    for part in ("data", "results/train", "results/records", "results/lists"):
        shutil.copytree(learned / part, base / part, symlinks=True)
    model_cli(
        base,
        learn_raw(),
        "export",
        "--final=results/train/learn/final.json",
        "--outdir=results/export/learn",
    )
    return base


def snippets(repo: Path) -> dict[str, str]:
    """docs/using-the-model.md's Python snippets, by the file name on their first line."""
    text = (repo / "docs/using-the-model.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    return {block.split(":", 1)[0].removeprefix("# ").strip(): block for block in blocks}


def top_detections(output: str) -> dict[str, tuple[str, list[float]]]:
    """The first (best) detection a snippet printed for each image: class and box."""
    top: dict[str, tuple[str, list[float]]] = {}
    for line in output.splitlines():
        path, name, _score, *box = line.rsplit(" ", 6)
        top.setdefault(path, (name, [float(v) for v in box]))
    return top


def iou(a: list[float], b: list[float]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# MediaPipe gives boxes in whole pixels, cut down (1-2 px off a 30 px shape): IoU 0.89
# against the SavedModel's with the float model; LiteRT's float boxes reach 0.96.
AGREEING_IOU = 0.85


def agreement(reference: dict, other: dict, images: list[str]) -> dict:
    """Of the images, on how many the top detections share the class and overlap (IoU at
    least AGREEING_IOU); an image without detections in both agrees."""
    same, ious = 0, []
    for image in images:
        if image not in reference or image not in other:
            same += image not in reference and image not in other
            continue
        overlap = iou(reference[image][1], other[image][1])
        ious.append(overlap)
        same += reference[image][0] == other[image][0] and overlap >= AGREEING_IOU
    return {"images": len(images), "agree": same, "min_iou": min(ious, default=None)}


@pytest.mark.slow
def test_the_snippets_of_using_the_model_agree(learned_export, repo, tmp_path):
    """MediaPipe Tasks' ObjectDetector and LiteRT's interpreter (in a process without
    TensorFlow) run both TFLite files as docs/using-the-model.md shows, and their top
    detection agrees with the SavedModel's on the verification images, each resized to
    the input size first so that every client sees the same pixels."""
    from PIL import Image

    code = snippets(repo)
    assert set(code) == {"mediapipe_detect.py", "litert_detect.py", "savedmodel_detect.py"}
    for name, text in code.items():
        (tmp_path / name).write_text(text)
    folder = learned_export / "results/export/learn"
    images = []
    for name in LEARN_CLASSES:
        for item in records.lists.read_list(
            learned_export / f"results/lists/{name}/verification.tsv"
        ):
            target = tmp_path / "images" / f"{item.sha256[:12]}.png"
            target.parent.mkdir(exist_ok=True)
            with Image.open(learned_export / item.image) as image:
                image.convert("RGB").resize((128, 128), Image.BILINEAR).save(target)
            images.append(str(target))
    assert len(images) >= 10

    def run(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, *args, *images],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    # LiteRT's snippet, then a check that nothing imported TensorFlow on the way.
    without_tf = (
        "import runpy, sys; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__'); "
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'"
    )
    reference = top_detections(run(str(tmp_path / "savedmodel_detect.py"), str(folder)))
    assert len(reference) >= len(images) // 2, "the learned model finds the shapes"
    measured = {}
    for model in ("model_float.tflite", "model_int8.tflite"):
        for client, args in (
            ("mediapipe", [str(tmp_path / "mediapipe_detect.py")]),
            ("litert", ["-c", without_tf, str(tmp_path / "litert_detect.py")]),
        ):
            found = top_detections(run(*args, str(folder / model)))
            measured[f"{client} {model}"] = agreement(reference, found, images)
    print(json.dumps(measured, indent=1))
    for key, result in measured.items():
        wanted = result["images"] if "float" in key else result["images"] - 2
        assert result["agree"] >= wanted, measured


def test_iterate_trains_and_evaluates_without_exporting(tmp_path, tool_env):
    """`snakemake iterate`, the documented target for tuning: no export job."""
    from conftest import snakemake, write_project

    write_project(tmp_path, TINY_CONFIG)
    result = snakemake(tmp_path, tool_env, "-n", "iterate")
    assert result.returncode == 0, result.stderr[-3000:]
    rules = set(re.findall(r"^(?:local)?rule (\w+):", result.stdout, re.M))
    assert {"train", "evaluate", "iterate"} <= rules and "export" not in rules, rules
