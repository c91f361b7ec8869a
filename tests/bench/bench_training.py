"""Training input pipeline: the real tf.data pipeline vs one cached batch, at the demo's size.

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

from common import REPO, report, scaled
from tumbletrain import annotations, config, demo, experiment, lists, records

WARMUP_STEPS = 3


def demo_config() -> config.WorkflowConfig:
    """The shipped demo config (model, input size, batch), with the images scaled."""
    import yaml

    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for spec in raw["classes"].values():
        spec["demo"]["images"] = scaled(spec["demo"]["images"])
    return config.parse(raw)


def demo_records(cfg: config.WorkflowConfig, root: Path) -> experiment.DataSplit:
    """Demo images -> lists -> training records, in-process, as the workflow writes them."""
    ids = {c.name: c.label_id for c in cfg.classes}
    files, images = [], 0
    cwd = os.getcwd()
    # The config names the demo folders relative to the project directory.
    os.chdir(root)
    try:
        for cls in cfg.classes:
            demo.write_demo(cls.name, cls.demo.images, cfg.demo, Path(cls.annotations_dir))
            annotations.validate_class(cfg, cls.name, None, Path("lists", cls.name))
            items = lists.read_list(Path("lists", cls.name, "training.tsv"))
            output = root / "records" / f"{cls.name}_training.tfrecord"
            stats = records.write_records(items, output, ids)
            files += [str(output.parent / name) for name in stats["files"]]
            images += stats["images"]
    finally:
        os.chdir(cwd)
    return experiment.DataSplit(tuple(files), images)


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


def main() -> dict:
    import tensorflow as tf

    cfg = demo_config()
    tf.config.threading.set_inter_op_parallelism_threads(cfg.train.threads)
    tf.config.threading.set_intra_op_parallelism_threads(cfg.train.threads)
    steps = scaled(40)
    repeat = 3
    with tempfile.TemporaryDirectory(dir=os.environ.get("TT_BENCH_TMP")) as tmp:
        split = demo_records(cfg, Path(tmp))
        full = Trainer(cfg, split)
        real, cached = measure(full, steps, repeat)
        frozen_cfg = replace(cfg, model=replace(cfg.model, freeze_backbone=True))
        frozen = Trainer(frozen_cfg, split)
        frozen_real, frozen_cached = measure(frozen, steps, repeat)
    batch = full.batch_size
    rows = [
        {
            "training": name,
            "feed": feed,
            "trainable_weights": trainer.trainable,
            "steps_per_s": rate,
            "images_per_s": rate * batch,
        }
        for name, trainer, feed, rate in (
            ("full (demo)", full, "tf.data on records", real),
            ("full (demo)", full, "cached batch", cached),
            ("freeze_backbone", frozen, "tf.data on records", frozen_real),
            ("freeze_backbone", frozen, "cached batch", frozen_cached),
        )
    ]
    return report(
        "training",
        rows,
        {
            "model": f"{cfg.model.backbone} {json.dumps(cfg.model.overrides)}",
            "input_size": cfg.model.input_size,
            "batch_size": batch,
            "training_images": split.images,
            "timed_steps": steps,
            "repeats (median)": repeat,
            "pipeline_ratio (full)": round(real / cached, 2),
            "pipeline_ratio (freeze_backbone)": round(frozen_real / frozen_cached, 2),
            "freeze_backbone_speedup": round(frozen_real / real, 2),
            "targets": "pipeline_ratio >= 0.9; freeze_backbone faster than full",
        },
    )


if __name__ == "__main__":
    main()
