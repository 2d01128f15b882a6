"""Wake long polls (agents' claims, log followers) the moment something changes.

In-process only: a server shares nothing in memory with its siblings, so long
polls also re-check the database every ``FALLBACK_POLL_S``; with several
server processes on one PostgreSQL a wake-up is at most that late.
"""

from __future__ import annotations

import asyncio
import contextlib

FALLBACK_POLL_S = 1.0


class Notifier:
    def __init__(self) -> None:
        self.version = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._changed = asyncio.Event()

    def notify(self) -> None:
        """Safe from any thread (services run in FastAPI's thread pool)."""
        if self._loop is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._bump)

    def _bump(self) -> None:
        self.version += 1
        assert self._changed is not None
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, since: int, timeout: float) -> None:
        """Return when the version passed ``since`` or after ``timeout`` seconds."""
        if self.version != since or self._changed is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout=min(timeout, FALLBACK_POLL_S))
