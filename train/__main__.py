"""python -m train [--data DIR ...] | python -m train sweep --kernels 3 5 7

Rebuilds models/focus.onnx and models/focus.json (the card cull reads), or reproduces the source
study's kernel-size sweep with the seed network.  Generated data and trained networks are cached
under --work.  The build happens in a staging folder; models/ is replaced only after the export
parity check, the production-path threshold fit and the evaluation (with its in-focus gate) pass.
Failures raise TrainError, which main() turns into exit code 1 (2 for unusable input).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from train.errors import TrainError

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
TILE_STRIDE = 32  # the card's tile grid step: tiles overlap by half (session 10, models/EXPERIMENTS.md)
# The same code on two x86-64 machines builds the same network only if numpy and oneDNN take the same
# instruction paths: numpy's AVX-512 kernels (sin, exp, ... in the blur kernels) round differently from
# its AVX2 ones, which changed 2 of v5's 37 144 training patches on an AVX-512 machine and so the whole
# trained network (models/EXPERIMENTS.md, session 14).  `python -m train` holds both to AVX2, which
# every machine that ran a build here has; numpy reads this when imported, TensorFlow when it starts.
PORTABLE_CPU = {
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512CD AVX512_KNL AVX512_KNM "
                                "AVX512_SKX AVX512_CLX AVX512_CNL",  # numpy 2.4's dispatch groups and older names
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}


def _parser() -> argparse.ArgumentParser:
    from platformdirs import user_cache_dir

    from train.data import HARD_NEGATIVE_SHARE

    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="build", choices=["build", "sweep", "refit"],
                        help="build (default): train, fit, check, ship; sweep: the kernel-size study; refit: fit the "
                        "shipped network's card again with this recipe's photo analysis (--tile-stride), no training")
    parser.add_argument("--data", type=Path, action="append",
                        help="photos to learn from (repeatable): a folder of sharp photos, or the study's "
                        "layout sharp/ defocused_blurred/ motion_blurred/ (default: ../shared/data/sharp)")
    parser.add_argument("--real", type=Path, default=SHARED / "real-blur-dev",
                        help="real labelled photos held out for the card's report (cull eval layout)")
    parser.add_argument("--out", type=Path, default=REPO / "models", help="where focus.onnx and focus.json go")
    parser.add_argument("--work", type=Path, default=Path(user_cache_dir("cull")) / "train",
                        help="cache for generated patches and photo folders")
    parser.add_argument("--variant", default="focus", choices=["focus", "seed"])
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--kernels", type=int, nargs="+", default=[3, 5, 7], help="for sweep")
    parser.add_argument("--filters", type=int, nargs=3, default=[16, 32, 32], metavar="N",
                        help="convolution widths of the trunk (default 16 32 32, the shipped model: ~3x cheaper "
                        "than the seed's 32 64 64, which the sweep keeps as its baseline)")
    parser.add_argument("--first-stride", type=int, default=1, choices=[1, 2],
                        help="stride of the first convolution (2: cheaper, coarser)")
    parser.add_argument("--separable", action="store_true",
                        help="depthwise-separable second and third convolutions (cheaper per patch; the "
                        "first convolution stays full)")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--per-variant", type=int, default=6, help="patches kept per degraded photo")
    parser.add_argument("--tile-stride", type=int, default=TILE_STRIDE, metavar="PX",
                        help="the card's tile grid step for judging photos (64 = the patch size: tiles side by side; "
                        "default %(default)s: overlapping by half); training patches always come from the side-by-side grid")
    parser.add_argument("--hard-negatives", type=_fraction, default=HARD_NEGATIVE_SHARE, metavar="SHARE",
                        help="share of a blurred photo's patches chosen as the sharpest-looking of four times as "
                        "many candidates, the rest at random (default %(default)s: all random)")
    parser.add_argument("--miner", type=Path, default=None, metavar="MODEL.onnx",
                        help="with --hard-negatives: an exported focus network whose P(in focus) says which "
                        "patches look sharpest (default: their fine detail, |Laplacian| over |gradient|)")
    parser.add_argument("--limit", type=int, default=0, help="use at most this many source photos per split, evenly "
                        "spaced (quicker builds; default 0: all of them, as the shipped model was built)")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--fit-seed", type=int, nargs="+", default=None, metavar="SEED",
                        help="seed of the network's initialisation and batch order only (default --seed): "
                        "another training run on the same cached data; several seeds train one network "
                        "each and ship their average (train/ensemble.py)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--init", type=Path, default=None,
                        help="fine-tune: start from the weights of this exported focus.onnx (same architecture); "
                        "the card records its sha256")
    parser.add_argument("--learning-rate", type=float, default=None, help="default 1e-3, or 2e-4 with --init")
    parser.add_argument("--motion-weight", type=_positive, default=1.0,
                        help="loss weight (both heads) of the blurred patches of shaken photos, whose best patches "
                        "set the keep threshold; 1: every patch alike")
    parser.add_argument("--distil", type=Path, default=None, metavar="TEACHER.onnx",
                        help="distillation: the focus head also learns this exported network's patch scores "
                        "(e.g. models/focus.onnx, to make a cheaper trunk decide like it); the card records it")
    parser.add_argument("--distil-weight", type=_fraction, default=0.5,
                        help="share of the teacher's score in the focus head's target (0-1; default 0.5)")
    parser.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True,
                        help="ship a static int8 copy when it changes no validation verdict (needs train/quantize.py)")
    parser.add_argument("--replace-worse", action="store_true",
                        help="replace the shipped model even when the new one does worse on the validation photos")
    parser.add_argument("--max-real-sharp-rejects", type=int, default=0,
                        help="refuse to ship a model that rejects more sharp photos of --real than this "
                        "(at any strictness); in-focus priority")
    parser.add_argument("--min-real-flagged", type=_fraction, default=0.9,
                        help="refuse to ship a model that flags (rejects or leaves uncertain) less than this share "
                        "of the blurred photos of --real at lenient: the bar tests/test_model.py holds the "
                        "shipped model to (default 0.9)")
    parser.add_argument("--quiet", action="store_true")
    return parser


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    from cull.card import AnalysisSpec

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not args.data:
        args.data = [SHARED / "sharp"]
    for option, path in (("--init", args.init), ("--distil", args.distil), ("--miner", args.miner)):
        if path is not None and not Path(path).is_file():
            logging.error("python -m train: %s %s: no such model file", option, path)
            return 2
    if args.miner and not args.hard_negatives:
        logging.error("python -m train: --miner chooses hard negatives: give --hard-negatives SHARE too")
        return 2
    size = AnalysisSpec().patch_size
    if not (1 <= args.tile_stride <= size and size % args.tile_stride == 0):
        logging.error("python -m train: --tile-stride must divide the patch size (%d), got %d", size, args.tile_stride)
        return 2
    started = time.monotonic()
    try:
        data = prepare_data(args, patches=args.command != "refit")
        if args.command == "sweep":
            run_sweep(args, data)
        elif args.command == "refit":
            refit(args, data)
        else:
            build(args, data)
    except TrainError as exc:
        logging.error("python -m train: %s", exc)
        return exc.exit_code
    logging.info("done in %.0f s", time.monotonic() - started)
    return 0


# --- data -------------------------------------------------------------------------------------------

def prepare_data(args: argparse.Namespace, patches: bool = True) -> dict[str, Any]:
    """Sources, the validation and test photo folders and (with ``patches``) the patch sets, cached
    under ``--work`` by the recipe's data key."""
    import numpy as np

    from dataclasses import replace

    from cull.card import AnalysisSpec
    from train.data import build_patches, build_photo_folder, find_sources, spec_key, summarise_sources

    spec = AnalysisSpec()  # training patches: tiles side by side (v5's data, unchanged)
    analysis = replace(spec, tile_stride=None if args.tile_stride == spec.patch_size else args.tile_stride)
    sources = find_sources(args.data)
    if args.limit:
        kept: list[Any] = []
        for split in ("train", "val", "test"):  # evenly spaced, so every source folder stays represented
            chosen = [s for s in sources if s.split == split]
            kept += chosen[:: max(1, -(-len(chosen) // args.limit))][: args.limit]
        sources = kept
    key = spec_key(spec, args.seed, args.per_variant, sources, args.hard_negatives, args.miner)
    work = args.work / key
    work.mkdir(parents=True, exist_ok=True)
    folders = {}
    for offset, split in enumerate(("val", "test", "train")):  # train: the photo head's photos
        folder = work / "photos" / split
        if not (folder / "MANIFEST.json").exists():
            logging.info("writing %s photo folder ...", split)
            build_photo_folder(sources, split, folder, args.seed + 100 + offset, args.workers)
        folders[split] = folder
    patch_sets: dict[str, Any] = {}
    for offset, split in enumerate(("train", "val", "test") if patches else ()):
        cached = work / f"{split}.npz"
        if not cached.exists():
            logging.info("making %s patches from %d photos ...", split, sum(s.split == split for s in sources))
            arrays = build_patches(sources, split, spec, args.seed + offset, args.per_variant, args.workers,
                                   args.hard_negatives, args.miner)
            saved: dict[str, Any] = dict(arrays)  # (numpy's stub reads ** as its allow_pickle flag)
            np.savez(work / f"{split}.tmp.npz", **saved)
            os.replace(work / f"{split}.tmp.npz", cached)
        with np.load(cached) as npz:
            patch_sets[split] = {k: npz[k] for k in npz.files}
        logging.info("%s: %d patches (%.0f %% sharp)", split, len(patch_sets[split]["x"]),
                     100 * patch_sets[split]["sharp"].mean() if len(patch_sets[split]["x"]) else 0)
    return {"spec": spec, "analysis": analysis, "sources": sources, "patches": patch_sets, "folders": folders, "work": work,
            "summary": summarise_sources(sources)}


# --- one model -----------------------------------------------------------------------------------------

def fit_and_export(args: argparse.Namespace, data: dict[str, Any], variant: str, kernel: int, out: Path) -> dict[str, Any]:
    """Train, export to ONNX at ``out`` with a parity check, fit thresholds on validation photos
    scored the way production scores them, and score the test sets with the final card.

    ``out`` must be a staging path, never the shipped model: the card written next to it is a
    candidate until build() promotes it.  Raises TrainError when a check fails.
    """
    import numpy as np

    from cull.card import load_card
    from cull.patches import network_input
    from train.export import PARITY_TOLERANCE, export_onnx, parity
    from train.fit import patch_metrics

    spec = data["spec"]
    patches = data["patches"]
    runs = [trained_model(args, data, variant, kernel, seed) for seed in fit_seeds(args)]
    models = [model for model, _ in runs]
    history = runs[0][1]
    for _, run in runs:
        logging.info("trained %s k=%d in %.0f s (%d epochs)", variant, kernel, run["seconds"], run["epochs_run"])
    probe = network_input(patches["val"]["x"][:256].astype(np.float32) / 255.0)
    if len(models) == 1:
        export_onnx(models[0], out, spec.patch_size)
        diff = parity(models[0], out, probe)
    else:  # each member exported and checked, then averaged into one model (train/ensemble.py, tested)
        from train.ensemble import average_models

        members = [out.with_name(f"{out.stem}.member{i}.onnx") for i in range(len(models))]
        for model, member in zip(models, members):
            export_onnx(model, member, spec.patch_size)
        diff = max(parity(model, member, probe) for model, member in zip(models, members))
        average_models(members, out)
        for member in members:
            member.unlink()
    if not diff <= PARITY_TOLERANCE:
        raise TrainError(f"ONNX export differs from Keras by {diff:g} (> {PARITY_TOLERANCE:g}); nothing shipped")
    aggregate_k = 3
    common = dict(variant=variant, kernel=kernel, aggregate_k=aggregate_k, filters=trunk(args, variant),
                  stride=stride_of(args, variant), separable=separable_of(args), members=len(models))
    common["photo_head"] = fit_photo_head(out, data, common, args.workers)
    fit_scores, thresholds, val_scored = fit_on_production_scores(out, data, common, args.workers)
    quantization = {"shipped": False, "why": "not tried (--no-int8)"}
    if args.int8 and len(models) > 1:
        quantization = {"shipped": False, "why": "not tried for an average of several networks"}
    elif args.int8:
        quantization, int8_result = try_int8(out, data, common, args.workers, val_scored, thresholds, probe)
        if int8_result is not None:
            fit_scores, thresholds, val_scored = int8_result
    evaluations = evaluate_card(args, data, load_card(out), val_scored)
    return {
        "common": common,
        "thresholds": thresholds,
        "fit_scores": fit_scores,
        "quantization": quantization,
        "history": history,
        "member_histories": [h for _, h in runs] if len(runs) > 1 else [],
        "parity_max_abs_diff": diff,
        "patch_metrics_test": patch_metrics(models, patches["test"], variant),
        "evaluations": evaluations,
    }


def evaluate_card(args: argparse.Namespace, data: dict[str, Any], card: Any, val_scored: list[Any]) -> dict[str, Any]:
    """The card judged at every strictness on the validation (already scored), test and real photos."""
    from cull.card import STRICTNESS_LEVELS
    from cull.evaluate import score_folder, summarise_folder

    evaluations: dict[str, Any] = {}
    sets = {"validation (synthetic)": data["folders"]["val"], "test (synthetic)": data["folders"]["test"]}
    if args.real and Path(args.real).is_dir():
        sets["real held-out"] = Path(args.real)
    for name, folder in sets.items():
        scored = val_scored if folder == data["folders"]["val"] else score_folder(folder, card, workers=args.workers)
        evaluations[name] = {s: summarise_folder(folder, scored, card, s) for s in STRICTNESS_LEVELS}
    return evaluations


def verdicts(scored: list[Any], thresholds: dict[str, dict[str, float]], min_patches: int) -> dict[str, list[str]]:
    """Per strictness, the verdict of every scored photo (in order); "error" where none."""
    from cull.card import Thresholds
    from cull.decide import decide

    return {name: [decide(s.analysis.photo, Thresholds.from_dict(t), min_patches).verdict.value if s.analysis.photo else "error"
                   for s in scored] for name, t in thresholds.items()}


def try_int8(
    out: Path, data: dict[str, Any], common: dict[str, Any], workers: int, val_scored: list[Any],
    thresholds: dict[str, dict[str, float]], probe: Any,
) -> tuple[dict[str, Any], Any]:
    """Quantise the staged float model (train/quantize.py, static int8, calibrated on validation
    patches), fit its thresholds the production way, and put it in place of the float model only
    if every validation photo keeps its verdict at every strictness.  Returns (what happened, the
    int8 fit or None)."""
    import numpy as np
    import onnxruntime as ort

    from cull.card import file_sha256
    from cull.patches import network_input

    try:
        from train.quantize import quantize_model
    except ImportError as exc:
        return {"shipped": False, "why": f"train/quantize.py unavailable ({exc})"}, None
    candidate = out.parent / "int8" / out.name
    calibration = network_input(data["patches"]["val"]["x"][:2048].astype(np.float32) / 255.0)
    try:
        quantize_model(out, candidate, calibration)
    except Exception as exc:  # noqa: BLE001 - quantisation is optional: ship float and say why
        return {"shipped": False, "why": f"quantisation failed: {type(exc).__name__}: {exc}"}, None
    runs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(["p_sharp"], {"patches": probe})[0]
            for p in (out, candidate)]
    diff = float(np.abs(runs[0] - runs[1]).max())
    fitted = fit_on_production_scores(candidate, data, common, workers)
    min_patches = data["spec"].min_patches
    before, after = verdicts(val_scored, thresholds, min_patches), verdicts(fitted[2], fitted[1], min_patches)
    changed = sum(a != b for name in before for a, b in zip(before[name], after[name]))
    info: dict[str, Any] = {"method": "onnxruntime static int8 (train/quantize.py), calibrated on 2048 validation patches",
                            "patch_score_max_abs_diff": round(diff, 5), "validation_verdicts_changed": changed,
                            "float_sha256": file_sha256(out)}
    if changed:
        info.update(shipped=False, why=f"{changed} validation verdict(s) differ from the float model's")
        return info, None
    os.replace(candidate, out)
    os.replace(candidate.with_suffix(".json"), out.with_suffix(".json"))
    info.update(shipped=True, why="every validation verdict is the float model's")
    return info, fitted


def fit_photo_head(onnx: Path, data: dict[str, Any], common: dict[str, Any], workers: int) -> dict[str, Any] | None:
    """The photo head's card entry (train/head.py) for the staged single network ``onnx``, which gains the
    embedding output; fitted on the training split's photo folder.  None for a network without a kind
    head (the seed) or an average of several."""
    from cull.card import STRICTNESS_LEVELS, load_card
    from train.export import write_card
    from train.head import add_embedding_output, choose_l2, describe, fit_head, folder_features

    if common.get("variant") != "focus" or common.get("members", 1) != 1:
        return None
    add_embedding_output(onnx, onnx)
    placeholder = {s: {"keep": 0.5, "reject": 0.5} for s in STRICTNESS_LEVELS}
    write_card(onnx, version="fitting the photo head", thresholds=placeholder, spec=data["analysis"], **common)
    features, sharp = folder_features(data["folders"]["train"], load_card(onnx), workers)
    l2, losses = choose_l2(features, sharp)
    head = fit_head(features, sharp, l2)
    logging.info("photo head fitted on %d training photos (L2 %g; cross-validated log-loss %s)", len(features), l2, losses)
    return {**head.as_dict(), **describe(head, l2, losses, len(features))}


def fit_on_production_scores(
    onnx: Path, data: dict[str, Any], common: dict[str, Any], workers: int
) -> tuple[dict[str, float | None], dict[str, dict[str, float]], list[Any]]:
    """Fit thresholds on validation scores that production would produce with the final card.

    Production stops scoring a photo early only when its score already reaches the card's highest
    keep threshold, so every score below it equals the score with every patch scored.  Hence:
    score the validation photos with every patch (first_pass = max_patches), fit, write the final
    card, re-score the photos through cull exactly as a scan would, and require the same thresholds
    and verdicts from those production scores.  Returns (fit scores by path, thresholds, the
    production-scored validation photos), leaving the final card next to ``onnx``.
    """
    from dataclasses import replace

    from cull.card import STRICTNESS_LEVELS, Thresholds, load_card
    from cull.decide import decide
    from cull.evaluate import score_folder
    from train.export import write_card
    from train.thresholds import fit_head_keep, fit_head_reject, fit_steady, fit_thresholds

    spec = data["analysis"]
    folder = data["folders"]["val"]
    placeholder = {s: {"keep": 0.5, "reject": 0.5} for s in STRICTNESS_LEVELS}
    every_patch = replace(spec, first_pass=spec.max_patches)
    write_card(onnx, version="fitting (every patch scored)", thresholds=placeholder, spec=every_patch, **common)
    full = score_folder(folder, load_card(onnx), workers=workers)

    def fit(scored: list[Any]) -> dict[str, dict[str, float]]:
        """keep / reject per strictness, the steady path where the kind head gives P(motion), and the
        photo head's keep and reject paths where there is a head."""
        ok = [s for s in scored if s.analysis.photo is not None and s.analysis.photo.score is not None]
        sharp = [s.analysis.photo for s in ok if s.photo.sharp]
        blurred = [s.analysis.photo for s in ok if not s.photo.sharp]
        fitted = fit_thresholds([p.score for p in sharp], [p.score for p in blurred])
        if ok and all(p.motion is not None for p in sharp + blurred):
            steady = fit_steady([(p.score, p.motion) for p in sharp], [(p.score, p.motion) for p in blurred],
                                keep=min(t["keep"] for t in fitted.values()), floor=max(t["reject"] for t in fitted.values()))
            for t in fitted.values():
                t.update(steady or {})
        if ok and all(p.head is not None for p in sharp + blurred):
            head_keep = fit_head_keep([(p.score, p.motion, p.head) for p in sharp], [(p.score, p.motion, p.head) for p in blurred],
                                      fitted["lenient"])
            for t in fitted.values():
                t.update({} if head_keep is None else {"head_keep": head_keep})
            rejects = fit_head_reject([(p.score, p.motion, p.head) for p in sharp], [(p.score, p.motion, p.head) for p in blurred],
                                      fitted)
            for name, path in rejects.items():
                fitted[name].update(path)
        return fitted

    thresholds = fit(full)
    write_card(onnx, version="candidate", thresholds=thresholds, spec=spec, **common)
    card = load_card(onnx)
    production = score_folder(folder, card, workers=workers)
    again = fit(production)
    if any(again[s].keys() != thresholds[s].keys() or any(abs(again[s][t] - thresholds[s][t]) > 1e-6 for t in thresholds[s])
           for s in thresholds):
        raise TrainError(f"thresholds refitted on production scores differ: {again} vs {thresholds}")
    for a, b in zip(full, production):
        fitted_photo, production_photo = a.analysis.photo, b.analysis.photo
        if (fitted_photo is None) != (production_photo is None):
            raise TrainError(f"{a.photo.path}: scored once but not the other time")
        if fitted_photo is None or production_photo is None:
            continue
        for name in STRICTNESS_LEVELS:
            t = Thresholds.from_dict(thresholds[name])
            va = decide(fitted_photo, t, spec.min_patches).verdict
            vb = decide(production_photo, t, spec.min_patches).verdict
            if va != vb:
                raise TrainError(f"{b.photo.path}: verdict {vb.value} in production but {va.value} when fitted")
    fit_scores = {str(s.photo.path): s.analysis.photo.score for s in full if s.analysis.photo is not None}
    return fit_scores, thresholds, production


def trunk(args: argparse.Namespace, variant: str) -> tuple[int, ...]:
    """Convolution widths for this run: --filters for a build; the sweep reproduces the seed's trunk."""
    from train.model import FILTERS

    if getattr(args, "command", "build") == "sweep":
        return FILTERS
    return tuple(getattr(args, "filters", None) or FILTERS)


def stride_of(args: argparse.Namespace, variant: str) -> int:
    return 1 if getattr(args, "command", "build") == "sweep" else int(getattr(args, "first_stride", 1) or 1)


def fit_seeds(args: argparse.Namespace) -> list[int]:
    """One seed per network to train (the sweep: --seed alone)."""
    seeds = getattr(args, "fit_seed", None)
    if not seeds or getattr(args, "command", "build") == "sweep":
        return [int(args.seed)]
    return [int(s) for s in seeds]


def separable_of(args: argparse.Namespace) -> bool:
    return getattr(args, "command", "build") != "sweep" and bool(getattr(args, "separable", False))


def trained_model(
    args: argparse.Namespace, data: dict[str, Any], variant: str, kernel: int, fit_seed: int
) -> tuple[Any, dict[str, Any]]:
    """Train (or reuse the network this very configuration trained before, cached under --work)."""
    import keras

    from train.fit import teacher_scores, train_model

    from cull.card import file_sha256

    init = getattr(args, "init", None)
    rate = args.learning_rate or (2e-4 if init else 1e-3)
    start = f"-init{file_sha256(init)[:8]}" if init else ""
    filters, stride = trunk(args, variant), stride_of(args, variant)
    separable = separable_of(args)
    shape = "" if (filters, stride, separable) == ((32, 64, 64), 1, False) else \
        f"-f{'x'.join(map(str, filters))}-s{stride}" + ("-sep" if separable else "")
    motion = float(getattr(args, "motion_weight", 1.0))
    shape += f"-mw{motion:g}" if motion != 1.0 else ""
    if fit_seed != args.seed:
        shape += f"-fs{fit_seed}"
    teacher_path = getattr(args, "distil", None)
    if teacher_path:
        shape += f"-distil{file_sha256(teacher_path)[:8]}x{args.distil_weight:g}"
    cached = data["work"] / f"model-{variant}-k{kernel}{shape}-e{args.epochs}-b{args.batch_size}{start}-lr{rate:g}.keras"
    if not init and rate == 1e-3 and not shape:  # the name earlier builds used
        cached = data["work"] / f"model-{variant}-k{kernel}-e{args.epochs}-b{args.batch_size}.keras"
    if cached.exists() and cached.with_suffix(".json").exists():
        logging.info("reusing the trained network %s", cached)
        return keras.models.load_model(cached), json.loads(cached.with_suffix(".json").read_text())
    patches = data["patches"]
    teacher = teacher_scores(teacher_path, patches["train"]) if teacher_path else None
    model, history = train_model(patches["train"], patches["val"], variant=variant, kernel=kernel,
                                 epochs=args.epochs, batch_size=args.batch_size, seed=fit_seed,
                                 threads=args.workers, verbose=0 if args.quiet else 2,
                                 init=init if variant == args.variant else None, learning_rate=rate,
                                 filters=filters, stride=stride, motion_weight=motion, separable=separable,
                                 teacher=teacher, distil_weight=float(getattr(args, "distil_weight", 0.5)))
    tmp = cached.with_name(cached.stem + ".tmp.keras")
    model.save(tmp)
    cached.with_suffix(".json").write_text(json.dumps(history))
    os.replace(tmp, cached)
    return model, history


def compact(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The card's view of one summarise_folder report: rates and confusion, no per-photo rows."""
    keys = ("n_sharp", "n_blurred", "sharp_false_reject_rate", "sharp_kept_rate", "blurred_flagged_rate",
            "blurred_rejected_rate", "accuracy_sharp", "accuracy_blurred", "accuracy", "confusion")

    def pick(m: dict[str, Any]) -> dict[str, Any]:
        return {k: (round(m[k], 4) if isinstance(m[k], float) else m[k]) for k in keys}

    return {
        "model": pick(evaluation["overall"]["model"]),
        "laplacian": pick(evaluation["overall"]["laplacian"]),
        "per_folder": {g: {"model_accuracy": round(v["model"]["accuracy"], 4),
                           "laplacian_accuracy": round(v["laplacian"]["accuracy"], 4),
                           "confusion": v["model"]["confusion"]}
                       for g, v in evaluation["groups"].items()},
    }


def build(args: argparse.Namespace, data: dict[str, Any]) -> None:
    """Build in a staging folder; replace the shipped model only when every check passed."""
    ship_staged(args, "build-", lambda staging: stage(args, data, staging))


def ship_staged(args: argparse.Namespace, prefix: str, make: Callable[[Path], None]) -> None:
    """``make`` writes focus.onnx, focus.json and CARD.md into a fresh staging folder under --work (and
    raises TrainError when a check fails); only then are they promoted over the shipped ones."""
    args.work.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=args.work))
    try:
        make(staging)
        promote(staging, args.out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


SHIPPED = ("focus.onnx", "focus.json", "CARD.md")
DEGRADATIONS = (
    "defocus (disk / rimmed / soft / cat's-eye PSFs, radius 2-9 px and PSF spread >= 1 px, highlight bokeh); depth-varying "
    "defocus around a sharp, textured focus point (ground-plane ramp, radial subject falloff or subject "
    "plane before a receding background; blur 0 at the focal plane growing to 3-14 px, rendered per "
    "blur layer with per-pixel interpolation; labelled sharp, patches sharp where the radius is <= 0.75 px, blurred "
    "where it is >= 2 px, ambiguous ones left out); "
    "sharp subject pasted on a defocused copy (labelled sharp); camera shake 6-26 px with PSF spread >= 1.6 px (recipe v4: no nearly-sharp 'blurred' labels), 70 % from "
    "random-walk-with-inertia trajectories plus drift whose wander grows with exposure time, 30 % "
    "straight / curved / tremor paths; lens softness <= 0.6 px on sharp; low contrast (15 %); exposure "
    "-1.2..+0.6 EV; 45 % through an in-camera pipeline at an enlarged sensor scale (1.5-2.5x, <= 4 MP: "
    "an approximation of 12-24 MP files before cull's DCT reduction): Poisson-Gaussian noise, edge-aware "
    "noise reduction, unsharp-mask sharpening, JPEG 75-97, then reduced back; otherwise noise, optional "
    "sharpening and JPEG 55-98 at the analysis scale; small images (long side 180-320 px, reduced "
    "before degrading); downscaling 0.5-1x"
)


def promote(staging: Path, out: Path) -> None:
    """Copy the staged model, card and CARD.md next to the shipped ones, then rename them into
    place one after the other (each rename is atomic; the card names the model's sha256, so a
    crash between two renames makes cull refuse the pair loudly, never use a wrong one)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED:
        shutil.copyfile(staging / name, out / f".{name}.new")
    for name in SHIPPED:
        os.replace(out / f".{name}.new", out / name)


def previous_model_report(args: argparse.Namespace, data: dict[str, Any]) -> dict[str, Any] | None:
    """The model being replaced, judged on the same photo sets at cull's default strictness (lenient)."""
    from cull.card import load_card
    from cull.errors import ModelError
    from cull.evaluate import score_folder, summarise_folder

    try:
        card = load_card(args.out / "focus.json")
    except ModelError:
        return None
    sets = {"validation (synthetic)": data["folders"]["val"], "test (synthetic)": data["folders"]["test"]}
    if args.real and Path(args.real).is_dir():
        sets["real held-out"] = Path(args.real)
    photos = {name: {"lenient": compact(summarise_folder(folder, score_folder(folder, card, workers=args.workers), card, "lenient"))}
              for name, folder in sets.items()}
    return {"version": card.version, "photos": photos}


def no_regression_gate(evaluations: dict[str, Any], previous: dict[str, Any] | None) -> None:
    """Refuse to replace the shipped model with one that, on the same validation photos at cull's
    default strictness, rejects more sharp photos, keeps fewer outright, or flags fewer blurred ones."""
    if not previous:
        return
    name = "validation (synthetic)"
    new = evaluations[name]["lenient"]["overall"]["model"]["confusion"]
    old = previous["photos"][name]["lenient"]["model"]["confusion"]
    worse = []
    if new["sharp"]["reject"] > old["sharp"]["reject"]:
        worse.append(f"rejects {new['sharp']['reject']} sharp photos (was {old['sharp']['reject']})")
    if new["sharp"]["keep"] < old["sharp"]["keep"]:
        worse.append(f"keeps {new['sharp']['keep']} sharp photos outright (was {old['sharp']['keep']})")
    flagged = {k: c["blurred"]["reject"] + c["blurred"]["uncertain"] for k, c in (("new", new), ("old", old))}
    if flagged["new"] < flagged["old"]:
        worse.append(f"flags {flagged['new']} blurred photos (was {flagged['old']})")
    if worse:
        raise TrainError(f"the new model does worse than the shipped {previous['version']} on the validation "
                         f"photos: {'; '.join(worse)}; kept the shipped model (--replace-worse to override)")


LIBRARIES = ("tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy", "scipy", "pillow")


def library_versions() -> dict[str, str]:
    """The installed versions of the libraries a build's data, network and fit depend on: a network is
    reproduced bit for bit only with the same ones (the card of model v5 did not record them)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _card_version(onnx: Path) -> str | None:
    try:
        return str(json.loads(Path(onnx).with_suffix(".json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def pass_gates(args: argparse.Namespace, data: dict[str, Any], evaluations: dict[str, Any],
               fit_scores: dict[str, float | None]) -> dict[str, Any] | None:
    """Every gate a model must pass before it ships (raises TrainError): no real sharp photo rejected,
    enough real blurred ones flagged, no worse than the shipped card on validation (unless
    --replace-worse).  Leaves the fit scores in --work and returns the shipped card's report."""
    in_focus_gate(evaluations, args.max_real_sharp_rejects)
    real_flagged_gate(evaluations, args.min_real_flagged)
    previous = previous_model_report(args, data)
    if not args.replace_worse:
        no_regression_gate(evaluations, previous)
    (args.work / "last-fit-scores.json").write_text(json.dumps(fit_scores, indent=1))
    return previous


def in_focus_gate(evaluations: dict[str, Any], limit: int) -> None:
    """Refuse a model that rejects more than ``limit`` sharp photos of the real held-out set."""
    real = evaluations.get("real held-out")
    if not real:
        return
    for strictness, report in real.items():
        rejected = report["overall"]["model"]["confusion"]["sharp"]["reject"]
        if rejected > limit:
            bad = [p["path"] for p in report["photos"] if p["sharp"] and p["verdict"] == "reject"]
            raise TrainError(f"the new model rejects {rejected} sharp real photo(s) at {strictness} "
                             f"({', '.join(bad)}); nothing shipped")


def real_flagged_gate(evaluations: dict[str, Any], minimum: float) -> None:
    """Refuse a model that flags less than ``minimum`` of the real held-out blurred photos at lenient."""
    report = evaluations.get("real held-out", {}).get("lenient")
    if not report:
        return
    blurred = report["overall"]["model"]["confusion"]["blurred"]
    total = sum(blurred.values())
    if total and (blurred["uncertain"] + blurred["reject"]) / total < minimum:
        kept = [p["path"] for p in report["photos"] if not p["sharp"] and p["verdict"] == "keep"]
        raise TrainError(f"the new model flags {blurred['uncertain'] + blurred['reject']} of {total} blurred real "
                         f"photos at lenient (below {minimum:.0%}; keeps {', '.join(kept)}); nothing shipped")


def stage(args: argparse.Namespace, data: dict[str, Any], staging: Path) -> None:
    """Build focus.onnx, focus.json and CARD.md in ``staging`` and check them."""
    from cull.card import file_sha256, load_card
    from train.export import write_card
    from train.report import write_card_markdown

    from train.data import HARD_POOL, PHOTO_VARIANTS, TRAIN_VARIANTS
    from train.degrade import VERSION as DEGRADE_VERSION

    out = staging / "focus.onnx"
    seeds = fit_seeds(args)
    result = fit_and_export(args, data, args.variant, args.kernel, out)
    previous = pass_gates(args, data, result["evaluations"], result["fit_scores"])
    sweep_file = args.out / "sweep.json"
    sweep = json.loads(sweep_file.read_text()) if sweep_file.exists() else None
    extra = {
        "built": dt.date.today().isoformat(),
        "metrics": {
            "patch_level_test": result["patch_metrics_test"],
            "photos": {name: {s: compact(r) for s, r in per.items()} for name, per in result["evaluations"].items()},
        },
        "training": {
            "data": [str(Path(d).resolve().relative_to(REPO.parent)) if str(Path(d).resolve()).startswith(str(REPO.parent))
                     else str(d) for d in args.data],
            "sources_per_split": data["summary"],
            "patches": {k: {"n": int(len(v["x"])), "sharp_share": round(float(v["sharp"].mean()), 3)}
                        for k, v in data["patches"].items()},
            "recipe": f"v{DEGRADE_VERSION}",
            "degradations": DEGRADATIONS,
            "variants_per_photo": list(TRAIN_VARIANTS),
            "patches_per_variant": args.per_variant,
            "hard_negatives": None if not args.hard_negatives else {
                "share": args.hard_negatives, "pool": HARD_POOL,
                "miner": None if not args.miner else {"sha256": file_sha256(args.miner), "from": str(args.miner),
                                                      "version": _card_version(args.miner)}},
            "photo_folder_variants": list(PHOTO_VARIANTS),
            "init": None if not args.init else {"sha256": file_sha256(args.init), "from": str(args.init),
                                                 "version": _card_version(args.init)},
            "learning_rate": args.learning_rate or (2e-4 if args.init else 1e-3),
            "motion_weight": args.motion_weight,
            "distil": None if not args.distil else {"sha256": file_sha256(args.distil), "from": str(args.distil),
                                                    "version": _card_version(args.distil), "weight": args.distil_weight},
            "epochs": args.epochs,
            "epochs_run": result["history"]["epochs_run"],
            "seconds": result["history"]["seconds"],
            "batch_size": args.batch_size,
            "seed": args.seed,
            "fit_seeds": seeds,
            "members": [{"fit_seed": seed, "epochs_run": h["epochs_run"], "seconds": h["seconds"],
                         "best_val_loss": round(min(h.get("val_loss", [float("nan")])), 4)}
                        for seed, h in zip(seeds, result["member_histories"])],
            "history": {k: [round(x, 4) for x in v] for k, v in result["history"].items() if isinstance(v, list)},
            "libraries": library_versions(),
            "cpu_paths": cpu_paths(),
        },
        "export": {"tool": "tf2onnx.convert.from_function", "opset": 17,
                   "parity_max_abs_diff": result["parity_max_abs_diff"]},
        "quantization": result["quantization"],
        "threshold_fit": "fitted on the validation photos scored with every patch (first_pass = max_patches), "
        "then re-scored through cull with this card: same thresholds and verdicts (checked by the build)",
        "seed_comparison": sweep,
        "previous_model": previous,
    }
    tag = "" if tuple(args.filters) == (32, 64, 64) and args.first_stride == 1 and not args.separable else \
        f"-f{'x'.join(map(str, args.filters))}" + ("s2" if args.first_stride == 2 else "") + ("sep" if args.separable else "")
    tag += f"-avg{len(seeds)}" if len(seeds) > 1 else ""
    version = f"{args.variant}-k{args.kernel}{tag}-{dt.date.today():%Y%m%d}-{file_sha256(out)[:8]}"
    card = write_card(out, version=version, thresholds=result["thresholds"], spec=data["analysis"], extra=extra,
                      **result["common"])
    load_card(card)  # the staged pair must load (format, thresholds, sha256) before it ships
    write_card_markdown(card, staging / "CARD.md")
    logging.info("built %s (%s)", version, card)


def refit(args: argparse.Namespace, data: dict[str, Any]) -> None:
    """Fit the shipped network's card again with this recipe's photo analysis, without training: the
    same ONNX file, its thresholds and steady path fitted anew on the validation photos (scored the way
    a scan scores them), judged on every photo set, held to the build's gates against the shipped card,
    and shipped the same way.  The card keeps its training record and names the network's version with
    ``+refit-DATE``."""
    ship_staged(args, "refit-", lambda staging: stage_refit(args, data, staging))


def stage_refit(args: argparse.Namespace, data: dict[str, Any], staging: Path) -> None:
    from cull.card import analysis_dict, load_card
    from cull.errors import ModelError
    from train.export import write_card
    from train.model import architecture_args
    from train.report import write_card_markdown

    try:
        shipped = load_card(args.out / "focus.json")
    except ModelError as exc:
        raise TrainError(f"refit needs a shipped model: {exc}") from None
    raw = json.loads((args.out / "focus.json").read_text(encoding="utf-8"))
    common = {**architecture_args(raw["architecture"]), "aggregate_k": shipped.aggregate_k}
    out = staging / "focus.onnx"
    shutil.copyfile(shipped.model_path, out)
    common["photo_head"] = fit_photo_head(out, data, common, args.workers)
    fit_scores, thresholds, val_scored = fit_on_production_scores(out, data, common, args.workers)
    evaluations = evaluate_card(args, data, load_card(out), val_scored)
    previous = pass_gates(args, data, evaluations, fit_scores)
    base_version = shipped.version.split("+", 1)[0]
    kept = {k: v for k, v in raw.items() if k not in {"format", "model_file", "sha256", "version", "architecture",
                                                       "input", "analysis", "patch_logic", "aggregate", "outputs",
                                                       "thresholds", "kind", "metrics", "previous_model",
                                                       "photo_head"}}
    if isinstance(kept.get("quantization"), dict):
        kept["quantization"] = {**kept["quantization"], "when": "tried when the network was built, with the analysis before the refit"}
    photos = {name: {s: compact(r) for s, r in per.items()} for name, per in evaluations.items()}
    extra = {
        **kept,
        "metrics": {**raw.get("metrics", {}), "photos": photos},
        "previous_model": previous,
        "refit": {"date": dt.date.today().isoformat(), "network": base_version, "libraries": library_versions(),
                  "cpu_paths": cpu_paths(),
                  "from": {"version": shipped.version, "analysis": analysis_dict(shipped.analysis),
                           "thresholds": {s: t.as_dict() for s, t in shipped.thresholds.items()}},
                  "why": "python -m train refit: the same network (with its patch embedding as one more output), its "
                         "photo head fitted on the training photos, its thresholds, steady path and head path fitted again "
                         "on the validation photos with this recipe's photo analysis; patch-level metrics are the network's own"},
    }
    version = refit_version(base_version, dt.date.today(), shipped.version, bool(common["photo_head"]))
    card = write_card(out, version=version, thresholds=thresholds, spec=data["analysis"], extra=extra, **common)
    load_card(card)
    write_card_markdown(card, staging / "CARD.md")
    logging.info("refitted %s (%s)", version, card)


def refit_version(network: str, day: dt.date, shipped: str, head: bool) -> str:
    """``NETWORK+refit-YYYYMMDD[+head]``, with ``-2``, ``-3`` ... after the date when the shipped card is
    already a refit of that network on that day (two cards must not share a version).  Pure."""
    stem = f"{network}+refit-{day:%Y%m%d}"
    found = re.fullmatch(re.escape(stem) + r"(?:-(\d+))?(?:\+head)?", shipped)
    if found:
        stem += f"-{int(found.group(1) or 1) + 1}"
    return stem + ("+head" if head else "")


def run_sweep(args: argparse.Namespace, data: dict[str, Any]) -> None:
    from train.report import write_sweep_markdown

    rows = []
    sweep_dir = args.work / "sweep"
    args.int8 = False  # the sweep compares float networks; only a shipped build tries int8
    for kernel in args.kernels:
        result = fit_and_export(args, data, "seed", kernel, sweep_dir / f"seed_k{kernel}.onnx")
        # (a sweep model is never shipped: no in-focus gate, its card stays under --work)
        test = result["evaluations"]["test (synthetic)"]["normal"]["overall"]["model"]
        real = result["evaluations"].get("real held-out", {}).get("normal", {}).get("overall", {}).get("model")
        rows.append({
            "variant": "seed", "kernel": kernel, "epochs": args.epochs,
            "epochs_run": result["history"]["epochs_run"], "seconds": result["history"]["seconds"],
            "patch_level_test": result["patch_metrics_test"],
            "photo_test_normal": {k: test[k] for k in ("accuracy", "accuracy_sharp", "accuracy_blurred",
                                                       "sharp_false_reject_rate", "blurred_flagged_rate")},
            "photo_real_normal": None if real is None else {
                k: real[k] for k in ("accuracy", "accuracy_sharp", "accuracy_blurred",
                                     "sharp_false_reject_rate", "blurred_flagged_rate")},
        })
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"date": dt.date.today().isoformat(), "study": {"3": 0.906, "5": 0.859, "7": 0.422}, "rows": rows}
    (args.out / "sweep.json").write_text(json.dumps(payload, indent=2) + "\n")
    write_sweep_markdown(payload, args.out / "SWEEP.md")
    logging.info("wrote %s", args.out / "SWEEP.md")
    refresh_seed_comparison(args.out / "focus.json", payload)


def refresh_seed_comparison(card_path: Path, payload: dict[str, Any]) -> None:
    """Put a new sweep into an existing card (the model file and its hash are untouched)."""
    from train.report import write_card_markdown

    if not card_path.exists():
        return
    card = json.loads(card_path.read_text())
    card["seed_comparison"] = payload
    tmp = card_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp, card_path)
    write_card_markdown(card_path, card_path.parent / "CARD.md")


def cpu_paths() -> dict[str, Any]:
    """What the card records of the build's instruction paths: the settings above as they were, and the
    dispatch targets numpy actually used."""
    import numpy as np

    from train.data import numpy_dispatch

    return {"environment": {k: os.environ.get(k) for k in PORTABLE_CPU},
            "numpy_dispatch": numpy_dispatch(), "numpy": np.__version__}


if __name__ == "__main__":
    for _name, _value in PORTABLE_CPU.items():
        os.environ.setdefault(_name, _value)  # before numpy or TensorFlow is imported (spawned workers inherit it)
    sys.exit(main())
