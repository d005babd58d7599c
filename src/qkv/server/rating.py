"""Human evaluation on the server: the rater's page and API, and the admin's report (`qkv.humaneval`).

    GET  /rate/{token}                        the rater's page (one item at a time)
    GET  /api/rate/{token}                    campaign, progress, the next item to rate
    GET  /api/rate/{token}/tasks/{position}   one item: the source, the candidate(s), the rater's last judgement
    POST /api/rate/{token}/tasks/{task_id}    a judgement; answered only after it is committed
    GET  /admin                               the admin's page (the token goes in the URL fragment, #token=...)
    GET  /api/admin/campaigns                 campaigns and their counts            } Authorization:
    GET  /api/admin/campaigns/{name}/report   the report of `qkv human-eval report` } Bearer <admin token>
    GET  /api/admin/campaigns/{name}/plot.png its plot                              } (printed by qkv serve)
    GET  /api/admin/campaigns/{name}/export.{csv,jsonl}  every judgement           }

The rater page's Content-Security-Policy is the server's plus ``media-src 'self' data:``: an audio-to-text item's
recording is a WAV data URL that the page's ``<audio controls>`` plays (never autoplayed).

A position or task id in a path is a 64-bit row number: one outside 0 ≤ n < 2**63 (SQLite's INTEGER) is a
404 like any other id the rater does not have, never a 500.

Access: a rater link's token (unguessable, `secrets.token_urlsafe`) is the rater's only credential and opens
only that rater's items: any other task id is a 404, whatever campaign it belongs to. Creating campaigns is
CLI-only (`qkv human-eval create`); reports and exports need the admin token. The store is SQLite (WAL,
append-only judgements): these handlers are plain functions, run on FastAPI's thread pool, each store call
one transaction.
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, Request
from fastapi.responses import FileResponse, Response

from qkv.server.served import STATIC, HTTPError

router = APIRouter()
MAX_ROW_NUMBER = 2**63 - 1  # SQLite's largest INTEGER: a bigger path number cannot name a row
# the rater page's policy: the server's, plus recordings stored as data: URLs (audio-to-text items) for its <audio>.
# Copied from qkv.server.app.CSP (which imports this module), then media-src; a test checks that the copies match
RATE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'; media-src 'self' data:")


def _store(request: Request):
    from qkv.humaneval.store import Store

    config = request.app.state.config
    if config.db is None:
        raise HTTPError(404, "this server has no human-evaluation store (start it with qkv serve --db FILE)")
    store = getattr(request.app.state, "store", None)
    if store is None:
        store = request.app.state.store = Store(config.db)
    return store


def _rater(request: Request, token: str):
    rater = _store(request).rater(token) if 8 <= len(token) <= 128 else None
    if rater is None:
        raise HTTPError(404, "unknown rater link (check that it was copied whole)")
    return rater


def _admin(request: Request) -> None:
    given = request.headers.get("authorization", "")
    expected = f"Bearer {request.app.state.config.admin_token}"
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPError(401, "admin token missing or wrong (qkv serve prints it at start)")


def _is_row_number(n: int) -> bool:
    """Whether `n` can be a row's position or id: 0 <= n < 2**63 (SQLite's INTEGER)."""
    return 0 <= n <= MAX_ROW_NUMBER


def _campaign(request: Request, name: str) -> str:
    store = _store(request)
    if name not in store.campaign_names():
        raise HTTPError(404, f"no campaign named {name!r} in {request.app.state.config.db}")
    return name


# ------------------------------------------------------------------------------------------------ raters
@router.get("/rate/{token}", include_in_schema=False)
def rate_page(request: Request, token: str):
    _rater(request, token)
    return FileResponse(STATIC / "rate.html", headers={"Content-Security-Policy": RATE_CSP})


@router.get("/api/rate/{token}", tags=["rating"])
def rater_status(request: Request, token: str) -> dict:
    """The rater's campaign, how many items there are, how many are done, and the next one to rate."""
    rater = _rater(request, token)
    return _store(request).status(rater.id)


@router.get("/api/rate/{token}/tasks/{position}", tags=["rating"])
def rater_task(request: Request, token: str, position: int) -> dict:
    rater = _rater(request, token)
    task = _store(request).task(rater.id, position) if _is_row_number(position) else None
    if task is None:
        raise HTTPError(404, f"no item {position} in this rater's list")
    return task


@router.post("/api/rate/{token}/tasks/{task_id}", tags=["rating"])
def rater_submit(request: Request, token: str, task_id: int, payload: Annotated[dict, Body()]) -> dict:
    """Store a judgement (a new row: the latest counts, earlier ones are kept). The answer comes after the
    commit, so an acknowledged judgement survives a crash."""
    from qkv.humaneval.store import InvalidJudgement, NotFound

    rater = _rater(request, token)
    if not _is_row_number(task_id):
        raise HTTPError(404, f"task {task_id} is not one of this rater's tasks")
    try:
        return _store(request).submit(rater.id, task_id, payload)
    except NotFound as e:
        raise HTTPError(404, str(e)) from None
    except InvalidJudgement as e:
        raise HTTPError(422, str(e)) from None


# ------------------------------------------------------------------------------------------------ admin
@router.get("/admin", include_in_schema=False)
def admin_page():
    return FileResponse(STATIC / "admin.html")


@router.get("/api/admin/campaigns", tags=["admin"])
def campaigns(request: Request) -> list[dict]:
    _admin(request)
    return _store(request).campaigns()


@router.get("/api/admin/campaigns/{name}/report", tags=["admin"])
def report(request: Request, name: str) -> dict:
    from qkv.humaneval.report import build_report

    _admin(request)
    return build_report(_store(request), _campaign(request, name))


@router.get("/api/admin/campaigns/{name}/plot.png", tags=["admin"])
def plot(request: Request, name: str) -> Response:
    from qkv.humaneval.report import build_report, render_plot

    _admin(request)
    png = render_plot(build_report(_store(request), _campaign(request, name)))
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/api/admin/campaigns/{name}/export.{fmt}", tags=["admin"])
def export(request: Request, name: str, fmt: str) -> Response:
    from qkv.humaneval.report import export_judgements

    _admin(request)
    if fmt not in ("csv", "jsonl"):
        raise HTTPError(404, f"export formats are csv and jsonl, not {fmt!r}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_judgements(_store(request), _campaign(request, name), Path(tmp))
        path = next(p for p in paths if p.suffix == f".{fmt}")
        media = "text/csv" if fmt == "csv" else "application/x-ndjson"
        return Response(path.read_bytes(), media_type=f"{media}; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{path.name}"'})
