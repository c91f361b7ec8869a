"""Training: the real tf.data pipeline vs one cached batch, full vs freeze_backbone training.

The demo's model (MobileNetV2 x0.35 at 128) and the real run's
(config/tumblr.example.yaml: MobileNetV2 at 256), both on demo records.

Steps run the way the Model Garden's trainer (Orbit) runs them: a tf.function
looping `task.train_step` over an iterator, so the two feeds differ only in
where the batch comes from. Run it only when nothing else trains: both feeds
share the machine's cores with the model.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from common import REPO, report, scaled, target
from tumbletrain import annotations, config, demo, experiment, lists, records

WARMUP_STEPS = 3


def demo_config() -> config.WorkflowConfig:
    """The shipped demo config (model, input size, batch), with the images scaled."""
    import yaml

    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for spec in raw["classes"].values():
        spec["demo"]["images"] = scaled(spec["demo"]["images"])
    return config.parse(raw)


def threaded_demo_config() -> config.WorkflowConfig:
    """The demo's config, with TensorFlow's threads set as the train command sets them."""
    import tensorflow as tf

    cfg = demo_config()
    tf.config.threading.set_inter_op_parallelism_threads(cfg.train.threads)
    tf.config.threading.set_intra_op_parallelism_threads(cfg.train.threads)
    return cfg


def demo_splits(cfg: config.WorkflowConfig, root: Path) -> dict[str, experiment.DataSplit]:
    """Demo images -> lists -> records of each split, in-process, as the workflow writes them."""
    ids = {c.name: c.label_id for c in cfg.classes}
    files = {split: [] for split in config.SPLITS}
    images = dict.fromkeys(config.SPLITS, 0)
    cwd = os.getcwd()
    # The config names the demo folders relative to the project directory.
    os.chdir(root)
    try:
        for cls in cfg.classes:
            demo.write_demo(cls.name, cls.demo.images, cfg.demo, Path(cls.annotations_dir))
            annotations.validate_class(cfg, cls.name, None, Path("lists", cls.name))
            for split in config.SPLITS:
                items = lists.read_list(Path("lists", cls.name, f"{split}.tsv"))
                output = root / "records" / f"{cls.name}_{split}.tfrecord"
                stats = records.write_records(items, output, ids)
                output.with_suffix(".json").write_text(json.dumps(stats))
                files[split] += [str(output.parent / name) for name in stats["files"]]
                images[split] += stats["images"]
    finally:
        os.chdir(cwd)
    return {split: experiment.DataSplit(tuple(files[split]), images[split]) for split in files}


def demo_records(cfg: config.WorkflowConfig, root: Path) -> experiment.DataSplit:
    return demo_splits(cfg, root)["training"]


class Trainer:
    """One model and optimizer, stepped from any dataset by the same compiled loop."""

    def __init__(self, cfg: config.WorkflowConfig, split: experiment.DataSplit):
        import tensorflow as tf
        from official.core import task_factory

        params = experiment.build_experiment(cfg.model, cfg.train, len(cfg.classes), split, None)
        self.task = task_factory.get_task(params.task)
        self.model = self.task.build_model()
        self.optimizer = self.task.create_optimizer(params.trainer.optimizer_config, params.runtime)
        self.dataset = self.task.build_inputs(params.task.train_data)
        self.batch_size = params.task.train_data.global_batch_size
        self.input_size = cfg.model.input_size
        self.trainable = sum(int(tf.size(v)) for v in self.model.trainable_variables)

        @tf.function
        def loop(iterator, steps):
            for _ in tf.range(steps):
                logs = self.task.train_step(next(iterator), self.model, self.optimizer)
            return logs[self.task.loss]

        self.loop = loop

    def cached(self):
        """One real batch, held in memory and repeated: a feed that costs nothing."""
        import tensorflow as tf

        batch = next(iter(self.dataset))
        return tf.data.Dataset.from_tensors(batch).repeat()

    def steps_per_s(self, iterator, steps: int) -> float:
        import tensorflow as tf

        self.loop(iterator, tf.constant(WARMUP_STEPS)).numpy()
        start = time.perf_counter()
        self.loop(iterator, tf.constant(steps)).numpy()
        return steps / (time.perf_counter() - start)


def measure(trainer: Trainer, steps: int, repeat: int) -> tuple[float, float]:
    """Median steps/s of the real pipeline and of the cached batch, alternating."""
    real_iter = iter(trainer.dataset)
    cached_iter = iter(trainer.cached())
    real, cached = [], []
    for _ in range(repeat):
        real.append(trainer.steps_per_s(real_iter, steps))
        cached.append(trainer.steps_per_s(cached_iter, steps))
    return statistics.median(real), statistics.median(cached)


def real_size(cfg: config.WorkflowConfig, freeze: bool) -> config.WorkflowConfig:
    """config/tumblr.example.yaml's model (MobileNetV2 at 256) without downloading its checkpoint.

    A step costs the same from random weights as from the COCO checkpoint.
    """
    import yaml

    example = yaml.safe_load((REPO / "config" / "tumblr.example.yaml").read_text())
    raw_model = {**example["model"], "checkpoint": None, "freeze_backbone": freeze}
    model = config.parse({"classes": {"x": {}}, "model": raw_model}).model
    return replace(cfg, model=model)


def row(name: str, trainer: Trainer, feed: str, rate: float) -> dict:
    return {
        "training": name,
        "input_size": trainer.input_size,
        "feed": feed,
        "trainable_weights": trainer.trainable,
        "steps_per_s": rate,
        "images_per_s": rate * trainer.batch_size,
    }


def main() -> dict:

    cfg = threaded_demo_config()
    steps = scaled(40)
    repeat = 3
    with tempfile.TemporaryDirectory(dir=os.environ.get("TT_BENCH_TMP")) as tmp:
        split = demo_records(cfg, Path(tmp))
        demo_full = Trainer(cfg, split)
        real, cached = measure(demo_full, steps, repeat)
        demo_frozen = Trainer(replace(cfg, model=replace(cfg.model, freeze_backbone=True)), split)
        frozen_real, frozen_cached = measure(demo_frozen, steps, repeat)
        rows = [
            row("demo, full", demo_full, "tf.data on records", real),
            row("demo, full", demo_full, "cached batch", cached),
            row("demo, freeze_backbone", demo_frozen, "tf.data on records", frozen_real),
            row("demo, freeze_backbone", demo_frozen, "cached batch", frozen_cached),
        ]
        # The real run's model is ~10x the demo's work per step: fewer steps, one repeat.
        real_steps = scaled(12)
        rates = {}
        for freeze in (True, False):
            trainer = Trainer(real_size(cfg, freeze), split)
            rates[freeze] = trainer.steps_per_s(iter(trainer.dataset), real_steps)
            name = "real size, freeze_backbone" if freeze else "real size, full"
            rows.append(row(name, trainer, "tf.data on records", rates[freeze]))
            del trainer
    batch = demo_full.batch_size
    example_steps = 5000  # config/tumblr.example.yaml's train.steps
    return report(
        "training",
        rows,
        {
            "demo_model": f"{cfg.model.backbone} {json.dumps(cfg.model.overrides)}",
            "batch_size": batch,
            "training_images": split.images,
            "timed_steps (demo, real size)": [steps, real_steps],
            "repeats (demo, median)": repeat,
            "pipeline_ratio (demo, full)": round(real / cached, 2),
            "pipeline_ratio (demo, freeze_backbone)": round(frozen_real / frozen_cached, 2),
            "freeze_backbone_speedup (demo)": round(frozen_real / real, 2),
            "freeze_backbone_speedup (real size)": round(rates[True] / rates[False], 2),
            "demo_1000_steps_min": round(1000 / real / 60, 1),
            "real_size_5000_steps_freeze_backbone_h": round(example_steps / rates[True] / 3600, 2),
            "original_project": "160 steps in 24 h",
        },
        [
            target("input pipeline / cached batch, demo, full", real / cached, at_least=0.95),
            target(
                "input pipeline / cached batch, demo, freeze_backbone",
                frozen_real / frozen_cached,
                at_least=0.95,
            ),
            target("freeze_backbone speed-up, real size", rates[True] / rates[False], at_least=1),
        ],
    )


if __name__ == "__main__":
    main()
