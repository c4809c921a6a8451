"""The local review server (Starlette + uvicorn): 127.0.0.1 only, a random token on every request.

- The token comes once in the URL (``/?token=...``); the answer sets it as an HttpOnly,
  SameSite=Strict cookie and redirects to ``/`` so it leaves the address bar.  Any request without
  a valid token gets 401 (none) or 403 (wrong); a Host other than 127.0.0.1 / localhost gets 403
  (DNS rebinding).
- State changes are POST only, and carry the token again in the ``X-Cull-Token`` header (the page
  reads it from a meta tag), so another site cannot forge them (CSRF).
- Pictures are served by item number from the scanned set only; no route takes a path.
- Every answer carries a strict Content-Security-Policy (no inline script, nothing from elsewhere).
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import secrets
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from cull.errors import UnreadableImage
from cull.review.decisions import DECISIONS, DecisionError
from cull.review.session import ReviewSession

log = logging.getLogger(__name__)

COOKIE = "cull_review"  # + "_PORT": cookies are not kept apart by port, two reviews must not collide
HEADER = "x-cull-token"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "cache-control": "no-store",
}
ALLOWED_HOSTS = frozenset({"127.0.0.1", "localhost"})
STATIC = {"review.js": "text/javascript", "review.css": "text/css"}


def new_token() -> str:
    return secrets.token_urlsafe(32)


def static_text(name: str) -> str:
    return resources.files("cull.review").joinpath("static").joinpath(name).read_text(encoding="utf-8")


class Guard:
    """ASGI middleware: host check, token check, security headers, and the idle clock."""

    def __init__(self, app: ASGIApp, token: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.token = token
        self.clock = clock
        self.last_seen = clock()

    def _valid(self, value: str | None) -> bool:
        return value is not None and secrets.compare_digest(value.encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        response = self._check(request)
        if response is None:  # only the page's own requests keep it alive: a stranger knocking does not
            self.last_seen = self.clock()

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.decode().lower() not in SECURITY_HEADERS]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        if response is not None:
            await response(scope, receive, send_with_headers)
        else:
            await self.app(scope, receive, send_with_headers)

    def _check(self, request: Request) -> Response | None:
        host, _, port = (request.headers.get("host") or "").partition(":")
        if host.lower() not in ALLOWED_HOSTS:
            return PlainTextResponse("forbidden host", 403)
        name = cookie_name(port)
        query = request.query_params.get("token")
        if query is not None:
            if not self._valid(query):
                return PlainTextResponse("wrong token", 403)
            if request.method == "GET" and request.url.path == "/":
                answer = RedirectResponse("/", 303)
                answer.set_cookie(name, self.token, httponly=True, samesite="strict", path="/")
                return answer
        cookie = request.cookies.get(name)
        if query is None and cookie is None:
            return PlainTextResponse("token required: open the address cull review printed", 401)
        if query is None and not self._valid(cookie):
            return PlainTextResponse("wrong token", 403)
        if request.method not in ("GET", "HEAD"):
            if not self._valid(request.headers.get(HEADER)):
                return PlainTextResponse("state changes need the token in the X-Cull-Token header", 403)
            origin = request.headers.get("origin")
            if origin is not None and origin.split("://", 1)[-1].rsplit(":", 1)[0] not in ALLOWED_HOSTS:
                return PlainTextResponse("cross-origin request refused", 403)
        return None


def cookie_name(port: int | str) -> str:
    return f"{COOKIE}_{port or 80}"


def _image(data: bytes, media: str) -> Response:
    return Response(data, media_type=media)


MAX_BODY = 64 << 10  # a decision is a few dozen bytes: anything bigger is refused unread


async def _json_body(request: Request) -> dict[str, Any] | Response:
    """The request's JSON object, read up to MAX_BODY bytes; a Response (413, 400) for anything else."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        return PlainTextResponse("request body too large", 413)
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            return PlainTextResponse("request body too large", 413)
    try:
        body = json.loads(bytes(data))
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        return PlainTextResponse("expected a JSON object", 400)
    return body if isinstance(body, dict) else PlainTextResponse("expected a JSON object", 400)


def _whole(value: object) -> int | None:
    """A photo id: a JSON whole number (not true, 0.9, "0" or 1e400)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def create_app(session: ReviewSession, token: str) -> Guard:
    """The ASGI app for ``session``, guarded by ``token``."""

    async def index(request: Request) -> Response:
        page = static_text("index.html").replace("{{TOKEN}}", html.escape(token, quote=True))
        return Response(page, media_type="text/html; charset=utf-8")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return PlainTextResponse("not found", 404)
        return Response(static_text(name), media_type=STATIC[name] + "; charset=utf-8")

    async def items(request: Request) -> Response:
        return JSONResponse(session.listing())

    def _id(request: Request) -> int:
        item_id = request.path_params["item"]
        session.item(item_id)  # KeyError -> 404
        return int(item_id)

    async def thumb(request: Request) -> Response:
        return _image(await run_in_threadpool(session.thumbnail, _id(request)), "image/jpeg")

    async def detail(request: Request) -> Response:
        item_id = _id(request)
        found = await run_in_threadpool(session.detail, item_id)
        return JSONResponse({
            "id": item_id, "width": found.width, "height": found.height, "full": list(found.full_size),
            "patch": found.patch, "patches": len(found.scores),
            "crops": [{"which": c.which, "score": round(c.score, 3), "box": list(c.box), "url": f"/api/crop/{item_id}/{c.which}"}
                      for c in found.crops],
            "view": f"/api/view/{item_id}", "overlay": f"/api/overlay/{item_id}",
            "burst": [{**frame.public(), "thumb": f"/api/thumb/{frame.id}"} for frame in session.neighbours(item_id)],
        })

    async def view(request: Request) -> Response:
        return _image((await run_in_threadpool(session.detail, _id(request))).view_jpeg, "image/jpeg")

    async def overlay(request: Request) -> Response:
        return _image((await run_in_threadpool(session.detail, _id(request))).overlay_png, "image/png")

    async def crop(request: Request) -> Response:
        found = await run_in_threadpool(session.detail, _id(request))
        for c in found.crops:
            if c.which == request.path_params["which"]:
                return _image(c.png, "image/png")
        return PlainTextResponse("not found", 404)

    async def decide(request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        item_id, decision = _whole(body.get("id")), body.get("decision")
        if item_id is None or not isinstance(decision, str):
            return PlainTextResponse("expected JSON {id, decision}", 400)
        if decision not in DECISIONS:
            return PlainTextResponse(f"decision must be one of {', '.join(DECISIONS)}", 400)
        try:
            item = await run_in_threadpool(session.decide, item_id, decision)
        except DecisionError as exc:
            return JSONResponse({"error": str(exc)}, 409)
        return JSONResponse({"item": item.public(), "undo": session.undo_depth})

    async def keep_best(request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        item_id = _whole(body.get("id"))
        if item_id is None:
            return PlainTextResponse("expected JSON {id}", 400)
        try:
            frames = await run_in_threadpool(session.keep_best, item_id)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        except DecisionError as exc:
            return JSONResponse({"error": str(exc)}, 409)
        return JSONResponse({"items": [f.public() for f in frames], "undo": session.undo_depth})

    async def undo(request: Request) -> Response:
        items, problems = await run_in_threadpool(session.undo)
        return JSONResponse({"item": items[0].public() if items else None, "items": [i.public() for i in items],
                             "problems": problems, "undo": session.undo_depth})

    async def not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("not found", 404)

    async def unreadable(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(f"cannot show this photo: {exc}", 422)

    routes = [
        Route("/", index),
        Route("/static/{name:str}", static),
        Route("/api/items", items),
        Route("/api/thumb/{item:int}", thumb),
        Route("/api/detail/{item:int}", detail),
        Route("/api/view/{item:int}", view),
        Route("/api/overlay/{item:int}", overlay),
        Route("/api/crop/{item:int}/{which:str}", crop),
        Route("/api/decide", decide, methods=["POST"]),
        Route("/api/keep-best", keep_best, methods=["POST"]),
        Route("/api/undo", undo, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={KeyError: not_found, UnreadableImage: unreadable})
    return Guard(app, token)


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 (``port`` 0: any free port). Raises OSError."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


def serve(app: Guard, sock: socket.socket, idle_timeout: float | None,
          on_started: Callable[[], Awaitable[None] | None] | None = None) -> str:
    """Run until Ctrl-C / SIGTERM or ``idle_timeout`` seconds without a request. Returns why it stopped."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    reason = ["interrupted"]

    async def watch_idle() -> None:
        while not server.should_exit:
            await asyncio.sleep(0.5 if idle_timeout is None else min(1.0, max(0.05, idle_timeout / 10)))
            if idle_timeout is not None and time.monotonic() - app.last_seen > idle_timeout:
                reason[0] = "idle"
                server.should_exit = True

    async def main() -> None:
        watcher = asyncio.create_task(watch_idle())
        try:
            await server.serve(sockets=[sock])
        finally:
            watcher.cancel()

    previous = None
    if threading.current_thread() is threading.main_thread():  # SIGTERM ends as cleanly as Ctrl-C
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        asyncio.run(main())  # uvicorn shuts down gracefully, then re-raises the signal it caught
    except Terminated:
        reason[0] = "terminated"
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return reason[0]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so both stop the server the same way."""


def _interrupt(signum: int, frame: object) -> None:
    raise Terminated
