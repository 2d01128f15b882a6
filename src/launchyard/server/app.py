"""The server: a FastAPI app factory, its lifespan (migrations, bootstrap, lease reaper)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from launchyard import __version__
from launchyard.config import ServerSettings
from launchyard.errors import (
    InvalidInputError,
    LaunchyardError,
    NotFoundError,
    ServerUnavailableError,
)
from launchyard.server.db import Database, migrate
from launchyard.server.deps import AppState
from launchyard.server.metrics import DatabaseCollector
from launchyard.server.notify import Notifier
from launchyard.server.routers import agents, entities, files, jobs, queues, runs
from launchyard.server.services import agents as agents_service
from launchyard.server.services.entities import bootstrap
from launchyard.server.storage import FileStore
from launchyard.server.ui import routes as ui_routes

log = logging.getLogger("launchyard.server")


def create_app(settings: ServerSettings) -> FastAPI:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url())
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(db, settings.lease_ttl_s))
    store = FileStore(settings.data_dir / "outputs")
    state = AppState(settings=settings, db=db, notifier=Notifier(), files=store, metrics=registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.notifier.bind(asyncio.get_running_loop())
        await run_in_threadpool(migrate, db.engine)
        with db.session() as sess:
            key_file = bootstrap(sess, settings.data_dir)
        if key_file is not None:
            log.warning("created user 'admin' and entity 'default'; admin API key in %s", key_file)
        reaper = asyncio.create_task(_reap_forever(state))
        try:
            yield
        finally:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            db.dispose()

    app = FastAPI(
        title="launchyard",
        version=__version__,
        description="Self-hosted launch queues for GPU jobs.",
        lifespan=lifespan,
    )
    app.state.launchyard = state
    for module in (entities, queues, runs, jobs, agents, files):
        app.include_router(module.router)
    app.include_router(ui_routes.router)
    app.mount("/ui/static", StaticFiles(directory=ui_routes.STATIC_DIR), name="ui-static")
    _install_error_handlers(app)
    return app


async def _reap_forever(state: AppState) -> None:
    while True:
        await asyncio.sleep(state.settings.reaper_interval_s)
        try:

            def reap() -> list[str]:
                with state.db.session() as sess:
                    return agents_service.reap_expired(sess)

            if await run_in_threadpool(reap):
                state.notifier.notify()
        except Exception:  # the reaper must outlive a database outage
            log.exception("lease reaper failed; retrying")


ERRORS_BY_STATUS: dict[int, type[LaunchyardError]] = {404: NotFoundError, 405: InvalidInputError}


def _install_error_handlers(app: FastAPI) -> None:
    def payload(exc: LaunchyardError) -> JSONResponse:
        return JSONResponse(exc.to_payload(), status_code=exc.status_code)

    @app.exception_handler(LaunchyardError)
    async def on_known(_: Request, exc: LaunchyardError) -> JSONResponse:
        return payload(exc)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details: list[Any] = [
            {"loc": list(e.get("loc", [])), "msg": e.get("msg")} for e in exc.errors()
        ]
        message = "; ".join(
            f"{'.'.join(str(p) for p in d['loc'] if p != 'body')}: {d['msg']}" for d in details
        )
        return payload(InvalidInputError(message or "invalid request", fields={"detail": details}))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own 404/405s answer in the same shape as every other error.
        cls = ERRORS_BY_STATUS.get(exc.status_code, LaunchyardError)
        error = cls(f"{exc.detail} ({exc.status_code})")
        return JSONResponse(error.to_payload(), status_code=exc.status_code)

    @app.exception_handler(OperationalError)
    async def on_db_down(_: Request, exc: DBAPIError) -> JSONResponse:
        log.warning("database unavailable: %s", exc.orig)
        return payload(
            ServerUnavailableError(
                f"the database is unavailable right now; retry shortly ({type(exc.orig).__name__})"
            )
        )
