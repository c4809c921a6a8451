"""The `cull camera` loop: score every preview frame, capture on a trigger, screen each shot.

Ctrl-C and SIGTERM stop the loop between frames, so a still is never half-written (stills are also
written to a temp name and renamed).  Screening is the same as `cull scan`: the saved still is
decoded, scored and decided, its verdict goes to XMP, and a reject can be moved to ``_culled``.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Iterator, TextIO

from cull.analyse import analyse_chunk
from cull.camera.assist import AutoCapture, FrameScore, render_line, score_frame
from cull.camera.sources import FrameSource
from cull.card import ModelCard
from cull.decide import Decision, Verdict, decide
from cull.discover import Shot
from cull.score import OnnxScorer, Scorer

log = logging.getLogger(__name__)


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
    preview: bool = False
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
    error: str | None = None
    moved_to: Path | None = None


@dataclass
class CameraSummary:
    frames: list[FrameScore] = field(default_factory=list)
    shots: list[ShotResult] = field(default_factory=list)
    seconds: float = 0.0
    stopped_by: str = "end of stream"


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


@contextmanager
def key_reader(enabled: bool) -> Iterator[Callable[[], str | None]]:
    """Non-blocking single-key reads from a terminal; yields a function returning a key or None."""
    if not enabled or not sys.stdin.isatty():
        yield lambda: None
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield lambda: sys.stdin.read(1) if select.select([sys.stdin], [], [], 0)[0] else None
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def screen_shot(paths: list[Path], card: ModelCard, scorer: Scorer, options: CameraOptions) -> ShotResult:
    """Screen a saved still exactly like `cull scan`: score, decide, XMP, optionally move a reject."""
    from cull.sidecars import XmpOptions, write_verdict
    from cull.xmp import Verdict as XmpVerdict

    still, partner = paths[0], (paths[1] if len(paths) > 1 else None)
    analysis = analyse_chunk([still], card, scorer)[0]
    if analysis.photo is None:
        return ShotResult(still, None, None, analysis.error)
    decision: Decision = decide(analysis.photo, card.thresholds_for(options.strictness), card.analysis.min_patches)
    if options.xmp:
        verdict = XmpVerdict(decision.verdict.value, analysis.photo.score, analysis.photo.kind, card.version)
        for photo in paths:
            write_verdict(photo, verdict, XmpOptions())
    moved_to = None
    if options.move_rejects and decision.verdict is Verdict.REJECT:
        from cull.move import default_target, execute, plan_moves

        target = default_target(options.out)
        result = execute(plan_moves([Shot(still, partner)], options.out, target), options.out, target)
        moved_to = result.moved[0].dst if result.moved else None
    return ShotResult(still, analysis.photo.score, decision.verdict, moved_to=moved_to)


def run_camera(
    source: FrameSource,
    card: ModelCard,
    options: CameraOptions,
    *,
    stream: TextIO | None = None,
    scorer: Scorer | None = None,
    on_frame: Callable[[FrameScore, float], None] | None = None,
) -> CameraSummary:
    """Run until the source ends, a limit is reached, or Ctrl-C / SIGTERM. Raises CameraError."""
    stream = stream if stream is not None else sys.stderr
    scorer = scorer or OnnxScorer(card, threads=1)
    thresholds = card.thresholds_for(options.strictness)
    options.out.mkdir(parents=True, exist_ok=True)
    summary = CameraSummary()
    flag = StopFlag()
    auto = AutoCapture(options.auto_frames)
    live = stream.isatty()
    window = _Preview() if options.preview else None
    started = last_shot = time.monotonic()
    fps = 0.0
    try:
        with stop_on_signals(flag), key_reader(options.trigger is Trigger.KEYPRESS) as read_key:
            previous = time.monotonic()
            for rgb in source.frames():
                frame = score_frame(rgb, card, scorer, thresholds)
                now = time.monotonic()
                fps = 0.8 * fps + 0.2 / max(now - previous, 1e-6) if fps else 1.0 / max(now - previous, 1e-6)
                previous = now
                summary.frames.append(frame)
                line = render_line(frame, fps)
                stream.write(("\r" + line) if live else line + "\n")
                stream.flush()
                if on_frame:
                    on_frame(frame, fps)
                key = window.show(rgb, frame, line) if window else None
                key = key or read_key()
                if key == "q":
                    flag.reason = "q pressed"
                fire = (
                    (options.trigger is Trigger.AUTO and auto.update(frame.verdict is Verdict.KEEP))
                    or (options.trigger is Trigger.INTERVAL and now - last_shot >= options.interval)
                    or (options.trigger is Trigger.KEYPRESS and key in (" ", "\n", "c"))
                )
                if fire:
                    last_shot = now
                    name = f"cull_{time.strftime('%Y%m%d-%H%M%S')}_{len(summary.shots) + 1:04d}.jpg"
                    shot = screen_shot(source.capture(options.out / name, options.dng), card, scorer, options)
                    summary.shots.append(shot)
                    stream.write(("\n" if live else "") + f"shot {shot.path.name}: "
                                 f"{shot.verdict.value if shot.verdict else 'error'}"
                                 f"{f' ({shot.score:.2f})' if shot.score is not None else ''}"
                                 f"{f' moved to {shot.moved_to}' if shot.moved_to else ''}\n")
                if flag:
                    summary.stopped_by = flag.reason or "stopped"
                    break
                if options.max_frames and len(summary.frames) >= options.max_frames:
                    summary.stopped_by = "frame limit"
                    break
                if options.max_shots and len(summary.shots) >= options.max_shots:
                    summary.stopped_by = "shot limit"
                    break
    finally:
        source.close()
        if window:
            window.close()
        if live:
            stream.write("\n")
    summary.seconds = time.monotonic() - started
    return summary


class _Preview:  # pragma: no cover - needs a display
    """An OpenCV window with the frame, the live line and boxes around the sharp patches."""

    def __init__(self) -> None:
        import cv2

        if not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
            from cull.camera.sources import CameraError

            raise CameraError("--preview needs a display (no $DISPLAY); run headless without it")
        self.cv2 = cv2

    def show(self, rgb: Any, frame: FrameScore, line: str) -> str | None:
        cv2 = self.cv2
        image = rgb[:, :, ::-1].copy()
        for y, x, size in frame.sharp_boxes:
            cv2.rectangle(image, (x, y), (x + size, y + size), (0, 255, 0), 1)
        colour = (0, 200, 0) if frame.verdict is Verdict.KEEP else (0, 0, 255)
        cv2.putText(image, line, (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 2)
        cv2.imshow("cull camera", image)
        key = cv2.waitKey(1) & 0xFF
        return None if key == 255 else chr(key)

    def close(self) -> None:
        self.cv2.destroyAllWindows()
