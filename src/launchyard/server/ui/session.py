"""The web UI's login: an API key in, a signed session cookie out.

The cookie holds ``v1.<user id>.<key id>.<issued at>.<signature>``: an HMAC-SHA256
over the rest with a per-server secret (the ``ui-secret`` file in the data dir,
mode 0600, made on first use). It never holds the key itself. Each request
checks the signature and age, then re-reads the key's row, so deleting a key
ends every session made with it (after at most ``AUTH_CACHE_TTL_S``).

The cookie is http-only and SameSite=Lax (a cross-site form cannot post with
it); Secure when the request came over https. Writes made with the cookie
also refuse a foreign ``Origin`` header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from launchyard.errors import AuthError, PermissionDeniedError
from launchyard.server.deps import AUTH_CACHE_TTL_S, AppState, app_state, principal
from launchyard.server.services.auth import Principal, Role, authenticate, hash_key
from launchyard.server.tables import ApiKeyRow, MembershipRow, UserRow

COOKIE_NAME = "launchyard_session"
SESSION_TTL_S = 7 * 24 * 3600
"""A session lasts a week; logging in again with the key renews it."""
SECRET_FILE = "ui-secret"


class LoginRequired(Exception):
    """Raised by page handlers: answered with a redirect to the login page."""


class AgentKeyLoginError(AuthError):
    """An agent key (scoped to queues) cannot open the web UI."""


def server_secret(state: AppState, request: Request) -> bytes:
    """The HMAC key, read once per app from ``data_dir/ui-secret`` (created 0600 if absent)."""
    cached: bytes | None = getattr(request.app.state, "launchyard_ui_secret", None)
    if cached is None:
        cached = load_secret(state.settings.data_dir)
        request.app.state.launchyard_ui_secret = cached
    return cached


def load_secret(data_dir: Path) -> bytes:
    path = data_dir / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    secret = secrets.token_bytes(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret.hex() + "\n")
    return secret


def _sign(secret: bytes, payload: str) -> str:
    digest = hmac.new(secret, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def make_token(secret: bytes, user_id: int, key_id: int, issued_at: int) -> str:
    payload = f"v1.{user_id}.{key_id}.{issued_at}"
    return f"{payload}.{_sign(secret, payload)}"


def read_token(secret: bytes, token: str, now_s: float) -> tuple[int, int] | None:
    """(user id, key id) of a valid, unexpired token; None for anything else."""
    payload, _, signature = token.rpartition(".")
    parts = payload.split(".")
    if len(parts) != 4 or parts[0] != "v1" or not all(p.isdigit() for p in parts[1:]):
        return None
    if not hmac.compare_digest(signature, _sign(secret, payload)):
        return None
    user_id, key_id, issued_at = (int(p) for p in parts[1:])
    if not 0 <= now_s - issued_at <= SESSION_TTL_S:
        return None
    return user_id, key_id


def principal_for_key_id(sess: Session, user_id: int, key_id: int) -> Principal | None:
    """The identity behind a session, or None once its key is gone.

    Mirrors ``services.auth.authenticate``, which looks a key up by its value;
    a session knows only the key's row id.
    """
    found = sess.execute(
        select(UserRow, ApiKeyRow.queue_scope)
        .join(ApiKeyRow, ApiKeyRow.user_id == UserRow.id)
        .where(ApiKeyRow.id == key_id, UserRow.id == user_id)
    ).one_or_none()
    if found is None or found[1] is not None:  # gone, or an agent key
        return None
    user = found[0]
    memberships = sess.execute(select(MembershipRow).where(MembershipRow.user_id == user.id))
    return Principal(
        user_id=user.id,
        name=user.name,
        is_superuser=user.is_superuser,
        roles={m.entity_id: Role(m.role) for m in memberships.scalars()},
    )


def login(state: AppState, request: Request, response: Response, api_key: str) -> Principal:
    """Check the key (AuthError if wrong) and set the session cookie on ``response``."""
    with state.db.session() as sess:
        who = authenticate(sess, api_key.strip())
        if who.queue_scope is not None:
            raise AgentKeyLoginError(
                "this is an agent key: it only runs agents for its queues and cannot open "
                "the web UI; log in with a user's key"
            )
        key_id = sess.execute(
            select(ApiKeyRow.id).where(ApiKeyRow.key_hash == hash_key(api_key.strip()))
        ).scalar_one()
    token = make_token(server_secret(state, request), who.user_id, key_id, int(time.time()))
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=SESSION_TTL_S,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="lax",
    )
    return who


def logout(response: Response) -> None:
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="lax")


def cookie_principal(state: AppState, request: Request) -> Principal | None:
    token = request.cookies.get(COOKIE_NAME)
    if not token:
        return None
    now = time.monotonic()
    cache_key = "ui:" + token
    cached = state.auth_cache.get(cache_key)
    if cached is not None and cached[0] > now:
        return cached[1]
    ids = read_token(server_secret(state, request), token, time.time())
    if ids is None:
        return None
    with state.db.session() as sess:
        who = principal_for_key_id(sess, *ids)
    if who is not None:
        if len(state.auth_cache) > 10_000:
            state.auth_cache.clear()
        state.auth_cache[cache_key] = (now + AUTH_CACHE_TTL_S, who)
    return who


def check_origin(request: Request) -> None:
    """Refuse a cookie-authenticated write whose Origin is another site."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise PermissionDeniedError(
            f"refused a request from {origin}: the web UI accepts changes only from its own pages"
        )


def page_principal(state: AppState, request: Request) -> Principal:
    """For HTML pages: the logged-in user, or LoginRequired (a redirect to the login page)."""
    who = cookie_principal(state, request)
    if who is None:
        raise LoginRequired()
    request.state.ui_user = who  # the error page still shows who is logged in
    if request.method not in ("GET", "HEAD"):
        check_origin(request)
    return who


def ui_principal(request: Request, state: Annotated[AppState, Depends(app_state)]) -> Principal:
    """For the pages' JSON and SSE endpoints: the session cookie, or a Bearer key as in /api/v1."""
    if request.headers.get("authorization"):
        return principal(request, state)
    who = cookie_principal(state, request)
    if who is None:
        raise AuthError("not logged in: open /ui/login, or pass `Authorization: Bearer KEY`")
    if request.method not in ("GET", "HEAD"):
        check_origin(request)
    return who


UICaller = Annotated[Principal, Depends(ui_principal)]
