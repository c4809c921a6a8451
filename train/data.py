"""Training data: find source photos, split them by photo, and build patch sets and photo folders.

Splits are by source photo (or by scene for the study's own layout), never by patch, so no scene
leaks between train, validation and test.  Everything is derived from files on disk and a seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from cull.card import AnalysisSpec, analysis_dict, file_sha256
from cull.decode import decode_gray
from cull.errors import UnreadableImage
from cull.evaluate import folder_label
from cull.formats import is_photo
from cull.patches import network_input, select_patches
from train.degrade import KINDS, VERSION as DEGRADE_VERSION, Degraded, degrade, resize
from train.errors import TrainUsageError

log = logging.getLogger(__name__)

SOURCE_LONG_SIDE = 1024  # training photos are read through cull's own decoder, capped here
SPLITS = ("train", "val", "test")
KIND_INDEX = {k: i for i, k in enumerate(KINDS)}
# Each training photo yields these variants: composite = sharp subject pasted on a blurred copy,
# depth = depth-varying defocus around a sharp subject, small-* = the photo reduced to <= 320 px
# first (small images: few patches, blur measured at that size).
TRAIN_VARIANTS = ("sharp", "sharp", "depth", "depth", "composite", "defocus", "defocus", "motion", "motion",
                  "motion", "small-sharp", "small-blurred")
SMALL_LONG_SIDE = (180, 320)
MIN_SHARP_PIXELS = 3 * 64 * 64  # a depth photo labelled sharp must have at least this much in focus
# Hard negatives: a scan keeps a photo on its best few patches, so a blurred photo is kept when some of its
# patches look sharp (edges running along a shake).  With a hard-negative share > 0, that share of a
# blurred photo's patches are the ones that look sharpest among HARD_POOL times as many textured
# candidates (to a miner network's focus head, or by fine_detail without one); the rest are drawn at
# random, as every patch is with share 0.
HARD_NEGATIVE_SHARE = 0.0  # the shipped model's recipe (v5)
HARD_POOL = 4
_SCENE = re.compile(r"^(\d+)_")


@dataclass(frozen=True)
class Source:
    path: Path
    split: str
    label: str  # sharp | defocus | motion (real labelled photos keep their label; sources are sharp)
    group: str  # the split key: one photo, or one scene of the study's layout


def split_of(group: str, held_out_test: bool = False) -> str:
    """Deterministic split by group: ~10 % test, ~10 % validation, the rest train."""
    if held_out_test:
        return "test"
    bucket = int(hashlib.sha1(group.encode()).hexdigest(), 16) % 100
    return "test" if bucket < 10 else "val" if bucket < 20 else "train"


def find_sources(data_dirs: list[Path]) -> list[Source]:
    """Photos to learn from. A folder in the study's layout (sharp/, *blur*/ with names like
    12_NIKON_S.jpg) gives labelled real photos split by scene; any other folder gives sharp photos
    to degrade.  Kodak24 is always held out for test (examples/ are made from it)."""
    sources: list[Source] = []
    for root in data_dirs:
        root = Path(root)
        subdirs = {p.name: p for p in root.iterdir() if p.is_dir()} if root.is_dir() else {}
        labelled = [n for n in subdirs if folder_label(n) is False] and "sharp" in subdirs
        for path in sorted(p for p in root.rglob("*") if p.is_file() and is_photo(p)):
            rel = path.relative_to(root)
            if labelled:
                folder = rel.parts[0]
                label = folder_label(folder)
                if label is None:
                    continue
                scene = _SCENE.match(path.name)
                group = f"{root.name}/{scene.group(1) if scene else path.stem}"
                kind = "sharp" if label else ("motion" if "motion" in folder.lower() else "defocus")
            else:
                group, kind = f"{root.name}/{rel.as_posix()}", "sharp"
            sources.append(Source(path, split_of(group, "kodak" in rel.as_posix().lower()), kind, group))
    if not sources:
        raise TrainUsageError(f"no photos found under {', '.join(map(str, data_dirs))}")
    return ensure_every_split(sources)


def ensure_every_split(sources: list[Source]) -> list[Source]:
    """Small data sets may hash no group into val or test: move whole train groups there."""
    for split in ("val", "test"):
        if any(s.split == split for s in sources):
            continue
        groups = sorted({s.group for s in sources if s.split == "train"})
        if len(groups) < 3:
            continue
        moved = groups[0] if split == "val" else groups[-1]
        sources = [replace(s, split=split) if s.group == moved else s for s in sources]
    return sources


def load_source(path: Path) -> NDArray[np.float32]:
    return decode_gray(path, SOURCE_LONG_SIDE)


# --- patch sets ---------------------------------------------------------------------------------

def _photo_patches(args: tuple[Source, int, AnalysisSpec, int, float, str | None]) -> tuple[NDArray[np.uint8], NDArray[np.int8], NDArray[np.int8]]:
    source, seed, spec, per_variant, hard_share, miner = args
    rng = np.random.default_rng(seed)
    empty = (np.zeros((0, spec.patch_size, spec.patch_size), np.uint8), np.zeros(0, np.int8), np.zeros(0, np.int8))
    try:
        gray = load_source(source.path)
    except UnreadableImage as exc:
        log.warning("skipping %s: %s", source.path, exc)
        return empty
    xs, sharp, kind = [], [], []
    if source.label != "sharp":  # a real blurred photo: learn from it as it is
        variants: tuple[str, ...] = ("as-is",)
    else:
        variants = TRAIN_VARIANTS
        if rng.random() < 0.5:  # downscaling, as from a bigger camera file
            gray = resize(gray, rng.uniform(0.5, 1.0))
    for variant in variants:
        if variant == "as-is":
            image, mask, label = gray, None, source.label
        else:
            d = make_variant(gray, variant, rng)
            image, mask, label = d.image, d.sharp_mask, d.kind
        dy, dx = rng.integers(0, spec.patch_size, size=2)  # vary the tile grid
        image = image[dy:, dx:]
        share = hard_share if label != "sharp" and mask is None else 0.0
        patches = select_patches(image, replace(spec, max_patches=per_variant * (HARD_POOL if share else 2)))
        if len(patches) == 0:
            continue
        looks_sharp = (focus_scores(miner, patches.pixels) if miner else fine_detail(patches.pixels)) if share else None
        chosen = choose_patches(looks_sharp, len(patches), per_variant, share, rng)
        for i in chosen:
            patch_label = label
            if mask is not None:
                y, x = patches.origins[i]
                cover = mask[dy + y : dy + y + spec.patch_size, dx + x : dx + x + spec.patch_size].mean()
                if cover >= 0.85:
                    patch_label = "sharp"
                elif cover <= 0.1:
                    patch_label = "defocus"
                else:
                    continue  # straddles the subject edge: ambiguous
            xs.append(np.clip(patches.pixels[i] * 255 + 0.5, 0, 255).astype(np.uint8))
            sharp.append(1 if patch_label == "sharp" else 0)
            kind.append(KIND_INDEX[patch_label])
    if not xs:
        return empty
    return np.stack(xs), np.array(sharp, np.int8), np.array(kind, np.int8)


def fine_detail(pixels: NDArray[np.float32]) -> NDArray[np.float64]:
    """How sharp each (N, P, P) patch looks: mean |Laplacian| over mean |gradient| (blur takes the
    second derivative down faster than the first; an edge along a shake keeps both)."""
    p = pixels.astype(np.float64)
    lap = np.abs(p[:, 1:-1, 2:] + p[:, 1:-1, :-2] + p[:, 2:, 1:-1] + p[:, :-2, 1:-1] - 4 * p[:, 1:-1, 1:-1])
    grad = np.abs(np.diff(p, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(p, axis=2)).mean(axis=(1, 2))
    return lap.mean(axis=(1, 2)) / (grad + 1e-3)


_SESSIONS: dict[str, Any] = {}  # one onnxruntime session per network file and process


def focus_scores(model_path: str | Path, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
    """P(in focus) that an exported focus network (a miner, a teacher) gives each (N, P, P) patch in [0, 1]."""
    key = str(model_path)
    if key not in _SESSIONS:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        _SESSIONS[key] = ort.InferenceSession(key, sess_options=options, providers=["CPUExecutionProvider"])
    result = _SESSIONS[key].run(["p_sharp"], {"patches": network_input(pixels)})[0]
    return np.asarray(result, np.float32).reshape(-1)


def choose_patches(looks_sharp: NDArray | None, candidates: int, count: int, hard_share: float,
                   rng: np.random.Generator) -> NDArray[np.intp]:
    """Indices of ``count`` of ``candidates`` patches: the ``hard_share`` that look sharpest (highest
    ``looks_sharp``, needed only with a share), the rest at random."""
    hard = int(round(count * hard_share))
    if looks_sharp is None or not hard:
        return rng.permutation(candidates)[:count]
    ranked = np.argsort(-looks_sharp, kind="stable")
    rest = ranked[hard:]
    return np.concatenate([ranked[:hard], rest[rng.permutation(len(rest))[: count - hard]]]).astype(np.intp)


def make_variant(gray: NDArray[np.float32], variant: str, rng: np.random.Generator) -> Degraded:
    """One degraded version of a sharp photo (see TRAIN_VARIANTS for the names)."""
    if variant.startswith("small-"):
        long_side = rng.uniform(*SMALL_LONG_SIDE)
        gray = resize(gray, min(1.0, long_side / max(gray.shape)))
        kind = "sharp" if variant == "small-sharp" else str(rng.choice(["defocus", "motion"]))
        return degrade(gray, kind, rng)
    if variant == "depth":
        for _ in range(3):  # a sharp label needs a sharp region worth a few patches
            d = degrade(gray, "sharp", rng, depth=True)
            if d.sharp_mask is not None and float((d.sharp_mask >= 0.5).sum()) >= MIN_SHARP_PIXELS:
                break
        return d
    if variant == "composite":
        return degrade(gray, "sharp", rng, composite=True)
    return degrade(gray, variant, rng)


def build_patches(
    sources: list[Source], split: str, spec: AnalysisSpec, seed: int, per_variant: int, workers: int,
    hard_share: float = 0.0, miner: Path | None = None,
) -> dict[str, NDArray]:
    """Patch set of one split: x (N, P, P) uint8, sharp (N,) 0/1, kind (N,) index into KINDS;
    ``hard_share``: of each blurred photo's patches, the share that are hard negatives (see HARD_POOL),
    as ``miner`` (an exported focus network) sees them, or by fine_detail."""
    chosen = [s for s in sources if s.split == split]
    jobs = [(s, seed * 1_000_003 + i, spec, per_variant, hard_share, str(miner) if miner else None)
            for i, s in enumerate(chosen)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        parts = list(pool.map(_photo_patches, jobs, chunksize=4))
    x = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, spec.patch_size, spec.patch_size), np.uint8)
    return {
        "x": x,
        "sharp": np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int8),
        "kind": np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.int8),
    }


# --- photo folders for evaluation -----------------------------------------------------------------

PHOTO_FOLDERS = {  # variant -> sub-folder (cull eval layout: sharp*/ in focus, *blur*/ not)
    "sharp": "sharp",
    "composite": "sharp_shallow_dof",
    "depth": "sharp_depth_of_field",
    "small-sharp": "sharp_small",
    "defocus": "defocused_blurred",
    "motion": "motion_blurred",
    "small-blurred": "small_blurred",
}
PHOTO_VARIANTS = ("sharp", "sharp", "composite", "depth", "small-sharp", "defocus", "motion", "small-blurred")


def _write_photo_variants(args: tuple[Source, int, Path]) -> int:
    source, seed, out = args
    rng = np.random.default_rng(seed)
    stem = f"{source.group.replace('/', '_')}_{source.path.stem}"
    if source.label != "sharp":  # a real labelled photo: copy as it is
        folder = out / ("motion_blurred" if source.label == "motion" else "defocused_blurred")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / source.path.name).write_bytes(source.path.read_bytes())
        return 1
    try:
        gray = load_source(source.path)
    except UnreadableImage:
        return 0
    written = 0
    for variant in dict.fromkeys(PHOTO_VARIANTS):
        for n in range(PHOTO_VARIANTS.count(variant)):
            d = make_variant(gray, variant, rng)
            folder = out / PHOTO_FOLDERS[variant]
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.clip(d.image * 255 + 0.5, 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"{stem}_{n}.png")
            written += 1
    return written


def build_photo_folder(sources: list[Source], split: str, out: Path, seed: int, workers: int) -> Path:
    """A labelled folder (cull eval layout) of whole degraded photos for one split."""
    chosen = [s for s in sources if s.split == split]
    jobs = [(s, seed * 7_919 + i, out) for i, s in enumerate(chosen)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        total = sum(pool.map(_write_photo_variants, jobs, chunksize=2))
    (out / "MANIFEST.json").write_text(json.dumps({"split": split, "photos": total, "sources": len(chosen)}))
    return out


def summarise_sources(sources: list[Source]) -> dict[str, dict[str, int]]:
    summary: dict[str, dict[str, int]] = {}
    for s in sources:
        summary.setdefault(s.split, {}).setdefault(s.label, 0)
        summary[s.split][s.label] += 1
    return summary


def spec_key(spec: AnalysisSpec, seed: int, per_variant: int, sources: list[Source], hard_share: float = 0.0,
             miner: Path | None = None) -> str:
    hard: list[Any] = []  # share 0: the key (and data) of the earlier recipe
    if hard_share:
        hard = [hard_share, HARD_POOL] + ([file_sha256(miner)] if miner else [])
    blob = json.dumps([analysis_dict(spec), seed, per_variant, TRAIN_VARIANTS, PHOTO_VARIANTS, DEGRADE_VERSION, *hard,
                       [str(s.path) for s in sources], numpy_paths()])
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def numpy_dispatch() -> list[str]:
    """The instruction-set targets numpy dispatches to on this machine (as NPY_DISABLE_CPU_FEATURES left them)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__  # type: ignore[no-redef]
    return [t for t in __cpu_dispatch__ if __cpu_features__.get(t)]


def numpy_paths() -> str:
    """Which of numpy's instruction paths the degradations take here: its AVX-512 kernels round
    differently from its AVX2 ones (python -m train holds it to AVX2), so data made on either is
    cached apart.  Also numpy's version, which changes the data too."""
    wide = any(t == "X86_V4" or t.startswith("AVX512") for t in numpy_dispatch())
    return f"numpy {np.__version__} {'avx512' if wide else 'avx2'}"
