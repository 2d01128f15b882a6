"""Which queued runs fit an agent's free GPUs and slots (pure: no I/O, no clock).

One decision procedure serves the server's claim and the benchmarks' simulations.

Order is priority, then first in, first out. A run that does not fit the free
GPUs yet may be passed by smaller runs behind it (backfill), which keeps GPUs
busy; but once the first blocked run has waited ``reserve_after_s`` it holds a
*reservation*: nothing behind it is started on this agent until it fits, so the
GPUs that free up accumulate for it and no run waits forever.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

RESERVE_AFTER_S = 30.0


@dataclass(frozen=True)
class Candidate:
    run_id: str
    gpus: int
    priority_rank: int
    seq: int
    queued_at: float
    """When the run entered the queue (seconds, same clock as ``now``)."""


@dataclass(frozen=True)
class Capacity:
    free_gpus: int
    total_gpus: int
    free_slots: int


@dataclass(frozen=True)
class Decision:
    picked: list[str] = field(default_factory=list)
    reserved_for: str | None = None
    waiting: dict[str, str] = field(default_factory=dict)
    """Why each examined run that was not picked is still waiting."""


def ordered(candidates: Iterable[Candidate]) -> list[Candidate]:
    return sorted(candidates, key=lambda c: (c.priority_rank, c.seq))


def pick(
    candidates: Sequence[Candidate],
    capacity: Capacity,
    *,
    now: float,
    reserve_after_s: float = RESERVE_AFTER_S,
) -> Decision:
    """Choose the runs to hand to one agent. ``candidates`` must already be ordered."""
    free_gpus, free_slots = capacity.free_gpus, capacity.free_slots
    picked: list[str] = []
    waiting: dict[str, str] = {}
    reserved_for: str | None = None
    for cand in candidates:
        if cand.gpus > capacity.total_gpus:
            waiting[cand.run_id] = (
                f"needs {cand.gpus} GPUs; the agent has {capacity.total_gpus} in all"
            )
            continue
        if free_slots <= 0:
            waiting[cand.run_id] = "every agent slot is busy (agent at its -j limit)"
            continue
        if reserved_for is not None:
            waiting[cand.run_id] = f"waiting behind run {reserved_for}, which holds a reservation"
            continue
        if cand.gpus <= free_gpus:
            picked.append(cand.run_id)
            free_gpus -= cand.gpus
            free_slots -= 1
            continue
        reason = f"needs {cand.gpus} GPUs, {free_gpus} free"
        if now - cand.queued_at >= reserve_after_s:
            reserved_for = cand.run_id
            reason += "; holds a reservation, smaller runs no longer pass it"
        waiting[cand.run_id] = reason
    return Decision(picked=picked, reserved_for=reserved_for, waiting=waiting)


@dataclass(frozen=True)
class AgentView:
    """What the server knows of one agent serving a queue."""

    name: str
    alive: bool
    draining: bool
    free_gpus: int
    total_gpus: int
    free_slots: int


def explain_wait(gpus: int, agents: Sequence[AgentView]) -> str:
    """Why a queued run has not started, in words a user can act on."""
    serving = [a for a in agents if a.alive and not a.draining]
    if not serving:
        if any(a.alive for a in agents):
            return "no agent for this queue: every agent serving it is draining"
        return "no agent for this queue: start one with `launchyard launch-agent -q QUEUE`"
    if gpus > max(a.total_gpus for a in serving):
        most = max(a.total_gpus for a in serving)
        return f"needs {gpus} GPUs, but the largest agent for this queue has {most}"
    if all(a.free_slots <= 0 for a in serving):
        return "every agent slot is busy (agents at their -j limit)"
    most_free = max(a.free_gpus for a in serving if a.free_slots > 0)
    if gpus > most_free:
        return f"needs {gpus} GPUs, {most_free} free"
    return "waiting for an agent to claim it"
