"""State reports that carry the agent's capacity: freed GPUs are claimable without a heartbeat."""

from __future__ import annotations

import threading
import time

from tests.unit.server.test_agents import claim, report, setup, submit

from launchyard.server import notify


def test_an_end_report_frees_capacity_like_a_heartbeat(server) -> None:  # type: ignore[no-untyped-def]
    c = server.client()
    agent_id = setup(c, gpus=(0, 1), slots=1)
    first, second = submit(c, 2), submit(c, 2)
    held = claim(c, agent_id, free_gpus=2, free_slots=1)["runs"]
    assert [r["id"] for r in held] == [first]
    token = held[0]["lease_token"]
    report(c, first, token, "running", handle={"backend": "local"}, gpu_ids=[0, 1])
    capacity = {"seq": 2, "free_gpus": 2, "free_slots": 1, "gpu_holders": {}}
    report(c, first, token, "finished", exit_code=0, capacity=capacity)
    (shown,) = c.request("GET", "/api/v1/entities/default/agents")
    assert (shown["free_gpus"], shown["free_slots"]) == (2, 1)
    # A claim that sends no newer capacity (an older seq) gets the next run all the same.
    assert [r["id"] for r in claim(c, agent_id, 0, 0, seq=1)["runs"]] == [second]


def test_an_end_report_wakes_the_agents_waiting_claim(sqlite_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(notify, "FALLBACK_POLL_S", 30.0)  # only a wake-up answers in time
    c = sqlite_server.client()
    agent_id = setup(c, gpus=(0,), slots=1)
    first, second = submit(c, 1), submit(c, 1)
    token = claim(c, agent_id, free_gpus=1, free_slots=1)["runs"][0]["lease_token"]
    answer: dict[str, object] = {}
    waiting = threading.Thread(
        target=lambda: answer.update(claim(c, agent_id, 0, 0, seq=2, wait_s=10))
    )
    waiting.start()
    time.sleep(0.2)  # the claim is waiting (a wake-up sooner would be answered just the same)
    capacity = {"seq": 3, "free_gpus": 1, "free_slots": 1, "gpu_holders": {}}
    reported = time.monotonic()
    report(c, first, token, "failed", exit_code=1, capacity=capacity)
    waiting.join(timeout=10)
    assert not waiting.is_alive() and time.monotonic() - reported < 5
    assert [r["id"] for r in answer["runs"]] == [second]  # type: ignore[attr-defined]
