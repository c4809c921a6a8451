"""Frame sources for `cull camera`: a Raspberry Pi camera (picamera2), any OpenCV camera, or a replay
of a folder of images / a video file (for demos, tests and benchmarks without a camera).

A source yields preview frames (uint8 arrays, RGB ``H x W x 3`` or gray ``H x W``) no larger than the
still needs for its own analysis (see ``cull.camera.assist.frame_to_gray``), and saves full-resolution
stills. Stills are encoded in memory and written with ``cull.fsutil.atomic_write_bytes`` (temp file,
fsync, rename, temp removed on failure), so an interrupted or failed capture leaves no half file.
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

from cull.decode import PHOTO_FORMATS, flatten
from cull.errors import CullError
from cull.formats import RASTER_EXTENSIONS
from cull.fsutil import atomic_write_bytes, unlink_quietly

log = logging.getLogger(__name__)

Frame = NDArray[np.uint8]  # H x W x 3 RGB, or H x W gray
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".mjpeg", ".mjpg", ".webm", ".h264"})
CAMERA_EXTRA = "pip install 'cull-focus[camera]'"
T = TypeVar("T")
JPEG_QUALITY = 95


class CameraError(CullError):
    """The camera could not be opened, or it stopped delivering frames."""


class CameraSetupError(CameraError):
    """A camera feature needs something this installation lacks (a package, a display): a usage error."""


class FrameSource(Protocol):
    name: str

    def frames(self) -> Iterator[Frame]: ...

    def capture(self, path: Path, dng: bool = False) -> list[Path]:
        """Save the current view as ``path`` (JPEG; plus ``.dng`` when asked). Raises OSError, CameraError."""
        ...

    def close(self) -> None: ...


def require_cv2(feature: str) -> ModuleType:
    """OpenCV, or a CameraSetupError saying which extra provides it."""
    try:
        import cv2
    except ImportError:
        raise CameraSetupError(f"{feature} needs OpenCV: {CAMERA_EXTRA}") from None
    return cv2


def _quietly(cv2: ModuleType, call: Callable[[], T]) -> T:
    """``call()`` with OpenCV's own log silenced (it prints WARN/ERROR lines for every capture
    backend that cannot open a camera, before cull's one-line message says so)."""
    cv_log = getattr(getattr(cv2, "utils", None), "logging", None)
    if cv_log is None:
        return call()
    level = cv_log.getLogLevel()
    cv_log.setLogLevel(cv_log.LOG_LEVEL_SILENT)
    try:
        return call()
    finally:
        cv_log.setLogLevel(level)


def replay_frame(image: Image.Image) -> Frame:
    """A replayed image as a camera delivers a frame: upright (its EXIF orientation applied, as a scan
    decodes it), 8-bit gray or RGB; 16-bit and float gray scaled to 8 bits as cull.decode scales them
    (a plain convert clipped a 16-bit frame to white)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("L", "RGB"):
        return np.asarray(image)
    if image.mode == "F" or image.mode.startswith("I"):
        return np.asarray(flatten(image), dtype=np.float32).round().clip(0, 255).astype(np.uint8)
    return np.asarray(image.convert("RGB"))


def encode_jpeg(rgb: Frame, quality: int = JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_all_or_nothing(files: list[tuple[Path, bytes]]) -> list[Path]:
    """Write each file atomically; if one fails, remove the ones already written and re-raise."""
    written: list[Path] = []
    try:
        for path, data in files:
            atomic_write_bytes(path, data)
            written.append(path)
    except BaseException:
        for path in written:
            unlink_quietly(path)
        raise
    return written


def save_frame(frame: Frame | None, path: Path) -> list[Path]:
    """The still of a source whose stills are its frames: ``frame`` as a JPEG at ``path``."""
    if frame is None:
        raise CameraError("no frame to capture yet")
    return write_all_or_nothing([(path, encode_jpeg(frame))])


class ReplaySource:
    """Images in a folder (sorted), or the frames of a video file, played as a live feed (full size:
    the assist reduces them as the still would be); stills are the stored frames."""

    def __init__(self, location: Path, fps: float = 0.0, loop: bool = False) -> None:
        self.location = Path(location)
        self.name = f"folder:{location}"
        self.fps = fps
        self.loop = loop
        self.stopping: Callable[[], bool] = lambda: False  # the loop's stop request: ends a pacing pause early
        self._current: Frame | None = None
        self._cv2: ModuleType | None = None
        if not self.location.exists():
            raise CameraSetupError(f"replay source {location} does not exist")
        if self.location.is_dir():
            self._images = sorted(p for p in self.location.iterdir() if p.suffix.lower() in RASTER_EXTENSIONS)
            if not self._images:
                raise CameraSetupError(f"replay folder {location} has no images")
        elif self.location.suffix.lower() in VIDEO_EXTENSIONS:
            self._cv2 = require_cv2("replaying a video file")
        else:
            raise CameraSetupError(f"replay source {location} is neither a folder of images nor a video file")

    def _full_frames(self) -> Iterator[Frame]:
        if self._cv2 is None:
            for path in self._images:
                try:
                    with warnings.catch_warnings():  # a frame over 89 MP: no raw Python warning on the live line
                        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                        image = Image.open(path, formats=PHOTO_FORMATS)
                    with image:
                        yield replay_frame(image)
                except (OSError, Image.DecompressionBombError) as exc:  # the second is no OSError
                    raise CameraError(f"replay frame {path.name} is unreadable: {exc}") from None
            return
        capture = self._cv2.VideoCapture(str(self.location))
        if not capture.isOpened():
            raise CameraError(f"cannot open video {self.location}")
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    return
                yield np.ascontiguousarray(bgr[:, :, ::-1], dtype=np.uint8)
        finally:
            capture.release()

    def frames(self) -> Iterator[Frame]:
        while True:
            for full in self._full_frames():
                started = time.monotonic()
                self._current = full
                yield full
                if self.fps:  # paced as a camera delivers frames; a stop request (Ctrl-C) ends the pause
                    until = started + 1.0 / self.fps
                    while not self.stopping() and (left := until - time.monotonic()) > 0:
                        time.sleep(min(left, 0.05))
            if not self.loop:
                return

    def capture(self, path: Path, dng: bool = False) -> list[Path]:
        return save_frame(self._current, path)

    def close(self) -> None:
        self._current = None


class OpenCVSource:
    """A USB webcam or laptop camera through OpenCV (``--source opencv:0``): stills are the frames."""

    def __init__(self, index: int) -> None:
        cv2 = require_cv2("--source opencv:N")
        self.name = f"opencv:{index}"
        self._capture = _quietly(cv2, lambda: cv2.VideoCapture(index))  # every backend it tries logs its failure
        if not self._capture.isOpened():
            raise CameraError(f"cannot open camera {self.name} (is it connected, and not in use by another program?)")
        self._current: Frame | None = None
        self._count = 0

    def frames(self) -> Iterator[Frame]:
        while True:
            ok, bgr = self._capture.read()
            if not ok or bgr is None:
                if self._count == 0:
                    raise CameraError(f"camera {self.name} opened but delivers no frames")
                raise CameraError(f"camera {self.name} stopped delivering frames after {self._count} (disconnected?)")
            self._count += 1
            current = np.ascontiguousarray(bgr[:, :, ::-1], dtype=np.uint8)
            self._current = current
            yield current

    def capture(self, path: Path, dng: bool = False) -> list[Path]:
        return save_frame(self._current, path)

    def close(self) -> None:
        self._capture.release()


def analysis_size(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """``size`` shrunk to the analysis scale (never enlarged), in even numbers as YUV420 needs."""
    scale = min(1.0, long_side / max(size))
    return max(2, round(size[0] * scale / 2) * 2), max(2, round(size[1] * scale / 2) * 2)


class PiCameraSource:
    """Raspberry Pi camera through picamera2: a ``lores`` stream for the assist with the full field of
    view at the analysis scale the saved still is judged at (the ISP scales it, free of CPU), and
    full-resolution stills (JPEG, plus DNG when asked) for captures."""

    def __init__(self, long_side: int) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise CameraSetupError(
                "the Raspberry Pi camera needs picamera2: `sudo apt install python3-picamera2` on Raspberry Pi OS, "
                "in a venv made with --system-site-packages (see examples/camera/PI.md); on other machines use "
                "--source opencv:0 or --source folder:DIR"
            ) from None
        self.name = "picamera2"
        try:
            self._camera: Any = Picamera2()
            full = tuple(self._camera.sensor_resolution)
            lores = analysis_size((full[0], full[1]), long_side)
            config = self._camera.create_still_configuration(
                main={"size": full}, lores={"size": lores, "format": "YUV420"}, raw={}, display="lores",
                buffer_count=2,
            )
            self._camera.configure(config)
            self._size = tuple(self._camera.camera_config["lores"]["size"])  # as libcamera aligned it
            self._camera.start()
        except Exception as exc:  # noqa: BLE001 - libcamera raises plain RuntimeErrors
            raise CameraError(f"cannot start the Pi camera: {exc}") from None

    def frames(self) -> Iterator[Frame]:
        width, height = self._size
        while True:
            try:
                yuv = self._camera.capture_array("lores")
            except Exception as exc:  # noqa: BLE001
                raise CameraError(f"the Pi camera stopped delivering frames: {exc}") from None
            yield np.ascontiguousarray(yuv[:height, :width], dtype=np.uint8)  # the Y plane: gray

    def capture(self, path: Path, dng: bool = False) -> list[Path]:
        try:
            request = self._camera.capture_request()
        except Exception as exc:  # noqa: BLE001
            raise CameraError(f"the Pi camera did not deliver a still: {exc}") from None
        try:
            # encoded in memory with an explicit format: picamera2 would otherwise guess it from the name
            jpeg = io.BytesIO()
            request.save("main", jpeg, format="jpeg")
            files = [(path, jpeg.getvalue())]
            if dng:
                raw = io.BytesIO()
                request.save_dng(raw)
                files.append((path.with_suffix(".dng"), raw.getvalue()))
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - picamera2 / PIL / PiDNG raise a mix of plain errors
            raise CameraError(f"the Pi camera could not encode the still: {type(exc).__name__}: {exc}") from None
        finally:
            request.release()
        return write_all_or_nothing(files)

    def close(self) -> None:
        self._camera.stop()
        self._camera.close()


def open_source(spec: str, long_side: int, fps: float = 0.0) -> FrameSource:
    """``picamera2`` | ``opencv:N`` | ``folder:PATH`` (a folder of images or a video file).

    ``long_side`` is the model's analysis scale. Raises CameraError (CameraSetupError for a missing
    package or a malformed spec)."""
    kind, _, arg = spec.partition(":")
    if kind in ("picamera2", "pi"):
        return PiCameraSource(long_side)
    if kind == "opencv":
        try:
            index = int(arg or 0)
        except ValueError:
            raise CameraSetupError(f"--source opencv:N takes a camera number, not {arg!r}") from None
        if not 0 <= index < 10_000:  # OpenCV crashes (SIGSEGV) on a negative index, raises cv2.error past int32
            raise CameraSetupError(f"--source opencv:N takes a camera number from 0 (the first camera), not {arg!r}")
        return OpenCVSource(index)
    if kind in ("folder", "file", "replay"):
        if not arg:
            raise CameraSetupError("--source folder:PATH needs a path")
        return ReplaySource(Path(arg).expanduser(), fps=fps)
    raise CameraSetupError(f"unknown --source {spec!r}: use picamera2, opencv:N or folder:PATH")
