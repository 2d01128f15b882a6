"""API keys: required everywhere but /healthz, stored hashed, admin bootstrap."""

from __future__ import annotations

import stat

import pytest
from sqlalchemy import create_engine, text

from launchyard.errors import AuthError, PermissionDeniedError


def test_health_needs_no_key(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    assert sqlite_server.client(key=None).health() == {"status": "ok"}


def test_missing_and_wrong_keys_are_refused(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AuthError, match="no API key"):
        sqlite_server.client(key=None).list_queues("default")
    with pytest.raises(AuthError, match="is not valid"):
        sqlite_server.client(key="ly_wrong").list_queues("default")


def test_bootstrap_writes_a_private_admin_key_stored_only_hashed(server) -> None:  # type: ignore[no-untyped-def]
    path = server.data_dir / "admin-api-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text().strip()
    assert server.client().whoami() == {
        "user": "admin",
        "is_superuser": True,
        "entities": {"default": "admin"},
    }
    engine = create_engine(server.http.app.state.launchyard.db.url)
    with engine.connect() as conn:
        stored = [r[0] for r in conn.execute(text("SELECT key_hash FROM api_keys"))]
    engine.dispose()
    assert key not in stored and len(stored) == 1 and len(stored[0]) == 64


def test_entities_are_isolated(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    admin = sqlite_server.client()
    admin.create_entity("team-b")
    admin.create_queue("team-b", {"name": "secret", "config": "gpus: 0\n"})
    run = admin.submit("team-b", {"queue": "secret", "command": ["true"]})
    alice = sqlite_server.client(admin.add_member("default", "alice", "admin")["api_key"])
    with pytest.raises(PermissionDeniedError, match="not a member of entity 'team-b'"):
        alice.list_queues("team-b")
    with pytest.raises(Exception, match="does not exist"):
        alice.get_run(run["id"])
    with pytest.raises(PermissionDeniedError):
        alice.create_entity("team-c")
