"""Wake long polls (agents' claims, log followers) the moment something they follow changes.

A change carries topics (a queue got a run, an agent's capacity or state changed, a run
changed); a waiter names the topics it follows and is woken only by those. A change with
no topics, or a waiter with none, means "everything": that keeps callers that know no
better correct, only less quiet. Topics matter because a woken claim rescans its queues in
a write transaction: waking every claim on every submit cost more than the submit itself.

In-process only: a server shares nothing in memory with its siblings, so long polls also
re-check the database every ``FALLBACK_POLL_S``; with several server processes on one
PostgreSQL a wake-up is at most that late.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Iterable

FALLBACK_POLL_S = 1.0
RECENT_CHANGES = 1024
"""Changes remembered for waiters that read ``version`` before a change and wait after it;
one that fell further behind is woken at once (as if everything changed)."""

Topic = tuple[str, int | str]


def queue_topic(queue_id: int) -> Topic:
    """A run became claimable in this queue (submitted or requeued)."""
    return ("queue", queue_id)


def fits_topic(queue_id: int, gpus: int) -> Topic:
    """A run asking for ``gpus`` GPUs became claimable in this queue: an agent whose claim
    found nothing wakes only for runs that fit its free GPUs."""
    return ("fits", f"{queue_id}:{gpus}")


def claimable(queue_id: int, gpus: int) -> tuple[Topic, Topic]:
    """What to notify when a run is queued (submitted or requeued)."""
    return queue_topic(queue_id), fits_topic(queue_id, gpus)


def agent_topic(agent_id: int) -> Topic:
    """This agent's capacity, state (draining) or cancel list changed."""
    return ("agent", agent_id)


def run_topic(run_id: str) -> Topic:
    """This run changed (state, logs): what a log follower waits on."""
    return ("run", run_id)


def claim_topics(
    agent_id: int, queue_ids: Iterable[int], gpu_queue_ids: Iterable[int] = (), free_gpus: int = 0
) -> frozenset[Topic]:
    """What a waiting claim follows: its own agent, every run queued in ``queue_ids``, and
    in ``gpu_queue_ids`` (where the agent assigns GPUs itself) only runs that fit
    ``free_gpus``: a bigger one can't be handed out until the agent's capacity changes,
    which its own topic covers."""
    fits = [fits_topic(q, g) for q in gpu_queue_ids for g in range(free_gpus + 1)]
    return frozenset([agent_topic(agent_id), *(queue_topic(q) for q in queue_ids), *fits])


def _concerns(changed: frozenset[Topic] | None, wanted: frozenset[Topic] | None) -> bool:
    return changed is None or wanted is None or not wanted.isdisjoint(changed)


class _Waiter:
    __slots__ = ("event", "topics")

    def __init__(self, topics: frozenset[Topic] | None) -> None:
        self.topics = topics
        self.event = asyncio.Event()


class Notifier:
    """Changes are recorded on the caller's thread, under a lock; the event loop is only
    disturbed (``call_soon_threadsafe``, a syscall) when some waiter follows the change."""

    def __init__(self) -> None:
        self.version = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._waiters: set[_Waiter] = set()
        # (version, topics) of the latest changes, to answer wait(since=…) without a race.
        self._recent: deque[tuple[int, frozenset[Topic] | None]] = deque(maxlen=RECENT_CHANGES)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self, *topics: Topic) -> None:
        """Say what changed (no topics: everything). Safe from any thread (services run in
        FastAPI's thread pool); waiters are woken on the event loop."""
        changed = frozenset(topics) if topics else None
        with self._lock:
            self.version += 1
            self._recent.append((self.version, changed))
            woken = [w for w in self._waiters if _concerns(changed, w.topics)]
        loop = self._loop
        if woken and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(_wake, woken)

    def changed_since(self, since: int, topics: frozenset[Topic] | None = None) -> bool:
        """Whether a change after version ``since`` concerns ``topics`` (None: any)."""
        with self._lock:
            return self._changed_since(since, topics)

    def _changed_since(self, since: int, topics: frozenset[Topic] | None) -> bool:
        if self.version == since:
            return False
        if not self._recent or self._recent[0][0] > since + 1:
            return True  # older than what is remembered: assume it did
        for version, changed in reversed(self._recent):
            if version <= since:
                return False
            if _concerns(changed, topics):
                return True
        return False

    async def wait(self, since: int, timeout: float, topics: Iterable[Topic] | None = None) -> None:
        """Return when a change after version ``since`` concerns ``topics`` (None: any
        change), or after ``timeout`` seconds, or after ``FALLBACK_POLL_S`` at most."""
        if self._loop is None:
            return
        waiter = _Waiter(frozenset(topics) if topics is not None else None)
        with self._lock:  # a change lands either before this check or after registering
            if self._changed_since(since, waiter.topics):
                return
            self._waiters.add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.event.wait(), timeout=min(timeout, FALLBACK_POLL_S))
        finally:
            with self._lock:
                self._waiters.discard(waiter)


def _wake(waiters: list[_Waiter]) -> None:
    for waiter in waiters:
        waiter.event.set()
