"""Targeted wake-ups: a long poll is woken by changes to what it follows, and only by those."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from launchyard.server import notify
from launchyard.server.notify import (
    Notifier,
    agent_topic,
    claim_topics,
    fits_topic,
    queue_topic,
    run_topic,
)
from launchyard.server.services import agents as agents_service

from .test_agents import claim, setup


def woken(
    change: Callable[[Notifier], None], topics: list[notify.Topic] | None, *, before: bool = False
) -> bool:
    """Whether a waiter on ``topics`` returns early when ``change`` happens (while it waits,
    or between reading the version and waiting, with ``before``)."""

    async def scenario() -> bool:
        n = Notifier()
        n.bind(asyncio.get_running_loop())
        since = n.version
        if before:
            change(n)
            await asyncio.sleep(0)  # let the loop run the threadsafe callback
        waiting = asyncio.create_task(n.wait(since, timeout=0.5, topics=topics))
        await asyncio.sleep(0)
        if not before:
            change(n)
        start = time.monotonic()
        await waiting
        return time.monotonic() - start < 0.4

    return asyncio.run(scenario())


A, B = queue_topic(1), queue_topic(2)


@pytest.mark.parametrize("before", [False, True])
def test_a_waiter_wakes_for_its_topics_only(before: bool) -> None:
    assert woken(lambda n: n.notify(A), [A, agent_topic(7)], before=before)
    assert woken(lambda n: n.notify(agent_topic(7)), [A, agent_topic(7)], before=before)
    assert not woken(lambda n: n.notify(B, agent_topic(8)), [A, agent_topic(7)], before=before)
    assert not woken(lambda n: n.notify(run_topic("r1")), [run_topic("r2")], before=before)


@pytest.mark.parametrize("before", [False, True])
def test_no_topics_means_everything(before: bool) -> None:
    assert woken(lambda n: n.notify(), [A], before=before)  # a change of everything
    assert woken(lambda n: n.notify(B), None, before=before)  # a waiter on everything


def test_a_waiter_far_behind_is_woken_at_once() -> None:
    def many(n: Notifier) -> None:
        for i in range(notify.RECENT_CHANGES + 5):
            n.notify(queue_topic(1000 + i))

    assert woken(many, [A], before=True)


def test_claim_topics() -> None:
    assert claim_topics(3, [1, 2]) == {agent_topic(3), queue_topic(1), queue_topic(2)}
    # Where the agent assigns GPUs, only runs that fit its free GPUs wake it.
    assert claim_topics(3, [], [7], free_gpus=1) == {
        agent_topic(3),
        fits_topic(7, 0),
        fits_topic(7, 1),
    }


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts claim attempts; with no fallback poll, every re-attempt is a wake-up."""
    monkeypatch.setattr(notify, "FALLBACK_POLL_S", 30.0)
    counted: list[int] = []
    real_claim = agents_service.claim

    def counting_claim(*args, **kwargs):  # type: ignore[no-untyped-def]
        counted.append(1)
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(agents_service, "claim", counting_claim)
    return counted


def test_a_waiting_claim_ignores_other_queues_and_wakes_for_its_own(
    sqlite_server, attempts: list[int]
) -> None:  # type: ignore[no-untyped-def]
    c = sqlite_server.client()
    agent_id = setup(c)  # serves queue "gpu"
    c.create_queue("default", {"name": "other", "config": "{}"})
    result: dict[str, object] = {}
    thread = threading.Thread(
        target=lambda: result.update(reply=claim(c, agent_id, 4, 4, wait_s=20))
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not attempts:  # the claim found nothing and waits
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for _ in range(3):
        c.submit("default", {"queue": "other", "command": ["true"]})
    c.request(  # another agent's capacity: not this claim's business either
        "POST",
        "/api/v1/entities/default/agents",
        json={"name": "a2", "hostname": "h", "queues": ["other"], "max_jobs": 1, "gpu_ids": []},
    )
    run_id = c.submit("default", {"queue": "gpu", "command": ["true"], "values": {"gpus": 1}})["id"]
    thread.join(10)
    assert [r["id"] for r in result["reply"]["runs"]] == [run_id]  # type: ignore[index]
    assert len(attempts) == 2  # the first look, then the submit to its own queue


def test_a_waiting_claim_ignores_runs_bigger_than_its_free_gpus(
    sqlite_server, attempts: list[int]
) -> None:  # type: ignore[no-untyped-def]
    c = sqlite_server.client()
    agent_id = setup(c)
    result: dict[str, object] = {}
    thread = threading.Thread(  # one GPU free
        target=lambda: result.update(reply=claim(c, agent_id, 1, 4, wait_s=20))
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not attempts:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for _ in range(3):  # can't be handed out before the agent's capacity changes
        c.submit("default", {"queue": "gpu", "command": ["true"], "values": {"gpus": 2}})
    run_id = c.submit("default", {"queue": "gpu", "command": ["true"], "values": {"gpus": 1}})["id"]
    thread.join(10)
    assert [r["id"] for r in result["reply"]["runs"]] == [run_id]  # type: ignore[index]
    assert len(attempts) == 2  # the first look, then the run that fits


def test_a_heartbeat_wakes_its_agents_claim(sqlite_server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(notify, "FALLBACK_POLL_S", 30.0)
    c = sqlite_server.client()
    agent_id = setup(c)
    run_id = c.submit("default", {"queue": "gpu", "command": ["true"], "values": {"gpus": 2}})["id"]
    result: dict[str, object] = {}
    thread = threading.Thread(  # no free GPUs: the run does not fit yet
        target=lambda: result.update(reply=claim(c, agent_id, 0, 4, wait_s=20))
    )
    start = time.monotonic()
    thread.start()
    time.sleep(0.2)  # the claim is waiting (a wake-up sooner would be answered just the same)
    c.request(
        "POST",
        f"/api/v1/agents/{agent_id}/heartbeat",
        json={"runs": [], "capacity": {"seq": 5, "free_gpus": 4, "free_slots": 4}},
    )
    thread.join(10)
    assert [r["id"] for r in result["reply"]["runs"]] == [run_id]  # type: ignore[index]
    assert time.monotonic() - start < 5


def test_a_log_follower_wakes_for_its_run(sqlite_server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(notify, "FALLBACK_POLL_S", 30.0)
    c = sqlite_server.client()
    agent_id = setup(c)
    run_id = c.submit("default", {"queue": "gpu", "command": ["true"], "values": {"gpus": 1}})["id"]
    token = claim(c, agent_id, 4, 4)["runs"][0]["lease_token"]
    result: dict[str, object] = {}

    def follow() -> None:
        result["page"] = c.request("GET", f"/api/v1/runs/{run_id}/logs", params={"wait": 20})

    thread = threading.Thread(target=follow)
    start = time.monotonic()
    thread.start()
    time.sleep(0.2)  # the follower is waiting (an earlier upload is read just the same)
    c.request(
        "POST",
        f"/api/v1/runs/{run_id}/logs",
        json={"lease_token": token, "start": 0, "next_offset": 6, "text": "hello\n"},
    )
    thread.join(10)
    assert result["page"]["text"] == "hello\n"  # type: ignore[index]
    assert time.monotonic() - start < 5


def test_cancelling_a_held_run_wakes_its_agents_claim(
    sqlite_server, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(notify, "FALLBACK_POLL_S", 30.0)
    c = sqlite_server.client()
    agent_id = setup(c)
    run_id = c.submit("default", {"queue": "gpu", "command": ["true"], "values": {"gpus": 1}})["id"]
    assert [r["id"] for r in claim(c, agent_id, 4, 4)["runs"]] == [run_id]
    result: dict[str, object] = {}
    thread = threading.Thread(
        target=lambda: result.update(reply=claim(c, agent_id, 3, 3, seq=2, wait_s=20))
    )
    start = time.monotonic()
    thread.start()
    time.sleep(0.2)  # the claim is waiting (a cancel sooner is answered just the same)
    c.cancel(run_id)
    thread.join(10)
    assert result["reply"]["cancel"] == [run_id]  # type: ignore[index]
    assert time.monotonic() - start < 5
