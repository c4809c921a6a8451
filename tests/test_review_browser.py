"""cull review in a real browser: Debian's Chromium driven by Playwright, keyboard only.

The real server runs as `cull review --no-browser --port 0` in a subprocess; decisions are read
back from the XMP sidecars with exiftool.  Missing Chromium / Playwright skips these tests locally
and fails them under CI=true (.ci/run installs Chromium).
"""

from __future__ import annotations

import http.server
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import blurred_image, save, sharp_image

CHROMIUM = next((p for p in (os.environ.get("CULL_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium") if p and Path(p).exists()), None)
try:
    from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None  # type: ignore[assignment]

_missing = [what for what, ok in (("chromium", CHROMIUM), ("playwright", sync_playwright), ("exiftool", shutil.which("exiftool"))) if not ok]
if _missing:
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests need {', '.join(_missing)} (CI=true: not skipped)", pytrace=False)
    pytest.skip(f"browser tests need {', '.join(_missing)}", allow_module_level=True)


def exif(path: Path, tag: str) -> str:
    if not path.exists():
        return ""
    out = subprocess.run(["exiftool", "-s3", "-n", f"-{tag}", str(path)], capture_output=True, text=True, check=True)
    return out.stdout.strip()


SHARP = ["sharp_a.jpg", "sharp_b.jpg"]
BLURRED = ["blur_a.jpg", "blur_b.jpg", "big_blur.jpg"]


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("review") / "photos"
    save(sharp_image(0), root / SHARP[0], quality=95)
    save(sharp_image(1), root / SHARP[1], quality=95)
    save(blurred_image(1, 8.0), root / BLURRED[0], quality=92)
    save(blurred_image(2, 6.0), root / BLURRED[1], quality=92)
    save(blurred_image(3, 3.0).resize((1800, 1800), Image.Resampling.BICUBIC), root / BLURRED[2], quality=95)  # larger than the analysis scale
    return root


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One score cache for the module's subprocesses: the sheet reuses the server's scan."""
    return {**os.environ, "CULL_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}


@contextmanager
def review_server(library: Path, env: dict[str, str], *options: str, port: int = 0) -> Iterator[str]:
    """`cull review LIBRARY --no-browser --port PORT` in a subprocess: its address while it runs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cull", "review", str(library), *options, "--no-browser", "--port", str(port),
         "--idle-timeout", "10", "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        url = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:"), (url, proc.stderr.read() if proc.poll() is not None else "")  # type: ignore[union-attr]
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(library: Path, cache_env: dict[str, str]) -> Iterator[str]:
    with review_server(library, cache_env) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def opened(browser: Browser, server: str) -> Iterator[Page]:
    """The tab that opened the printed address: it opens the page once, and this tab keeps the session."""
    yield from first_tab(browser, server)


def first_tab(browser: Browser, address: str) -> Iterator[Page]:
    """A tab of its own browser context that opened ``address`` (the one-time address) and is ready."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, device_scale_factor=1)
    tab = context.new_page()
    tab.goto(address)
    tab.wait_for_selector("body[data-ready='1']")
    yield tab
    context.close()


@pytest.fixture()
def page(opened: Page, server: str) -> Iterator[Page]:
    """The review, reloaded in the tab that opened it (a fresh page, the same session)."""
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    opened.on("console", on_console)
    opened.goto(server.split("?", 1)[0])
    opened.wait_for_selector("body[data-ready='1']")
    yield opened
    opened.remove_listener("console", on_console)
    assert not [e for e in errors if "Content Security Policy" in e], errors


def card_names(page: Page) -> list[str]:
    return [n.split("/")[-1] for n in page.locator(".card .name").all_inner_texts()]


def current_name(page: Page) -> str:
    return page.locator(".card.current .name").inner_text().split("/")[-1]


def test_grid_lists_the_flagged_photos_worst_first(page: Page) -> None:
    names = card_names(page)
    assert sorted(names) == sorted(BLURRED)
    verdicts = page.eval_on_selector_all(".card", "cards => cards.map(c => c.dataset.verdict)")
    assert verdicts == sorted(verdicts, key=["reject", "uncertain"].index)
    assert page.context.cookies() == []  # the review sets no cookie
    assert "token" not in page.url  # and gone from the address bar
    page.wait_for_function("() => [...document.querySelectorAll('.card img')].every(i => i.getBoundingClientRect().top > innerHeight || (i.complete && i.naturalWidth > 0))")


def test_keyboard_decisions_land_in_xmp_and_undo(page: Page, library: Path) -> None:
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowLeft")
    first = current_name(page)
    page.keyboard.press("x")
    page.wait_for_selector(".card[data-user='reject']")
    assert exif(library / f"{first}.xmp", "XMP-xmp:Rating") == "-1"
    assert exif(library / f"{first}.xmp", "XMP-xmpDM:Pick") == "-1"
    second = current_name(page)  # X moved on to the next photo
    assert second != first
    page.keyboard.press("p")
    page.wait_for_selector(".card[data-user='keep']")
    assert exif(library / f"{second}.xmp", "XMP-xmpDM:Pick") == "1"
    assert exif(library / f"{second}.xmp", "XMP-xmp:Rating") != "-1"
    page.keyboard.press("z")
    page.wait_for_selector(".card[data-user='keep']", state="detached")
    assert current_name(page) == second
    assert exif(library / f"{second}.xmp", "XMP-xmpDM:Pick") != "1"
    page.keyboard.press("Z")
    page.wait_for_selector(".card[data-user='reject']", state="detached")
    assert exif(library / f"{first}.xmp", "XMP-xmp:Rating") != "-1"
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    page.keyboard.press("Escape")
    assert not page.locator("#help").is_visible()


PLAIN_XMP = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
             '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreatorTool="darktable"/></rdf:RDF></x:xmpmeta>')


def saved(page: Page) -> None:
    page.wait_for_function("() => ![...document.querySelectorAll('.card')].some(c => c.dataset.saving)")


def test_fast_keys_each_decide_the_photo_selected_when_pressed(page: Page, library: Path) -> None:
    """One key per photo, faster than the saves: each key decides the photo selected when it was pressed,
    the selection moves on at once, and a save that fails is shown on its own photo."""
    names = card_names(page)
    locked = library / f"{names[2]}.xmp"
    locked.write_text(PLAIN_XMP)
    locked.chmod(0o444)
    try:
        page.keyboard.press("x")
        page.keyboard.press("p")
        assert current_name(page) == names[2]  # before any answer came
        page.keyboard.press("u")
        saved(page)
        assert exif(library / f"{names[0]}.xmp", "XMP-xmpDM:Pick") == "-1"
        assert exif(library / f"{names[1]}.xmp", "XMP-xmpDM:Pick") == "1"
        users = page.eval_on_selector_all(".card", "cards => cards.map(c => c.dataset.user)")
        assert users == ["reject", "keep", ""]
        failed = page.locator(".card[data-error]")
        assert failed.count() == 1 and failed.locator(".name").inner_text().endswith(names[2])
        assert "read-only" in failed.get_attribute("data-error")  # type: ignore[operator]
        assert page.locator("#status.error").inner_text().startswith(names[2] + ": not saved")
    finally:
        locked.chmod(0o644)
        locked.unlink()
    page.keyboard.press("z")
    page.keyboard.press("z")
    assert current_name(page) == names[0]  # Z goes back at once too
    page.wait_for_function("() => [...document.querySelectorAll('.card')].every(c => !c.dataset.user)")
    assert exif(library / f"{names[0]}.xmp", "XMP-xmpDM:Pick") == ""


def test_superseded_detail_requests_are_aborted(page: Page) -> None:
    """Holding J in the detail view: the page aborts the detail it no longer shows, so the server drops
    work that has not started."""
    held: list[object] = []
    aborted: list[str] = []
    page.route("**/api/detail/**", lambda route: held.append(route))
    page.on("requestfailed", lambda request: aborted.append(request.url) if "/api/detail/" in request.url else None)
    page.keyboard.press("Enter")
    page.keyboard.press("j")
    page.keyboard.press("j")
    for _ in range(100):
        if len(held) == 3 and len(aborted) == 2:
            break
        page.wait_for_timeout(50)
    assert (len(held), len(aborted)) == (3, 2)
    held[-1].continue_()  # type: ignore[attr-defined]
    page.unroute("**/api/detail/**")
    page.wait_for_selector("#detail[data-ready]")
    assert page.locator("#detail-name").inner_text().endswith(current_name(page))
    page.keyboard.press("Escape")


def test_a_failed_undo_shows_the_decision_the_files_still_hold(page: Page, library: Path) -> None:
    first = current_name(page)
    page.keyboard.press("x")
    saved(page)
    sidecar = library / f"{first}.xmp"
    sidecar.write_bytes(sidecar.read_bytes() + b"\n")  # edited by another program since
    page.keyboard.press("z")
    page.wait_for_selector("#status.error")
    assert "not undone" in page.locator("#status").inner_text()
    card = page.locator(f".card[data-id='{page.eval_on_selector('.card.current', 'c => c.dataset.id')}']")
    assert card.get_attribute("data-user") == "reject" and exif(sidecar, "XMP-xmpDM:Pick") == "-1"
    sidecar.write_bytes(sidecar.read_bytes()[:-1])  # edit taken back: Z again finishes the step
    page.keyboard.press("z")
    page.wait_for_function("() => [...document.querySelectorAll('.card')].every(c => !c.dataset.user)")
    assert not sidecar.exists()


def _screenshot(page: Page, selector: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("RGB"), dtype=np.float32)


def test_detail_view_shows_heat_map_and_crops_at_100_percent(page: Page, library: Path) -> None:
    index = card_names(page).index("big_blur.jpg")
    for _ in range(index):
        page.keyboard.press("j")
    assert current_name(page) == "big_blur.jpg"
    page.keyboard.press("Enter")
    page.wait_for_selector("#detail[data-ready]")
    page.wait_for_function("() => [...document.querySelectorAll('#detail img')].every(i => i.complete && i.naturalWidth > 0)")
    with_heat = _screenshot(page, "#stack")
    assert with_heat.std() > 10  # not blank
    page.keyboard.press("h")
    assert not page.locator("#overlay").is_visible()
    without = _screenshot(page, "#stack")
    assert np.abs(with_heat - without).mean() > 2  # the heat map really was drawn over the photo
    page.keyboard.press("h")
    source = np.asarray(Image.open(library / "big_blur.jpg").convert("RGB"), dtype=np.float32)
    for which in ("sharpest", "softest"):
        box = page.evaluate(
            """which => { const i = document.getElementById('crop-' + which); const r = i.getBoundingClientRect();
            return {nw: i.naturalWidth, nh: i.naturalHeight, cw: i.clientWidth, ch: i.clientHeight,
                    x: r.left + i.clientLeft, y: r.top + i.clientTop, text: i.nextElementSibling.textContent}; }""",
            which,
        )
        assert (box["nw"], box["nh"]) == (box["cw"], box["ch"])  # shown 1:1, not scaled
        left, top = (int(v) for v in re.search(r"at (\d+),(\d+) of 1800×1800", box["text"]).groups())  # type: ignore[union-attr]
        assert (box["nw"], box["nh"]) == (256, 256)  # a patch of the full-resolution photo, not of the reduced view
        page.locator(f"#crop-{which}").scroll_into_view_if_needed()
        box = page.evaluate("which => { const i = document.getElementById('crop-' + which); const r = i.getBoundingClientRect();"
                            " return {x: r.left + i.clientLeft, y: r.top + i.clientTop, w: i.clientWidth, h: i.clientHeight}; }", which)
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot(clip={"x": box["x"], "y": box["y"], "width": box["w"], "height": box["h"]}))).convert("RGB"), dtype=np.float32)
        region = source[top : top + box["h"], left : left + box["w"]]
        assert shot.shape == region.shape
        assert np.abs(shot - region).mean() < 3  # the real pixels, 1:1
    page.keyboard.press("Escape")
    assert not page.locator("#detail").is_visible()


def test_the_page_needs_the_token(browser: Browser, server: str, opened: Page) -> None:
    context = browser.new_context()
    page = context.new_page()
    bare = server.split("?", 1)[0]
    assert page.goto(bare).status == 200  # type: ignore[union-attr]  # the page without the secret: it says so
    page.wait_for_selector("#status.error")
    assert "no access" in page.locator("#status").inner_text() and page.locator(".card").count() == 0
    assert page.goto(bare + "?token=guess").status == 403  # type: ignore[union-attr]
    used = page.goto(server)  # the printed address opened the page already (the `opened` tab)
    assert used.status == 403 and "used already" in used.text()  # type: ignore[union-attr]
    context.close()


class _CookieTosser(http.server.BaseHTTPRequestHandler):
    """Another web server on 127.0.0.1: it answers /?c=COOKIE with that Set-Cookie."""

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        self.send_response(200)
        for cookie in urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("c", []):  # not on /favicon.ico
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def other_local_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CookieTosser)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_cookie_another_local_server_sets_or_deletes_changes_nothing(opened: Page, server: str) -> None:
    """Cookies ignore the port: a server on another 127.0.0.1 port can set or delete cookies the review
    gets.  The review uses none, so the tab holding the secret keeps working on reload, and no cookie
    opens the API."""
    token = server.split("token=", 1)[1]
    origin = server.split("/?", 1)[0]
    port = origin.rsplit(":", 1)[1]
    with other_local_server() as elsewhere:
        for cookie in (f"cull_review_{port}=x; Path=/", "cull-review=x; Path=/; HttpOnly; SameSite=Strict",
                       f"cull_review_{port}=x; Path=/; Max-Age=0"):
            other_tab = opened.context.new_page()
            other_tab.goto(elsewhere + "/?c=" + urllib.parse.quote(cookie))
            other_tab.close()
            if "Max-Age=0" not in cookie:
                assert cookie.split(";")[0].split("=")[0] in [c["name"] for c in opened.context.cookies()]
            opened.reload()
            opened.wait_for_selector("body[data-ready='1']")
    opened.context.clear_cookies()
    opened.reload()
    opened.wait_for_selector("body[data-ready='1']")
    opened.context.add_cookies([{"name": "cull_review", "value": token, "url": origin}])
    for url in ("/api/items", "/api/thumb/0", "/api/view/0", "/api/detail/0"):
        assert opened.context.request.get(origin + url).status == 401, url  # cookies go with these, no header
    assert opened.context.request.post(origin + "/api/decide", data={"id": 0, "decision": "reject"}).status == 401
    other_tab = opened.context.new_page()  # the cookies, but not this tab's session: nothing loads
    other_tab.goto(origin + "/")
    other_tab.wait_for_selector("#status.error")
    assert "no access" in other_tab.locator("#status").inner_text() and other_tab.locator(".card").count() == 0
    other_tab.close()
    opened.context.clear_cookies()
    assert not [url for url in _picture_urls(opened) if token in url]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status(page: Page) -> str:
    page.wait_for_selector("#status.error")
    return page.locator("#status").inner_text()


def test_a_tab_is_told_when_the_review_stopped_or_was_restarted(browser: Browser, tmp_path: Path,
                                                                 cache_env: dict[str, str]) -> None:
    from cull.review.server import RESTARTED

    root = tmp_path / "photos"
    save(blurred_image(1, 8.0), root / "soft.jpg", quality=92)
    save(blurred_image(2, 6.0), root / "softer.jpg", quality=92)
    port = _free_port()
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    with review_server(root, cache_env, port=port) as url:
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
    page.keyboard.press("x")  # the server stopped (Ctrl-C, or its idle timeout)
    stopped = _status(page)
    assert "cull review has stopped" in stopped and "Failed to fetch" not in stopped, stopped
    assert "has stopped" in page.locator(".card[data-error]").get_attribute("data-error")  # type: ignore[operator]
    with review_server(root, cache_env, port=port) as again:  # started again on the same --port
        page.reload()
        assert _status(page) == RESTARTED and page.locator(".card").count() == 0
        page.goto(again)  # the new address, in the same tab: back at work
        page.wait_for_selector("body[data-ready='1']")
        assert page.locator(".card").count() == 2
    context.close()


BLOCK_STORAGE = ("Object.defineProperty(window, 'sessionStorage', {get() {"
                 " throw new DOMException('Access is denied for this document.', 'SecurityError'); }})")


def test_a_browser_that_refuses_storage_gets_a_working_tab_and_a_clear_message(browser: Browser, tmp_path: Path,
                                                                                cache_env: dict[str, str]) -> None:
    """Site data blocked for 127.0.0.1 (Chrome's sessionStorage then throws): the tab keeps the secret in
    its script, so it works until reloaded, and says so; after a reload it says why it has no access."""
    root = tmp_path / "photos"
    save(blurred_image(1, 8.0), root / "soft.jpg", quality=92)
    with review_server(root, cache_env) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.add_init_script(BLOCK_STORAGE)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        assert "blocks site data" in _status(page) and "token" not in page.url
        page.keyboard.press("x")
        page.wait_for_selector(".card[data-user='reject']")
        page.keyboard.press("z")
        page.wait_for_selector(".card[data-user='reject']", state="detached")
        page.reload()
        message = _status(page)
        assert "blocks site data" in message and "start cull review again" in message, message
        assert page.locator(".card").count() == 0 and errors == []
        context.close()


def _picture_urls(page: Page) -> list[str]:
    return page.eval_on_selector_all("img[src]", "images => images.map(i => i.src)")


def test_static_sheet_renders(browser: Browser, library: Path, tmp_path: Path, cache_env: dict[str, str]) -> None:
    sheet = tmp_path / "sheet.html"
    done = subprocess.run([sys.executable, "-m", "cull", "review", str(library), "--html", str(sheet), "--workers", "1"],
                          capture_output=True, text=True, env=cache_env)
    assert done.returncode == 0, done.stderr
    context = browser.new_context(viewport={"width": 1200, "height": 900}, device_scale_factor=1)
    page = context.new_page()
    page.goto(sheet.as_uri())
    assert page.locator(".card").count() == len(BLURRED)
    for summary in page.locator("summary").all():
        summary.click()
    page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    assert page.evaluate("document.images.length") == len(BLURRED) * 4  # thumbnail, heat map, two crops
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("L"), dtype=np.float32)
    assert shot.std() > 10
    context.close()


# --- bursts (cull review --bursts) -----------------------------------------------------------------

@pytest.fixture(scope="module")
def burst_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_review import make_burst_library

    return make_burst_library(tmp_path_factory.mktemp("bursts") / "photos")


@pytest.fixture(scope="module")
def burst_server(burst_library: Path, cache_env: dict[str, str]) -> Iterator[str]:
    with review_server(burst_library, cache_env, "--bursts") as url:
        yield url


@pytest.fixture(scope="module")
def burst_tab(browser: Browser, burst_server: str) -> Iterator[Page]:
    yield from first_tab(browser, burst_server)


@pytest.fixture()
def burst_page(burst_tab: Page, burst_server: str) -> Page:
    burst_tab.goto(burst_server.split("?", 1)[0])
    burst_tab.wait_for_selector("body[data-ready='1']")
    return burst_tab


def test_b_on_a_burst_keeps_the_best_frame_and_flags_the_rest(burst_page: Page, burst_library: Path) -> None:
    page = burst_page
    box = page.locator(".burst")
    assert box.count() == 1
    ranks = box.locator(".card").evaluate_all("cards => cards.map(c => c.dataset.rank)")
    assert ranks == ["1", "2", "3"]  # side by side, sharpest first
    assert box.locator(".card").first.locator(".badge.best").is_visible()
    best = box.locator(".card .name").first.inner_text().split("/")[-1]
    page.wait_for_function("() => [...document.querySelectorAll('.burst img')].every(i => i.complete && i.naturalWidth > 0)")
    shot = np.asarray(Image.open(io.BytesIO(box.screenshot())).convert("L"), dtype=np.float32)
    assert shot.std() > 10  # not blank
    while page.locator(".card.current").get_attribute("data-rank") != "3":  # to the burst's softest frame
        page.keyboard.press("j")
    page.keyboard.press("Enter")  # its detail view lists the burst's frames
    page.wait_for_selector("#detail[data-ready]")
    assert page.locator("#burst-strip figure").evaluate_all("f => f.map(x => x.dataset.rank)") == ["1", "2", "3"]
    assert page.locator("#burst-strip figure.current").get_attribute("data-rank") == "3"
    page.locator("#burst-strip figure").first.click()  # step to the best frame from there
    page.wait_for_selector("#burst-strip figure.current[data-rank='1']")
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    page.wait_for_selector(".burst .card[data-user='keep']")
    page.wait_for_function("() => document.querySelectorAll(\".burst .card[data-user='uncertain']\").length === 2")
    assert exif(burst_library / f"{best}.xmp", "XMP-xmpDM:Pick") == "1"
    assert exif(burst_library / f"{best}.xmp", "XMP-digiKam:PickLabel") == "3"
    others = [n.split("/")[-1] for n in box.locator(".card .name").all_inner_texts()[1:]]
    for name in others:
        assert exif(burst_library / f"{name}.xmp", "XMP-digiKam:PickLabel") == "2"
        assert exif(burst_library / f"{name}.xmp", "XMP-xmp:Rating") != "-1"
    page.keyboard.press("z")  # one step undoes the whole burst
    page.wait_for_function("() => [...document.querySelectorAll('.burst .card')].every(c => !c.dataset.user)")
    assert not any((burst_library / f"{name}.xmp").exists() for name in [best, *others])


def test_b_then_x_at_once_decides_the_burst_then_the_photo_after_it(burst_page: Page, burst_library: Path) -> None:
    page = burst_page
    names = card_names(page)
    assert page.locator(".card.current").get_attribute("data-rank") == "1"
    after = names[page.locator(".burst .card").count()]  # the photo after the burst
    page.keyboard.press("b")
    page.keyboard.press("x")
    saved(page)
    assert exif(burst_library / f"{names[0]}.xmp", "XMP-xmpDM:Pick") == "1"  # the burst: best kept
    assert exif(burst_library / f"{after}.xmp", "XMP-xmpDM:Pick") == "-1"  # X: the photo after it
    assert page.locator(".burst .card[data-user='uncertain']").count() == 2
    page.keyboard.press("z")
    page.keyboard.press("z")
    page.wait_for_function("() => [...document.querySelectorAll('.card')].every(c => !c.dataset.user)")
    assert not list(burst_library.glob("*.xmp"))


def test_a_reject_the_user_rated_is_marked_in_the_grid_and_the_detail(browser: Browser, tmp_path: Path,
                                                                      cache_env: dict[str, str]) -> None:
    root = tmp_path / "photos"
    save(blurred_image(1, 8.0), root / "rated.jpg", quality=92)
    (root / "rated.xmp").write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="2"/></rdf:RDF></x:xmpmeta>')
    with review_server(root, cache_env) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        note = "not marked rejected: you rated it 2 stars"
        assert page.locator(".card .badge.protected").all_inner_texts() == [note]
        page.keyboard.press("Enter")
        assert page.locator("#detail-facts .badge.protected").inner_text() == note
        context.close()


def redirect_file(url: str, folder: Path) -> str:
    """The private file:// page `cull review` opens the browser on, leading to ``url``."""
    from unittest import mock

    from cull.review import run

    opened: list[str] = []
    with mock.patch.object(run.webbrowser, "open", opened.append):
        run._open(url, folder)
    return opened[0]


def test_photos_that_could_not_be_read_are_listed_on_the_page(browser: Browser, tmp_path: Path, cache_env: dict[str, str]) -> None:
    root = tmp_path / "photos"
    save(blurred_image(1, 8.0), root / "soft.jpg", quality=92)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff not a photo")
    with review_server(root, cache_env) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.goto(redirect_file(url, tmp_path))  # as cull review opens the browser: a file:// page leading there
        page.wait_for_selector("body[data-ready='1']")
        assert "token" not in page.url
        assert page.locator("#summary").inner_text().startswith("1 of 2 photos")
        assert page.locator("#unreadable-count").inner_text() == "1 not readable"
        page.locator("#unreadable-count").click()
        assert page.locator("#unreadable-list li").inner_text().startswith("broken.jpg: ")
        context.close()
