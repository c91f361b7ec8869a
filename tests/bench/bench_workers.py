"""Training on two workers against one, at the same global batch, on this machine.

The real command (`python -m tumbletrain.model train`) on the demo's model and
records: one process with `train.threads: 2`, then two with `train.workers: 2,
threads: 1` joined by a TF_CONFIG on 127.0.0.1 (what SLURM's resolver gives
the tasks of one node: the strategy, the all-reduce and the chief's
checkpoints are the same). The rate is timed between the chief's log lines that
end Orbit's loops of `steps_per_loop` steps, the first loop (tracing) left out.
On 2 cores no gain is expected: both workers share the same cores and add an
all-reduce per step.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import yaml
from bench_training import demo_config, demo_records
from common import REPO, report, scaled
from test_distribute import free_port

# Orbit's log line after each loop of steps_per_loop steps (experiment.steps_per_loop);
# its own steps/sec has one decimal, so the rate comes from the lines' times.
LOOP = re.compile(r"^(\S+ \S+) INFO absl: train \| step:\s+(\d+) \| steps/sec", re.M)
LOOP_STEPS = 10


def train_config(raw_train: dict, steps: int, workers: int) -> dict:
    """The demo's training with this many workers sharing the machine's cores."""
    return {
        **raw_train,
        "steps": steps,
        "checkpoint_every": steps,
        "eval_every": steps,
        "warmup_steps": LOOP_STEPS,
        "workers": workers,
        "threads": max(1, (os.cpu_count() or 2) // workers),
    }


def steady_rate(log: str) -> tuple[float, int]:
    """Steps/s from the end of the first loop (tracing) to the end of the last, and the steps."""
    loops = [(datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f"), int(s)) for t, s in LOOP.findall(log)]
    (start, first), (end, last) = loops[0], loops[-1]
    return (last - first) / (end - start).total_seconds(), last - first


def run_training(cfg_json: str, stats: Path, model_dir: Path, workers: int) -> tuple[float, int]:
    """Every worker's command at once; the chief's steady rate."""
    command = [sys.executable, "-m", "tumbletrain.model", "train", "--config-json", cfg_json]
    command += ["--training-stats", str(stats), "--model-dir", str(model_dir)]
    command += ["--final", str(model_dir / "final.json")]
    cluster = {"worker": [f"127.0.0.1:{free_port()}" for _ in range(workers)]}
    logs = [model_dir.parent / f"{model_dir.name}-{index}.log" for index in range(workers)]
    processes = []
    for index, log in enumerate(logs):
        env = dict(os.environ)
        if workers > 1:
            task = {"type": "worker", "index": index}
            env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": task})
        with open(log, "w") as out:
            processes.append(subprocess.Popen(command, stdout=out, stderr=out, env=env))
    for process, log in zip(processes, logs, strict=True):
        if process.wait(timeout=1200):
            raise RuntimeError(f"training failed ({workers} workers):\n{log.read_text()[-3000:]}")
    return steady_rate(logs[0].read_text())


def main() -> dict:
    cfg = demo_config()
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    steps = LOOP_STEPS * max(3, scaled(60) // LOOP_STEPS)  # whole loops, two timed at least
    batch = cfg.train.batch_size
    rows, rates = [], {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TT_BENCH_TMP")) as tmp:
        root = Path(tmp)
        split = demo_records(cfg, root)
        stats = root / "records" / "training.json"
        stats.write_text(
            json.dumps({"files": [Path(f).name for f in split.files], "images": split.images})
        )
        for workers in (1, 2):
            train = train_config(raw["train"], steps, workers)
            cfg_json = json.dumps({**raw, "train": train})
            rates[workers], timed = run_training(cfg_json, stats, root / f"w{workers}", workers)
            rows.append(
                {
                    "workers": workers,
                    "threads_each": train["threads"],
                    "global_batch": batch,
                    "per_replica_batch": batch // workers,
                    "steps_timed": timed,
                    "steps_per_s": rates[workers],
                    "images_per_s": rates[workers] * batch,
                }
            )
    return report(
        "workers",
        rows,
        {
            "model": f"{cfg.model.backbone} {json.dumps(cfg.model.overrides)}",
            "input_size": cfg.model.input_size,
            "steps": steps,
            "steps_per_loop": LOOP_STEPS,
            "training_images": split.images,
            # No target: on one host's cores a second worker cannot add compute.
            "two_workers / one": round(rates[2] / rates[1], 2),
        },
    )


if __name__ == "__main__":
    main()
