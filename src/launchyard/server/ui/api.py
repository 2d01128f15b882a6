"""Small JSON and event-stream endpoints that the pages' script calls.

They accept the session cookie or a Bearer key (``UICaller``), and answer errors
as the API does (``{"error": {...}}``). Live parts of a page come back as HTML
fragments rendered by the same templates as the page, so there is one way to
draw a row, not one in Jinja and one in JavaScript.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from launchyard.models.runs import RunState
from launchyard.server.deps import AppState, State
from launchyard.server.notify import FALLBACK_POLL_S
from launchyard.server.routers import queues as queues_router
from launchyard.server.schemas.queues import ParseRequest
from launchyard.server.schemas.runs import LogsResponse, RunResponse
from launchyard.server.services import runs as runs_service
from launchyard.server.services.auth import Principal, Role
from launchyard.server.tables import EntityRow, RunRow
from launchyard.server.ui import views
from launchyard.server.ui.forms import rows_for, variables_from_rows
from launchyard.server.ui.render import can, fragment
from launchyard.server.ui.session import UICaller

router = APIRouter()

LOG_TAIL_CHARS = 200_000
"""The run page starts its log this far from the end; the download has it all."""
KEEPALIVE_S = 15.0


IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp"})
"""Outputs shown inline on the run page (not SVG: it can carry script)."""


@dataclass
class RunDetail:
    row: RunRow
    run: RunResponse
    entity: EntityRow
    can_cancel: bool
    outputs: list[OutputView]


@dataclass
class OutputView:
    path: str
    size: int
    url: str
    image: bool


def run_outputs(state: AppState, run_id: str) -> list[OutputView]:
    return [
        OutputView(
            path=path,
            size=size,
            url=f"/ui/runs/{quote(run_id, safe='')}/files/{quote(path)}",
            image=PurePosixPath(path).suffix.lower() in IMAGE_SUFFIXES,
        )
        for path, size in state.files.list(run_id)
    ]


def run_detail(sess: Session, who: Principal, run_id: str, state: AppState) -> RunDetail:
    row = runs_service.get_run(sess, who, run_id)
    run = runs_service.to_response(
        sess,
        row,
        lease_ttl_s=state.settings.lease_ttl_s,
        reserve_after_s=state.settings.reserve_after_s,
    )
    entity = sess.get(EntityRow, row.entity_id)
    assert entity is not None
    terminal = RunState(row.state).is_terminal
    can_cancel = not terminal and can(who, entity, Role.MEMBER)
    return RunDetail(row, run, entity, can_cancel, run_outputs(state, row.id))


class UIParseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    config: str
    rows: dict[str, dict[str, str]] = Field(default_factory=dict)
    """What the form's variable rows hold now, by variable name."""


@router.post("/ui/api/templates/parse")
def parse(req: UIParseRequest, who: UICaller) -> dict[str, Any]:
    """ "Parse configuration": the API's parse, plus the form rows for the variables found."""
    declared = variables_from_rows(req.rows)
    result = queues_router.parse(ParseRequest(config=req.config, variables=declared), who)
    return {
        "variables": result.variables,
        "macros": result.macros,
        "undeclared": result.undeclared,
        "rows_html": fragment("_var_rows.html", rows=rows_for(result.variables, req.rows)),
    }


@router.get("/ui/api/e/{entity}/queues/{name}/live")
def queue_live(
    entity: str,
    name: str,
    state: State,
    who: UICaller,
    after: str | None = None,
    before: int | None = None,
) -> dict[str, Any]:
    with state.db.session() as sess:
        view = views.queue_view(sess, who, entity, name, state.settings, after=after, before=before)
    html = fragment(
        "_queue_live.html",
        view=view,
        state_order=views.STATE_ORDER,
        after=after or "",
        before=before or "",
    )
    return {"counts": view.counts, "html": html}


@router.get("/ui/api/runs/{run_id}/live")
def run_live(run_id: str, state: State, who: UICaller) -> dict[str, Any]:
    with state.db.session() as sess:
        detail = run_detail(sess, who, run_id, state)
    return {
        "state": detail.run.state,
        "terminal": RunState(detail.run.state).is_terminal,
        "html": fragment("_run_live.html", d=detail, run=detail.run),
        "outputs_html": fragment("_outputs.html", d=detail),
    }


def _read(state: AppState, who: Principal, run_id: str, offset: int) -> LogsResponse:
    with state.db.session() as sess:
        return runs_service.read_logs(sess, runs_service.get_run(sess, who, run_id), offset)


@router.get("/ui/runs/{run_id}/logs/stream")
async def log_stream(
    run_id: str, request: Request, state: State, who: UICaller, offset: int = 0
) -> StreamingResponse:
    """Server-sent events: each ``message`` is a JSON string of new log text; ``end`` closes.

    Follows the tail: woken by the app's Notifier when an agent uploads logs.
    A reconnecting EventSource resumes from ``Last-Event-ID`` (a log offset).
    """
    last_id = request.headers.get("last-event-id", "")
    start = int(last_id) if last_id.isdigit() else max(offset, 0)
    version = state.notifier.version  # taken before each read, so no upload is missed
    first = await run_in_threadpool(_read, state, who, run_id, start)  # 404 before streaming

    async def events() -> AsyncIterator[str]:
        nonlocal version
        page, quiet_s = first, 0.0
        while True:
            if page.text:
                quiet_s = 0.0
                yield f"id: {page.next_offset}\ndata: {json.dumps(page.text)}\n\n"
            elif page.done:
                yield "event: end\ndata: {}\n\n"
                return
            else:
                await state.notifier.wait(version, KEEPALIVE_S)
                quiet_s += FALLBACK_POLL_S  # wait() returns at least this often
                if quiet_s >= KEEPALIVE_S:
                    quiet_s = 0.0
                    yield ": keepalive\n\n"
                if await request.is_disconnected():
                    return
            version = state.notifier.version
            page = await run_in_threadpool(_read, state, who, run_id, page.next_offset)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


@router.get("/ui/runs/{run_id}/logs.txt")
def log_download(run_id: str, state: State, who: UICaller) -> StreamingResponse:
    """The whole log as a file, read page by page (never all in memory)."""
    first = _read(state, who, run_id, 0)

    def chunks() -> Iterator[bytes]:
        page = first
        while page.text:
            yield page.text.encode()
            page = _read(state, who, run_id, page.next_offset)

    return StreamingResponse(
        chunks(),
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{run_id}.log"'},
    )


@router.get("/ui/runs/{run_id}/files/{path:path}")
def output_file(run_id: str, path: str, state: State, who: UICaller) -> FileResponse:
    """One output of a run: images inline (for the page), anything else as a download.

    Sandboxed by CSP, so an HTML or SVG output opened directly cannot run script
    with the UI's cookie.
    """
    with state.db.session() as sess:
        runs_service.get_run(sess, who, run_id)
    file = state.files.path(run_id, path)
    inline = PurePosixPath(path).suffix.lower() in IMAGE_SUFFIXES
    return FileResponse(
        file,
        filename=PurePosixPath(path).name,
        content_disposition_type="inline" if inline else "attachment",
        headers={
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "X-Content-Type-Options": "nosniff",
        },
    )
