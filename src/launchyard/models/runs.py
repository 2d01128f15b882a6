"""Run states, priorities and the transitions between them."""

from __future__ import annotations

import enum


class RunState(enum.StrEnum):
    QUEUED = "queued"
    CLAIMED = "claimed"
    STARTING = "starting"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CRASHED = "crashed"
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def is_active(self) -> bool:
        """Held by an agent under a lease."""
        return self in ACTIVE_STATES


TERMINAL_STATES = frozenset(
    {RunState.FINISHED, RunState.FAILED, RunState.CRASHED, RunState.CANCELLED}
)
ACTIVE_STATES = frozenset({RunState.CLAIMED, RunState.STARTING, RunState.RUNNING})

# Which state an agent may report from which. PREEMPTED is reported by the
# agent and immediately turned into QUEUED by the server (a requeue).
AGENT_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.CLAIMED: frozenset(
        {RunState.STARTING, RunState.RUNNING, RunState.PREEMPTED} | TERMINAL_STATES
    ),
    # STARTING → STARTING records a new pending reason ("Insufficient nvidia.com/gpu").
    RunState.STARTING: frozenset(
        {RunState.STARTING, RunState.RUNNING, RunState.PREEMPTED} | TERMINAL_STATES
    ),
    RunState.RUNNING: frozenset({RunState.RUNNING, RunState.PREEMPTED} | TERMINAL_STATES),
}


class Phase(enum.StrEnum):
    """Which part of the system a transition came from."""

    SERVER = "server"
    AGENT = "agent"
    LAUNCH = "launch"
    RUN = "run"


class Priority(enum.StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """Lower ranks are served first."""
        return _PRIORITY_RANK[self]

    @classmethod
    def from_rank(cls, rank: int) -> Priority:
        return next(p for p, r in _PRIORITY_RANK.items() if r == rank)


_PRIORITY_RANK = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.MEDIUM: 2, Priority.LOW: 3}

# A run whose lease expires (crashed) or that is preempted (failed) this many times is
# not requeued again.
MAX_ATTEMPTS = 5
