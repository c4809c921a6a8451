"""Realistic degradations of sharp photos: defocus, camera shake and the nuisances of real cameras.

All functions work on gray float32 images in [0, 1] (gamma-encoded, as decoded) and take an
explicit ``numpy.random.Generator`` so a dataset is reproducible from its seed.  Blur is applied
in linear light, where optics act, with highlights allowed above white so bokeh balls form.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.signal import fftconvolve

Gray = NDArray[np.float32]
GAMMA = 2.2

# Blur sizes in pixels at the analysis scale (the training photos are used at their own size,
# which is about the analysis scale of a real camera file reduced to <= 1440 px).
SHARP_SOFTNESS = (0.0, 0.6)  # residual lens softness still counted as in focus (gaussian sigma)
DEFOCUS_RADIUS = (1.5, 9.0)
MOTION_LENGTH = (4.0, 26.0)
VERSION = 2  # bump when a recipe changes, so cached training data is rebuilt


# --- point spread functions -------------------------------------------------------------------

def disk_psf(radius: float, rng: np.random.Generator) -> Gray:
    """A lens defocus PSF: an anti-aliased disk, sometimes with a bright rim (onion ring / soap bubble)
    or a soft gaussian edge, as real lenses show."""
    size = int(np.ceil(radius)) * 2 + 3
    c = size // 2
    yy, xx = np.mgrid[:size, :size].astype(np.float32) - c
    rr = np.hypot(yy, xx)
    disk = np.clip(radius + 0.5 - rr, 0.0, 1.0)
    style = rng.random()
    if style < 0.25:  # bright rim
        disk *= 1.0 + 0.8 * np.clip(rr / max(radius, 1e-3), 0, 1) ** 4
    elif style < 0.45:  # smooth fall-off
        disk = gaussian_filter(disk, sigma=max(0.5, radius * 0.2))
    if rng.random() < 0.3:  # mild cat's-eye / elliptical aperture
        squash = rng.uniform(0.75, 1.0)
        angle = rng.uniform(0, np.pi)
        u = xx * np.cos(angle) + yy * np.sin(angle)
        v = -xx * np.sin(angle) + yy * np.cos(angle)
        disk = disk * (np.hypot(u, v / squash) <= radius + 0.5)
    return (disk / disk.sum()).astype(np.float32)


def motion_psf(length: float, rng: np.random.Generator) -> Gray:
    """A camera-shake PSF: a random trajectory (straight, curved or jittery) of ``length`` pixels,
    splatted with sub-pixel weights and uneven speed."""
    steps = max(8, int(length * 4))
    kind = rng.random()
    heading = rng.uniform(0, 2 * np.pi)
    if kind < 0.35:  # straight line
        turn = np.zeros(steps)
    elif kind < 0.7:  # smooth curve
        turn = np.full(steps, rng.uniform(-3.0, 3.0) / steps)
    else:  # hand tremor: correlated random turns
        turn = np.cumsum(rng.normal(0, 0.6, steps)) / steps
    angles = heading + np.cumsum(turn)
    speed = np.clip(1.0 + 0.5 * np.cumsum(rng.normal(0, 0.15, steps)), 0.2, 2.0)  # uneven exposure
    step = speed / speed.sum() * length
    path = np.stack([np.cumsum(step * np.sin(angles)), np.cumsum(step * np.cos(angles))], axis=1)
    path -= (path.max(0) + path.min(0)) / 2
    half = int(np.ceil(np.abs(path).max())) + 2
    kernel = np.zeros((2 * half + 1, 2 * half + 1), np.float32)
    weights = 1.0 / speed  # slower movement exposes longer
    for (y, x), w in zip(path + half, weights):
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        fy, fx = y - y0, x - x0
        kernel[y0, x0] += w * (1 - fy) * (1 - fx)
        kernel[y0 + 1, x0] += w * fy * (1 - fx)
        kernel[y0, x0 + 1] += w * (1 - fy) * fx
        kernel[y0 + 1, x0 + 1] += w * fy * fx
    return kernel / kernel.sum()


def convolve(image: Gray, psf: Gray) -> Gray:
    """Convolve with reflected borders (no dark frame around the photo)."""
    pad = max(psf.shape) // 2 + 1
    padded = np.pad(image, pad, mode="reflect")
    out = fftconvolve(padded, psf, mode="same")[pad:-pad, pad:-pad]
    return out.astype(np.float32)


# --- light and sensor -------------------------------------------------------------------------

def to_linear(gray: Gray) -> Gray:
    return np.power(np.clip(gray, 0, 1), GAMMA).astype(np.float32)


def to_gamma(linear: Gray) -> Gray:
    return np.power(np.clip(linear, 0, 1), 1 / GAMMA).astype(np.float32)


def boost_highlights(linear: Gray, rng: np.random.Generator) -> Gray:
    """Clipped highlights held more light than white: give them it back so blur spreads bokeh balls."""
    gain = rng.uniform(1.0, 8.0)
    return np.where(linear > 0.9, linear * gain, linear).astype(np.float32)


def sensor_noise(linear: Gray, rng: np.random.Generator) -> Gray:
    """Poisson-Gaussian noise at a random ISO-like level (often none)."""
    level = rng.choice([0.0, 0.0, 0.0005, 0.002, 0.006, 0.015])
    if level == 0:
        return linear
    variance = level * np.clip(linear, 0, None) + (level * 0.05) ** 2
    return (linear + rng.standard_normal(linear.shape).astype(np.float32) * np.sqrt(variance)).astype(np.float32)


def jpeg_roundtrip(gray: Gray, quality: int) -> Gray:
    buffer = io.BytesIO()
    Image.fromarray(np.clip(gray * 255 + 0.5, 0, 255).astype(np.uint8), mode="L").save(
        buffer, "JPEG", quality=int(quality)
    )
    buffer.seek(0)
    return np.asarray(Image.open(buffer), dtype=np.float32) / 255.0


def in_camera_sharpen(gray: Gray, rng: np.random.Generator) -> Gray:
    """Unsharp masking as phones and camera JPEG engines apply it: halos on blurred edges too."""
    sigma = rng.uniform(0.6, 2.0)
    amount = rng.uniform(0.3, 1.5)
    return np.clip(gray + amount * (gray - gaussian_filter(gray, sigma)), 0, 1).astype(np.float32)


def resize(gray: Gray, scale: float) -> Gray:
    """Antialiased resize by ``scale`` (as a camera or editor would downscale)."""
    if abs(scale - 1.0) < 1e-3:
        return gray
    height, width = gray.shape
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    return np.asarray(Image.fromarray(gray, mode="F").resize(size, Image.Resampling.LANCZOS), dtype=np.float32)


# --- whole recipes ----------------------------------------------------------------------------

KINDS = ("sharp", "defocus", "motion")


@dataclass(frozen=True)
class Degraded:
    image: Gray
    kind: str  # sharp | defocus | motion (the whole photo's label)
    sharp_mask: Gray | None = None  # for composites: 1 where the subject is sharp
    amount: float = 0.0  # blur radius / length in pixels (0 for sharp)


def degrade(gray: Gray, kind: str, rng: np.random.Generator, *, composite: bool = False) -> Degraded:
    """Apply one randomly drawn, realistic degradation of the given kind to a sharp photo."""
    linear = to_linear(gray)
    mask = None
    amount = 0.0
    if kind == "sharp" and not composite:
        sigma = rng.uniform(*SHARP_SOFTNESS)
        if sigma > 0.2:
            linear = gaussian_filter(linear, sigma).astype(np.float32)
    elif kind == "sharp":  # sharp subject against a defocused background: still in focus
        amount = float(np.exp(rng.uniform(np.log(3.0), np.log(12.0))))
        background = convolve(boost_highlights(linear, rng), disk_psf(amount, rng))
        mask = subject_mask(gray.shape, rng)
        linear = mask * linear + (1 - mask) * background
    elif kind == "defocus":
        amount = float(np.exp(rng.uniform(*np.log(DEFOCUS_RADIUS))))
        linear = convolve(boost_highlights(linear, rng), disk_psf(amount, rng))
    elif kind == "motion":
        amount = float(np.exp(rng.uniform(*np.log(MOTION_LENGTH))))
        linear = convolve(boost_highlights(linear, rng), motion_psf(amount, rng))
        if rng.random() < 0.3:  # shake usually comes with a little defocus or lens softness
            linear = gaussian_filter(linear, rng.uniform(0.3, 1.0)).astype(np.float32)
    else:
        raise ValueError(f"unknown degradation kind {kind!r}")
    linear = linear * np.float32(2.0 ** rng.uniform(-1.2, 0.6))  # exposure shift
    linear = sensor_noise(linear, rng)
    out = to_gamma(linear)
    if rng.random() < 0.5:
        out = in_camera_sharpen(out, rng)
    if rng.random() < 0.75:
        out = jpeg_roundtrip(out, int(rng.integers(55, 99)))
    return Degraded(out, kind, mask, amount)


def subject_mask(shape: tuple[int, int], rng: np.random.Generator) -> Gray:
    """A feathered blob (one or two ellipses) covering roughly 15-45 % of the frame."""
    height, width = shape
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    mask = np.zeros(shape, np.float32)
    for _ in range(int(rng.integers(1, 3))):
        cy, cx = rng.uniform(0.25, 0.75) * height, rng.uniform(0.25, 0.75) * width
        ry, rx = rng.uniform(0.18, 0.35) * height, rng.uniform(0.15, 0.3) * width
        mask = np.maximum(mask, (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.float32))
    return np.clip(gaussian_filter(mask, rng.uniform(1.5, 6.0)), 0, 1).astype(np.float32)
