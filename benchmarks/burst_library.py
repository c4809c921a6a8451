"""Synthetic bursts from real sharp photos, laid out for `cull eval --bursts` (used by the burst
benchmark and the tests).

Each burst is a few frames of one scene taken ~0.3 s apart with the same camera (EXIF
DateTimeOriginal + SubSecTimeOriginal, Make/Model/serial): small hand-held shifts and rotations
between frames, one frame sharp and the others with a focus miss (lens defocus) or camera shake of
varying strength, or — the hard case — the sharp frame beside a shallow-focus frame whose subject
is sharp and whose background is soft. Scenes are interleaved in time and there are lone photos.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

KINDS = ("defocus", "shake", "shallow")


@dataclass(frozen=True)
class BurstSpec:
    scene: Path
    kind: str  # one of KINDS: what the frames other than the sharp one suffer from
    frames: int


def hand_held(base: Image.Image, rng: np.random.Generator, margin: int = 32) -> Image.Image:
    """One hand-held frame: shifted by up to 20 px and rotated by up to 0.8°."""
    width, height = base.size
    dx, dy = (int(v) for v in rng.integers(-20, 21, 2))
    frame = base.rotate(float(rng.uniform(-0.8, 0.8)), resample=Image.Resampling.BICUBIC,
                        center=(width / 2 + dx, height / 2 + dy))
    return frame.crop((margin + dx, margin + dy, width - margin + dx, height - margin + dy))


def disk_defocus(image: Image.Image, radius: float) -> Image.Image:
    """Lens defocus: a uniform disk kernel (applied as a box blur pass pair plus a Gaussian tail)."""
    return image.filter(ImageFilter.BoxBlur(radius * 0.8)).filter(ImageFilter.GaussianBlur(radius * 0.35))


def shake(image: Image.Image, length: int, rng: np.random.Generator) -> Image.Image:
    """Camera shake along a short random curved path of ``length`` pixels."""
    pixels = np.asarray(image, np.float32)
    angle = float(rng.uniform(0, np.pi))
    bend = float(rng.uniform(-0.6, 0.6))
    total = np.zeros_like(pixels)
    for step in range(length):
        t = step / max(1, length - 1) - 0.5
        a = angle + bend * t
        dy, dx = int(round(np.sin(a) * t * length)), int(round(np.cos(a) * t * length))
        total += np.roll(np.roll(pixels, dy, axis=0), dx, axis=1)
    return Image.fromarray(np.clip(total / length, 0, 255).astype(np.uint8))


def shallow_focus(image: Image.Image, radius: float) -> Image.Image:
    """A sharp central subject, the rest of the frame increasingly soft with distance from it."""
    width, height = image.size
    soft = disk_defocus(image, radius)
    softer = disk_defocus(image, radius * 2)
    mask_near = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask_near).ellipse((width * 0.3, height * 0.25, width * 0.7, height * 0.75), fill=255)
    mask_mid = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask_mid).ellipse((width * 0.15, height * 0.1, width * 0.85, height * 0.9), fill=255)
    out = Image.composite(soft, softer, mask_mid.filter(ImageFilter.GaussianBlur(20)))
    return Image.composite(image, out, mask_near.filter(ImageFilter.GaussianBlur(12)))


def save_frame(image: Image.Image, path: Path, when: dt.datetime, serial: str = "0421") -> Path:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "EOS R6"
    ifd = exif.get_ifd(0x8769)
    ifd[0x9003] = when.strftime("%Y:%m:%d %H:%M:%S")
    ifd[0x9291] = f"{when.microsecond // 10000:02d}"
    ifd[0xA431] = serial
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=92, exif=exif)
    return path


def make_library(out: Path, scenes: list[Path], seed: int = 0, frames: int = 3, singles: int = 2) -> list[BurstSpec]:
    """Write bursts (one per scene, kinds in turn) plus ``singles`` lone photos under ``out``.

    Every frame is written with its capture time; scenes are interleaved two at a time. Returns the
    specs; ``out/labels.csv`` names the sharpest frame of every burst.
    """
    rng = np.random.default_rng(seed)
    specs = [BurstSpec(s, KINDS[i % len(KINDS)], 2 if KINDS[i % len(KINDS)] == "shallow" else frames)
             for i, s in enumerate(scenes[: len(scenes) - singles])]
    clock = dt.datetime(2026, 6, 1, 10, 0, 0)
    rows = []
    for pair_start in range(0, len(specs), 2):
        pair = specs[pair_start : pair_start + 2]
        sharp_at = {id(s): int(rng.integers(s.frames)) for s in pair}
        for index in range(max(s.frames for s in pair)):
            for spec in pair:  # two scenes shot in turn, 0.3 s apart
                if index >= spec.frames:
                    continue
                base = Image.open(spec.scene).convert("RGB")
                frame = hand_held(base, rng)
                if index != sharp_at[id(spec)]:
                    if spec.kind == "defocus":
                        frame = disk_defocus(frame, float(rng.uniform(1.5, 4.0)))
                    elif spec.kind == "shake":
                        frame = shake(frame, int(rng.integers(6, 16)), rng)
                    else:
                        frame = shallow_focus(frame, float(rng.uniform(2.0, 3.5)))
                name = f"{spec.scene.stem}_{spec.kind}"
                save_frame(frame, out / name / f"frame{index}.jpg", clock)
                if index == sharp_at[id(spec)]:
                    rows.append((name, f"frame{index}.jpg"))
                clock += dt.timedelta(seconds=0.3)
        clock += dt.timedelta(seconds=30)
    for scene in scenes[len(scenes) - singles :]:
        save_frame(hand_held(Image.open(scene).convert("RGB"), rng), out / f"{scene.stem}_single" / "photo.jpg", clock)
        clock += dt.timedelta(seconds=30)
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["burst", "sharpest"])
        writer.writerows(rows)
    return specs
