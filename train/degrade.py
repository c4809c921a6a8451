"""Realistic degradations of sharp photos: defocus, camera shake and the nuisances of real cameras.

All functions work on gray float32 images in [0, 1] (gamma-encoded, as decoded) and take an
explicit ``numpy.random.Generator`` so a dataset is reproducible from its seed.  Blur is applied
in linear light, where optics act, with highlights allowed above white so bokeh balls form.

Recipe v3 adds what real photos showed the model hesitating on: depth-varying defocus (a sharp
subject, blur growing with scene depth, rendered per blur layer), in-camera pipelines (noise, noise
reduction, sharpening, JPEG) run at an enlarged "sensor" scale and reduced afterwards, shake kernels
from random-walk-with-inertia trajectories whose shape depends on the exposure time, and low-contrast
scenes.  Small images are made by data.py (reduce first, then degrade).

Recipe v4 removes label noise: a photo labelled blurred must be clearly blurred at the analysis
scale.  Defocus starts at a 2 px radius and shake at 6 px, and every blur PSF is measured (its
spread, the standard deviation along its principal axis) and redrawn when it falls short of
MIN_DEFOCUS_SPREAD / MIN_SHAKE_SPREAD; depth-varying defocus labels a patch blurred only where the
radius reaches DEFOCUS_RADIUS[0].  Sharp photos keep at most SHARP_SOFTNESS, so between the two
classes lies a margin that no training label or validation photo falls into.

Recipe v5 also bounds a shake PSF's core: a trajectory that lingers in one spot leaves a sharp image
plus a faint ghost, which the spread criterion alone passes.  At most MAX_SHAKE_CORE of a shake
PSF's energy may fall in any 3x3 window, so a photo labelled shaken is smeared, not ghosted.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from scipy.ndimage import gaussian_filter, uniform_filter
from scipy.signal import fftconvolve, lfilter

Gray = NDArray[np.float32]
GAMMA = 2.2

# Blur sizes in pixels at the analysis scale (the training photos are used at their own size,
# which is about the analysis scale of a real camera file reduced to <= 1440 px).
SHARP_SOFTNESS = (0.0, 0.6)  # residual lens softness still counted as in focus (gaussian sigma)
DEFOCUS_RADIUS = (2.0, 9.0)  # v3: 1.5 px, nearly invisible at the analysis scale
MOTION_LENGTH = (6.0, 26.0)  # v3: 4 px, which left "blurred" photos that look sharp (label noise)
# Smallest blur a photo labelled blurred may carry: PSF spread (std along its principal axis, px).
# A disk of radius r spreads r/2, a straight shake of length L about 0.29 L; sharp photos keep a
# gaussian softness of at most SHARP_SOFTNESS[1] (spread 0.6 px), so the margin is 0.4-1 px.
MIN_DEFOCUS_SPREAD = 1.0
MIN_SHAKE_SPREAD = 1.6
MAX_SHAKE_CORE = 0.4  # largest share of a shake PSF's energy inside any 3x3 window (v5)
DEPTH_MAX_RADIUS = (3.0, 14.0)  # blur radius far from the focal plane in depth-varying scenes
SENSOR_PIXELS = 4_000_000  # cap on the enlarged "sensor" image of the camera pipeline
VERSION = 5  # bump when a recipe changes, so cached training data is rebuilt


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
    return splat(path, 1.0 / speed)  # slower movement exposes longer


def splat(path: NDArray[np.float64], weights: NDArray[np.float64]) -> Gray:
    """Rasterise a (N, 2) trajectory (y, x) with per-sample exposure weights, bilinearly."""
    path = path - (path.max(0) + path.min(0)) / 2
    half = int(np.ceil(np.abs(path).max())) + 2
    kernel = np.zeros((2 * half + 1, 2 * half + 1), np.float64)
    pos = path + half
    y0, x0 = np.floor(pos[:, 0]).astype(int), np.floor(pos[:, 1]).astype(int)
    fy, fx = pos[:, 0] - y0, pos[:, 1] - x0
    for dy, dx, w in ((0, 0, (1 - fy) * (1 - fx)), (1, 0, fy * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 1, fy * fx)):
        np.add.at(kernel, (y0 + dy, x0 + dx), weights * w)
    return (kernel / kernel.sum()).astype(np.float32)


def shake_psf(length: float, rng: np.random.Generator) -> Gray:
    """Camera shake from a hand-like trajectory: a random walk with inertia (AR(1) velocity) plus
    a steady drift, like recorded gyroscope traces.  Short exposures (small ``length``) are mostly
    drift, i.e. near-straight; long ones wander and turn back.  Scaled to ``length`` pixels span."""
    steps = 96
    exposure = float(np.clip(length / MOTION_LENGTH[1], 0.05, 1.0))  # relative exposure time
    inertia = rng.uniform(0.85, 0.98)
    wander = lfilter([1.0], [1.0, -inertia], rng.normal(0, 1, (steps, 2)), axis=0)
    wander /= max(float(np.abs(wander).max()), 1e-6)
    heading = rng.uniform(0, 2 * np.pi)
    drift = np.array([np.sin(heading), np.cos(heading)]) * rng.uniform(0.2, 1.0) * (1.2 - exposure)
    velocity = wander * exposure * rng.uniform(0.6, 1.4) + drift
    path = np.cumsum(velocity, axis=0)
    span = max(float(np.ptp(path, axis=0).max()), 1e-6)
    path *= length / span
    speed = np.hypot(*np.diff(path, axis=0, prepend=path[:1]).T) + 1e-3
    weights = 1.0 / np.clip(speed / speed.mean(), 0.25, 4.0)  # the hand lingers where it turns
    return splat(path, weights)


def psf_spread(psf: Gray) -> float:
    """How far a PSF smears a point: the standard deviation (px) along its principal axis."""
    weights = np.asarray(psf, np.float64)
    total = weights.sum()
    yy, xx = np.mgrid[: psf.shape[0], : psf.shape[1]].astype(np.float64)
    cy, cx = (weights * yy).sum() / total, (weights * xx).sum() / total
    dy, dx = yy - cy, xx - cx
    cov = np.array([[(weights * dy * dy).sum(), (weights * dy * dx).sum()],
                    [(weights * dy * dx).sum(), (weights * dx * dx).sum()]]) / total
    return float(np.sqrt(max(np.linalg.eigvalsh(cov).max(), 0.0)))


def psf_core(psf: Gray) -> float:
    """The largest share of a PSF's energy inside any 3x3 window (1 for a point, ~3/L for a line)."""
    weights = np.asarray(psf, np.float64)
    padded = np.pad(weights, 1)
    return float(uniform_filter(padded, size=3, mode="constant").max() * 9 / weights.sum())


def clearly_blurred(psf: Gray, kind: str) -> bool:
    """Whether a PSF smears enough to label a photo blurred: spread at least MIN_DEFOCUS_SPREAD /
    MIN_SHAKE_SPREAD, and for shake at most MAX_SHAKE_CORE of the energy in one 3x3 spot."""
    if kind == "defocus":
        return psf_spread(psf) >= MIN_DEFOCUS_SPREAD
    return psf_spread(psf) >= MIN_SHAKE_SPREAD and psf_core(psf) <= MAX_SHAKE_CORE


def blurred_psf(kind: str, rng: np.random.Generator) -> tuple[Gray, float]:
    """A defocus or shake PSF that is clearly blurred at the analysis scale (clearly_blurred; curled-up
    or lingering shake paths are redrawn).  Returns (psf, size)."""
    low, high = DEFOCUS_RADIUS if kind == "defocus" else MOTION_LENGTH
    for attempt in range(16):
        amount = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        if kind == "defocus":
            psf = disk_psf(amount, rng)
        else:
            psf = shake_psf(amount, rng) if rng.random() < 0.7 else motion_psf(amount, rng)
        if clearly_blurred(psf, kind):
            return psf, amount
        low = min(high, low * 1.15)  # never loop for long: nudge the draw towards larger blur
    psf = disk_psf(high, rng) if kind == "defocus" else motion_psf(high, rng)
    return psf, float(high)


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


def noise_reduction(gray: Gray, strength: float) -> Gray:
    """Edge-aware smoothing as camera JPEG engines do (a self-guided filter): flat areas and fine,
    low-contrast texture are smeared, strong edges kept."""
    radius = 1 if strength < 0.5 else 2
    size = 2 * radius + 1
    mean = uniform_filter(gray, size)
    var = np.maximum(uniform_filter(gray * gray, size) - mean * mean, 0)
    eps = (0.004 + 0.03 * strength) ** 2
    a = var / (var + eps)
    return (uniform_filter(a, size) * gray + uniform_filter((1 - a) * mean, size)).astype(np.float32)


def camera_pipeline(linear: Gray, rng: np.random.Generator) -> Gray:
    """An in-camera JPEG pipeline at an enlarged sensor scale, then reduced back (as cull's DCT
    reduction does with a 12-24 MP file).  Sensor noise, noise reduction, sharpening and JPEG act on
    sensor pixels, so their artefacts shrink by the reduction factor.  Approximation: the sensor
    image is the source enlarged 1.5-2.5x (at most SENSOR_PIXELS), not a true 12-24 MP capture."""
    height, width = linear.shape
    up = min(rng.uniform(1.5, 2.5), np.sqrt(SENSOR_PIXELS / (height * width)))
    up = max(up, 1.0)
    sensor = resize(np.clip(linear, 0, None), up) if up > 1.001 else linear
    level = rng.choice([0.0005, 0.002, 0.006, 0.015, 0.03])
    variance = level * np.clip(sensor, 0, None) + (level * 0.05) ** 2
    sensor = sensor + rng.standard_normal(sensor.shape).astype(np.float32) * np.sqrt(variance).astype(np.float32)
    out = to_gamma(sensor)
    out = noise_reduction(out, rng.uniform(0.0, 1.0) * min(1.0, 0.3 + 30 * level))
    sigma, amount = rng.uniform(0.7, 2.0), rng.uniform(0.4, 2.0)
    out = np.clip(out + amount * (out - gaussian_filter(out, sigma)), 0, 1).astype(np.float32)
    out = jpeg_roundtrip(out, int(rng.integers(75, 98)))
    if out.shape != (height, width):
        out = np.asarray(Image.fromarray(out, mode="F").resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32)
    return np.clip(out, 0, 1).astype(np.float32)


def lower_contrast(gray: Gray, rng: np.random.Generator) -> Gray:
    """Haze, fog or a dull subject: contrast squeezed towards a mid grey."""
    factor = rng.uniform(0.3, 0.7)
    centre = float(np.clip(gray.mean() + rng.uniform(-0.1, 0.1), 0.2, 0.8))
    return (centre + factor * (gray - centre)).astype(np.float32)


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


def degrade(
    gray: Gray, kind: str, rng: np.random.Generator, *, composite: bool = False, depth: bool = False
) -> Degraded:
    """Apply one randomly drawn, realistic degradation of the given kind to a sharp photo.

    ``composite``: a sharp subject pasted on a defocused copy (v2); ``depth``: depth-varying defocus
    around a sharp subject (v3).  Both are labelled sharp and carry a per-pixel sharp_mask.
    """
    if rng.random() < 0.15:
        gray = lower_contrast(gray, rng)
    linear = to_linear(gray)
    mask = None
    amount = 0.0
    if kind == "sharp" and not composite and not depth:
        sigma = rng.uniform(*SHARP_SOFTNESS)
        if sigma > 0.2:
            linear = gaussian_filter(linear, sigma).astype(np.float32)
    elif kind == "sharp" and depth:  # sharp subject, blur growing with depth: in focus
        linear, radius = depth_defocus(linear, gray, rng)
        # 1 where sharp (radius <= 0.75 px), 0 where clearly blurred (radius >= DEFOCUS_RADIUS[0])
        edge = DEFOCUS_RADIUS[0]
        mask = np.clip((edge - radius) / (edge - 0.75), 0.0, 1.0).astype(np.float32)
        amount = float(radius.max())
    elif kind == "sharp":  # sharp subject against a defocused background: still in focus
        amount = float(np.exp(rng.uniform(np.log(3.0), np.log(12.0))))
        background = convolve(boost_highlights(linear, rng), disk_psf(amount, rng))
        mask = subject_mask(gray.shape, rng)
        linear = mask * linear + (1 - mask) * background
    elif kind in ("defocus", "motion"):
        psf, amount = blurred_psf(kind, rng)
        linear = convolve(boost_highlights(linear, rng), psf)
        if kind == "motion" and rng.random() < 0.3:  # shake usually comes with a little defocus or lens softness
            linear = gaussian_filter(linear, rng.uniform(0.3, 1.0)).astype(np.float32)
    else:
        raise ValueError(f"unknown degradation kind {kind!r}")
    linear = linear * np.float32(2.0 ** rng.uniform(-1.2, 0.6))  # exposure shift
    if rng.random() < 0.45:  # a camera's own JPEG engine at sensor scale
        return Degraded(camera_pipeline(linear, rng), kind, mask, amount)
    linear = sensor_noise(linear, rng)
    out = to_gamma(linear)
    if rng.random() < 0.5:
        out = in_camera_sharpen(out, rng)
    if rng.random() < 0.75:
        out = jpeg_roundtrip(out, int(rng.integers(55, 99)))
    return Degraded(out, kind, mask, amount)


def focus_point(gray: Gray, rng: np.random.Generator, block: int = 32) -> tuple[float, float]:
    """A textured spot to focus on (a photographer focuses on a subject, not on sky)."""
    height, width = gray.shape
    rows, cols = max(1, height // block), max(1, width // block)
    g = np.abs(np.diff(gray, axis=1))[: rows * block, : (cols * block) - 1]
    g = np.pad(g, ((0, rows * block - g.shape[0]), (0, cols * block - g.shape[1])))
    energy = g.reshape(rows, block, cols, block).mean(axis=(1, 3)).ravel()
    top = np.argsort(-energy)[: max(1, len(energy) // 10)]
    r, c = divmod(int(rng.choice(top)), cols)
    return (r + 0.5) * block, (c + 0.5) * block


def depth_map(shape: tuple[int, int], focus: tuple[float, float], rng: np.random.Generator) -> Gray:
    """Smooth synthetic scene depth, 0 at the focus point: a ground-plane ramp, a radial falloff
    around a subject, or a subject plane in front of a receding background.  In units where
    |depth| >= 1 is far from the focal plane."""
    height, width = shape
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    diag = float(np.hypot(height, width))
    fy, fx = focus
    style = rng.choice(["ramp", "radial", "planes"])
    if style == "ramp":  # tilted ground plane: blur grows in front of and behind the focal line
        angle = rng.uniform(0, 2 * np.pi)
        d = ((yy - fy) * np.sin(angle) + (xx - fx) * np.cos(angle)) / (diag * rng.uniform(0.25, 0.6))
        d = np.where(d < 0, d * rng.uniform(0.3, 1.0), d)
        depth = np.abs(d)
    elif style == "radial":  # a (possibly small) subject, everything else recedes
        r_subject = diag * rng.uniform(0.03, 0.2)
        dist = np.hypot((yy - fy) / rng.uniform(0.7, 1.3), xx - fx)
        depth = np.clip((dist - r_subject) / (diag * rng.uniform(0.1, 0.4)), 0, None)
    else:  # subject plane + background plane that recedes along a direction
        ry, rx = diag * rng.uniform(0.06, 0.22), diag * rng.uniform(0.05, 0.2)
        subject = ((yy - fy) / ry) ** 2 + ((xx - fx) / rx) ** 2 <= 1
        subject = gaussian_filter(subject.astype(np.float32), rng.uniform(1.0, 4.0))
        angle = rng.uniform(0, 2 * np.pi)
        ramp = ((yy - fy) * np.sin(angle) + (xx - fx) * np.cos(angle)) / diag
        background = rng.uniform(0.6, 1.0) + 0.5 * np.clip(ramp, -0.5, 0.5)
        depth = (1 - subject) * background
    return depth.astype(np.float32)


def depth_defocus(linear: Gray, gray: Gray, rng: np.random.Generator) -> tuple[Gray, Gray]:
    """Render depth-varying defocus: the blur radius grows with |depth| from 0 at the focus point to
    a maximum; the image is blurred at a few radii (layers) and each pixel interpolates between the
    two layers bracketing its radius.  Returns (image, radius map)."""
    radius_max = float(np.exp(rng.uniform(*np.log(DEPTH_MAX_RADIUS))))
    depth = depth_map(gray.shape, focus_point(gray, rng), rng)
    radius = (radius_max * np.clip(depth, 0, 1) ** rng.uniform(0.7, 1.5)).astype(np.float32)
    levels = [0.0] + [float(r) for r in np.geomspace(1.0, radius_max, 5)]
    source = boost_highlights(linear, rng)
    layers = [linear] + [convolve(source, disk_psf(r, rng)) for r in levels[1:]]
    out = np.zeros_like(linear)
    for k in range(len(levels) - 1):
        lo, hi = levels[k], levels[k + 1]
        t = np.clip((radius - lo) / (hi - lo), 0, 1)
        inside = (radius >= lo) & (radius <= hi) if k == 0 else (radius > lo) & (radius <= hi)
        out = np.where(inside, (1 - t) * layers[k] + t * layers[k + 1], out)
    out = np.where(radius > levels[-1], layers[-1], out)
    return out.astype(np.float32), radius


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
