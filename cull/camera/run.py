"""The `cull camera` loop: score every preview frame, capture on a trigger, screen each shot.

The loop reports what happens to a ``CameraView`` (frames, shots) and takes key presses back from it;
drawing the status line, reading the terminal and the OpenCV window live in ``cull.camera.ui``.
Ctrl-C and SIGTERM stop the loop between frames, so a still is never half-written (stills are also
written atomically). Screening is the same as `cull scan`: the saved still is decoded, scored and
decided, its verdict goes to XMP, and a reject can be moved to ``_culled``. Every failure of a shot
(capture, XMP, move) is recorded in its ``ShotResult.error`` and the loop goes on.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from cull.analyse import analyse_chunk
from cull.camera.assist import AutoCapture, FrameScore, score_frame
from cull.camera.sources import CameraError, Frame, FrameSource, ReplaySource
from cull.card import ModelCard
from cull.decide import Decision, Verdict, decide
from cull.discover import Shot
from cull.errors import CullError
from cull.journal import TargetBusy
from cull.protect import Places
from cull.score import OnnxScorer, Scorer

log = logging.getLogger(__name__)

QUIT_KEYS = ("q",)
SHOOT_KEYS = (" ", "\n", "\r", "c")


class Trigger(str, Enum):
    NONE = "none"
    KEYPRESS = "keypress"
    INTERVAL = "interval"
    AUTO = "auto"


@dataclass(frozen=True)
class CameraOptions:
    out: Path
    trigger: Trigger = Trigger.NONE
    interval: float = 5.0
    auto_frames: int = 5
    strictness: str = "lenient"
    xmp: bool = True
    move_rejects: bool = False
    dng: bool = False
    max_frames: int = 0  # 0: until stopped
    max_shots: int = 0


@dataclass(frozen=True)
class ShotResult:
    path: Path
    score: float | None
    verdict: Verdict | None
    error: str | None = None  # everything that went wrong with this shot, "; "-separated
    moved_to: Path | None = None


@dataclass
class CameraSummary:
    frames: int = 0
    shots: list[ShotResult] = field(default_factory=list)
    seconds: float = 0.0
    stopped_by: str = "end of stream"
    error: str | None = None  # the camera failed mid-session (the session still has its summary)

    @property
    def failed_shots(self) -> list[ShotResult]:
        return [s for s in self.shots if s.error]


class CameraView(Protocol):
    """What the loop reports to; the CLI's terminal line and preview window implement it."""

    def frame(self, frame: Frame, score: FrameScore, fps: float) -> str | None:
        """Show one scored frame; return a key pressed since the last frame, if any."""
        ...

    def shot(self, shot: ShotResult) -> None: ...


class StopFlag:
    def __init__(self) -> None:
        self.reason: str | None = None

    def __bool__(self) -> bool:
        return self.reason is not None


@contextmanager
def stop_on_signals(flag: StopFlag) -> Iterator[None]:
    """SIGINT / SIGTERM ask the loop to stop after the current frame (no traceback, no half file)."""
    previous = {}

    def handler(signum: int, _frame: Any) -> None:
        flag.reason = signal.Signals(signum).name

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (e.g. some test runners)
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or str(exc) or type(exc).__name__}{where}"
    return str(exc)


def screen_shot(paths: list[Path], card: ModelCard, scorer: Scorer, options: CameraOptions) -> ShotResult:
    """Screen a saved still exactly like `cull scan`: score, decide, XMP, optionally move a reject.

    Never raises for a file-system problem: XMP errors and conflicts and move failures are collected
    in ``ShotResult.error``. A shot with an XMP conflict (a rating or pick someone set) is never moved.
    """
    from cull.protect import shot_protection
    from cull.sidecars import XmpOptions, write_verdict
    from cull.xmp import Verdict as XmpVerdict

    still, partner = paths[0], (paths[1] if len(paths) > 1 else None)
    analysis = analyse_chunk([still], card, scorer)[0]
    if analysis.photo is None:
        return ShotResult(still, None, None, analysis.error or "could not be scored")
    decision: Decision = decide(analysis.photo, card.thresholds_for(options.strictness), card.analysis.min_patches)
    problems: list[str] = []
    rejected = decision.verdict is Verdict.REJECT
    try:
        protection = shot_protection(still, partner) if rejected else None  # a rating or pick of the user's
    except (OSError, CullError) as exc:
        protection = f"its XMP cannot be checked ({_describe(exc)})"
    if protection:
        problems.append(f"conflict: {protection}: not marked rejected")
    if options.xmp:
        verdict = XmpVerdict(decision.verdict.value, analysis.photo.score, analysis.photo.kind, card.version)
        for photo, other in ((still, partner), (partner, still)):
            if photo is None:
                continue
            try:
                outcomes, conflict = write_verdict(photo, verdict, XmpOptions(), partner=other, protection=protection)
            except (OSError, CullError) as exc:
                problems.append(f"XMP for {photo.name} not written: {_describe(exc)}")
                continue
            problems += [f"XMP {o.target.name}: {o.detail or 'not written'}" for o in outcomes if o.action == "error"]
            if conflict and conflict != protection:
                problems.append(f"conflict in the XMP of {photo.name}: {conflict}")
    moved_to = None
    if options.move_rejects and rejected:
        if protection:
            problems.append("not moved to _culled")
        else:
            moved_to, move_problems = _move_reject(still, partner, options.out)
            problems += move_problems
    return ShotResult(still, analysis.photo.score, decision.verdict, "; ".join(problems) or None, moved_to)


def _move_reject(still: Path, partner: Path | None, out: Path) -> tuple[Path | None, list[str]]:
    from cull.move import default_target, execute, plan_moves

    target = default_target(out)
    try:
        plan = plan_moves([Shot(still, partner)], out, target)
        result = execute(plan, out, target, wait=False)  # never stall the feed behind another cull move or undo
    except TargetBusy as exc:
        return None, [f"not moved to {target.name}: {exc} (move it later: cull move {out} --rejects)"]
    except (OSError, CullError) as exc:
        return None, [f"not moved to {target.name}: {_describe(exc)}"]
    problems = [f"not moved: {path.name}: {reason}" for path, reason in plan.refused + result.failed]
    moved = next((m.dst for m in result.moved if m.src == still), None)
    return moved, problems


def _free_name(out: Path, stem: str, dng: bool) -> Path:
    """``stem.jpg`` in ``out``, with a counter added if that name is taken: by a file or a link to
    nothing, its DNG, or a sidecar left by a photo that is gone (NAME.jpg.xmp, NAME.xmp: a new still
    must not inherit a rating that was never its own).  Never overwrite."""
    places = Places()  # the folder listed once; names compared as macOS, Windows and SMB compare them
    path, n = out / f"{stem}.jpg", 1
    while any(places.alike(out / name) or places.duplicates(out / name) for name in _names_of(path, dng)):
        path, n = out / f"{stem}-{n}.jpg", n + 1  # a duplicate's NAME_01.jpg.xmp is read for NAME.jpg too
    return path


def _names_of(still: Path, dng: bool) -> list[str]:
    names = [still.name, still.name + ".xmp", still.stem + ".xmp"]
    if dng:
        names += [still.stem + ".dng", still.stem + ".dng.xmp"]
    return names


def take_shot(source: FrameSource, card: ModelCard, scorer: Scorer, options: CameraOptions, number: int) -> ShotResult:
    """Capture a still and screen it; a capture that fails (full disk, read-only folder, camera
    error) is a ShotResult with an error, never an exception."""
    path = _free_name(options.out, f"cull_{time.strftime('%Y%m%d-%H%M%S')}_{number:04d}", options.dng)
    try:
        paths = source.capture(path, options.dng)
    except (OSError, CameraError) as exc:
        return ShotResult(path, None, None, f"capture failed: {_describe(exc)}")
    return screen_shot(paths, card, scorer, options)


def run_camera(
    source: FrameSource,
    card: ModelCard,
    options: CameraOptions,
    *,
    view: CameraView | None = None,
    scorer: Scorer | None = None,
) -> CameraSummary:
    """Run until the source ends, a limit is reached, ``q``, or Ctrl-C / SIGTERM.

    Raises CameraError when the camera cannot deliver frames; per-shot failures are in the summary."""
    scorer = scorer or OnnxScorer(card, threads=1)
    thresholds = card.thresholds_for(options.strictness)
    try:
        options.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        source.close()
        raise CameraError(f"cannot use --out {options.out}: {_describe(exc)}") from None
    summary = CameraSummary()
    flag = StopFlag()
    auto = AutoCapture(options.auto_frames)
    started = last_shot = previous = time.monotonic()
    fps = 0.0
    if isinstance(source, ReplaySource):
        source.stopping = lambda: bool(flag)
    try:
        with stop_on_signals(flag):
            for frame in _frames_until_failure(source, summary):
                if flag:  # a stop asked for while the next frame was awaited: not scored, not shot
                    summary.stopped_by = flag.reason or "stopped"
                    break
                score = score_frame(frame, card, scorer, thresholds)
                now = time.monotonic()
                rate = 1.0 / max(now - previous, 1e-6)
                fps = 0.8 * fps + 0.2 * rate if fps else rate
                previous = now
                summary.frames += 1
                key = view.frame(frame, score, fps) if view else None
                if key in QUIT_KEYS:
                    flag.reason = f"{key} pressed"
                fire = (
                    (options.trigger is Trigger.AUTO and auto.update(score.in_focus))
                    or (options.trigger is Trigger.INTERVAL and now - last_shot >= options.interval)
                    or (options.trigger is Trigger.KEYPRESS and key in SHOOT_KEYS)
                )
                if fire:
                    last_shot = now
                    shot = take_shot(source, card, scorer, options, len(summary.shots) + 1)
                    summary.shots.append(shot)
                    if shot.error:
                        log.debug("shot %s: %s", shot.path.name, shot.error)
                    if view:
                        view.shot(shot)
                if flag:
                    summary.stopped_by = flag.reason or "stopped"
                    break
                if options.max_frames and summary.frames >= options.max_frames:
                    summary.stopped_by = "frame limit"
                    break
                if options.max_shots and len(summary.shots) >= options.max_shots:
                    summary.stopped_by = "shot limit"
                    break
    finally:
        source.close()
    summary.seconds = time.monotonic() - started
    return summary


def _frames_until_failure(source: FrameSource, summary: CameraSummary) -> Iterator[Frame]:
    """The source's frames; a camera that fails after delivering some ends the session with its
    summary (``stopped_by``, ``error``: the shots taken are listed, not lost), one that never
    delivered raises CameraError."""
    try:
        yield from source.frames()
    except CameraError as exc:
        if not summary.frames:
            raise
        summary.stopped_by = f"camera error: {exc}"
        summary.error = str(exc)
