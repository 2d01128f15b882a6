"""FastAPI dependencies: the app's state, the database session, the caller's identity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from launchyard.config import ServerSettings
from launchyard.server.db import Database
from launchyard.server.notify import Notifier
from launchyard.server.services.auth import Principal, authenticate


@dataclass
class AppState:
    settings: ServerSettings
    db: Database
    notifier: Notifier


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.launchyard
    return state


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def principal(request: Request, state: Annotated[AppState, Depends(app_state)]) -> Principal:
    with state.db.session() as sess:
        return authenticate(sess, _bearer(request))


State = Annotated[AppState, Depends(app_state)]
Caller = Annotated[Principal, Depends(principal)]
