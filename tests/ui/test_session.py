"""Logging in to the web UI: the session cookie, redirects, and that no key shows no data."""

from __future__ import annotations

import stat
import time

import pytest
from sqlalchemy import delete
from tests.conftest import ServerHarness
from tests.ui.conftest import login, make_queue

from launchyard.server.tables import ApiKeyRow
from launchyard.server.ui import session

PAGES = [
    "/ui/queues",
    "/ui/e/default/queues/gpu",
    "/ui/projects",
    "/ui/e/default/projects/p/jobs/j",
    "/ui/agents",
    "/ui/runs/abc",
]
JSON_ENDPOINTS = [
    "/ui/api/e/default/queues/gpu/live",
    "/ui/api/runs/abc/live",
    "/ui/runs/abc/logs/stream",
    "/ui/runs/abc/logs.txt",
]


@pytest.mark.parametrize("path", PAGES)
def test_pages_redirect_to_the_login_form_without_a_session(
    sqlite_server: ServerHarness, path: str
) -> None:
    response = sqlite_server.http.get(path + "?x=1", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=" + path.replace("/", "%2F") + "%3Fx%3D1"


def test_endpoints_the_pages_call_refuse_without_a_session(sqlite_server: ServerHarness) -> None:
    make_queue(sqlite_server.client())
    for path in JSON_ENDPOINTS:
        response = sqlite_server.http.get(path)
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "unauthenticated"
    response = sqlite_server.http.post("/ui/api/templates/parse", json={"config": "a: 1"})
    assert response.status_code == 401
    # Writes through the forms are refused too, and change nothing.
    response = sqlite_server.http.post(
        "/ui/queues", data={"entity": "default", "name": "q2"}, follow_redirects=False
    )
    assert response.status_code == 303 and "/ui/login" in response.headers["location"]
    assert [q["name"] for q in sqlite_server.client().list_queues("default")] == ["gpu"]


def test_a_wrong_key_shows_no_data_and_sets_no_cookie(sqlite_server: ServerHarness) -> None:
    make_queue(sqlite_server.client())
    response = sqlite_server.http.post(
        "/ui/login", data={"api_key": "ly_wrong", "next": "/ui/queues"}, follow_redirects=False
    )
    assert response.status_code == 401
    assert "not valid on this server" in response.text
    assert "ly_wrong" not in response.text  # the key is never echoed
    assert "set-cookie" not in response.headers
    assert sqlite_server.http.get("/ui/queues", follow_redirects=False).status_code == 303
    empty = sqlite_server.http.post("/ui/login", data={"api_key": " "}, follow_redirects=False)
    assert empty.status_code == 401 and "Enter an API key" in empty.text


def test_login_sets_an_http_only_lax_cookie_that_is_secure_only_over_https(
    sqlite_server: ServerHarness,
) -> None:
    key = sqlite_server.admin_key
    plain = sqlite_server.http.post(
        "/ui/login", data={"api_key": key, "next": "/ui/agents"}, follow_redirects=False
    )
    assert plain.status_code == 303 and plain.headers["location"] == "/ui/agents"
    cookie = plain.headers["set-cookie"]
    assert cookie.startswith(session.COOKIE_NAME + "=v1.")
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower() and "Path=/" in cookie
    assert "Secure" not in cookie and key not in cookie
    secure = sqlite_server.http.post(
        "https://testserver/ui/login", data={"api_key": key}, follow_redirects=False
    )
    assert "Secure" in secure.headers["set-cookie"]
    page = sqlite_server.http.get("/ui/agents")
    assert page.status_code == 200 and "admin" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_logout_ends_the_session(sqlite_server: ServerHarness) -> None:
    http = login(sqlite_server)
    response = http.post("/ui/logout", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/ui/login"
    assert 'launchyard_session=""' in response.headers["set-cookie"]
    assert http.get("/ui/queues", follow_redirects=False).status_code == 303


def test_only_local_paths_are_followed_after_login(sqlite_server: ServerHarness) -> None:
    key = sqlite_server.admin_key
    for target in ("https://evil.example/", "//evil.example/ui/", "/api/v1/whoami", "/ui\\x"):
        response = sqlite_server.http.post(
            "/ui/login", data={"api_key": key, "next": target}, follow_redirects=False
        )
        assert response.headers["location"] == "/ui/", target


def test_a_forged_expired_or_revoked_session_is_refused(sqlite_server: ServerHarness) -> None:
    http = login(sqlite_server)
    token = http.cookies[session.COOKIE_NAME]
    secret = session.load_secret(sqlite_server.data_dir)
    user_id, key_id = session.read_token(secret, token, time.time()) or (0, 0)
    forged = [
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),  # bad signature
        session.make_token(b"another server's secret" * 2, user_id, key_id, int(time.time())),
        session.make_token(secret, user_id, key_id, int(time.time()) - session.SESSION_TTL_S - 5),
        "v1.1.1",
    ]
    for value in forged:
        http.cookies.clear()  # one cookie of that name, not the server's and ours
        http.cookies.set(session.COOKIE_NAME, value)
        assert http.get("/ui/queues", follow_redirects=False).status_code == 303, value
    http.cookies.clear()
    http.cookies.set(session.COOKIE_NAME, token)
    assert http.get("/ui/queues").status_code == 200
    # Deleting the key ends the sessions made with it (once the short identity cache lapses).
    state = http.app.state.launchyard  # type: ignore[attr-defined]
    with state.db.session() as sess:
        sess.execute(delete(ApiKeyRow).where(ApiKeyRow.id == key_id))
    state.auth_cache.clear()
    assert http.get("/ui/queues", follow_redirects=False).status_code == 303


def test_the_signing_secret_is_private_and_kept_across_restarts(
    sqlite_server: ServerHarness,
) -> None:
    login(sqlite_server)
    path = sqlite_server.data_dir / session.SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = session.load_secret(sqlite_server.data_dir)
    assert len(first) == 32 and session.load_secret(sqlite_server.data_dir) == first


def test_cross_site_writes_with_the_cookie_are_refused(sqlite_server: ServerHarness) -> None:
    http = login(sqlite_server)
    make_queue(sqlite_server.client())
    run = sqlite_server.client().submit("default", {"queue": "gpu", "command": ["true"]})
    response = http.post(f"/ui/runs/{run['id']}/cancel", headers={"Origin": "https://evil.example"})
    assert response.status_code == 403 and "only from its own pages" in response.text
    assert sqlite_server.client().get_run(run["id"])["state"] == "queued"
    same = http.post(f"/ui/runs/{run['id']}/cancel", headers={"Origin": "http://testserver"})
    assert same.status_code == 200
    assert sqlite_server.client().get_run(run["id"])["state"] == "cancelled"


def test_the_pages_endpoints_also_take_a_bearer_key(sqlite_server: ServerHarness) -> None:
    make_queue(sqlite_server.client())
    headers = {"Authorization": f"Bearer {sqlite_server.admin_key}"}
    response = sqlite_server.http.get("/ui/api/e/default/queues/gpu/live", headers=headers)
    assert response.status_code == 200 and "Nothing is waiting" in response.json()["html"]
    bad = sqlite_server.http.get(
        "/ui/api/e/default/queues/gpu/live", headers={"Authorization": "Bearer ly_nope"}
    )
    assert bad.status_code == 401


def test_an_agent_key_cannot_open_the_web_ui(sqlite_server: ServerHarness) -> None:
    c = sqlite_server.client()
    make_queue(c)
    agent_key = c.request("POST", "/api/v1/entities/default/agent-keys", json={"queues": ["gpu"]})[
        "api_key"
    ]
    response = sqlite_server.http.post(
        "/ui/login", data={"api_key": agent_key}, follow_redirects=False
    )
    assert response.status_code == 401 and "this is an agent key" in response.text
    assert "set-cookie" not in response.headers
    bearer = {"Authorization": f"Bearer {agent_key}"}
    live = sqlite_server.http.get("/ui/api/e/default/queues/gpu/live", headers=bearer)
    assert live.status_code == 403
