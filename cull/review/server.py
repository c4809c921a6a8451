"""The local review server (Starlette + uvicorn): 127.0.0.1 only, a random secret on every API request.

Two secrets, and no cookie (cookies are not kept apart by port: any other web server on 127.0.0.1
could read, replace or delete one, and lock the tab out):

- The printed address's token (``/?token=...``) opens the page once: that answer carries the
  session secret in a meta tag (the page keeps it in its tab's sessionStorage and drops the token
  from the address bar).  The token is refused after that.
- The session secret goes in the ``X-Cull-Token`` header of every API request, GET and POST; the
  page sends it, another site cannot (CORS).  Pictures go by signed addresses the API hands out (an
  HMAC of the path), so an ``<img>`` needs no header.

The page without the secret (its meta tag empty) and its static files hold nothing secret: they
are served to anyone who passes the Host check, and the page then says that this tab has no access.
An API request without the secret gets 401, with a wrong one 403; a Host other than 127.0.0.1 /
localhost gets 403 (DNS rebinding), an API request whose Origin is not the page's own 403.  Pictures
are served by item number from the scanned set only; no route takes a path.  Every answer carries a
strict Content-Security-Policy (no inline script, nothing from elsewhere).  Detail pictures (full
decodes) run on two threads of their own, and a request whose page went away before its turn is dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import logging
import secrets
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from cull.errors import UnreadableImage
from cull.review.decisions import DECISIONS, DecisionError
from cull.review.items import Item
from cull.review.session import ReviewSession

log = logging.getLogger(__name__)

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
RESTARTED = "this review was restarted or stopped: open the new address cull review printed"  # the page shows it as is
STATIC = {"review.js": "text/javascript", "review.css": "text/css"}
DETAIL_WORKERS = 2  # full decodes at once: a 60 MP photo takes several hundred MB
T = TypeVar("T")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _same(given: str | None, expected: str) -> bool:
    return given is not None and secrets.compare_digest(given.encode(), expected.encode())


class Access:
    """The secrets of one review (see the module docstring): the address's token (good once), the
    page's session secret, and the key that signs picture addresses."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.opened = False
        self.secret = new_token()
        self._key = secrets.token_bytes(32)

    def sign(self, path: str) -> str:
        """``path`` with its signature: a picture address that needs no header."""
        return f"{path}?k={self._mac(path)}"

    def signed(self, path: str, mac: str | None) -> bool:
        return _same(mac, self._mac(path))

    def _mac(self, path: str) -> str:
        return hmac.new(self._key, path.encode(), hashlib.sha256).hexdigest()[:32]


def static_text(name: str) -> str:
    return resources.files("cull.review").joinpath("static").joinpath(name).read_text(encoding="utf-8")


class Guard:
    """ASGI middleware: host check, token checks, security headers, and the idle clock."""

    def __init__(self, app: ASGIApp, access: Access, heavy: HeavyWork, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.access = access
        self.heavy = heavy
        self.clock = clock
        self.last_seen = clock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # no route takes one, and none may skip the checks below
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        response = self._check(request)
        if response is None and (request.url.path.startswith("/api/") or "token" in request.query_params):
            self.last_seen = self.clock()  # only the page's own requests keep it alive: not a stranger knocking, nor the bare page

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

    def stop(self) -> None:
        """The server is stopping: drop detail work that has not started."""
        self.heavy.stop()

    def _check(self, request: Request) -> Response | None:
        host = (request.headers.get("host") or "").partition(":")[0]
        if host.lower() not in ALLOWED_HOSTS:
            return PlainTextResponse("forbidden host", 403)
        if "token" in request.query_params:
            return self._open(request)
        if request.url.path.startswith("/api/"):
            return self._check_api(request)
        return None  # the page without the secret and its static files: nothing secret in them

    def _open(self, request: Request) -> Response | None:
        """The printed address: it opens the page, once."""
        if request.method != "GET" or request.url.path != "/":
            return PlainTextResponse("the address's token only opens the page", 403)
        if not _same(request.query_params["token"], self.access.token):
            return PlainTextResponse("wrong token: this is not the address this cull review printed "
                                     "(one of an earlier run?): open the address it printed", 403)
        if self.access.opened:
            return PlainTextResponse(
                "this address was used already: the review is open in another tab or browser (reloading that tab "
                "keeps it). To open it here, stop cull review (Ctrl-C) and start it again.", 403)
        self.access.opened = True
        return None

    def _check_api(self, request: Request) -> Response | None:
        mac = request.query_params.get("k")
        if request.method in ("GET", "HEAD") and mac is not None:  # a picture address the API handed out
            return None if self.access.signed(request.url.path, mac) else PlainTextResponse("wrong signature", 403)
        given = request.headers.get(HEADER)
        if given is None:
            return PlainTextResponse("the page's X-Cull-Token header is required: open the address cull review printed", 401)
        if not _same(given, self.access.secret):  # a tab of an earlier run (the same --port), or a guess
            return PlainTextResponse(RESTARTED, 403)
        origin = request.headers.get("origin")
        if origin is not None and origin.lower() != own_origin(request):
            return PlainTextResponse("cross-origin request refused", 403)
        return None


class Abandoned(Exception):
    """A detail request given up before its work started: its page went away, or the server stops."""


class HeavyWork:
    """Detail pictures (full decodes, the model on every patch) on a few threads of their own, so a
    held J key cannot start dozens at once.  A request whose page went away (it aborts a superseded
    one) or that is still waiting when the server stops gives up its place: queued work never starts."""

    POLL = 0.2  # seconds between looks at the connection while waiting

    def __init__(self, workers: int = DETAIL_WORKERS) -> None:
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="cull-detail")
        self.stopping = False

    async def run(self, request: Request, work: Callable[[], T]) -> T:
        """``work()`` on the pool. Raises Abandoned, or what ``work`` raises."""
        if self.stopping:
            raise Abandoned
        job = self.pool.submit(work)
        future = asyncio.wrap_future(job)
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=self.POLL)
                if done and not future.cancelled():  # cancelled: dropped unstarted by stop()
                    return future.result()
                if done or self.stopping or await request.is_disconnected():
                    raise Abandoned
        finally:
            job.cancel()  # not started yet: it never will (at once, not on the loop's next turn)
            future.cancel()  # running: its result or error goes nowhere

    def stop(self) -> None:
        self.stopping = True
        self.pool.shutdown(wait=False, cancel_futures=True)


def own_origin(request: Request) -> str:
    """The page's origin as the request's Host names it: ``http://127.0.0.1:PORT`` or ``http://localhost:PORT``."""
    return "http://" + (request.headers.get("host") or "").lower()


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
    """The ASGI app for ``session``, opened by ``token`` (once)."""
    access = Access(token)
    heavy = HeavyWork()

    def shown(item: Item) -> dict[str, Any]:
        return {**item.public(), "thumb": access.sign(f"/api/thumb/{item.id}")}

    async def index(request: Request) -> Response:
        opening = "token" in request.query_params  # the Guard let it through: the address's first use
        page = static_text("index.html").replace("{{SECRET}}", html.escape(access.secret if opening else "", quote=True))
        return Response(page, media_type="text/html; charset=utf-8")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return PlainTextResponse("not found", 404)
        return Response(static_text(name), media_type=STATIC[name] + "; charset=utf-8")

    async def items(request: Request) -> Response:
        return JSONResponse({**session.listing(), "items": [shown(item) for item in session.items]})

    def _id(request: Request) -> int:
        item_id = request.path_params["item"]
        session.item(item_id)  # KeyError -> 404
        return int(item_id)

    async def thumb(request: Request) -> Response:
        return _image(await run_in_threadpool(session.thumbnail, _id(request)), "image/jpeg")

    async def _detail(request: Request) -> Any:
        item_id = _id(request)
        return await heavy.run(request, lambda: session.detail(item_id))

    async def detail(request: Request) -> Response:
        item_id, found = _id(request), await _detail(request)
        return JSONResponse({
            "id": item_id, "width": found.width, "height": found.height, "full": list(found.full_size),
            "patch": found.patch, "patches": len(found.scores),
            "crops": [{"which": c.which, "score": round(c.score, 3), "box": list(c.box), "url": access.sign(f"/api/crop/{item_id}/{c.which}")}
                      for c in found.crops],
            "view": access.sign(f"/api/view/{item_id}"), "overlay": access.sign(f"/api/overlay/{item_id}"),
            "burst": [shown(frame) for frame in session.neighbours(item_id)],
        })

    async def view(request: Request) -> Response:
        return _image((await _detail(request)).view_jpeg, "image/jpeg")

    async def overlay(request: Request) -> Response:
        return _image((await _detail(request)).overlay_png, "image/png")

    async def crop(request: Request) -> Response:
        for c in (await _detail(request)).crops:
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
        return JSONResponse({"item": shown(item), "undo": session.undo_depth})

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
        return JSONResponse({"items": [shown(f) for f in frames], "undo": session.undo_depth})

    async def undo(request: Request) -> Response:
        done = await run_in_threadpool(session.undo)
        return JSONResponse({"item": shown(done.items[0]) if done.items else None, "items": [shown(i) for i in done.items],
                             "problems": done.problems, "kept": done.kept, "undo": session.undo_depth})

    async def not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("not found", 404)

    async def unreadable(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(f"cannot show this photo: {exc}", 422)

    async def abandoned(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("given up: the page went away, or the review is stopping", 503)

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
    handlers = {KeyError: not_found, UnreadableImage: unreadable, Abandoned: abandoned}
    return Guard(Starlette(routes=routes, exception_handlers=handlers), access, heavy)


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

    # log_config None: uvicorn's warnings go through the logging set up already, rather than handlers it would
    # install again on each run (bound to whatever sys.stderr is at that moment)
    config = uvicorn.Config(app, log_level="warning", log_config=None, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    reason = ["interrupted"]

    async def watch() -> None:
        while not server.should_exit:
            await asyncio.sleep(0.2 if idle_timeout is None else min(0.2, max(0.05, idle_timeout / 10)))
            if idle_timeout is not None and time.monotonic() - app.last_seen > idle_timeout:
                reason[0] = "idle"
                server.should_exit = True
        app.stop()  # detail requests still waiting answer at once: no cancelled tasks, no tracebacks

    async def main() -> None:
        watcher = asyncio.create_task(watch())
        try:
            await server.serve(sockets=[sock])
        finally:
            watcher.cancel()
            app.stop()

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
