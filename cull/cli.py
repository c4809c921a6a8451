"""The `cull` command line (Typer). Each command parses, calls one core function, renders."""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import sys
import time
from enum import Enum
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer
from tqdm import tqdm

from cull import __version__
from cull.card import ModelCard, load_card
from cull.decide import Strictness
from cull.errors import CullError
from cull.review.items import Show as ReviewShow
from cull.runner import BATCH_SIZE, default_workers
from cull.sidecars import (
    SidecarStyle, XmpOptions, clear_photo, embedding_available, link_target_folders, remove_stale_temps, write_results,
)
from cull.xmp import validate_label

if TYPE_CHECKING:
    from cull.scan import PhotoResult

app = typer.Typer(
    help="Find the out-of-focus photos in a photo library. Nothing is ever deleted.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

class Show(str, Enum):
    FLAGGED = "flagged"  # reject + uncertain, as `cull review --show flagged`
    REJECTS = "rejects"  # the same: scan's name for it before review had `flagged`
    ALL = "all"
    NONE = "none"


ModelOption = Annotated[
    Path | None,
    typer.Option("--model", help="model card (.json) or .onnx beside its card; default: the shipped model"),
]
WorkersOption = Annotated[int, typer.Option("--workers", "-j", min=1, help="worker processes (default: all cores)")]
StrictnessOption = Annotated[
    Strictness,
    typer.Option(help="how readily to reject: lenient (default, in-focus priority), normal, strict"),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"cull: {message}", err=True)
    return typer.Exit(code)


def _out(line: str) -> None:
    """A line on stdout. A reader that went away (`cull scan … | head`, `less` quit early) ends the listing,
    not the command: what the command writes (XMP, the report, a clear) is still done, and the exit code
    still says how it went (click would end the process at once, silently, with exit 1)."""
    try:
        typer.echo(line)
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the rest of the process


def _shown(value: object) -> str:
    """A path (or message) safe to print on one line: bytes that are not UTF-8 and control characters
    shown as escapes (cull.report.display_path)."""
    from cull.report import display_path

    try:
        return display_path(str(value))
    except UnicodeError:
        return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def _protected_with_facts(results: Sequence[PhotoResult], use: bool, readonly: bool) -> dict[Path, str]:
    """cull.protect.protected_shots, reading what the fact cache knows (a rescan with --no-xmp opens no
    sidecar it has read before); ``readonly`` (--dry-run): nothing learnt is written back."""
    from cull.cache import FactCache, default_cache_path
    from cull.protect import protected_shots

    if not use:
        return protected_shots(results)
    with FactCache(default_cache_path(), readonly=readonly) as facts:
        return protected_shots(results, facts)


def _card(model: Path | None) -> ModelCard:
    try:
        return load_card(model)
    except CullError as exc:
        raise _fail(str(exc)) from None


def progress_bar(description: str) -> tqdm:  # type: ignore[type-arg]
    """A bar on stderr (hidden when stderr is not a terminal)."""
    return tqdm(unit="photo", file=sys.stderr, disable=None, dynamic_ncols=True, desc=description)


def set_total(bar: tqdm, total: int) -> None:  # type: ignore[type-arg]
    bar.total = total
    bar.refresh()


@app.callback(invoke_without_command=True)
def main(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="print the version and exit")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log details to stderr")] = False,
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if version:
        typer.echo(f"cull {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)


@app.command()
def scan(
    paths: Annotated[list[Path], typer.Argument(exists=True, readable=False, metavar="PATH...", help="folders or photos to scan")],
    report: Annotated[Path | None, typer.Option(help="write one row per photo to FILE.jsonl or FILE.csv")] = None,
    workers: WorkersOption = default_workers(),
    batch_size: Annotated[int, typer.Option(min=1, max=4096, help="patches per inference batch")] = BATCH_SIZE,
    model: ModelOption = None,
    strictness: StrictnessOption = Strictness.LENIENT,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="ignore and do not update the score cache")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="score and report on screen only; write nothing")] = False,
    show: Annotated[Show, typer.Option(help="which photos to list: flagged (reject + uncertain; `rejects` says the same), all, none")] = Show.FLAGGED,
    no_xmp: Annotated[bool, typer.Option("--no-xmp", help="do not write verdicts to XMP")] = False,
    embed: Annotated[bool, typer.Option("--embed", help="write XMP inside JPEG/TIFF/DNG/PNG/WebP files (losslessly) instead of a sidecar")] = False,
    sidecar_style: Annotated[SidecarStyle, typer.Option(help="RAW sidecar naming: adobe (IMG_1.xmp), darktable (IMG_1.CR2.xmp), both")] = SidecarStyle.ADOBE,
    label: Annotated[str, typer.Option(help="colour label word for uncertain photos (Lightroom matches the word)")] = "Yellow",
    ray_address: Annotated[str | None, typer.Option("--ray", metavar="local|auto|ADDRESS", help="analyse on a Ray cluster: a local runtime (-j CPUs), the one RAY_ADDRESS names, or HOST:PORT (the ray extra: pip install 'cull-focus\\[ray]'; see docs/cluster.md)")] = None,
    bursts: Annotated[bool, typer.Option("--bursts", help="group the frames of a burst (same camera, seconds apart, same scene) and rank them, 1 = sharpest")] = False,
    burst_gap: Annotated[float, typer.Option(help="largest gap in seconds between frames of one burst")] = 2.0,
    keep_best: Annotated[bool, typer.Option("--keep-best", help="with --bursts: a kept frame clearly softer than its burst's best kept frame, and of the same scene, becomes uncertain (not one you rated, picked or kept in cull review)")] = False,
) -> None:
    """Score every photo's focus and decide keep / uncertain / reject.

    Example: cull scan ~/Photos/2026 --report scan.jsonl
    Bursts: cull scan ~/Photos/2026 --bursts --keep-best (then cull move ~/Photos/2026 --rejects --uncertain --keep-best)
    """
    from cull.protect import protected_shots
    from cull.report import check_target, display_path, file_row, write_report
    from cull.scan import ScanOptions, refresh_cache, validate_options
    from cull.scan import scan as run_scan

    options = ScanOptions(workers=workers, batch_size=batch_size, strictness=strictness,
                          use_cache=not no_cache, dry_run=dry_run, ray=ray_address is not None,
                          bursts=bursts, burst_gap=burst_gap, keep_best=keep_best)
    try:
        validate_options(options, report=report, xmp=not no_xmp, embed=embed)
        if report is not None:
            check_target(report)
        label = validate_label(label)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if embed and not no_xmp and not dry_run and not embedding_available():
        raise _fail("--embed needs pyexiv2: pip install 'cull-focus[embed]'")
    card = _card(model)
    cluster_note = ""
    if ray_address is not None:
        import signal

        from cull.cluster import connect, disconnect

        own = {name: signal.getsignal(getattr(signal, name)) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)}
        try:
            cluster_note = f"; {connect(ray_address, local_cpus=workers).describe()}"
        except CullError as exc:
            raise _fail(str(exc)) from None
        for name, handler in own.items():  # Ray's driver puts in its own (a stack dump, exit 15): cull's stop cleanly
            if callable(handler):
                signal.signal(getattr(signal, name), handler)
    bar = progress_bar("scanning")
    counted = {"done": 0, "total": 0}  # for the line after a Ctrl-C (a bar off a terminal counts nothing)

    def on_total(n: int) -> None:
        set_total(bar, n)
        counted["total"] = n

    def on_result(_result: object) -> None:
        bar.update(1)
        counted["done"] += 1

    try:
        began = time.monotonic()
        result = run_scan(paths, card, options, on_total=on_total, on_result=on_result)
    except CullError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        bar.close()
        kept = ("their scores are kept in the cache: a rerun goes on from there" if not (no_cache or dry_run)
                else "nothing was kept: --no-cache or --dry-run leave the score cache as it was")
        raise _fail(f"interrupted after {counted['done']} of {counted['total'] or '?'} photos ({kept}); "
                    "no XMP and no report written", 130) from None
    finally:  # Ctrl-C included: the tasks in flight are cancelled, a local runtime stops
        bar.close()
        if ray_address is not None:
            disconnect()
    for item in result.results:
        if show is Show.ALL or (show in (Show.FLAGGED, Show.REJECTS) and item.verdict is not None and item.verdict.value != "keep"):
            score = "  -  " if item.photo is None or item.photo.score is None else f"{item.photo.score:.3f}"
            place = f"  [{item.burst.burst} #{item.burst.rank}/{item.burst.size}]" if item.burst is not None else ""
            why = f"  ({item.decision.reason})" if item.decision else ""  # an error's reason: on stderr below
            _out(f"{item.verdict.value if item.verdict else 'error':9} {score}  {display_path(item.path)}{place}{why}")
    failures = list(result.failures)
    xmp_note = ""
    protected: dict[Path, str] | None = None  # rejected shots the user's rating (etc.) keeps; None: not looked up
    if not no_xmp and not dry_run:
        try:
            written = write_results(result.results, XmpOptions(embed, sidecar_style, label), card.version, use_cache=not no_cache)
        except CullError as exc:
            raise _fail(str(exc)) from None
        except KeyboardInterrupt:  # each XMP file is written whole (atomic): some are, the others are not yet
            raise _fail("interrupted while writing XMP: some photos have their verdicts, the others not yet, and no "
                        "report was written; run the same scan again to finish", 130) from None
        refresh_cache(result, written.embedded or [], card, options)
        protected = written.protected
        for path, conflict in written.conflicts or []:
            typer.echo(f"conflict: {display_path(path)}: {conflict}", err=True)
        if embed:
            from cull.formats import is_raw
            from cull.protect import EMBEDDABLE

            aside = [r.path for r in result.results if r.verdict is not None and r.verdict.value != "keep"
                     and r.path.suffix.lower() not in EMBEDDABLE and not is_raw(r.path)]
            if aside:
                typer.echo(f"note: --embed: {len(aside)} photos (e.g. {display_path(aside[0])}) are of a format cull does "
                           "not write XMP into (HEIC, AVIF); their verdicts went to sidecars", err=True)
        xmp_note = f"; XMP: {written.written} written, {written.unchanged} unchanged" + (
            f", {len(written.errors)} failed" if written.errors else "")
        failures += written.errors or []
    else:  # the same conflict lines a writing scan prints: a rated shot listed as reject is left alone
        protected = _protected_with_facts(result.results, use=not no_cache, readonly=dry_run)
        left = "would not be marked rejected" if dry_run else "not a reject for cull move"
        for path, why in protected.items():
            typer.echo(f"conflict: {display_path(path)}: {why}: {left}", err=True)
    for path, reason in failures:
        typer.echo(f"error: {display_path(path)}: {reason}", err=True)
    for skipped in result.skipped:
        if not skipped.error:
            typer.echo(f"note: {display_path(skipped.path)}: {skipped.reason}", err=True)
    if report is not None and not dry_run:
        if protected is None:
            protected = protected_shots(result.results)
        rows = [{**r.row(), "protected": protected.get(r.path)} for r in result.results]
        rows += [file_row(s.path, error=s.reason) for s in result.skipped if s.error]
        try:
            write_report(rows, report)
        except OSError as exc:
            raise _fail(f"cannot write report {report}: {exc.strerror or exc}", 1) from None
    counts = result.counts()
    seconds = time.monotonic() - began  # the whole job: scan, XMP and report (the scan alone overstated the rate)
    rate = len(result.results) / seconds if seconds > 0 else 0.0
    where = f"report: {_shown(report)}" if report is not None and not dry_run else "no files written" if dry_run else "no report"
    if bursts:
        burst_ids = {r.burst.burst for r in result.results if r.burst is not None}
        framed = sum(1 for r in result.results if r.burst is not None)
        where += f"; {len(burst_ids)} bursts ({framed} frames)"
    files = counts["keep"] + counts["uncertain"] + counts["reject"] + len(result.failures)  # a judged shot once, an unreadable file once
    _out(
        f"{files} file{'' if files == 1 else 's'}: {counts['keep']} keep, {counts['uncertain']} uncertain, "
        f"{counts['reject']} reject, {len(result.failures)} unreadable ({counts['cached']} from cache) "
        f"in {seconds:.1f} s ({rate:.1f} files/s); {where}{xmp_note}; strictness {options.strictness.value}{cluster_note}"
    )
    raise typer.Exit(1 if failures else 0)


@app.command("eval")
def eval_command(
    folder: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="labelled folder: sharp/ and *blur*/ sub-folders (not unblurred/ and the like; a RAW+JPEG pair is one photo)")],
    strictness: StrictnessOption = Strictness.LENIENT,
    workers: WorkersOption = default_workers(),
    model: ModelOption = None,
    laplacian_threshold: Annotated[float, typer.Option(help="the baseline's cut-off on variance of the Laplacian")] = 100.0,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the full report (with per-photo rows) as JSON")] = None,
    bursts: Annotated[bool, typer.Option("--bursts", help="bursts mode: one sub-folder per burst, labels.csv (burst,sharpest); grouping and rank-1 accuracy")] = False,
    burst_gap: Annotated[float, typer.Option(help="with --bursts: largest gap in seconds between frames of one burst")] = 2.0,
) -> None:
    """Measure the model (and a Laplacian-variance baseline) on labelled folders.

    Example: cull eval ../shared/data/real-blur-dev
    Bursts: cull eval my-bursts/ --bursts   (my-bursts/<burst>/frames…, my-bursts/labels.csv)
    """
    from cull.evaluate import evaluate_folder, format_report, is_eval_report
    from cull.evaluate_bursts import evaluate_burst_folder, format_burst_report
    from cull.fsutil import atomic_write_text
    from cull.report import check_output, display_path

    if json_out is not None:
        try:
            check_output(json_out, "--json", (".json",), is_eval_report, "a cull eval report")
        except ValueError as exc:
            raise _fail(str(exc)) from None
    if not 0 <= burst_gap <= 3600:
        raise _fail("--burst-gap must be between 0 and 3600 seconds")
    if not math.isfinite(laplacian_threshold) or laplacian_threshold < 0:
        raise _fail(f"--laplacian-threshold must be a number of 0 or more, not {laplacian_threshold}")
    card = _card(model)
    try:
        with tqdm(unit="photo", file=sys.stderr, disable=None, desc="evaluating") as bar:
            if bursts:
                result = evaluate_burst_folder(folder, card, workers=workers, gap=burst_gap, on_result=lambda r: bar.update(1))
            else:
                result = evaluate_folder(folder, card, strictness.value, workers=workers,
                                         laplacian_threshold=laplacian_threshold, progress=bar)
    except CullError as exc:
        raise _fail(str(exc)) from None
    typer.echo(format_burst_report(result) if bursts else format_report(result))
    for failure in result["errors"]:
        typer.echo(f"error: {display_path(failure['path'])}: {failure['error']}", err=True)
    if json_out is not None:
        try:
            atomic_write_text(json_out, json.dumps(result, indent=2, default=str) + "\n")
        except OSError as exc:  # checked before the work: a disk that filled up, a folder that went read-only
            raise _fail(f"cannot write {display_path(json_out)}: {exc.strerror or exc}") from None
    raise typer.Exit(1 if result["errors"] else 0)


@app.command()
def calibrate(
    folder: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="labelled folder: sharp/ and *blur*/ sub-folders (not unblurred/ and the like; a RAW+JPEG pair is one photo; 10 or more each recommended, at least 5)")],
    out: Annotated[Path, typer.Option("--out", help="the calibrated card to write (.json)")],
    model: ModelOption = None,
    workers: WorkersOption = default_workers(),
    keep_texture: Annotated[bool, typer.Option("--keep-texture", help="keep the base card's patch texture threshold (min_std)")] = False,
) -> None:
    """Fit keep/reject thresholds to your own labelled photos; write a card for --model.

    Example: cull calibrate ~/micro-labelled --out micro.json && cull scan ~/micro --model micro.json
    """
    from cull.calibrate import base_card_path, calibrate as run_calibrate, format_calibration, is_calibrated_card, write_card
    from cull.report import check_output, display_path

    base_path = base_card_path(model)
    try:
        base_named = out.exists() and base_path.exists() and out.samefile(base_path)  # through links too
    except OSError:  # a link loop, a folder that cannot be searched: check_output says which
        base_named = False
    if base_named:
        raise _fail(f"--out {display_path(out)} would overwrite the base card; choose another name")
    try:
        check_output(out, "--out", (".json",), is_calibrated_card, "a card written by cull calibrate")
    except ValueError as exc:
        raise _fail(str(exc)) from None
    card = _card(model)
    try:
        with tqdm(unit="photo", file=sys.stderr, disable=None, desc="calibrating") as bar:
            result = run_calibrate(folder, card, workers=workers, fit_texture=not keep_texture, progress=bar)
    except CullError as exc:
        raise _fail(str(exc)) from None
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(format_calibration(result))
    for error in result.errors:
        typer.echo(f"error: {display_path(error.path)}: {error.error}", err=True)
    try:
        write_card(result, base_path, out)
    except CullError as exc:
        raise _fail(f"cannot write {display_path(out)}: {exc}") from None
    except OSError as exc:  # checked before the work: a disk that filled up, a folder that went read-only
        raise _fail(f"cannot write {display_path(out)}: {exc.strerror or exc}") from None
    shown = display_path(out)
    typer.echo(f"\nwrote {shown} (model {display_path(result.card.model_path)}); use it with: cull scan PATH --model {shown}")
    raise typer.Exit(1 if result.errors else 0)


xmp_app = typer.Typer(help="Manage the XMP metadata cull writes.", no_args_is_help=True)
app.add_typer(xmp_app, name="xmp")


@xmp_app.command("clear")
def xmp_clear(
    paths: Annotated[list[Path], typer.Argument(exists=True, readable=False, metavar="PATH...", help="folders or photos")],
) -> None:
    """Remove exactly what cull wrote to XMP and restore the values it replaced.

    Sidecars that existed before cull come back byte for byte (unless you edited them since, in
    which case your edits are kept); sidecars cull created are removed; XMP that `scan --embed`
    put inside a photo is removed (checked by reading it back; needs the \\[embed] extra, without
    it embedded XMP is left alone). Temporary files of an interrupted run are removed too.

    Example: cull xmp clear ~/Photos/2026
    """

    from cull.discover import Shot, discover
    from cull.protect import EMBEDDABLE, Places, embedded_packets
    from cull.xmp import has_cull_fields

    changed = errors = 0
    started, folders, rewritten, inside = time.time(), set(), [], []
    can_embed = embedding_available()
    places = Places()  # each folder listed once (a listing per photo was quadratic in a folder's size)
    for item in discover(paths):
        if not isinstance(item, Shot):
            continue
        if item.path.parent not in folders:  # temp files a killed `scan --embed` left behind
            folders.add(item.path.parent)
            remove_stale_temps([item.path.parent], started)
        for photo in (item.path, item.partner):
            if photo is None:
                continue
            for outcome in clear_photo(photo, places):
                if outcome.action == "error":
                    errors += 1
                    typer.echo(outcome.describe(), err=True)
                else:
                    changed += 1
                    rewritten.append(outcome.target)
                    _out(outcome.describe())
            if not can_embed and photo.suffix.lower() in EMBEDDABLE and any(map(has_cull_fields, embedded_packets(photo))):
                inside.append(photo)
    remove_stale_temps(link_target_folders(rewritten), started)  # left by a killed write through a link
    if inside:
        typer.echo(f"note: {len(inside)} photos keep cull's XMP inside the file (e.g. {_shown(inside[0])}): "
                   "removing it needs the [embed] extra: pip install 'cull-focus[embed]'", err=True)
    _out(f"{changed} XMP files restored or removed, {errors} errors")
    raise typer.Exit(1 if errors else 0)


@app.command()
def move(
    path: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="the scanned folder")],
    rejects: Annotated[bool, typer.Option("--rejects", help="move the photos judged out of focus")] = False,
    uncertain: Annotated[bool, typer.Option("--uncertain", help="also move the uncertain ones")] = False,
    to: Annotated[Path | None, typer.Option("--to", help="target folder (default: PATH/_culled, keeping sub-folders)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would move; move nothing")] = False,
    strictness: StrictnessOption = Strictness.LENIENT,
    workers: WorkersOption = default_workers(),
    model: ModelOption = None,
    keep_best: Annotated[bool, typer.Option("--keep-best", help="judge bursts as `scan --bursts --keep-best` does: with --uncertain, kept frames clearly softer than their burst's best kept frame (same scene) move too")] = False,
    burst_gap: Annotated[float, typer.Option(help="with --keep-best: largest gap in seconds between frames of one burst")] = 2.0,
) -> None:
    """Move rejected shots (RAW + JPEG + sidecars) aside. Undo with `cull undo PATH`.

    Scans first (unchanged files come from the cache). Nothing is ever deleted.

    Example: cull move ~/Photos/2026 --rejects
    """
    from cull.decide import Verdict
    from cull.move import MoveError, default_target, describe_os_error, move_rejects
    from cull.scan import ScanOptions, validate_options

    if not rejects and not uncertain:
        raise _fail("say what to move: --rejects, --uncertain, or both")
    if keep_best and not uncertain:
        raise _fail("--keep-best works with --uncertain (it makes the softer frames of a burst uncertain)")
    target = to if to is not None else default_target(path)
    wanted = frozenset({Verdict.REJECT} | ({Verdict.UNCERTAIN} if uncertain else set()))
    card = _card(model)
    options = ScanOptions(workers=workers, strictness=strictness, dry_run=dry_run,
                          bursts=keep_best, burst_gap=burst_gap, keep_best=keep_best)
    try:
        if burst_gap != 2.0 and not keep_best:
            raise ValueError("--burst-gap works with --keep-best")
        validate_options(options)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    bar = progress_bar("checking")
    try:
        outcome = move_rejects(path, target, card, options, wanted,
                               on_total=lambda n: set_total(bar, n), on_result=lambda r: bar.update(1))
    except MoveError as exc:
        raise _fail(str(exc)) from None
    except CullError as exc:
        raise _fail(str(exc), 1) from None
    except OSError as exc:
        raise _fail(f"cannot move into {_shown(target)}: {describe_os_error(exc)}", 1) from None
    finally:
        bar.close()
    if outcome.recovery.completed:
        typer.echo(f"finished {outcome.recovery.completed} file moves of an interrupted earlier run", err=True)
    for missing in outcome.recovery.missing:
        typer.echo(f"error: an interrupted earlier move lost track of {_shown(missing)} (in neither place)", err=True)
    for changed in outcome.recovery.changed:
        typer.echo(f"error: an interrupted earlier move had planned to move {_shown(changed)} with its shot, but it is "
                   "another file now (size or time changed): the shot is put back, not moved", err=True)
    for stuck, why in outcome.recovery.stuck:
        typer.echo(f"error: {_shown(stuck)} of that shot stays in the target: {_shown(why)} (`cull undo` takes it up)", err=True)
    for failed_path, reason in outcome.not_judged:
        typer.echo(f"not judged (left in place): {_shown(failed_path)}: {_shown(reason)}", err=True)
    for src, reason in outcome.plan.refused:
        typer.echo(f"refused: {_shown(src)}: {_shown(reason)}", err=True)
    for shot, why in outcome.plan.protected:  # never moved: the user rated, picked or accepted it
        typer.echo(f"kept in place: {_shown(shot)}: {why}", err=True)
    if outcome.marked_elsewhere:
        typer.echo(f"note: {len(outcome.marked_elsewhere)} photos (e.g. {_shown(outcome.marked_elsewhere[0])}) are marked "
                   "reject in their XMP by an earlier scan, but this move did not judge them so: the photo changed since "
                   "(run `cull scan` again to update its XMP), or that scan had another --model, --strictness or "
                   "--burst-gap (give move the same)", err=True)
    moved = outcome.result
    if moved is None:
        for planned in outcome.plan.moves:
            typer.echo(f"would move {_shown(planned.src)} -> {_shown(planned.dst)}")
        typer.echo(f"{outcome.plan.shots} shots, {len(outcome.plan.moves)} files would move to {_shown(target)}; "
                   "nothing moved (dry run)")
        raise typer.Exit(1 if outcome.failed else 0)
    for src, reason in moved.failed:
        typer.echo(f"error: {_shown(src)}: {_shown(reason)}", err=True)
    typer.echo(
        f"moved {moved.shots} shots ({len(moved.moved)} files, {moved.bytes / 1e6:.1f} MB) to {_shown(target)}"
        + (f"; journal: {_shown(moved.journal)}" if moved.journal else "")
        + (f"; {len(moved.failed)} failed" if moved.failed else "")
    )
    raise typer.Exit(1 if outcome.failed else 0)


cache_app = typer.Typer(help="Inspect and trim the score cache (photos are never touched).", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


def _cache_failure(doing: str, path: Path, exc: BaseException) -> typer.Exit:
    """Exit 1 naming why the cache could not be read or pruned (read-only, busy, else maybe damaged)."""
    from cull.cache_prune import cache_failure_hint

    hint = cache_failure_hint(exc) or " (scans go on without a damaged cache; remove the file to start a new one)"
    return _fail(f"cannot {doing} the cache {_shown(path)}: {exc}{hint}", 1)


@cache_app.command("info")
def cache_info(
    model: Annotated[Path | None, typer.Option("--model", help="model card whose scores are current (default: the shipped one)")] = None,
) -> None:
    """Where the score cache is, how big, and how many photos each model scored.

    Example: cull cache info
    """
    from cull.cache import default_cache_path
    from cull.cache_prune import describe_cache

    path = default_cache_path()
    try:
        contents = describe_cache(path)
    except (OSError, sqlite3.Error) as exc:
        raise _cache_failure("read", path, exc) from None
    if contents is None:
        typer.echo(f"no score cache yet at {_shown(path)}")
        raise typer.Exit(0)
    current = _card(model).fingerprint
    typer.echo(f"{_shown(path)}: {contents.size_bytes / 1e6:.1f} MB")
    for fingerprint, rows in sorted(contents.scores_by_model.items(), key=lambda item: -item[1]):
        typer.echo(f"  {rows:9d} scores by model {fingerprint[:12]}" + ("  (current)" if fingerprint == current else ""))
    typer.echo(f"  {contents.footprints:9d} burst footprints, {contents.xmp_facts} XMP facts")
    if contents.older_rows:
        typer.echo(f"  {contents.older_rows:9d} scores kept by an older cull, unused (cull cache prune --other-models drops them)")


@cache_app.command("prune")
def cache_prune(
    other_models: Annotated[bool, typer.Option("--other-models", help="also drop every score not made by --model")] = False,
    model: Annotated[Path | None, typer.Option("--model", help="model card to keep with --other-models (default: the shipped one)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="count what would go, change nothing")] = False,
) -> None:
    """Drop cached rows of photos that are gone (deleted, or moved away), then compact the cache.

    A photo counts as gone only when its folder still exists and is not empty: the scores of a
    drive that is not mounted (its mount point left empty), or of a folder that was renamed, are
    kept.  Only speed is at stake: a photo whose row was dropped is analysed again if it comes back.

    Example: cull cache prune --other-models
    """
    from cull.cache import default_cache_path
    from cull.cache_prune import prune_cache

    path = default_cache_path()
    if model is not None and not other_models:
        raise _fail("--model names the card whose scores --other-models keeps: add --other-models")
    keep = _card(model).fingerprint if other_models else None
    try:
        outcome = prune_cache(path, keep, dry_run)
    except (OSError, sqlite3.Error) as exc:
        raise _cache_failure("prune", path, exc) from None
    verb = "would remove" if dry_run else "removed"
    typer.echo(f"{verb} what was cached of {outcome.gone_paths} files that are gone ({sum(outcome.gone.values())} rows)"
               + (f" and {sum(outcome.model.values())} scores of other models" if other_models else "")
               + f"; kept {outcome.unreachable_paths} files whose folder is missing, empty or unreadable"
               + ("; compacted" if outcome.compacted else ""))
    if outcome.note:
        typer.echo(f"note: {outcome.note}", err=True)


@app.command()
def undo(
    path: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="the folder given to `cull move`")],
    to: Annotated[Path | None, typer.Option("--to", help="the target given to `cull move --to`")] = None,
    everything: Annotated[bool, typer.Option("--all", help="undo every move into the target, not only the last")] = False,
    moved_from: Annotated[Path | None, typer.Option("--from", help="the moves made from this folder (renamed since to PATH; with a shared --to)")] = None,
) -> None:
    """Put back what `cull move` moved (names, contents and modification times).

    Example: cull undo ~/Photos/2026
    """
    from cull.move import MoveError, default_target
    from cull.move import undo as run_undo

    path = Path(os.path.realpath(path))  # link/../lib is the real folder's parent's lib, not the lexical one
    target = Path(os.path.realpath(to)) if to is not None else default_target(path)
    try:
        result = run_undo(target, everything, root=path, moved_from=moved_from)
    except MoveError as exc:
        raise _fail(str(exc), 1) from None
    except OSError as exc:
        raise _fail(f"cannot undo in {_shown(target)}: {exc.strerror or exc}", 1) from None
    for dst, reason in result.left:
        typer.echo(f"left in place: {_shown(dst)}: {_shown(reason)}", err=True)
    for dst, reason in result.missing:
        typer.echo(f"missing: {_shown(dst)}: {_shown(reason)}", err=True)
    for src in result.edited:
        typer.echo(f"note: {_shown(src)} was changed in {_shown(target)} since the move; put back with your changes", err=True)
    for note in result.notes:
        typer.echo(f"note: {_shown(note)}", err=True)
    for folder in result.recreated:
        typer.echo(f"note: folder {_shown(folder)} was gone (renamed since the move?) and was made again for the files "
                   "put back", err=True)
    typer.echo(f"put back {result.restored} files ({result.bytes / 1e6:.1f} MB) from {len(result.journals)} move(s)"
               + (f"; {len(result.left)} left in {_shown(target)}" if result.left else "")
               + (f"; {len(result.missing)} missing" if result.missing else ""))
    if result.other_roots:
        typer.echo(f"note: moves into {_shown(target)} from {', '.join(map(_shown, result.other_roots))} were left alone "
                   "(undo those with their own folder, or, for a folder since renamed to this one, add --from OLD_FOLDER)",
                   err=True)
    if result.earlier:
        again = f"cull undo {_shown(path)}" + (f" --to {_shown(to)}" if to is not None else "")
        typer.echo(f"note: {result.earlier} files from an earlier move are still in {_shown(target)} (undo takes one "
                   f"move at a time): `{again}` again puts back the one before, `{again} --all` every one", err=True)
    raise typer.Exit(1 if result.left or result.missing else 0)


@app.command()
def camera(
    source: Annotated[str, typer.Option(help="picamera2 (Raspberry Pi), opencv:N (webcam N), or folder:PATH (replay images or a video)")] = "picamera2",
    out: Annotated[Path, typer.Option(help="where captured stills go")] = Path("captures"),
    capture_on_keypress: Annotated[bool, typer.Option("--capture-on-keypress", help="space / enter / c takes a shot")] = False,
    interval: Annotated[float | None, typer.Option(min=0.1, help="take a shot every SECONDS")] = None,
    auto: Annotated[bool, typer.Option("--auto", help="take the shot once the frame has been in focus for --auto-frames frames")] = False,
    auto_frames: Annotated[int, typer.Option(min=1, help="in-focus frames in a row before --auto fires")] = 5,
    preview: Annotated[bool, typer.Option("--preview", help="show a window with the score and the sharp regions")] = False,
    move_rejects: Annotated[bool, typer.Option("--move-rejects", help="move rejected shots into OUT/_culled (journalled, undoable)")] = False,
    no_xmp: Annotated[bool, typer.Option("--no-xmp", help="do not write verdicts to XMP")] = False,
    dng: Annotated[bool, typer.Option("--dng", help="also save a DNG of each shot (Raspberry Pi camera)")] = False,
    strictness: StrictnessOption = Strictness.LENIENT,
    preview_size: Annotated[str, typer.Option(help="largest size of the --preview window, WxH (frames are scored at the still's analysis scale)")] = "960x720",
    fps: Annotated[float, typer.Option(min=0.0, help="replay speed for folder: sources (0: as fast as scored)")] = 0.0,
    max_frames: Annotated[int, typer.Option(min=0, help="stop after this many frames (0: run until Ctrl-C)")] = 0,
    model: ModelOption = None,
) -> None:
    """Live focus assist and shot screening (Raspberry Pi camera, webcam, or a replay).

    Example: cull camera --source opencv:0 --auto --out ~/Pictures/shots
    """
    from cull.camera.run import CameraOptions, Trigger, run_camera
    from cull.camera.sources import CameraError, CameraSetupError, open_source
    from cull.camera.ui import PreviewWindow, TerminalView, Views

    triggers = [t for t, on in ((Trigger.KEYPRESS, capture_on_keypress), (Trigger.INTERVAL, interval is not None),
                                (Trigger.AUTO, auto)) if on]
    if len(triggers) > 1:
        raise _fail("choose one of --capture-on-keypress, --interval and --auto")
    if (interval is not None and not math.isfinite(interval)) or not math.isfinite(fps):
        raise _fail("--interval and --fps take numbers (not nan or inf)")
    if capture_on_keypress and not sys.stdin.isatty():
        raise _fail("--capture-on-keypress needs a terminal to read keys from (stdin is not one): use --interval or --auto")
    if dng and source.partition(":")[0] not in ("picamera2", "pi"):
        raise _fail("--dng needs the Raspberry Pi camera (--source picamera2): other sources give no raw frames")
    try:
        width, height = (int(v) for v in preview_size.lower().split("x"))
    except ValueError:
        raise _fail(f"--preview-size takes WxH, e.g. 960x720, not {preview_size!r}") from None
    card = _card(model)
    options = CameraOptions(out=out, trigger=triggers[0] if triggers else Trigger.NONE, interval=interval or 5.0,
                            auto_frames=auto_frames, strictness=strictness.value, xmp=not no_xmp,
                            move_rejects=move_rejects, dng=dng, max_frames=max_frames)
    window = None
    try:
        window = PreviewWindow((width, height)) if preview else None
        feed = open_source(source, card.analysis.long_side, fps)
        with TerminalView(sys.stderr, keys=options.trigger is Trigger.KEYPRESS) as terminal:
            summary = run_camera(feed, card, options, view=Views(terminal, window) if window else terminal)
    except CameraSetupError as exc:
        raise _fail(str(exc), 2) from None
    except CameraError as exc:
        raise _fail(str(exc), 1) from None
    finally:
        if window:
            window.close()
    verdicts = [s.verdict.value for s in summary.shots if s.verdict]
    failed = summary.failed_shots
    for shot in failed:
        typer.echo(f"error: {shot.path}: {shot.error}", err=True)
    typer.echo(f"{summary.frames} frames in {summary.seconds:.1f} s "
               f"({summary.frames / max(summary.seconds, 1e-6):.1f} fps); {len(summary.shots)} shots "
               f"({verdicts.count('keep')} keep, {verdicts.count('uncertain')} uncertain, {verdicts.count('reject')} reject, "
               f"{len(failed)} with errors) in {out}; stopped by {_shown(summary.stopped_by)}")
    raise typer.Exit(1 if failed or summary.error else 0)


@app.command()
def review(
    paths: Annotated[list[Path], typer.Argument(exists=True, readable=False, metavar="PATH...", help="folders or photos to review")],
    show: Annotated[ReviewShow, typer.Option(help="which photos: flagged (rejects + uncertain), rejects, uncertain, all")] = ReviewShow.FLAGGED,
    port: Annotated[int, typer.Option(min=0, max=65535, help="port on 127.0.0.1 (0: any free port)")] = 0,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="only print the address; do not open a browser")] = False,
    idle_timeout: Annotated[float, typer.Option(min=0, help="stop after this many minutes without a request (0: never)")] = 30.0,
    html: Annotated[Path | None, typer.Option("--html", help="write a self-contained contact sheet to FILE.html instead of serving")] = None,
    strictness: StrictnessOption = Strictness.LENIENT,
    workers: WorkersOption = default_workers(),
    model: ModelOption = None,
    sidecar_style: Annotated[SidecarStyle, typer.Option(help="RAW sidecar naming for your decisions: adobe, darktable, both")] = SidecarStyle.ADOBE,
    label: Annotated[str, typer.Option(help="colour label word for photos you leave uncertain")] = "Yellow",
    bursts: Annotated[bool, typer.Option("--bursts", help="group burst frames side by side, sharpest first; B keeps the best and flags the rest")] = False,
    burst_gap: Annotated[float, typer.Option(help="with --bursts: largest gap in seconds between frames of one burst")] = 2.0,
) -> None:
    """Check and overrule cull's verdicts in the browser: X reject, P keep, U uncertain, Z undo.

    Scans first (unchanged files come from the cache), then serves a page on 127.0.0.1 and prints
    its address (with a one-time token) as the first line. Your decisions go to XMP as your own.

    Example: cull review ~/Photos/2026
    Bursts: cull review ~/Photos/2026 --bursts   (B on a burst: keep the sharpest, the rest uncertain)
    """
    from cull.review import ReviewOptions, load_session
    from cull.review.run import serve_review
    from cull.review.sheet import write_sheet
    from cull.scan import ScanOptions, validate_options

    if html is not None:
        from cull.report import check_output, written_through

        try:  # a missing or read-only folder is found before the scan, as for scan --report
            written_through(check_output(html, "--html", (".html", ".htm")), html, "--html", (".html", ".htm"))
        except ValueError as exc:
            raise _fail(str(exc)) from None
    scan_options = ScanOptions(workers=workers, strictness=strictness, bursts=bursts, burst_gap=burst_gap)
    try:
        validate_options(scan_options)  # --burst-gap without --bursts, a gap out of range: one line, exit 2
        label = validate_label(label)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    card = _card(model)
    bar = progress_bar("checking")
    try:
        session, failures = load_session(
            paths, card, scan_options,
            ReviewOptions(show=show, xmp=XmpOptions(False, sidecar_style, label)),
            on_total=lambda n: set_total(bar, n), on_result=lambda r: bar.update(1),
        )
    except CullError as exc:
        raise _fail(str(exc)) from None
    finally:
        bar.close()
    for path, reason in failures:
        typer.echo(f"not judged: {_shown(path)}: {_shown(reason)}", err=True)
    if html is not None:
        sheet_bar = progress_bar("contact sheet")
        set_total(sheet_bar, len(session.items))
        try:
            size = write_sheet(session, html, progress=lambda: sheet_bar.update(1))
        except OSError as exc:
            sheet_bar.close()
            raise _fail(f"cannot write {html}: {exc.strerror or exc}", 1) from None
        sheet_bar.close()
        typer.echo(f"{len(session.items)} photos in {html} ({size / 1e6:.1f} MB)")
        raise typer.Exit(1 if failures else 0)
    try:
        stopped = serve_review(session, port, idle_minutes=idle_timeout or None, open_browser=not no_browser,
                               on_url=lambda url: typer.echo(url))
    except OSError as exc:
        raise _fail(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}", 1) from None
    typer.echo(f"stopped ({ {'idle': 'idle', 'terminated': 'SIGTERM'}.get(stopped, 'Ctrl-C') }); decisions are in XMP", err=True)
    raise typer.Exit(0)
