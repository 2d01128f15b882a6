"""The agent protocol against the real app, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time

import pytest

from launchyard.errors import InvalidInputError, StaleLeaseError


def setup(c, *, gpus=(0, 1, 2, 3), slots=4):  # type: ignore[no-untyped-def]
    c.create_queue(
        "default",
        {
            "name": "gpu",
            "config": "gpus: '{{gpus}}'\n",
            "variables": {"gpus": {"schema": {"type": "integer", "default": 1, "maximum": 8}}},
        },
    )
    agent = c.request(
        "POST",
        "/api/v1/entities/default/agents",
        json={
            "name": "a1",
            "hostname": "h",
            "queues": ["gpu"],
            "max_jobs": slots,
            "gpu_ids": list(gpus),
        },
    )
    return agent["id"]


def claim(c, agent_id, free_gpus, free_slots, seq=1, wait_s=0.0):  # type: ignore[no-untyped-def]
    return c.request(
        "POST",
        f"/api/v1/agents/{agent_id}/claim",
        json={
            "capacity": {"seq": seq, "free_gpus": free_gpus, "free_slots": free_slots},
            "wait_s": wait_s,
        },
    )


def submit(c, gpus: int) -> str:  # type: ignore[no-untyped-def]
    return c.submit("default", {"queue": "gpu", "command": ["true"], "values": {"gpus": gpus}})[
        "id"
    ]


def report(c, run_id, token, state, **kw):  # type: ignore[no-untyped-def]
    return c.request(
        "POST", f"/api/v1/runs/{run_id}/state", json={"lease_token": token, "state": state, **kw}
    )


def test_claim_hands_out_what_fits_in_one_call(server) -> None:  # type: ignore[no-untyped-def]
    c = server.client()
    agent_id = setup(c)
    ids = [submit(c, 2), submit(c, 2), submit(c, 2), submit(c, 1)]
    got = claim(c, agent_id, free_gpus=4, free_slots=4)
    # FIFO: two 2-GPU runs fill the GPUs; the 1-GPU run cannot pass (no GPUs left).
    assert [r["id"] for r in got["runs"]] == ids[:2]
    assert all(r["lease_token"] and r["attempt"] == 1 for r in got["runs"])
    assert c.get_run(ids[0])["state"] == "claimed"
    waiting = c.get_run(ids[2])
    assert waiting["position"] == 1 and waiting["state"] == "queued"


def test_long_poll_answers_when_a_run_is_submitted(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    c = sqlite_server.client()
    agent_id = setup(c)
    result: dict[str, object] = {}

    def waiter() -> None:
        start = time.monotonic()
        result["reply"] = claim(c, agent_id, 4, 4, wait_s=10)
        result["elapsed"] = time.monotonic() - start

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.3)
    run_id = submit(c, 1)
    thread.join(10)
    assert [r["id"] for r in result["reply"]["runs"]] == [run_id]  # type: ignore[index]
    assert result["elapsed"] < 2  # answered on submit, not at the end of the wait


def test_stale_agents_are_ignored_and_expired_leases_requeue(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(None, lease_ttl_s=0.5, reaper_interval_s=0.1)
    c = server.client()
    agent_id = setup(c)
    run_id = submit(c, 1)
    token = claim(c, agent_id, 4, 4)["runs"][0]["lease_token"]
    report(c, run_id, token, "running")
    deadline = time.monotonic() + 5
    while c.get_run(run_id)["state"] != "queued":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    run = c.get_run(run_id)
    assert "stopped renewing its lease" in run["transitions"][-1]["reason"]
    with pytest.raises(StaleLeaseError):
        report(c, run_id, token, "finished", exit_code=0)
    beat = c.request(
        "POST",
        f"/api/v1/agents/{agent_id}/heartbeat",
        json={
            "runs": [{"id": run_id, "lease_token": token}],
            "capacity": {"seq": 5, "free_gpus": 4, "free_slots": 4},
        },
    )
    assert beat["lost"] == [run_id]
    again = claim(c, agent_id, 4, 4, seq=6)["runs"][0]
    assert again["id"] == run_id and again["attempt"] == 2


def test_heartbeats_keep_leases_alive(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(None, lease_ttl_s=0.6, reaper_interval_s=0.1)
    c = server.client()
    agent_id = setup(c)
    run_id = submit(c, 1)
    token = claim(c, agent_id, 4, 4)["runs"][0]["lease_token"]
    for seq in range(10, 20):
        beat = c.request(
            "POST",
            f"/api/v1/agents/{agent_id}/heartbeat",
            json={
                "runs": [{"id": run_id, "lease_token": token}],
                "capacity": {"seq": seq, "free_gpus": 3, "free_slots": 3},
            },
        )
        assert beat["lost"] == []
        time.sleep(0.15)
    report(c, run_id, token, "finished", exit_code=0, reason="exit code 0")
    run = c.get_run(run_id)
    assert run["state"] == "finished" and run["exit_code"] == 0


def test_full_lifecycle_with_logs_and_transitions(server) -> None:  # type: ignore[no-untyped-def]
    c = server.client()
    agent_id = setup(c)
    run_id = submit(c, 2)
    token = claim(c, agent_id, 4, 4)["runs"][0]["lease_token"]
    report(c, run_id, token, "starting", reason="launching", phase="launch")
    report(c, run_id, token, "running", gpu_ids=[2, 3], phase="run")
    for start, text in [(0, "héllo\n"), (7, "world\n"), (0, "héllo\n")]:  # the last is a retry
        c.request(
            "POST",
            f"/api/v1/runs/{run_id}/logs",
            json={
                "lease_token": token,
                "start": start,
                "next_offset": start + len(text.encode()),
                "text": text,
            },
        )
    report(c, run_id, token, "failed", exit_code=3, reason="exit code 3", phase="run")
    run = c.get_run(run_id)
    assert [t["state"] for t in run["transitions"]] == [
        "queued",
        "claimed",
        "starting",
        "running",
        "failed",
    ]
    assert run["exit_code"] == 3 and run["gpu_ids"] == [2, 3] and run["reason"] == "exit code 3"
    logs = c.logs(run_id)
    assert logs["text"] == "héllo\nworld\n" and logs["done"]
    assert c.logs(run_id, offset=6)["text"] == "world\n"
    with pytest.raises(StaleLeaseError):
        report(c, run_id, token, "running")


def test_invalid_transition_is_refused(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    c = sqlite_server.client()
    agent_id = setup(c)
    run_id = submit(c, 0)
    token = claim(c, agent_id, 4, 4)["runs"][0]["lease_token"]
    with pytest.raises(InvalidInputError, match="cannot go from claimed to queued"):
        report(c, run_id, token, "queued")


def test_cancel_reaches_the_agent_through_its_claim(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    c = sqlite_server.client()
    agent_id = setup(c)
    run_id = submit(c, 1)
    token = claim(c, agent_id, 4, 4)["runs"][0]["lease_token"]
    assert c.cancel(run_id)["state"] == "claimed"
    assert claim(c, agent_id, 3, 3, seq=2)["cancel"] == [run_id]
    report(c, run_id, token, "cancelled", reason="cancelled")
    assert c.get_run(run_id)["state"] == "cancelled"


def test_preempted_runs_are_requeued_with_the_same_id(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    c = sqlite_server.client()
    agent_id = setup(c)
    run_id = submit(c, 1)
    token = claim(c, agent_id, 4, 4)["runs"][0]["lease_token"]
    report(c, run_id, token, "preempted", reason="node drained")
    run = c.get_run(run_id)
    assert run["state"] == "queued"
    assert [t["state"] for t in run["transitions"]][-2:] == ["preempted", "queued"]


def test_drained_agents_get_no_new_runs(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    c = sqlite_server.client()
    agent_id = setup(c)
    submit(c, 1)
    c.drain_agent(agent_id)
    reply = claim(c, agent_id, 4, 4)
    assert reply["runs"] == [] and reply["draining"] is True
    assert c.list_agents("default")[0]["state"] == "draining"


def test_runs_behind_a_reservation_say_so(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(None, reserve_after_s=0)
    c = server.client()
    agent_id = setup(c)
    first = submit(c, 3)
    assert [r["id"] for r in claim(c, agent_id, 4, 4)["runs"]] == [first]
    big, small = submit(c, 4), submit(c, 1)
    assert claim(c, agent_id, 1, 3, seq=2)["runs"] == []  # the 4-GPU run holds the reservation
    assert c.get_run(big)["waiting_reason"] == "needs 4 GPUs, 1 free"
    assert c.get_run(small)["waiting_reason"].startswith(f"reserved for a bigger run: {big}")


def test_time_limits_let_short_runs_pass_a_reservation(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(None, reserve_after_s=0)
    c = server.client()
    agent_id = setup(c)
    first = c.submit(
        "default",
        {"queue": "gpu", "command": ["true"], "values": {"gpus": 3}, "time_limit": "1h"},
    )
    assert first["time_limit_s"] == 3600
    [claimed] = claim(c, agent_id, 4, 4)["runs"]
    assert claimed["time_limit_s"] == 3600
    assert c.get_run(first["id"])["deadline_at"] is not None
    big = submit(c, 4)
    long_run = c.submit(
        "default",
        {"queue": "gpu", "command": ["true"], "values": {"gpus": 1}, "time_limit": "2h"},
    )["id"]
    short = c.submit(
        "default",
        {"queue": "gpu", "command": ["true"], "values": {"gpus": 1}, "time_limit": "10m"},
    )["id"]
    # big can start within the hour (first's limit): only the 10-minute run may pass it.
    assert [r["id"] for r in claim(c, agent_id, 1, 3, seq=2)["runs"]] == [short]
    assert c.get_run(big)["state"] == c.get_run(long_run)["state"] == "queued"
    report(c, first["id"], claimed["lease_token"], "running")
    report(c, first["id"], claimed["lease_token"], "finished", exit_code=0)
    assert c.get_run(first["id"])["deadline_at"] is None


@pytest.mark.parametrize("limit", ["soon", -5, 0, "31d", "1h:30"])
def test_bad_time_limits_are_refused_with_the_rule(sqlite_server, limit) -> None:  # type: ignore[no-untyped-def]
    c = sqlite_server.client()
    setup(c)
    with pytest.raises(InvalidInputError, match="time_limit") as err:
        c.submit("default", {"queue": "gpu", "command": ["true"], "time_limit": limit})
    assert "90s, 5m" in str(err.value) or "at most 30 days" in str(err.value)
    assert c.list_runs("default")["runs"] == []


def test_output_tokens_write_only_their_own_run(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    from launchyard.errors import AuthError

    c = sqlite_server.client()
    agent_id = setup(c)
    first, second = submit(c, 1), submit(c, 1)
    claimed = {r["id"]: r["output_token"] for r in claim(c, agent_id, 4, 4)["runs"]}
    with_token = sqlite_server.client(claimed[first])
    with_token.request("PUT", f"/api/v1/runs/{first}/files/a/b.txt", content=b"hello")
    with pytest.raises(AuthError, match="cannot write to run"):
        with_token.request("PUT", f"/api/v1/runs/{second}/files/x.txt", content=b"no")
    with pytest.raises(InvalidInputError, match="not allowed"):
        with_token.request("PUT", f"/api/v1/runs/{first}/files/a/%2E%2E/x.txt", content=b"no")
    assert [f["path"] for f in c.list_files(first)] == ["a/b.txt"]
    assert c.download(first, "a/b.txt") == b"hello"
    assert c.list_files(second) == []


def test_prometheus_metrics(server) -> None:  # type: ignore[no-untyped-def]
    from launchyard.errors import PermissionDeniedError

    c = server.client()
    agent_id = setup(c)
    run_id = submit(c, 2)
    submit(c, 1)
    token = claim(c, agent_id, 2, 4)["runs"][0]["lease_token"]
    report(c, run_id, token, "running")
    c.request(
        "POST",
        f"/api/v1/agents/{agent_id}/heartbeat",
        json={
            "runs": [{"id": run_id, "lease_token": token}],
            "capacity": {"seq": 9, "free_gpus": 2, "free_slots": 3},
        },
    )
    text = server.http.get("/metrics", headers={"Authorization": f"Bearer {server.admin_key}"}).text
    assert 'launchyard_queue_runs{entity="default",queue="gpu",state="running"} 1.0' in text
    assert 'launchyard_queue_runs{entity="default",queue="gpu",state="queued"} 1.0' in text
    assert "launchyard_agents_alive 1.0" in text
    assert 'launchyard_agent_gpus_busy{agent="a1"} 2.0' in text
    assert "launchyard_submit_to_running_seconds_count" in text
    member = server.client(c.add_member("default", "m", "member")["api_key"])
    with pytest.raises(PermissionDeniedError):
        member.request("GET", "/metrics")


def test_preempted_runs_are_requeued_up_to_the_limit(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    from launchyard.models.runs import MAX_ATTEMPTS

    c = sqlite_server.client()
    agent_id = setup(c)
    run_id = submit(c, 1)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        got = claim(c, agent_id, 4, 4, seq=attempt)["runs"][0]
        assert got["attempt"] == attempt
        report(c, run_id, got["lease_token"], "preempted", reason="evicted")
    run = c.get_run(run_id)
    assert run["state"] == "failed" and "preempted 5 times" in run["reason"]
    assert [t["attempt"] for t in run["transitions"] if t["state"] == "preempted"] == [
        1,
        2,
        3,
        4,
        5,
    ]
