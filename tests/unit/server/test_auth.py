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


def test_agent_keys_only_run_agents_for_their_queues(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    admin = sqlite_server.client()
    for name in ("a", "b"):
        admin.create_queue("default", {"name": name, "config": "gpus: 0\n"})
    created = admin.request("POST", "/api/v1/entities/default/agent-keys", json={"queues": ["a"]})
    agent = sqlite_server.client(created["api_key"])
    body = {"name": "k8s", "hostname": "h", "max_jobs": 1, "gpu_ids": []}
    registered = agent.request(
        "POST", "/api/v1/entities/default/agents", json={**body, "queues": ["a"]}
    )
    with pytest.raises(PermissionDeniedError, match="may not serve queue"):
        agent.request("POST", "/api/v1/entities/default/agents", json={**body, "queues": ["b"]})
    claim = {"capacity": {"seq": 1, "free_gpus": 0, "free_slots": 1}, "wait_s": 0}
    agent.request("POST", f"/api/v1/agents/{registered['id']}/claim", json=claim)
    for call in (
        lambda: agent.submit("default", {"queue": "a", "command": ["true"]}),
        lambda: agent.list_queues("default"),
        lambda: agent.list_runs("default"),
        lambda: agent.add_member("default", "x", "admin"),
    ):
        with pytest.raises(PermissionDeniedError, match="agent key"):
            call()
