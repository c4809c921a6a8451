"""Shared fixtures: photos made on the fly from the bundled Kodak examples (no network, no working tree writes)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "photos"
SHARED_DATA = REPO.parent / "shared" / "data"
SHARP_EXAMPLES = ["kodim03.jpg", "kodim05.jpg", "kodim14.jpg", "kodim23.jpg"]
CLEARLY_SHARP = 3  # the first three are unambiguous; kodim23 is a borderline shallow-depth-of-field scan


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """In CI (CI=true) a test that skips because ../shared/data is missing fails instead: CI always has it,
    so a skip there would hide a broken path, not a missing optional tool."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") == "true" and "shared" in str(report.longrepr):
        report.outcome = "failed"
        report.longrepr = f"CI=true but a test needing ../shared/data was skipped: {report.longrepr}"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own score cache, never the user's."""
    monkeypatch.setenv("CULL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def card():
    from cull.card import load_card

    return load_card()


@pytest.fixture
def shared_raw() -> Path:
    """../shared/data/raw: skipped where it is absent, but a failure under CI=true (no silent skip there)."""
    folder = SHARED_DATA / "raw"
    if not folder.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {folder} is missing")
        pytest.skip("needs ../shared/data/raw")
    return folder


def sharp_image(index: int = 0, scale: float = 1.0) -> Image.Image:
    image = Image.open(EXAMPLES / SHARP_EXAMPLES[index % len(SHARP_EXAMPLES)]).convert("RGB")
    if scale != 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    return image


def blurred_image(index: int = 0, radius: float = 5.0) -> Image.Image:
    return sharp_image(index).filter(ImageFilter.GaussianBlur(radius))


def save(image: Image.Image, path: Path, **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def tree_snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Names, sizes, mtimes and contents of every regular file under root (for 'nothing changed')."""
    snap = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if path.is_symlink():
                snap[str(path.relative_to(root))] = (0, 0, os.readlink(path).encode())
                continue
            try:
                info = path.stat()
                snap[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns, path.read_bytes())
            except OSError:
                snap[str(path.relative_to(root))] = (-1, -1, b"")
    return snap


def gray_noise(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(size).astype(np.float32)


def drop_dac_override() -> None:
    """For a child process (preexec_fn): give up root's power to bypass file permissions, so that
    chmod 000 / read-only folders really refuse access even when the tests run as root."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        libc.prctl(24, capability, 0, 0, 0)  # PR_CAPBSET_DROP: takes effect at exec


def draft_requests(monkeypatch) -> list:  # type: ignore[no-untyped-def,type-arg]
    """The sizes JPEG decodes ask libjpeg's DCT scaling for (Pillow's draft), from now on in this test."""
    from PIL import JpegImagePlugin

    requested: list = []  # type: ignore[type-arg]
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):  # type: ignore[no-untyped-def]
        requested.append(size)
        return original(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    return requested
