"""Run outputs: upload (with the run's output token or a member's key), list, download."""

from __future__ import annotations

import tempfile

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from launchyard.errors import AuthError
from launchyard.server.deps import Caller, State, bearer_token, principal
from launchyard.server.services import runs as runs_service
from launchyard.server.services.agents import OUTPUT_TOKEN_PREFIX
from launchyard.server.services.auth import Role, hash_key
from launchyard.server.storage import safe_relpath
from launchyard.server.tables import RunRow

router = APIRouter(prefix="/api/v1/runs/{run_id}/files", tags=["outputs"])


class OutputFile(BaseModel):
    path: str
    size: int
    url: str


def _check_writer(request: Request, state: State, run_id: str) -> None:
    token = bearer_token(request)
    with state.db.session() as sess:
        if token and token.startswith(OUTPUT_TOKEN_PREFIX):
            run = sess.query(RunRow).filter(RunRow.id == run_id).one_or_none()
            if run is None or run.output_token_hash != hash_key(token):
                raise AuthError(
                    f"this output token cannot write to run '{run_id}': each run's token "
                    "writes only its own outputs",
                    fields={"run": run_id},
                )
            return
    who = principal(request, state)
    with state.db.session() as sess:
        runs_service.get_run(sess, who, run_id, Role.MEMBER)


@router.put("/{path:path}", status_code=201)
async def upload(run_id: str, path: str, request: Request, state: State) -> OutputFile:
    safe_relpath(path)
    await run_in_threadpool(_check_writer, request, state, run_id)
    with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
        async for chunk in request.stream():
            spool.write(chunk)
        spool.seek(0)
        size = await run_in_threadpool(state.files.put, run_id, path, spool)
    return OutputFile(path=path, size=size, url=f"/api/v1/runs/{run_id}/files/{path}")


@router.get("")
def list_files(run_id: str, state: State, who: Caller) -> list[OutputFile]:
    with state.db.session() as sess:
        runs_service.get_run(sess, who, run_id)
    return [
        OutputFile(path=p, size=s, url=f"/api/v1/runs/{run_id}/files/{p}")
        for p, s in state.files.list(run_id)
    ]


@router.get("/{path:path}")
def download(run_id: str, path: str, state: State, who: Caller) -> FileResponse:
    with state.db.session() as sess:
        runs_service.get_run(sess, who, run_id)
    return FileResponse(state.files.path(run_id, path))
