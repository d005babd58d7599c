"""The web application: runs loaded once, a worker per model, the pages, the API and its error answers.

``create_app(runs, config)`` returns a FastAPI app; `qkv serve` runs it with uvicorn. Its parts:

- the runs (`qkv.server.served`): each loaded once (`qkv.load_run`), with its name in URLs, its pages and its
  `ModelWorker`;
- ``/chat``: the chat page of the run it opens first (`default_chat_run`: a pipeline's final run when it chats);
- each run's report card, ``/runs/{name}/report``: its report.html as written (`qkv.report`), under a policy that
  allows the page's inline style and data: images and nothing else (no script, no fetch);
- the pages, plain HTML/CSS/JS from ``qkv/server/static`` (no build step, nothing from a CDN), and the JSON
  API under ``/api`` (`qkv.server.playground` for runs, `qkv.server.rating` for human evaluation), whose
  OpenAPI page is ``/docs``;
- the answers to bad requests: every error is JSON ``{"error": "one line"}`` with a 4xx status — 400 for
  what a run refuses (`QKVError`), 404 for unknown runs and tasks, 413 for a body over the size limit, 422
  for a body that does not fit its schema, 429 (with Retry-After) when a model's queue is full. A 500 is
  a bug, logged with its traceback;
- headers that keep model output inert: a Content-Security-Policy that allows only this server's own
  scripts (no inline script, no eval), so even text that looks like HTML can never run, and no Referer
  (rater links carry their token in the path).
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from qkv.errors import QKVError
from qkv.report.render import CSP as REPORT_CSP
from qkv.runs import REPORT_HTML_FILE
from qkv.server.inside import router as inside_router
from qkv.server.playground import router as playground_router
from qkv.server.rating import router as rating_router
from qkv.server.served import PAGE_FILES, STATIC, HTTPError, Served, default_chat_run
from qkv.server.workers import Busy

log = logging.getLogger("qkv.server")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


@dataclass
class ServeConfig:
    """What `qkv serve` can set: limits, the human-evaluation store, the admin token."""

    max_body_bytes: int = 64 * 1024  # a request body over this is refused (413) before it is read whole
    # the same for a request that carries a file (UPLOADS: an image or a recording for a source -> text run or an
    # explain topic): 2 MiB holds ~45 s of 16 kHz 16-bit audio as a base64 data URL
    max_upload_bytes: int = 2 * 1024 * 1024
    max_new_tokens: int = 1024  # the most tokens one generation or chat reply may ask for
    queue_size: int = 8  # requests waiting per model; one more gets 429
    max_images: int = 16  # images per request on the images page
    db: Path | None = None  # the human-evaluation store (SQLite) the rater pages use
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def __post_init__(self):
        if min(self.max_body_bytes, self.max_upload_bytes, self.max_new_tokens, self.queue_size, self.max_images) < 1:
            raise QKVError("server limits must be positive")
        if self.db is not None:
            self.db = Path(self.db)


def _error(status: int, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _validation_line(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:3]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        msg = e.get("msg", "invalid").removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


# the requests that may carry a file (a data URL): they get ServeConfig.max_upload_bytes, the rest max_body_bytes
UPLOADS = re.compile(r"^/api/runs/[^/]+/(to-text|translate|explain/[^/]+)$")


class BodyLimit:
    """ASGI middleware: refuse a request body over `limit` bytes (`upload_limit` for a path UPLOADS matches) with a
    413, by its Content-Length or, without one (a chunked body), as soon as the bytes read pass the limit.

    In the chunked case the handler is already reading the body when the limit is passed: `receive` raises,
    and FastAPI turns any error while reading a body into its own 400 ("There was an error parsing the
    body"), so the exception never reaches this middleware. Whatever the app answers after that is dropped
    here instead, and the 413 goes out in its place (the handler never sees the body)."""

    def __init__(self, app, limit: int, upload_limit: int | None = None):
        self.app, self.base_limit = app, limit
        self.upload_limit = limit if upload_limit is None else upload_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.upload_limit if UPLOADS.match(scope.get("path", "")) else self.base_limit
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await self._refuse(scope, receive, send, limit)
        seen = 0
        too_big = False  # the body passed the limit: the app's answer is replaced by the 413
        started = False  # the app began its answer before that (it cannot be replaced any more)

        async def limited():
            nonlocal seen, too_big
            if too_big:
                raise _TooBig()
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    too_big = True
                    raise _TooBig()
            return message

        async def answer(message):
            nonlocal started
            if too_big and not started:
                return
            started = True
            await send(message)

        try:
            await self.app(scope, limited, answer)
        except Exception:  # _TooBig itself, or whatever the app made of it
            if not too_big:
                raise
        if too_big and not started:
            await self._refuse(scope, receive, send, limit)

    async def _refuse(self, scope, receive, send, limit: int):
        response = _error(413, f"the request body is over the {limit:,}-byte limit")
        await response(scope, receive, send)


class _TooBig(Exception):
    pass


def create_app(runs: dict[str, Served], config: ServeConfig | None = None) -> FastAPI:
    """The app for already loaded runs (`load_runs`) and, with ``config.db``, the rater and admin pages."""
    config = config or ServeConfig()
    app = FastAPI(title="qkv", description="The qkv playground and human-evaluation API.", version="1",
                  docs_url=None, redoc_url=None)  # FastAPI's own pages load Swagger UI from a CDN: see _api_docs
    app.state.runs, app.state.config = runs, config

    @app.exception_handler(QKVError)
    async def _qkv_error(request: Request, exc: QKVError):
        return _error(getattr(exc, "status", 400), str(exc))

    @app.exception_handler(Busy)
    async def _busy(request: Request, exc: Busy):
        return _error(429, str(exc), headers={"Retry-After": str(exc.retry_after)}, retry_after=exc.retry_after)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return _error(422, _validation_line(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal server error (a bug in qkv; the server log has the traceback)")

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    app.add_middleware(BodyLimit, limit=config.max_body_bytes, upload_limit=config.max_upload_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/chat", include_in_schema=False)
    async def chat_page():
        """The chat page of the run it opens first: a pipeline's final run when it can chat, else the first run
        that can."""
        name = default_chat_run(runs)
        if name is None:
            raise HTTPError(404, "no run on this server can chat")
        return RedirectResponse(f"/runs/{quote(name, safe='')}/chat", status_code=307)

    @app.get("/runs/{name}/report", include_in_schema=False)
    async def report(name: str):
        served = runs.get(name)
        if served is None:
            raise HTTPError(404, f"no run named {name!r} on this server")
        path = served.path / REPORT_HTML_FILE
        if not path.is_file():
            raise HTTPError(404, f"{name} has no report yet (qkv report {served.path} writes one)")
        return FileResponse(path, media_type="text/html", headers={"Content-Security-Policy": REPORT_CSP,
                                                                   "Cache-Control": "no-cache"})

    @app.get("/runs/{name}/{page}", include_in_schema=False)
    async def page(name: str, page: str):
        served = runs.get(name)
        if served is None:
            raise HTTPError(404, f"no run named {name!r} on this server")
        if page not in served.pages:
            raise HTTPError(404, f"{name} has no {page} page; its pages are {', '.join(served.pages)}")
        return FileResponse(STATIC / f"{PAGE_FILES.get(page, page)}.html")

    app.include_router(playground_router)
    app.include_router(inside_router)
    app.include_router(rating_router)
    _api_docs(app)
    return app


def _api_docs(app: FastAPI) -> None:
    """FastAPI's OpenAPI page at /docs, offline: Swagger UI's files come from the `fastapi-offline` package
    (served here, not from a CDN), and the page's one inline script is allowed by its hash, nothing else."""
    import base64
    import hashlib
    import re

    import fastapi_offline
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount("/docs-static", StaticFiles(directory=assets), name="docs-static")
    html = get_swagger_ui_html(openapi_url="/openapi.json", title="qkv API", swagger_js_url="/docs-static/"
                               "swagger-ui-bundle.js", swagger_css_url="/docs-static/swagger-ui.css",
                               swagger_favicon_url="/docs-static/favicon.png").body
    inline = re.findall(rb"<script>(.*?)</script>", html, flags=re.S)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(code).digest()).decode()}'" for code in inline)
    csp = CSP.replace("script-src 'self'", f"script-src 'self' {hashes}")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return HTMLResponse(html, headers={"Content-Security-Policy": csp})
