"""The built-in demo: a deterministic synthetic dataset, labelled as LabelImg does.

Each class gets images of its shape (circle, square, triangle; other names get
a shape chosen from the name) on textured, noisy backgrounds, with Pascal VOC
XML beside each image in LabelImg's own layout. A fixed share of the XML files
carries the faults real LabelImg output has, so the validation stage has real
work: a `<size>` of 0 x 0, no `<size>` at all, absolute Windows paths in
`<path>`, and boxes a little outside the image.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from . import cli, fileio
from . import config as tt_config
from .vocxml import VocObject, labelimg_xml

log = logging.getLogger("tumbletrain.demo")
# The config this command reads; its rule passes exactly this.
CONFIG = tt_config.stage("demo", "demo", classes="own")

SHAPES = ("circle", "square", "triangle")


@dataclass(frozen=True)
class Box:
    xmin: int
    ymin: int
    xmax: int
    ymax: int

    def iou(self, other: Box) -> float:
        ix = max(0, min(self.xmax, other.xmax) - max(self.xmin, other.xmin))
        iy = max(0, min(self.ymax, other.ymax) - max(self.ymin, other.ymin))
        inter = ix * iy
        area = (self.xmax - self.xmin) * (self.ymax - self.ymin)
        other_area = (other.xmax - other.xmin) * (other.ymax - other.ymin)
        return inter / float(area + other_area - inter)


@dataclass(frozen=True)
class Fault:
    """Which LabelImg fault an image's XML carries (at most one each)."""

    zero_size: bool = False
    missing_size: bool = False
    windows_path: bool = False
    box_outside: bool = False


def shape_for(class_name: str) -> str:
    if class_name in SHAPES:
        return class_name
    digest = hashlib.sha256(class_name.encode()).digest()
    return SHAPES[digest[0] % len(SHAPES)]


def class_rng(seed: int, class_name: str) -> np.random.Generator:
    # Stable across processes and machines, unlike hash().
    digest = hashlib.sha256(f"{seed}:{class_name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def fault_for(index: int) -> Fault:
    """Fixed rates, so every demo has each fault and the counts are predictable."""
    return Fault(
        zero_size=index % 11 == 3,
        missing_size=index % 13 == 5,
        windows_path=index % 4 == 1,
        box_outside=index % 9 == 7,
    )


def background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A colour gradient with a low-frequency texture and pixel noise."""
    base = rng.uniform(40, 215, size=3)
    tilt = rng.uniform(-60, 60, size=(2, 3))
    ys, xs = np.mgrid[0:height, 0:width]
    gradient = base + (xs[..., None] / width) * tilt[0] + (ys[..., None] / height) * tilt[1]
    coarse = rng.normal(0, 18, size=(height // 16 + 2, width // 16 + 2, 3))
    texture = np.kron(coarse, np.ones((16, 16, 1)))[:height, :width]
    noise = rng.normal(0, 8, size=(height, width, 3))
    pixels = np.clip(gradient + texture + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def contrasting_colour(rng: np.random.Generator, image: Image.Image, box: Box) -> tuple:
    patch = np.asarray(image.crop((box.xmin, box.ymin, box.xmax, box.ymax))).reshape(-1, 3)
    mean = patch.mean(axis=0)
    colour = np.where(mean > 128, rng.uniform(0, 70, 3), rng.uniform(185, 255, 3))
    return tuple(int(c) for c in colour)


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: Box, colour: tuple) -> None:
    outline = tuple(255 - c for c in colour)
    corners = [box.xmin, box.ymin, box.xmax - 1, box.ymax - 1]
    if shape == "circle":
        draw.ellipse(corners, fill=colour, outline=outline)
    elif shape == "square":
        draw.rectangle(corners, fill=colour, outline=outline)
    else:
        apex = ((box.xmin + box.xmax - 1) / 2, box.ymin)
        draw.polygon(
            [apex, (box.xmin, box.ymax - 1), (box.xmax - 1, box.ymax - 1)],
            fill=colour,
            outline=outline,
        )


def place_boxes(rng: np.random.Generator, width: int, height: int, count: int) -> list[Box]:
    """Square boxes of 25-50% of the short side that overlap each other little."""
    boxes: list[Box] = []
    short = min(width, height)
    for _ in range(count * 20):
        if len(boxes) == count:
            break
        side = int(rng.uniform(0.25, 0.5) * short)
        x = int(rng.integers(0, width - side + 1))
        y = int(rng.integers(0, height - side + 1))
        candidate = Box(x, y, x + side, y + side)
        if all(candidate.iou(other) < 0.1 for other in boxes):
            boxes.append(candidate)
    return boxes


def demo_images(
    class_name: str, count: int, demo: tt_config.DemoConfig
) -> Iterator[tuple[str, bytes, bytes]]:
    """Yield (file name, image bytes, XML bytes) for each image of the class."""
    rng = class_rng(demo.seed, class_name)
    shape = shape_for(class_name)
    for index in range(count):
        width, height = (int(v) for v in rng.integers(demo.min_side, demo.max_side + 1, size=2))
        image = background(rng, width, height)
        boxes = place_boxes(rng, width, height, int(rng.integers(1, demo.max_objects + 1)))
        fault = fault_for(index)
        if fault.box_outside:
            # The object touches the right edge, where a LabelImg drag overshoots.
            first = boxes[0]
            boxes[0] = Box(width - (first.xmax - first.xmin), first.ymin, width, first.ymax)
        draw = ImageDraw.Draw(image)
        for box in boxes:
            draw_shape(draw, shape, box, contrasting_colour(rng, image, box))
        ext = "png" if index % 5 == 4 else "jpg"
        filename = f"{class_name}_{index:04d}.{ext}"
        buffer = io.BytesIO()
        if ext == "png":
            image.save(buffer, "PNG", optimize=False)
        else:
            image.save(buffer, "JPEG", quality=90)
        if fault.box_outside:
            first = boxes[0]
            boxes[0] = Box(first.xmin, first.ymin, width + 3, first.ymax)
        path = (
            f"C:\\Users\\labeller\\Pictures\\{class_name}\\{filename}"
            if fault.windows_path
            else f"/home/labeller/{class_name}/{filename}"
        )
        size = None if fault.missing_size else (0, 0, 3) if fault.zero_size else (width, height, 3)
        objects = [VocObject(class_name, b.xmin, b.ymin, b.xmax, b.ymax) for b in boxes]
        yield filename, buffer.getvalue(), labelimg_xml(class_name, filename, path, size, objects)


def write_demo(class_name: str, count: int, demo: tt_config.DemoConfig, output: Path) -> int:
    """Write the class's demo folder; it appears complete or not at all."""
    with fileio.atomic_dir(output) as staging:
        for filename, image_bytes, xml_bytes in demo_images(class_name, count, demo):
            (staging / filename).write_bytes(image_bytes)
            (staging / f"{Path(filename).stem}.xml").write_bytes(xml_bytes)
    return count


def main(argv: list[str] | None = None) -> int:
    parser = tt_config.class_command_parser(
        "demo", "Draw the offline demo's synthetic images and LabelImg XML for one class."
    )
    parser.add_argument("--output", type=Path, required=True, help="folder to create")
    args = parser.parse_args(argv)
    cfg = tt_config.from_arguments(args, CONFIG)
    fileio.clean_leftovers(args.output.parent, logger=log)
    cls = cfg.get_class(args.class_name)
    if cls.demo is None:
        raise cli.UserError(
            f"class {cls.name!r} has no demo source; add `demo: {{images: N}}` to it in the config"
        )
    written = write_demo(cls.name, cls.demo.images, cfg.demo, args.output)
    log.info(
        "drew %d demo images of %s (%s) into %s",
        written,
        cls.name,
        shape_for(cls.name),
        args.output,
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
