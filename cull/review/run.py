"""Serve one review: bind 127.0.0.1, announce the address, open the browser, run until stopped."""

from __future__ import annotations

import html
import logging
import shutil
import tempfile
import threading
import webbrowser
from collections.abc import Callable
from pathlib import Path

from cull.review.server import bind, create_app, new_token, serve
from cull.review.session import ReviewSession

log = logging.getLogger(__name__)


def serve_review(
    session: ReviewSession,
    port: int = 0,
    *,
    idle_minutes: float | None = 30.0,
    open_browser: bool = True,
    on_url: Callable[[str], None] | None = None,
) -> str:
    """Serve ``session`` until Ctrl-C / SIGTERM or ``idle_minutes`` without a request.

    ``on_url`` gets the address with its token before the first request can arrive.
    Returns why it stopped ("interrupted", "terminated" or "idle"). Raises OSError when the port is taken.
    """
    token = new_token()
    sock = bind(port)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/?token={token}"
    if on_url:
        on_url(url)
    folder = Path(tempfile.mkdtemp(prefix="cull-review-"))  # 0700: only this user can read the token in it
    if open_browser:
        threading.Thread(target=_open, args=(url, folder), daemon=True).start()
    app = create_app(session, token)
    try:
        return serve(app, sock, None if idle_minutes is None or idle_minutes <= 0 else idle_minutes * 60.0)
    finally:
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)


def _open(url: str, folder: Path) -> None:
    """Open the browser on a private redirect file, not on the address itself: a browser's command
    line is visible to every user of the machine (``ps``), the token must not be."""
    try:
        page = folder / "open.html"
        page.write_text(f'<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={html.escape(url)}">'
                        f'<title>cull review</title><a href="{html.escape(url)}">cull review</a>\n', encoding="utf-8")
        webbrowser.open(page.as_uri())
    except Exception:  # noqa: BLE001 - no browser is fine: the address is printed
        log.debug("could not open a browser", exc_info=True)
