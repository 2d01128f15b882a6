"""A key of entity A can read, list, change, cancel or claim nothing of entity B — on every
endpoint. A new endpoint fails this test until it is listed here with what B-access gives."""

from __future__ import annotations

import re

import pytest

# Endpoints that hold no entity's data, or only the caller's own.
NOT_ENTITY_SCOPED = {
    ("GET", "/healthz"),
    ("GET", "/api/v1/whoami"),
    ("POST", "/api/v1/templates/parse"),
    ("GET", "/api/v1/entities"),  # lists only the caller's entities: checked below
}


@pytest.fixture
def world(sqlite_server):  # type: ignore[no-untyped-def]
    admin = sqlite_server.client()
    admin.create_entity("team-b")
    admin.create_queue("team-b", {"name": "bq", "config": "gpus: 0\n"})
    run = admin.submit("team-b", {"queue": "bq", "project": "bp", "command": ["python", "b.py"]})
    agent = admin.request(
        "POST",
        "/api/v1/entities/team-b/agents",
        json={"name": "b-agent", "hostname": "h", "queues": ["bq"], "max_jobs": 2, "gpu_ids": []},
    )
    claimed = admin.request(
        "POST",
        f"/api/v1/agents/{agent['id']}/claim",
        json={"capacity": {"seq": 1, "free_gpus": 0, "free_slots": 2}, "wait_s": 0},
    )["runs"][0]
    admin.request("PUT", f"/api/v1/runs/{run['id']}/files/out.txt", content=b"b's file")
    alice_key = admin.add_member("default", "alice", "admin")["api_key"]
    params = {
        "entity": "team-b",
        "name": "bq",
        "run_id": run["id"],
        "agent_id": str(agent["id"]),
        "project": "bp",
        "alias": "main",
        "path": "out.txt",
    }
    bodies = {
        "/api/v1/entities/{entity}/runs": {"queue": "bq", "command": ["true"]},
        "/api/v1/entities/{entity}/runs/batch": {"runs": [{"queue": "bq", "command": ["true"]}]},
        "/api/v1/entities/{entity}/queues": {"name": "mine", "config": "gpus: 0\n"},
        "/api/v1/entities/{entity}/queues/{name}": {"config": "gpus: 0\n"},
        "/api/v1/entities/{entity}/members": {"user": "alice", "role": "admin"},
        "/api/v1/entities/{entity}/agent-keys": {"queues": ["bq"]},
        "/api/v1/entities/{entity}/agents": {
            "name": "x",
            "hostname": "h",
            "queues": ["bq"],
            "max_jobs": 1,
        },
        "/api/v1/agents/{agent_id}/claim": {
            "capacity": {"seq": 9, "free_gpus": 0, "free_slots": 1},
            "wait_s": 0,
        },
        "/api/v1/agents/{agent_id}/heartbeat": {
            "capacity": {"seq": 9, "free_gpus": 0, "free_slots": 1}
        },
        "/api/v1/runs/{run_id}/state": {"lease_token": claimed["lease_token"], "state": "running"},
        "/api/v1/runs/{run_id}/logs": {
            "lease_token": claimed["lease_token"],
            "start": 0,
            "next_offset": 3,
            "text": "hey",
        },
        "/api/v1/entities/{entity}/projects/{project}/jobs/{name}/aliases/{alias}": {
            "version": "v0"
        },
        "/api/v1/entities": {"name": "team-c"},
    }
    return sqlite_server, alice_key, params, bodies, run["id"]


def test_no_endpoint_gives_entity_b_to_a_key_of_entity_a(world) -> None:  # type: ignore[no-untyped-def]
    server, alice_key, params, bodies, run_id = world
    alice = server.client(alice_key)
    checked = 0
    for template, operations in server.http.app.openapi()["paths"].items():
        if template.startswith("/ui"):
            continue  # the web UI has its own tenancy tests
        for method in sorted(m.upper() for m in operations):
            if (method, template) in NOT_ENTITY_SCOPED:
                continue
            path = re.sub(r"\{(\w+)\}", lambda m: params[m.group(1)], template)
            if "/jobs/" in path and "{name}" in template:
                path = path.replace("/jobs/bq", "/jobs/b")  # the job of `python b.py`
            response = server.http.request(
                method,
                path,
                json=bodies.get(template),
                headers={"Authorization": f"Bearer {alice_key}"},
            )
            checked += 1
            assert response.status_code in (403, 404, 409), (method, template, response.text)
            assert "b's file" not in response.text and "b.py" not in response.text
    assert checked >= 25
    assert [e["name"] for e in alice.request("GET", "/api/v1/entities")] == ["default"]
    # Nothing changed on B's side.
    admin = server.client()
    assert admin.get_run(run_id)["state"] == "claimed"
    assert [q["name"] for q in admin.list_queues("team-b")] == ["bq"]
