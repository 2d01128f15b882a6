"""A run's output from its pod's log, continued at a byte offset.

The pod log API has no byte offset of its own (only ``sinceTime``, ``tailLines``,
``limitBytes``), so the log is read whole and cut at the bytes already returned.
To keep that cheap, a running pod's log is read at most once per
``LOG_REFRESH_S``; once the pod has ended it is read every time, so the agent's
final drain gets everything.
"""

from __future__ import annotations

import codecs
import time
from typing import Any

from launchyard.backends.base import LogChunk
from launchyard.backends.kubernetes import api, states
from launchyard.errors import InvalidInputError, NotFoundError

LOG_REFRESH_S = 1.0
MAX_LOG_CHUNK = 1024 * 1024
"""Most bytes returned by one read."""


class LogReader:
    def __init__(self, core: Any, namespace: str) -> None:
        self.core, self.namespace = core, namespace
        self._read_at: dict[str, float] = {}

    def read(self, key: str, pods: list[dict[str, Any]], offset: int) -> LogChunk:
        """New output of the newest started pod among ``pods`` (one Job's), from ``offset``."""
        nothing = LogChunk(text="", next_offset=offset)
        started = [p for p in pods if _started(p)]
        if not started:
            return nothing
        pod = max(started, key=states.age_key)
        ended = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        now = time.monotonic()
        if not ended and now - self._read_at.get(key, 0.0) < LOG_REFRESH_S:
            return nothing
        self._read_at[key] = now
        name = pod["metadata"]["name"]
        try:
            data = api.call(
                self.core.read_namespaced_pod_log,
                name,
                self.namespace,
                container=pod["spec"]["containers"][0]["name"],
                raw=True,
                what=f"reading the log of pod {name}",
            )
        except (NotFoundError, InvalidInputError):  # gone, or not started after all
            return nothing
        piece = data[offset : offset + MAX_LOG_CHUNK]
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = decoder.decode(piece, final=False)
        held = len(decoder.getstate()[0])  # an incomplete character: the next read has it
        if held and ended and offset + len(piece) >= len(data):
            text += decoder.decode(b"", final=True)  # the log ends in a broken character
            held = 0
        return LogChunk(text=text, next_offset=offset + len(piece) - held)

    def forget(self, key: str) -> None:
        self._read_at.pop(key, None)


def _started(pod: dict[str, Any]) -> bool:
    """Whether the pod's first container has started, so it has a log."""
    for cstatus in (pod.get("status") or {}).get("containerStatuses") or []:
        state = cstatus.get("state") or {}
        return "running" in state or "terminated" in state
    return False
