"""Which queued runs fit an agent's free GPUs and slots (pure: no I/O, no clock).

One decision procedure serves the server's claim and the benchmarks' simulations.

Order is priority, then first in, first out. A run that does not fit the free
GPUs yet may be passed by smaller runs behind it (backfill), which keeps GPUs
busy; but once a run has stood ``reserve_after_s`` at the front of the line
unable to start (``blocked_since``, stamped by the caller from
``Decision.first_blocked``) it holds a *reservation*, so no run waits forever.
The clock starts at the front of the line, not at submission: with a deep queue
every run would otherwise be "old" by the time it reaches the front, and each
head would reserve at once, which drains GPUs far more than fairness needs.

What a reservation holds back depends on what the scheduler knows of the
future. Runs may carry a time limit (the agent stops them when it is up), so
the runs holding GPUs have a known latest end. From those the reserved run's
*earliest start* follows (the "shadow" time), and a run behind it may still
start now if it fits and either its own limit ends before that start or it
uses only GPUs the reserved run will not need then: EASY backfill, as in
Slurm's and Maui's backfill schedulers. Nothing that starts that way can delay
the reserved run. Where a holder has no limit the start is unknown, and the
reservation drains the GPUs as before: nothing behind it starts on this agent.
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
    blocked_since: float | None = None
    """When the run was first found at the front of the line unable to start (seconds,
    same clock as ``now``); None until then."""
    time_limit_s: float | None = None


@dataclass(frozen=True)
class Held:
    """GPUs a started run holds, and the latest it ends (None: it has no time limit)."""

    gpus: int
    ends_by: float | None


@dataclass(frozen=True)
class Capacity:
    free_gpus: int
    total_gpus: int
    free_slots: int
    held: Sequence[Held] = ()
    """The agent's started runs that hold GPUs: what a reservation plans with."""


@dataclass(frozen=True)
class Decision:
    picked: list[str] = field(default_factory=list)
    first_blocked: str | None = None
    """The first run that did not fit: the caller stamps its ``blocked_since``."""
    reserved_for: str | None = None
    starts_by: float | None = None
    """The reserved run's earliest start, when the holders' time limits tell it."""
    waiting: dict[str, str] = field(default_factory=dict)
    """Why each examined run that was not picked is still waiting (with ``explain``)."""


def ordered(candidates: Iterable[Candidate]) -> list[Candidate]:
    return sorted(candidates, key=lambda c: (c.priority_rank, c.seq))


def earliest_start(
    gpus: int, free_gpus: int, held: Iterable[Held], now: float
) -> tuple[float | None, int]:
    """When ``gpus`` GPUs will be free at the latest, and how many more are free then.

    ``(None, 0)`` when that depends on a run without a time limit."""
    have = free_gpus
    for ends_by, gpus_freed in sorted((h.ends_by, h.gpus) for h in held if h.ends_by is not None):
        have += gpus_freed
        if have >= gpus:
            return max(ends_by, now), have - gpus
    return None, 0


def pick(
    candidates: Sequence[Candidate],
    capacity: Capacity,
    *,
    now: float,
    reserve_after_s: float = RESERVE_AFTER_S,
    explain: bool = True,
) -> Decision:
    """Choose the runs to hand to one agent. ``candidates`` must already be ordered.

    ``explain=False`` skips the waiting reasons (the claim path has no use for them)
    and stops as soon as nothing further can be picked."""
    free_gpus, free_slots = capacity.free_gpus, capacity.free_slots
    held = list(capacity.held)
    picked: list[str] = []
    waiting: dict[str, str] = {}
    first_blocked: str | None = None
    reserved_for: str | None = None
    starts_by: float | None = None
    spare = 0  # GPUs free at ``starts_by`` beyond what the reserved run needs

    def take(cand: Candidate) -> None:
        nonlocal free_gpus, free_slots
        picked.append(cand.run_id)
        free_gpus -= cand.gpus
        free_slots -= 1
        ends_by = None if cand.time_limit_s is None else now + cand.time_limit_s
        held.append(Held(cand.gpus, ends_by))

    for cand in candidates:
        if free_slots <= 0 and not explain:
            break
        if cand.gpus > capacity.total_gpus:
            if explain:
                waiting[cand.run_id] = (
                    f"needs {cand.gpus} GPUs; the agent has {capacity.total_gpus} in all"
                )
            continue
        if free_slots <= 0:
            waiting[cand.run_id] = "every agent slot is busy (agent at its -j limit)"
            continue
        if reserved_for is None:
            if cand.gpus <= free_gpus:
                take(cand)
                continue
            reason = f"needs {cand.gpus} GPUs, {free_gpus} free"
            first_blocked = first_blocked or cand.run_id
            blocked_since = now if cand.blocked_since is None else cand.blocked_since
            if now - blocked_since >= reserve_after_s:
                reserved_for = cand.run_id
                starts_by, spare = earliest_start(cand.gpus, free_gpus, held, now)
                reason += "; holds a reservation, smaller runs pass it only if they end in time"
            if explain:
                waiting[cand.run_id] = reason
            continue
        if starts_by is None:
            if not explain:
                break  # the reservation drains the agent: nothing behind it starts
            waiting[cand.run_id] = f"waiting behind run {reserved_for}, which holds a reservation"
            continue
        if cand.gpus <= free_gpus:
            ends_by = None if cand.time_limit_s is None else now + cand.time_limit_s
            if ends_by is not None and ends_by <= starts_by:
                take(cand)
                continue
            if cand.gpus <= spare:
                spare -= cand.gpus
                take(cand)
                continue
        if explain:
            waiting[cand.run_id] = (
                f"waiting behind run {reserved_for}, which holds a reservation and can start "
                f"in {starts_by - now:.0f} s; a run that fits and whose time limit ends "
                "before then would start now"
            )
    return Decision(
        picked=picked,
        first_blocked=first_blocked,
        reserved_for=reserved_for,
        starts_by=starts_by,
        waiting=waiting,
    )


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
