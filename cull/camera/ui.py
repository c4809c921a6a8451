"""What `cull camera` shows and reads: the live status line, keys from the terminal, the OpenCV window.

These implement ``cull.camera.run.CameraView``; the CLI builds them, the loop only reports to them.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections import deque
from types import TracebackType
from typing import Any, TextIO

import numpy as np

from cull.camera.assist import FrameScore
from cull.camera.run import ShotResult
from cull.camera.sources import CAMERA_EXTRA, CameraError, CameraSetupError, Frame, require_cv2
from cull.decide import Verdict

STATES = {Verdict.KEEP: "IN FOCUS", Verdict.UNCERTAIN: "soft?", Verdict.REJECT: "soft"}


def render_line(score: FrameScore, fps: float, width: int = 20) -> str:
    """The live terminal line: score, a bar, IN FOCUS / soft, frames per second."""
    value = score.photo.score
    if value is None:
        return f"focus  --   [{'?' * width}] no detail to judge   {fps:5.1f} fps"
    filled = int(round(value * width))
    return f"focus {value:4.2f} [{'#' * filled}{'-' * (width - filled)}] {STATES[score.verdict]:8} {fps:5.1f} fps"


def render_shot(shot: ShotResult) -> str:
    text = f"shot {shot.path.name}: {shot.verdict.value if shot.verdict else 'error'}"
    if shot.score is not None:
        text += f" ({shot.score:.2f})"
    if shot.moved_to:
        text += f" moved to {shot.moved_to}"
    if shot.error:
        text += f"; error: {shot.error}"
    return text


class TerminalView:
    """The status line on ``stream`` (redrawn in place on a terminal; on a log, a line when the
    state changes, at most once per ``log_every`` seconds: a view wavering at the threshold writes
    the state it has when the time is up, not a line per frame) and, with ``keys``, single keys from stdin."""

    def __init__(self, stream: TextIO, keys: bool = False, log_every: float = 1.0) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.keys = keys
        self.log_every = log_every
        self._fd: int | None = None
        self._saved: Any = None
        self._pending: deque[str] = deque()
        self._last_state: str | None = None
        self._last_time = 0.0

    def __enter__(self) -> TerminalView:
        if self.keys and sys.stdin.isatty():
            import termios
            import tty

            self._fd = sys.stdin.fileno()
            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._fd = None
        if self.live:
            self.stream.write("\n")
            self.stream.flush()

    def read_key(self) -> str | None:
        """One key, if any arrived. Reads the file descriptor itself (never the buffered ``sys.stdin``,
        which would swallow a second key that arrived together with the first) and queues them all."""
        if self._fd is not None and not self._pending and select.select([self._fd], [], [], 0)[0]:
            self._pending.extend(os.read(self._fd, 64).decode(errors="replace"))
        return self._pending.popleft() if self._pending else None

    def frame(self, frame: Frame, score: FrameScore, fps: float) -> str | None:
        line = render_line(score, fps)
        now = time.monotonic()
        if self.live:
            self.stream.write("\r" + line)
            self.stream.flush()
        elif STATES.get(score.verdict) != self._last_state and now - self._last_time >= self.log_every:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last_state, self._last_time = STATES.get(score.verdict), now
        return self.read_key()

    def shot(self, shot: ShotResult) -> None:
        self.stream.write(("\n" if self.live else "") + render_shot(shot) + "\n")
        self.stream.flush()


NO_GUI = "OpenCV without a GUI"
_PROBE = """
import sys
import cv2
try:
    cv2.namedWindow("cull probe", cv2.WINDOW_AUTOSIZE)
    cv2.destroyAllWindows()
except cv2.error as exc:
    text = str(exc).strip() or "cv2.error"
    print(text.splitlines()[-1], file=sys.stderr)
    sys.exit(3 if "not implemented" in text or "Rebuild the library" in text else 4)
"""


def window_probe(timeout: float = 20.0) -> str | None:
    """Open and close an OpenCV window in a child process: None when that works, NO_GUI for an OpenCV
    built without one, else why not.  A display that cannot be reached makes OpenCV's Qt backend abort
    the whole process (``could not connect to display``), so it is tried where an abort costs nothing;
    a GTK build raises instead ("Can't initialize GTK backend"), which is a display problem too."""
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"no window after {timeout:.0f} s"
    if done.returncode == 0:
        return None
    if done.returncode == 3:
        return NO_GUI
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    said = next((line for line in lines if "display" in line.lower()), lines[-1] if lines else "")
    return said[:200] or f"OpenCV exited with status {done.returncode}"


class PreviewWindow:  # drawing needs a display; construction is tested (headless OpenCV, no cv2)
    """An OpenCV window with the frame (shrunk to fit ``size``), the live line and the sharp patches boxed."""

    TITLE = "cull camera"

    def __init__(self, size: tuple[int, int] = (960, 720)) -> None:
        cv2 = require_cv2("--preview")
        display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        if sys.platform.startswith("linux") and not display:
            raise CameraSetupError("--preview needs a display (no $DISPLAY); run without it on a headless machine")
        failure = window_probe()
        if failure == NO_GUI:
            raise CameraSetupError(
                "--preview needs OpenCV with its GUI (opencv-python), but this one has none (opencv-python-headless?): "
                f"pip uninstall opencv-python-headless && {CAMERA_EXTRA}"
            )
        if failure is not None:
            raise CameraSetupError(f"--preview cannot open a window on display {display or 'the desktop'} ({failure}); "
                                   "check $DISPLAY, or run without --preview")
        cv2.namedWindow(self.TITLE, cv2.WINDOW_AUTOSIZE)
        self.cv2 = cv2
        self.size = size

    def frame(self, frame: Frame, score: FrameScore, fps: float) -> str | None:
        cv2 = self.cv2
        height, width = frame.shape[:2]
        scale = min(1.0, self.size[0] / width, self.size[1] / height)
        image = frame[:, :, ::-1] if frame.ndim == 3 else np.repeat(frame[:, :, None], 3, axis=2)
        if scale < 1.0:
            image = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        else:
            image = image.copy()
        for y, x, side in score.sharp_boxes:
            y, x, side = int(y * scale), int(x * scale), max(1, int(side * scale))
            cv2.rectangle(image, (x, y), (x + side, y + side), (0, 255, 0), 1)
        colour = (0, 200, 0) if score.in_focus else (0, 0, 255)
        cv2.putText(image, render_line(score, fps), (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 2)
        try:
            cv2.imshow(self.TITLE, image)
            key = cv2.waitKey(1) & 0xFF
        except cv2.error as exc:
            raise CameraError(f"the preview window failed: {exc}") from None
        return None if key == 255 else chr(key)

    def shot(self, shot: ShotResult) -> None:
        pass

    def close(self) -> None:
        self.cv2.destroyAllWindows()


class Views:
    """Several views at once (terminal line plus window); the first key any of them reports wins."""

    def __init__(self, *views: Any) -> None:
        self.views = views

    def frame(self, frame: Frame, score: FrameScore, fps: float) -> str | None:
        keys = [view.frame(frame, score, fps) for view in self.views]
        return next((k for k in keys if k), None)

    def shot(self, shot: ShotResult) -> None:
        for view in self.views:
            view.shot(shot)
