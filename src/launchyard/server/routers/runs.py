"""Runs: submit, list, show, cancel, and logs (with a long poll to follow them)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from launchyard.errors import LaunchyardError
from launchyard.server.deps import Caller, State
from launchyard.server.notify import agent_topic, claimable, run_topic
from launchyard.server.schemas.runs import (
    LogsResponse,
    RunBatchRequest,
    RunBatchResponse,
    RunListResponse,
    RunResponse,
    RunSubmitRequest,
)
from launchyard.server.services import runs as service
from launchyard.server.services.auth import Role
from launchyard.server.services.entities import get_entity, get_project
from launchyard.server.services.queues import get_queue

router = APIRouter(prefix="/api/v1", tags=["runs"])


@router.post("/entities/{entity}/runs", status_code=201)
def submit(entity: str, req: RunSubmitRequest, state: State, who: Caller) -> RunResponse:
    with state.db.session() as sess:
        names = service.Names(sess)
        ent = state.known.entity(sess, entity)
        run = service.submit(sess, who, ent, req, names, state.known)
        response = service.to_response(sess, run, names, detail=False)
    state.notifier.notify(*claimable(run.queue_id, run.gpus))
    return response


@router.post("/entities/{entity}/runs/batch", status_code=201)
def submit_batch(entity: str, req: RunBatchRequest, state: State, who: Caller) -> RunBatchResponse:
    """Queue many runs at once (a sweep): one transaction, all or nothing."""
    with state.db.session() as sess:
        ent = state.known.entity(sess, entity)
        names = service.Names(sess)
        responses, runs = [], []
        for index, one in enumerate(req.runs):
            try:
                run = service.submit(sess, who, ent, one, names, state.known)
            except LaunchyardError as exc:
                raise type(exc)(
                    f"runs[{index}]: {exc.message}; nothing was queued",
                    fields={**exc.fields, "index": index},
                ) from None
            runs.append(run)
            responses.append(service.to_response(sess, run, names, detail=False))
    state.notifier.notify(*{t for r in runs for t in claimable(r.queue_id, r.gpus)})
    return RunBatchResponse(runs=responses)


@router.get("/entities/{entity}/runs")
def list_runs(
    entity: str,
    state: State,
    who: Caller,
    queue: str | None = None,
    project: str | None = None,
    run_state: Annotated[list[str] | None, Query(alias="state")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> RunListResponse:
    with state.db.session() as sess:
        ent = get_entity(sess, entity)
        who.require(ent, Role.VIEWER, "listing runs")
        rows, cursor = service.list_runs(
            sess,
            ent,
            queue=get_queue(sess, ent, queue) if queue else None,
            project=get_project(sess, ent, project) if project else None,
            states=service.parse_states(run_state),
            limit=limit,
            before=before,
        )
        names = service.Names(sess)
        return RunListResponse(
            runs=[service.to_response(sess, r, names, detail=False) for r in rows],
            next_cursor=cursor,
        )


@router.get("/runs/{run_id}")
def show(run_id: str, state: State, who: Caller) -> RunResponse:
    with state.db.session() as sess:
        run = service.get_run(sess, who, run_id)
        return service.to_response(
            sess,
            run,
            lease_ttl_s=state.settings.lease_ttl_s,
            reserve_after_s=state.settings.reserve_after_s,
        )


@router.post("/runs/{run_id}/cancel")
def cancel(run_id: str, state: State, who: Caller) -> RunResponse:
    with state.db.session() as sess:
        run = service.cancel(sess, who, service.get_run(sess, who, run_id, Role.MEMBER))
        response = service.to_response(sess, run, detail=False)
    # Its followers, and the agent holding it (the cancel rides on its claim's answer).
    state.notifier.notify(run_topic(run_id), *([agent_topic(run.agent_id)] if run.agent_id else []))
    return response


@router.get("/runs/{run_id}/logs")
async def logs(
    run_id: str,
    state: State,
    who: Caller,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    wait: Annotated[float, Query(ge=0, le=60)] = 0,
) -> LogsResponse:
    """Log text from ``offset``; with ``wait``, held until there is more or the run ends."""

    def read() -> LogsResponse:
        with state.db.session() as sess:
            return service.read_logs(sess, service.get_run(sess, who, run_id), offset)

    deadline = time.monotonic() + wait
    while True:
        version = state.notifier.version
        page = await run_in_threadpool(read)
        remaining = deadline - time.monotonic()
        if page.text or page.done or remaining <= 0:
            return page
        await state.notifier.wait(version, remaining, [run_topic(run_id)])
