"""FastAPI dependencies: the app's state, the database session, the caller's identity."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from launchyard.config import ServerSettings
from launchyard.server.db import Database
from launchyard.server.notify import Notifier
from launchyard.server.services.auth import Principal, authenticate
from launchyard.server.services.runs import KnownRows
from launchyard.server.storage import FileStore

AUTH_CACHE_TTL_S = 5.0
"""How long a verified key's identity is reused: a revoked key or a changed role
takes at most this long to apply, and hot paths (claims, submissions) skip a
database round trip per request."""


@dataclass
class AppState:
    settings: ServerSettings
    db: Database
    notifier: Notifier
    files: FileStore
    metrics: CollectorRegistry
    auth_cache: dict[str, tuple[float, Principal]] = field(default_factory=dict)
    known: KnownRows = field(default_factory=KnownRows)


# The dependencies are ``async`` where they do no I/O: FastAPI runs a plain ``def``
# dependency in its thread pool, a hop per dependency per request that cost more CPU than
# what they do.


async def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.launchyard
    return state


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _cached_principal(state: AppState, key: str | None) -> Principal | None:
    cached = state.auth_cache.get(key) if key else None
    return cached[1] if cached is not None and cached[0] > time.monotonic() else None


def principal(request: Request, state: AppState) -> Principal:
    """The caller's identity, from the cache or the database (blocking: not on the loop)."""
    key = bearer_token(request)
    now = time.monotonic()
    cached = _cached_principal(state, key)
    if cached is not None:
        return cached
    with state.db.session() as sess:
        who = authenticate(sess, key)
    if len(state.auth_cache) > 10_000:
        state.auth_cache.clear()
    state.auth_cache[key or ""] = (now + AUTH_CACHE_TTL_S, who)
    return who


async def caller(request: Request, state: Annotated[AppState, Depends(app_state)]) -> Principal:
    """A cached identity is answered on the event loop; a lookup goes to the thread pool."""
    cached = _cached_principal(state, bearer_token(request))
    if cached is not None:
        return cached
    return await run_in_threadpool(principal, request, state)


State = Annotated[AppState, Depends(app_state)]
Caller = Annotated[Principal, Depends(caller)]
