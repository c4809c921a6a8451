"""python -m train [--data DIR ...] | python -m train sweep --kernels 3 5 7

Rebuilds models/focus.onnx and models/focus.json (the card cull reads), or reproduces the source
study's kernel-size sweep with the seed network.  Generated data is cached under --work.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"


def _parser() -> argparse.ArgumentParser:
    from platformdirs import user_cache_dir

    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="build", choices=["build", "sweep"])
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
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--per-variant", type=int, default=8, help="patches kept per degraded photo")
    parser.add_argument("--limit", type=int, default=0, help="use at most this many source photos per split (smoke runs)")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quiet", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not args.data:
        args.data = [SHARED / "sharp"]
    started = time.monotonic()
    data = prepare_data(args)
    if args.command == "sweep":
        run_sweep(args, data)
    else:
        build(args, data)
    logging.info("done in %.0f s", time.monotonic() - started)
    return 0


# --- data -------------------------------------------------------------------------------------------

def prepare_data(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from cull.card import AnalysisSpec
    from train.data import build_patches, build_photo_folder, find_sources, spec_key, summarise_sources

    spec = AnalysisSpec()
    sources = find_sources(args.data)
    if args.limit:
        kept: list[Any] = []
        for split in ("train", "val", "test"):
            kept += [s for s in sources if s.split == split][: args.limit]
        sources = kept
    key = spec_key(spec, args.seed, args.per_variant, sources)
    work = args.work / key
    work.mkdir(parents=True, exist_ok=True)
    patches = {}
    for offset, split in enumerate(("train", "val", "test")):
        cached = work / f"{split}.npz"
        if not cached.exists():
            logging.info("making %s patches from %d photos ...", split, sum(s.split == split for s in sources))
            arrays = build_patches(sources, split, spec, args.seed + offset, args.per_variant, args.workers)
            np.savez(work / f"{split}.tmp.npz", **arrays)
            os.replace(work / f"{split}.tmp.npz", cached)
        with np.load(cached) as npz:
            patches[split] = {k: npz[k] for k in npz.files}
        logging.info("%s: %d patches (%.0f %% sharp)", split, len(patches[split]["x"]),
                     100 * patches[split]["sharp"].mean() if len(patches[split]["x"]) else 0)
    folders = {}
    for offset, split in enumerate(("val", "test")):
        folder = work / "photos" / split
        if not (folder / "MANIFEST.json").exists():
            logging.info("writing %s photo folder ...", split)
            build_photo_folder(sources, split, folder, args.seed + 100 + offset, args.workers)
        folders[split] = folder
    return {"spec": spec, "sources": sources, "patches": patches, "folders": folders,
            "summary": summarise_sources(sources)}


# --- one model -----------------------------------------------------------------------------------------

def fit_and_export(args: argparse.Namespace, data: dict[str, Any], variant: str, kernel: int, out: Path) -> dict[str, Any]:
    """Train, export to ONNX with a parity check, fit thresholds on validation photos, score test sets."""
    import numpy as np

    from cull.card import STRICTNESS_LEVELS, load_card
    from cull.evaluate import score_folder, summarise_folder
    from cull.patches import network_input
    from train.export import PARITY_TOLERANCE, export_onnx, parity, write_card
    from train.fit import patch_metrics, train_model
    from train.thresholds import fit_thresholds

    spec = data["spec"]
    patches = data["patches"]
    model, history = train_model(patches["train"], patches["val"], variant=variant, kernel=kernel,
                                 epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                 threads=args.workers, verbose=0 if args.quiet else 2)
    logging.info("trained %s k=%d in %.0f s (%d epochs)", variant, kernel, history["seconds"], history["epochs_run"])
    export_onnx(model, out, spec.patch_size)
    probe = network_input(patches["val"]["x"][:256].astype(np.float32) / 255.0)
    diff = parity(model, out, probe)
    if not diff <= PARITY_TOLERANCE:
        raise SystemExit(f"ONNX export differs from Keras by {diff:g} (> {PARITY_TOLERANCE:g})")
    aggregate_k = 3
    common = dict(variant=variant, kernel=kernel, spec=spec, aggregate_k=aggregate_k)
    provisional = {s: {"keep": 0.5, "reject": 0.5} for s in STRICTNESS_LEVELS}
    write_card(out, version="provisional", thresholds=provisional, **common)
    card = load_card(out)
    val_scored = score_folder(data["folders"]["val"], card, workers=args.workers)
    sharp = [s.analysis.photo.score for s in val_scored if s.photo.sharp and s.analysis.photo and s.analysis.photo.score is not None]
    blurred = [s.analysis.photo.score for s in val_scored if not s.photo.sharp and s.analysis.photo and s.analysis.photo.score is not None]
    thresholds = fit_thresholds(sharp, blurred)
    write_card(out, version="provisional", thresholds=thresholds, **common)
    card = load_card(out)
    evaluations: dict[str, Any] = {}
    sets = {"validation (synthetic)": data["folders"]["val"], "test (synthetic)": data["folders"]["test"]}
    if args.real and Path(args.real).is_dir():
        sets["real held-out"] = Path(args.real)
    for name, folder in sets.items():
        scored = val_scored if folder == data["folders"]["val"] else score_folder(folder, card, workers=args.workers)
        evaluations[name] = {s: summarise_folder(folder, scored, card, s) for s in STRICTNESS_LEVELS}
    return {
        "model": model,
        "common": common,
        "thresholds": thresholds,
        "history": history,
        "parity_max_abs_diff": diff,
        "patch_metrics_test": patch_metrics(model, patches["test"], variant),
        "evaluations": evaluations,
    }


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
                           "laplacian_accuracy": round(v["laplacian"]["accuracy"], 4)}
                       for g, v in evaluation["groups"].items()},
    }


def build(args: argparse.Namespace, data: dict[str, Any]) -> None:
    from cull.card import file_sha256
    from train.export import write_card
    from train.report import write_card_markdown

    out = args.out / "focus.onnx"
    result = fit_and_export(args, data, args.variant, args.kernel, out)
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
            "degradations": "defocus (disk / rimmed / soft / cat's-eye PSFs, radius 1.5-9 px, highlight bokeh), "
            "camera shake (straight, curved and tremor trajectories, 4-26 px), sharp subject on a defocused "
            "background (labelled sharp), lens softness <= 0.6 px on sharp, exposure -1.2..+0.6 EV, "
            "Poisson-Gaussian noise at 5 ISO-like levels, in-camera sharpening (unsharp mask), "
            "JPEG quality 55-98, downscaling 0.5-1x",
            "epochs": args.epochs,
            "epochs_run": result["history"]["epochs_run"],
            "seconds": result["history"]["seconds"],
            "batch_size": args.batch_size,
            "seed": args.seed,
            "history": {k: [round(x, 4) for x in v] for k, v in result["history"].items() if isinstance(v, list)},
        },
        "export": {"tool": "tf2onnx.convert.from_function", "opset": 17,
                   "parity_max_abs_diff": result["parity_max_abs_diff"]},
        "seed_comparison": sweep,
    }
    version = f"{args.variant}-k{args.kernel}-{dt.date.today():%Y%m%d}-{file_sha256(out)[:8]}"
    card = write_card(out, version=version, thresholds=result["thresholds"], extra=extra, **result["common"])
    write_card_markdown(card, args.out / "CARD.md")
    logging.info("wrote %s and %s", out, card)


def run_sweep(args: argparse.Namespace, data: dict[str, Any]) -> None:
    from train.report import write_sweep_markdown

    rows = []
    sweep_dir = args.work / "sweep"
    for kernel in args.kernels:
        result = fit_and_export(args, data, "seed", kernel, sweep_dir / f"seed_k{kernel}.onnx")
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


if __name__ == "__main__":
    sys.exit(main())
