"""The export's own time, part by part, and what the int8 calibration set's size costs.

The demo's project (config/config.yaml: its model and classes) is trained
briefly with `snakemake iterate` (which does not export), then exported by the
command the export rule runs, with the int8 model calibrated on 100 training
images (the default before issue #28) and on fewer. export.json records each
part's seconds and the TFLite models' agreement with the checkpoint; the
clients' agreement on the verification images is measured with MediaPipe and
LiteRT by tests/test_model.py (test_the_snippets_of_using_the_model_agree).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from common import REPO, report, scaled, target, timed_cpu

TRAIN_STEPS = 50
CALIBRATIONS = (100, 25)


def project(root: Path) -> Path:
    """The demo's config, trained for a few steps and evaluated, without exporting."""
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for spec in raw["classes"].values():
        spec["demo"]["images"] = scaled(spec["demo"]["images"])
    raw["train"].update(
        {"steps": TRAIN_STEPS, "checkpoint_every": TRAIN_STEPS, "eval_every": TRAIN_STEPS}
    )
    (root / "config").mkdir(parents=True)
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    subprocess.run(
        ["snakemake", "-s", str(REPO / "Snakefile"), "-d", str(root), "--cores", "2", "iterate"],
        check=True,
        capture_output=True,
    )
    return root


def export(root: Path, run: str, calibration: int) -> dict:
    out = root / "results" / "export" / f"{run}-{calibration}"
    subprocess.run(
        [sys.executable, "-m", "tumbletrain.model", "export", "--config-json", "{}"]
        + ["--final", f"results/train/{run}/final.json", "--outdir", str(out)]
        + ["--calibration-images", str(calibration)],
        cwd=root,
        check=True,
        capture_output=True,
    )
    return json.loads((out / "export.json").read_text())


def main() -> dict:
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("TT_BENCH_TMP")) as tmp:
        root = project(Path(tmp))
        run = yaml.safe_load((root / "config" / "config.yaml").read_text())["train"]["run"]
        for calibration in CALIBRATIONS:
            wall, cpu, summary = timed_cpu(lambda c=calibration: export(root, run, c))
            int8 = summary["tflite_agreement_with_checkpoint"]["max_abs_difference"]
            rows.append(
                {
                    "calibration images": summary["calibration_images"],
                    "command wall s": wall,
                    "command CPU s": cpu,
                    **summary["seconds"],
                    "int8 max score difference": int8["model_int8.tflite"]["score"],
                    "int8 max box-encoding difference": int8["model_int8.tflite"]["box_encoding"],
                }
            )
    before, after = rows
    return report(
        "export",
        rows,
        {"train_steps": TRAIN_STEPS},
        [
            target(
                "export command, fewer calibration images / 100",
                after["command wall s"] / before["command wall s"],
                at_most=0.9,
            ),
            target(
                "int8 max score difference, fewer calibration images",
                after["int8 max score difference"],
                at_most=2 / 256,
            ),
        ],
    )


if __name__ == "__main__":
    main()
