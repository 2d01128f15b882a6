"""The agent's loop against an in-memory server, with the real local backend (real processes).

``FakeServer`` speaks the agent protocol the way ``AgentClient`` does against the real
server (transitions checked with ``AGENT_TRANSITIONS``, leases, capacity by sequence
number) and records every request, so a test can count what one run costs.
Waits poll up to a deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from launchyard.agent.loop import Agent
from launchyard.config import AgentSettings
from launchyard.errors import StaleLeaseError
from launchyard.models.runs import AGENT_TRANSITIONS, RunState


class FakeServer:
    host = "http://fake-server"

    def __init__(self, lease_ttl_s: float = 30.0) -> None:
        self.lease_ttl_s = lease_ttl_s
        self.queued: list[str] = []
        self.runs: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.capacity: dict[str, Any] = {"seq": -1, "free_slots": 0, "free_gpus": 0}
        self._changed: asyncio.Event | None = None

    def submit(self, command: list[str], *, time_limit_s: float | None = None) -> str:
        run_id = secrets.token_hex(5)
        self.runs[run_id] = {
            "state": RunState.QUEUED,
            "command": command,
            "time_limit_s": time_limit_s,
            "lease_token": None,
            "attempt": 0,
            "reports": [],
        }
        self.queued.append(run_id)
        self._notify()
        return run_id

    def reports(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.runs[run_id]["reports"])

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def _take_capacity(self, capacity: dict[str, Any]) -> None:
        if capacity["seq"] >= self.capacity["seq"]:
            self.capacity = dict(capacity)

    # -- what AgentClient offers -----------------------------------------------------

    async def register(self, entity: str, body: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(("register", None))
        queues = [{"id": 1, "name": q, "resource": "local"} for q in body["queues"]]
        return {"id": 1, "name": body["name"], "lease_ttl_s": self.lease_ttl_s, "queues": queues}

    async def claim(self, agent_id: int, capacity: dict[str, Any], wait_s: float) -> dict[str, Any]:
        self.requests.append(("claim", None))
        self._take_capacity(capacity)
        deadline = time.monotonic() + wait_s
        while True:
            self._changed = asyncio.Event()
            handed = []
            while self.queued and self.capacity["free_slots"] > 0:
                handed.append(self._hand_out(self.queued.pop(0)))
                self.capacity["free_slots"] -= 1
            remaining = deadline - time.monotonic()
            if handed or remaining <= 0:
                return {"runs": handed, "cancel": [], "draining": False}
            # Not wait_for: on 3.11 it can swallow a cancel that races with the event.
            waiter = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({waiter}, timeout=remaining)
            finally:
                waiter.cancel()

    def _hand_out(self, run_id: str) -> dict[str, Any]:
        run = self.runs[run_id]
        run.update(state=RunState.CLAIMED, lease_token=secrets.token_hex(8))
        run["attempt"] += 1
        return {
            "id": run_id,
            "attempt": run["attempt"],
            "lease_token": run["lease_token"],
            "entity": "default",
            "project": "p",
            "queue": "q",
            "resource": "local",
            "image": None,
            "command": run["command"],
            "env": {},
            "gpus": 0,
            "resolved_config": {"gpus": 0},
            "run_config": {},
            "values": {},
            "log_bytes": 0,
            "output_token": "lyr_test",
            "time_limit_s": run["time_limit_s"],
        }

    def _leased(self, run_id: str, token: str) -> dict[str, Any]:
        run = self.runs.get(run_id)
        if run is None or run["lease_token"] != token or not run["state"].is_active:
            raise StaleLeaseError(f"the lease on run {run_id!r} is gone")
        return run

    async def heartbeat(
        self, agent_id: int, runs: list[dict[str, str]], capacity: dict[str, Any]
    ) -> dict[str, Any]:
        self.requests.append(("heartbeat", None))
        self._take_capacity(capacity)
        self._notify()
        lost = []
        for held in runs:
            try:
                self._leased(held["id"], held["lease_token"])
            except StaleLeaseError:
                lost.append(held["id"])
        return {"lost": lost, "cancel": [], "draining": False}

    async def report(self, run_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(("report", run_id))
        run = self._leased(run_id, body["lease_token"])
        state = RunState(body["state"])
        assert state in AGENT_TRANSITIONS[run["state"]], (run["state"], state)
        run["reports"].append(body)
        run["state"] = state
        if state.is_terminal:
            run["lease_token"] = None
        if body.get("capacity") is not None:
            self._take_capacity(body["capacity"])
        self._notify()
        return {"state": state.value}

    async def append_logs(self, run_id: str, body: dict[str, Any]) -> int:
        self.requests.append(("logs", run_id))
        self._leased(run_id, body["lease_token"])
        return int(body["next_offset"])

    async def put_file(self, run_id: str, relpath: str, path: Path, token: str) -> None:
        self.requests.append(("file", run_id))

    async def stop(self, agent_id: int) -> None:
        self.requests.append(("stop", None))


# -- helpers -------------------------------------------------------------------------------


def settings(state_dir: Path, **overrides: Any) -> AgentSettings:
    values: dict[str, Any] = {
        "name": "test-agent",
        "queues": ["q"],
        "max_jobs": 2,
        "state_dir": state_dir,
        "cancel_grace_s": 1.0,
        **overrides,
    }
    return AgentSettings(**values)


@asynccontextmanager
async def running_agent(
    server: FakeServer, state_dir: Path, **overrides: Any
) -> AsyncIterator[Agent]:
    agent = Agent(settings(state_dir, **overrides), server, [])  # type: ignore[arg-type]
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        agent.stop()
        await task
        await agent.shutdown(requeue=False)


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.02)


def ended(server: FakeServer, run_id: str) -> bool:
    return RunState(server.runs[run_id]["state"]).is_terminal


# -- tests ---------------------------------------------------------------------------------


def test_a_quick_run_costs_two_reports_and_no_heartbeat(tmp_path: Path) -> None:
    """`running` with the handle (no `starting`), then the end carrying the freed capacity."""
    server = FakeServer()

    async def scenario() -> None:
        async with running_agent(server, tmp_path / "agent"):
            run_id = server.submit(["true"])
            await wait_until(lambda: ended(server, run_id), "the run to end")
            reports = server.reports(run_id)
            assert [r["state"] for r in reports] == ["running", "finished"]
            assert reports[0]["handle"]["run_id"] == run_id
            assert reports[1]["exit_code"] == 0
            assert reports[1]["capacity"]["free_slots"] == 2  # its slot is free again
            assert server.capacity["free_slots"] == 2
            assert ("heartbeat", None) not in server.requests

    asyncio.run(scenario())


def test_the_end_is_seen_without_waiting_for_a_poll(tmp_path: Path) -> None:
    """The supervisor's exit wakes the watch loop: a 30 s poll interval does not delay it."""
    server = FakeServer()

    async def scenario() -> None:
        async with running_agent(server, tmp_path / "agent", poll_interval_s=30.0):
            for _ in range(3):  # some end while still launching, some after `running`
                run_id = server.submit(["sh", "-c", "exit 3"])
                done = lambda run_id=run_id: ended(server, run_id)  # noqa: E731
                await wait_until(done, "the run to end", timeout=5)
                last = server.reports(run_id)[-1]
                assert (last["state"], last["exit_code"]) == ("failed", 3)

    asyncio.run(scenario())


def test_a_run_past_its_time_limit_is_stopped_and_fails(tmp_path: Path) -> None:
    server = FakeServer()

    async def scenario() -> None:
        async with running_agent(server, tmp_path / "agent"):
            run_id = server.submit(["sleep", "30"], time_limit_s=1)
            started = time.monotonic()
            await wait_until(lambda: ended(server, run_id), "the time limit", timeout=8)
            assert time.monotonic() - started >= 1
            last = server.reports(run_id)[-1]
            assert last["state"] == "failed"
            assert last["reason"] == "stopped at its time limit of 1 s"
            assert last["phase"] == "agent"

    asyncio.run(scenario())


def test_a_restarted_agent_keeps_counting_the_time_limit(tmp_path: Path) -> None:
    """The limit counts from the stored `running` time, not from the adoption."""
    server = FakeServer()
    state_dir = tmp_path / "agent"

    async def scenario() -> None:
        async with running_agent(server, state_dir):
            run_id = server.submit(["sleep", "30"], time_limit_s=60)
            await wait_until(lambda: server.runs[run_id]["state"] == "running", "running")
        # The agent is gone (its run goes on, under its supervisor); two minutes pass.
        record = state_dir / "inflight" / f"{run_id}.json"
        stored = json.loads(record.read_text())
        stored["running_since"] -= 120
        record.write_text(json.dumps(stored))
        async with running_agent(server, state_dir):
            await wait_until(lambda: ended(server, run_id), "the adopted run to stop", timeout=8)
        last = server.reports(run_id)[-1]
        assert (last["state"], last["reason"]) == ("failed", "stopped at its time limit of 60 s")

    asyncio.run(scenario())


def test_a_run_that_ends_in_time_is_not_touched_by_its_limit(tmp_path: Path) -> None:
    server = FakeServer()

    async def scenario() -> None:
        async with running_agent(server, tmp_path / "agent"):
            run_id = server.submit(["true"], time_limit_s=30)
            await wait_until(lambda: ended(server, run_id), "the run to end")
            assert server.reports(run_id)[-1]["state"] == "finished"

    asyncio.run(scenario())
