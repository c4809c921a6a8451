"""Frame sources for `cull camera`: a Raspberry Pi camera (picamera2), any OpenCV camera, or a replay
of a folder of images / a video file (for demos, tests and benchmarks without a camera).

A source yields low-resolution preview frames (RGB uint8 arrays) and saves full-resolution stills.
Every still is written to a temp name and renamed, so an interrupted capture leaves no half file.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from cull.errors import CullError
from cull.formats import RASTER_EXTENSIONS

log = logging.getLogger(__name__)

Frame = NDArray[np.uint8]  # H x W x 3 RGB
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".mjpeg", ".mjpg", ".webm", ".h264"})


class CameraError(CullError):
    """The camera could not be opened, or it stopped delivering frames."""


class FrameSource(Protocol):
    name: str

    def frames(self) -> Iterator[Frame]: ...

    def capture(self, path: Path, dng: bool = False) -> list[Path]: ...

    def close(self) -> None: ...


def save_jpeg_atomically(rgb: Frame, path: Path, quality: int = 95) -> Path:
    tmp = path.with_name(f".{path.name}.partial")
    Image.fromarray(rgb).save(tmp, "JPEG", quality=quality)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def _resize_to(rgb: Frame, size: tuple[int, int] | None) -> Frame:
    """Shrink to fit within ``size`` (W, H), keeping the aspect ratio; never enlarge (that would blur)."""
    if size is None:
        return rgb
    height, width = rgb.shape[:2]
    scale = min(size[0] / width, size[1] / height)
    if scale >= 1.0:
        return rgb
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(rgb).resize(new, Image.Resampling.BILINEAR, reducing_gap=2.0))


class ReplaySource:
    """Images in a folder (sorted), or the frames of a video file, played as a live feed."""

    def __init__(self, location: Path, preview_size: tuple[int, int] | None = (640, 480), fps: float = 0.0,
                 loop: bool = False) -> None:
        self.location = Path(location)
        self.name = f"folder:{location}"
        self.preview_size = preview_size
        self.fps = fps
        self.loop = loop
        self._current: Frame | None = None
        if not self.location.exists():
            raise CameraError(f"replay source {location} does not exist")
        if self.location.is_dir():
            self._images = sorted(p for p in self.location.iterdir() if p.suffix.lower() in RASTER_EXTENSIONS)
            if not self._images:
                raise CameraError(f"replay folder {location} has no images")
        elif self.location.suffix.lower() not in VIDEO_EXTENSIONS:
            raise CameraError(f"replay source {location} is neither a folder of images nor a video file")

    def _full_frames(self) -> Iterator[Frame]:
        if self.location.is_dir():
            for path in self._images:
                try:
                    with Image.open(path) as image:
                        yield np.asarray(image.convert("RGB"))
                except OSError as exc:
                    raise CameraError(f"replay frame {path.name} is unreadable: {exc}") from None
            return
        import cv2

        capture = cv2.VideoCapture(str(self.location))
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
                yield _resize_to(full, self.preview_size)
                if self.fps:
                    time.sleep(max(0.0, 1.0 / self.fps - (time.monotonic() - started)))
            if not self.loop:
                return

    def capture(self, path: Path, dng: bool = False) -> list[Path]:
        if self._current is None:
            raise CameraError("no frame to capture yet")
        return [save_jpeg_atomically(self._current, path)]

    def close(self) -> None:
        self._current = None


class OpenCVSource:
    """A USB webcam or laptop camera through OpenCV (``--source opencv:0``)."""

    def __init__(self, index: int, preview_size: tuple[int, int] | None = (640, 480)) -> None:
        import cv2

        self.name = f"opencv:{index}"
        self.preview_size = preview_size
        self._capture = cv2.VideoCapture(index)
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
            yield _resize_to(current, self.preview_size)

    def capture(self, path: Path, dng: bool = False) -> list[Path]:
        if self._current is None:
            raise CameraError("no frame to capture yet")
        return [save_jpeg_atomically(self._current, path)]

    def close(self) -> None:
        self._capture.release()


class PiCameraSource:  # pragma: no cover - needs a Raspberry Pi camera
    """Raspberry Pi camera through picamera2: a low-resolution stream for the assist, full-resolution
    stills (JPEG, plus DNG when asked) for captures."""

    def __init__(self, preview_size: tuple[int, int] = (640, 480)) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise CameraError(
                "the Raspberry Pi camera needs picamera2: `sudo apt install python3-picamera2` on Raspberry Pi OS "
                "(or pip install 'cull[pi]'); on other machines use --source opencv:0 or --source folder:DIR"
            ) from None
        self.name = "picamera2"
        try:
            self._camera = Picamera2()
            config = self._camera.create_still_configuration(
                main={}, lores={"size": preview_size, "format": "YUV420"}, raw={} , display="lores",
                buffer_count=2,
            )
            self._camera.configure(config)
            self._camera.start()
        except Exception as exc:  # noqa: BLE001 - libcamera raises plain RuntimeErrors
            raise CameraError(f"cannot start the Pi camera: {exc}") from None
        self._size = preview_size

    def frames(self) -> Iterator[Frame]:
        while True:
            try:
                yuv = self._camera.capture_array("lores")
            except Exception as exc:  # noqa: BLE001
                raise CameraError(f"the Pi camera stopped delivering frames: {exc}") from None
            gray = np.asarray(yuv[: self._size[1], : self._size[0]], dtype=np.uint8)  # the Y plane
            yield np.repeat(gray[:, :, None], 3, axis=2)

    def capture(self, path: Path, dng: bool = False) -> list[Path]:
        request = self._camera.capture_request()
        try:
            tmp = path.with_name(f".{path.name}.partial")
            request.save("main", str(tmp))
            os.replace(tmp, path)
            saved = [path]
            if dng:
                raw_path = path.with_suffix(".dng")
                tmp_raw = raw_path.with_name(f".{raw_path.name}.partial")
                request.save_dng(str(tmp_raw))
                os.replace(tmp_raw, raw_path)
                saved.append(raw_path)
        finally:
            request.release()
        return saved

    def close(self) -> None:
        self._camera.stop()
        self._camera.close()


def open_source(spec: str, preview_size: tuple[int, int] = (640, 480), fps: float = 0.0) -> FrameSource:
    """``picamera2`` | ``opencv:N`` | ``folder:PATH`` (a folder of images or a video file)."""
    kind, _, arg = spec.partition(":")
    if kind in ("picamera2", "pi"):
        return PiCameraSource(preview_size)
    if kind == "opencv":
        try:
            index = int(arg or 0)
        except ValueError:
            raise CameraError(f"--source opencv:N takes a camera number, not {arg!r}") from None
        return OpenCVSource(index, preview_size)
    if kind in ("folder", "file", "replay"):
        if not arg:
            raise CameraError("--source folder:PATH needs a path")
        return ReplaySource(Path(arg).expanduser(), preview_size, fps)
    raise CameraError(f"unknown --source {spec!r}: use picamera2, opencv:N or folder:PATH")
