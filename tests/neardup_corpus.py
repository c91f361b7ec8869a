"""Constructed near-duplicates for tests/test_neardup.py and the validation benchmark.

Originals: the demo's synthetic images (three shapes on textured backgrounds),
smooth noise and two-colour gradients at random angles, as different from each
other as real pictures of one tag are. Variants: what a repost does to a
picture: resized to half, re-encoded at JPEG quality 40, cropped by 5% (2.5% off
each side), or a 10% band at the bottom covered by a watermark.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw
from tumbletrain import config as tt_config
from tumbletrain import demo

VARIANTS = ("half", "jpeg40", "crop5", "watermark10")


def demo_originals(count: int, seed: int = 7) -> list[Image.Image]:
    cfg = tt_config.DemoConfig(seed=seed, min_side=200, max_side=480, max_objects=3)
    images = []
    for name in ("circle", "square", "triangle"):
        for _, data, _ in demo.demo_images(name, count, cfg):
            images.append(Image.open(io.BytesIO(data)).convert("RGB"))
    return images


def noise_originals(count: int, seed: int = 1) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        width, height = (int(v) for v in rng.integers(150, 500, 2))
        cells = int(rng.integers(4, 16))
        coarse = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
        smooth = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        grain = rng.normal(0, 12, (height, width, 3))
        pixels = np.clip(np.asarray(smooth, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
        images.append(Image.fromarray(pixels))
    return images


def gradient_originals(count: int, seed: int = 2) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        width, height = (int(v) for v in rng.integers(150, 500, 2))
        angle = rng.uniform(0, 2 * np.pi)
        y, x = np.mgrid[0:height, 0:width]
        t = (np.cos(angle) * x / width + np.sin(angle) * y / height + 1) / 2
        start, end = rng.integers(0, 256, (2, 3))
        pixels = start + (end - start) * t[..., None]
        images.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
    return images


def variant(image: Image.Image, kind: str) -> Image.Image:
    width, height = image.size
    if kind == "half":
        return image.resize((width // 2, height // 2), Image.Resampling.LANCZOS)
    if kind == "jpeg40":
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=40)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if kind == "crop5":
        dx, dy = round(width * 0.025), round(height * 0.025)
        return image.crop((dx, dy, width - dx, height - dy))
    if kind == "watermark10":
        marked = image.copy()
        draw = ImageDraw.Draw(marked)
        draw.rectangle((0, int(height * 0.9), width, height), fill=(250, 250, 250))
        draw.text((4, int(height * 0.91)), "reblogged from someone.tumblr.com", fill=(20, 20, 20))
        return marked
    raise ValueError(kind)


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()
