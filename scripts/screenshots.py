"""Make the README screenshots of `cull review` (docs/img/review-grid.png, review-detail.png, review-bursts.png).

Runs the real `cull review` on a copy of examples/photos (temporary folder and cache, so nothing
of yours is touched), and `cull review --bursts` on synthetic bursts made from those photos by
benchmarks/burst_library.py, and photographs them with Debian's Chromium through Playwright:

    python scripts/screenshots.py [--chromium /usr/bin/chromium] [--out docs/img]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def small_png(data: bytes, out: Path) -> None:
    """Save a screenshot as a palette PNG (a few hundred kB, not megabytes)."""
    image = Image.open(io.BytesIO(data)).convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    image.save(out, optimize=True)


def start_review(photos: Path, env: dict[str, str], *extra: str) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen([sys.executable, "-m", "cull", "review", str(photos), "--no-browser", "--port", "0",
                               "--idle-timeout", "5", *extra], stdout=subprocess.PIPE, text=True, env=env)
    return server, server.stdout.readline().strip()  # type: ignore[union-attr]


def burst_shot(browser: object, tmp: Path, env: dict[str, str], out: Path) -> None:
    """review-bursts.png: three bursts (defocus, shake, shallow focus) side by side, best marked."""
    from benchmarks.burst_library import make_library

    photos = tmp / "bursts"
    scenes = [REPO / "examples" / "photos" / name for name in ("kodim03.jpg", "kodim05.jpg", "kodim14.jpg")]
    make_library(photos, scenes, seed=4, frames=3, singles=0)
    (photos / "labels.csv").unlink()
    shutil.copy(REPO / "examples" / "photos" / "kodim08_defocus.jpg", photos / "kodim08_defocus.jpg")
    server, url = start_review(photos, env, "--bursts")
    try:
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError("cull review --bursts did not start")
        page = browser.new_page(viewport={"width": 1200, "height": 900}, device_scale_factor=1)  # type: ignore[attr-defined]
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        page.wait_for_function("() => [...document.querySelectorAll('.card img')].every(i => i.getBoundingClientRect().top > innerHeight || (i.complete && i.naturalWidth > 0))")
        small_png(page.screenshot(), out / "review-bursts.png")
        page.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        shutil.copytree(REPO / "examples" / "photos", photos)
        env = {**os.environ, "CULL_CACHE_DIR": str(Path(tmp) / "cache")}
        server = subprocess.Popen([sys.executable, "-m", "cull", "review", str(photos), "--no-browser", "--port", "0",
                                   "--show", "all", "--idle-timeout", "5"], stdout=subprocess.PIPE, text=True, env=env)
        try:
            url = server.stdout.readline().strip()  # type: ignore[union-attr]
            if not url.startswith("http://127.0.0.1:"):
                print("cull review did not start", file=sys.stderr)
                return 1
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=args.chromium, headless=True, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1200, "height": 640}, device_scale_factor=1)
                page.goto(url)
                page.wait_for_selector("body[data-ready='1']")
                page.wait_for_function("() => [...document.querySelectorAll('.card img')].every(i => i.getBoundingClientRect().top > innerHeight || (i.complete && i.naturalWidth > 0))")
                page.keyboard.press("j")
                small_png(page.screenshot(), args.out / "review-grid.png")
                page.set_viewport_size({"width": 1200, "height": 720})
                page.keyboard.press("k")
                names = [n.strip() for n in page.locator(".card .name").all_inner_texts()]
                for _ in range(names.index("kodim23.jpg")):  # shallow depth of field: sharp parrot, soft background
                    page.keyboard.press("j")
                page.keyboard.press("Enter")
                page.wait_for_selector("#detail[data-ready]")
                page.wait_for_function("() => [...document.querySelectorAll('#detail img')].every(i => i.complete && i.naturalWidth > 0)")
                small_png(page.screenshot(), args.out / "review-detail.png")
                burst_shot(browser, Path(tmp), env, args.out)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    for name in ("review-grid.png", "review-detail.png", "review-bursts.png"):
        print(f"{args.out / name} ({(args.out / name).stat().st_size // 1024} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
