"""The `cull` command line (Typer). Each command parses, calls one core function, renders."""

from __future__ import annotations

import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from cull import __version__
from cull.card import ModelCard, load_card
from cull.decide import Strictness
from cull.errors import CullError
from cull.runner import default_workers
from cull.sidecars import SidecarStyle, XmpOptions, clear_photo, write_results

app = typer.Typer(
    help="Find the out-of-focus photos in a photo library. Nothing is ever deleted.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

class Show(str, Enum):
    REJECTS = "rejects"
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
    paths: Annotated[list[Path], typer.Argument(exists=True, help="folders or photos to scan")],
    report: Annotated[Path | None, typer.Option(help="write one row per photo to FILE.jsonl or FILE.csv")] = None,
    workers: WorkersOption = default_workers(),
    batch_size: Annotated[int, typer.Option(min=1, max=4096, help="patches per inference batch")] = 64,
    model: ModelOption = None,
    strictness: StrictnessOption = Strictness.LENIENT,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="ignore and do not update the score cache")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="score and report on screen only; write nothing")] = False,
    show: Annotated[Show, typer.Option(help="which photos to list: rejects (reject + uncertain), all, none")] = Show.REJECTS,
    no_xmp: Annotated[bool, typer.Option("--no-xmp", help="do not write verdicts to XMP")] = False,
    embed: Annotated[bool, typer.Option("--embed", help="write XMP inside JPEG/TIFF/DNG/PNG/WebP files (losslessly) instead of a sidecar")] = False,
    sidecar_style: Annotated[SidecarStyle, typer.Option(help="RAW sidecar naming: adobe (IMG_1.xmp), darktable (IMG_1.CR2.xmp), both")] = SidecarStyle.ADOBE,
    label: Annotated[str, typer.Option(help="colour label word for uncertain photos (Lightroom matches the word)")] = "Yellow",
) -> None:
    """Score every photo's focus and decide keep / uncertain / reject.

    Example: cull scan ~/Photos/2026 --report scan.jsonl
    """
    from cull.report import write_report
    from cull.scan import ScanOptions, refresh_cache, validate_options
    from cull.scan import scan as run_scan

    if report is not None and report.suffix.lower() not in (".jsonl", ".csv"):
        raise _fail(f"--report must end in .jsonl or .csv, not {report.name!r}")
    options = ScanOptions(workers=workers, batch_size=batch_size, strictness=strictness,
                          use_cache=not no_cache, dry_run=dry_run)
    try:
        validate_options(options)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    card = _card(model)
    bar = progress_bar("scanning")
    try:
        result = run_scan(paths, card, options, on_total=lambda n: set_total(bar, n), on_result=lambda r: bar.update(1))
    except CullError as exc:
        bar.close()
        raise _fail(str(exc)) from None
    bar.close()
    for item in result.results:
        if show is Show.ALL or (show is Show.REJECTS and item.verdict is not None and item.verdict.value != "keep"):
            score = "  -  " if item.photo is None or item.photo.score is None else f"{item.photo.score:.3f}"
            typer.echo(f"{item.verdict.value if item.verdict else 'error':9} {score}  {item.path}  ({item.decision.reason if item.decision else ''})")
    failures = list(result.failures)
    xmp_note = ""
    if not no_xmp and not dry_run:
        try:
            written = write_results(result.results, XmpOptions(embed, sidecar_style, label), card.version)
        except CullError as exc:
            raise _fail(str(exc)) from None
        failures += written.errors or []
        refresh_cache(result, written.embedded or [], card, options)
        for path, conflict in written.conflicts or []:
            typer.echo(f"conflict: {path}: {conflict}", err=True)
        xmp_note = f"; XMP: {written.written} written, {written.unchanged} unchanged"
    for path, reason in failures:
        typer.echo(f"error: {path}: {reason}", err=True)
    for skipped in result.skipped:
        if not skipped.error:
            typer.echo(f"note: {skipped.path}: {skipped.reason}", err=True)
    if report is not None and not dry_run:
        rows = [r.row() for r in result.results] + [
            {"path": str(s.path), "error": s.reason} for s in result.skipped if s.error
        ]
        try:
            write_report(rows, report)
        except OSError as exc:
            raise _fail(f"cannot write report {report}: {exc.strerror or exc}", 1) from None
    counts = result.counts()
    rate = len(result.results) / result.seconds if result.seconds > 0 else 0.0
    where = f"report: {report}" if report is not None and not dry_run else "no files written" if dry_run else "results on screen only"
    typer.echo(
        f"{len(result.results)} photos: {counts['keep']} keep, {counts['uncertain']} uncertain, "
        f"{counts['reject']} reject, {len(failures)} errors ({counts['cached']} from cache) "
        f"in {result.seconds:.1f} s ({rate:.1f} files/s); {where}{xmp_note}; strictness {options.strictness.value}"
    )
    raise typer.Exit(1 if failures else 0)


@app.command("eval")
def eval_command(
    folder: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="labelled folder: sharp/ and *blur*/ sub-folders")],
    strictness: StrictnessOption = Strictness.LENIENT,
    workers: WorkersOption = default_workers(),
    model: ModelOption = None,
    laplacian_threshold: Annotated[float, typer.Option(help="the baseline's cut-off on variance of the Laplacian")] = 100.0,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the full report (with per-photo rows) as JSON")] = None,
) -> None:
    """Measure the model (and a Laplacian-variance baseline) on labelled folders.

    Example: cull eval ../shared/data/real-blur-dev
    """
    from cull.evaluate import evaluate_folder, format_report
    from cull.fsutil import atomic_write_text

    card = _card(model)
    try:
        with tqdm(unit="photo", file=sys.stderr, disable=None, desc="evaluating") as bar:
            result = evaluate_folder(folder, card, strictness.value, workers=workers,
                                     laplacian_threshold=laplacian_threshold, progress=bar)
    except CullError as exc:
        raise _fail(str(exc)) from None
    typer.echo(format_report(result))
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(result, indent=2, default=str) + "\n")
    raise typer.Exit(1 if result["errors"] else 0)


xmp_app = typer.Typer(help="Manage the XMP metadata cull writes.", no_args_is_help=True)
app.add_typer(xmp_app, name="xmp")


@xmp_app.command("clear")
def xmp_clear(
    paths: Annotated[list[Path], typer.Argument(exists=True, help="folders or photos")],
) -> None:
    """Remove exactly what cull wrote to XMP and restore the values it replaced.

    Sidecars that existed before cull come back byte for byte (unless you edited them since, in
    which case your edits are kept); sidecars cull created are removed.

    Example: cull xmp clear ~/Photos/2026
    """
    from cull.discover import Shot, discover

    changed = errors = 0
    for item in discover(paths):
        if not isinstance(item, Shot):
            continue
        for photo in (item.path, item.partner):
            if photo is None:
                continue
            for outcome in clear_photo(photo):
                if outcome.action == "error":
                    errors += 1
                    typer.echo(f"error: {outcome.target}: {outcome.detail}", err=True)
                else:
                    changed += 1
                    typer.echo(f"{outcome.action:8} {outcome.target}")
    typer.echo(f"{changed} XMP files restored or removed, {errors} errors")
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
) -> None:
    """Move rejected shots (RAW + JPEG + sidecars) aside. Undo with `cull undo PATH`.

    Scans first (unchanged files come from the cache). Nothing is ever deleted.

    Example: cull move ~/Photos/2026 --rejects
    """
    from cull.decide import Verdict
    from cull.discover import Shot
    from cull.move import (
        MoveError,
        default_target,
        execute,
        finish_interrupted,
        plan_moves,
        validate_target,
    )
    from cull.scan import ScanOptions
    from cull.scan import scan as run_scan

    if not rejects and not uncertain:
        raise _fail("say what to move: --rejects, and optionally --uncertain")
    target = to if to is not None else default_target(path)
    try:
        validate_target(path, target)
    except MoveError as exc:
        raise _fail(str(exc)) from None
    if not dry_run:
        try:
            recovered = finish_interrupted(target) if target.is_dir() else 0
        except OSError as exc:
            raise _fail(f"cannot finish the interrupted move in {target}: {exc}", 1) from None
        if recovered:
            typer.echo(f"finished {recovered} file moves of an interrupted earlier run", err=True)
    card = _card(model)
    options = ScanOptions(workers=workers, strictness=strictness, dry_run=dry_run, exclude=(target,))
    bar = progress_bar("checking")
    result = run_scan([path], card, options, on_total=lambda n: set_total(bar, n), on_result=lambda r: bar.update(1))
    bar.close()
    for failed_path, reason in result.failures:
        typer.echo(f"not judged (left in place): {failed_path}: {reason}", err=True)
    wanted = {Verdict.REJECT} | ({Verdict.UNCERTAIN} if uncertain else set())
    shots = [Shot(r.path, r.partner) for r in result.results if r.verdict in wanted]
    plan = plan_moves(shots, path, target)
    for src, reason in plan.refused:
        typer.echo(f"refused: {src}: {reason}", err=True)
    if dry_run:
        for planned in plan.moves:
            typer.echo(f"would move {planned.src} -> {planned.dst}")
        typer.echo(f"{plan.shots} shots, {len(plan.moves)} files would move to {target}; nothing moved (dry run)")
        raise typer.Exit(0)
    try:
        moved = execute(plan, path, target)
    except OSError as exc:
        from cull.move import describe_os_error

        raise _fail(f"cannot move into {target}: {describe_os_error(exc)}", 1) from None
    for src, reason in moved.failed:
        typer.echo(f"error: {src}: {reason}", err=True)
    typer.echo(
        f"moved {moved.shots} shots ({len(moved.moved)} files, {moved.bytes / 1e6:.1f} MB) to {target}"
        + (f"; journal: {moved.journal}" if moved.journal else "")
        + (f"; {len(moved.failed)} failed" if moved.failed else "")
    )
    raise typer.Exit(1 if moved.failed or plan.refused else 0)


@app.command()
def undo(
    path: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="the folder given to `cull move`")],
    to: Annotated[Path | None, typer.Option("--to", help="the target given to `cull move --to`")] = None,
    everything: Annotated[bool, typer.Option("--all", help="undo every move into the target, not only the last")] = False,
) -> None:
    """Put back what `cull move` moved (names, contents and modification times).

    Example: cull undo ~/Photos/2026
    """
    from cull.move import MoveError, default_target
    from cull.move import undo as run_undo

    target = to if to is not None else default_target(path)
    try:
        result = run_undo(target, everything)
    except MoveError as exc:
        raise _fail(str(exc), 1) from None
    for dst, reason in result.left:
        typer.echo(f"left in place: {dst}: {reason}", err=True)
    typer.echo(f"put back {result.restored} files ({result.bytes / 1e6:.1f} MB) from {len(result.journals)} move(s)"
               + (f"; {len(result.left)} left in {target}" if result.left else ""))
    raise typer.Exit(1 if result.left else 0)


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
    preview_size: Annotated[str, typer.Option(help="size of the scored preview stream, WxH")] = "640x480",
    fps: Annotated[float, typer.Option(help="replay speed for folder: sources (0: as fast as scored)")] = 0.0,
    max_frames: Annotated[int, typer.Option(min=0, help="stop after this many frames (0: run until Ctrl-C)")] = 0,
    model: ModelOption = None,
) -> None:
    """Live focus assist and shot screening (Raspberry Pi camera, webcam, or a replay).

    Example: cull camera --source opencv:0 --auto --out ~/Pictures/shots
    """
    from cull.camera.run import CameraOptions, Trigger, run_camera
    from cull.camera.sources import CameraError, open_source

    triggers = [t for t, on in ((Trigger.KEYPRESS, capture_on_keypress), (Trigger.INTERVAL, interval is not None),
                                (Trigger.AUTO, auto)) if on]
    if len(triggers) > 1:
        raise _fail("choose one of --capture-on-keypress, --interval and --auto")
    try:
        width, height = (int(v) for v in preview_size.lower().split("x"))
    except ValueError:
        raise _fail(f"--preview-size takes WxH, e.g. 640x480, not {preview_size!r}") from None
    card = _card(model)
    options = CameraOptions(out=out, trigger=triggers[0] if triggers else Trigger.NONE, interval=interval or 5.0,
                            auto_frames=auto_frames, strictness=strictness.value, preview=preview, xmp=not no_xmp,
                            move_rejects=move_rejects, dng=dng, max_frames=max_frames)
    try:
        summary = run_camera(open_source(source, (width, height), fps), card, options)
    except CameraError as exc:
        raise _fail(str(exc), 1) from None
    verdicts = [s.verdict.value for s in summary.shots if s.verdict]
    typer.echo(f"{len(summary.frames)} frames in {summary.seconds:.1f} s "
               f"({len(summary.frames) / max(summary.seconds, 1e-6):.1f} fps); {len(summary.shots)} shots "
               f"({verdicts.count('keep')} keep, {verdicts.count('uncertain')} uncertain, {verdicts.count('reject')} reject) "
               f"in {out}; stopped by {summary.stopped_by}")
    raise typer.Exit(1 if any(s.error for s in summary.shots) else 0)
