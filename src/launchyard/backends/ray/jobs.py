"""What Ray says about a job, as launchyard sees it: an Observation, and the job's own log.

Pure functions over what the job client returns, so they are tested without Ray.
"""

from __future__ import annotations

import re
import signal
from typing import Any

from launchyard.backends.base import Observation, Phase

# What Ray's job manager writes into a job's log before the entrypoint starts.
_RAY_LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\t[A-Z]+ job_manager\.py:\d+ -- .*\n", re.MULTILINE
)


def observe(info: Any) -> Observation:
    """A Ray job's status (``JobDetails``/``JobInfo``) as an Observation."""
    status = status_of(info)
    message = short(str(info.message or ""))
    if status == "PENDING":
        return Observation(Phase.PENDING, reason=f"Ray: {message or 'pending'}")
    if status == "RUNNING":
        return Observation(Phase.RUNNING)
    code = info.driver_exit_code
    if status == "SUCCEEDED":
        return Observation(Phase.SUCCEEDED, exit_code=0, reason="exit code 0")
    if status == "STOPPED":
        return Observation(Phase.CANCELLED, exit_code=code, reason="cancelled")
    error_type = str(getattr(info.error_type, "value", info.error_type) or "")
    if error_type == "JOB_SUPERVISOR_ACTOR_DIED":  # its node went away: run it again
        return Observation(Phase.PREEMPTED, exit_code=code, reason=f"Ray: {message}")
    if isinstance(code, int) and code < 0:  # Popen's way of saying "killed by a signal"
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return Observation(Phase.FAILED, exit_code=128 - code, reason=f"killed by signal {name}")
    if isinstance(code, int) and error_type in ("", "JOB_ENTRYPOINT_COMMAND_ERROR"):
        return Observation(Phase.FAILED, exit_code=code, reason=f"exit code {code}")
    return Observation(Phase.FAILED, exit_code=code, reason=f"Ray: {message or status}")


def job_output(log: str, offset: int, submission_id: str, entrypoint: str) -> tuple[str, int]:
    """The job's own output in ``log[offset:]`` and the offset after it.

    Ray writes into the same file a few lines of its own: timestamped ``job_manager.py``
    lines before the entrypoint starts, and ``Running entrypoint for job ID: CMD``, which
    it flushes after starting the command, so it can land anywhere in the command's
    output, even mid-line. Offsets count characters of the whole log, so they stay
    valid whatever is dropped.
    """
    offset = max(0, offset)
    spans = [match.span() for match in _RAY_LOG_LINE.finditer(log)]
    marker = f"Running entrypoint for job {submission_id}: {entrypoint}\n"
    at = log.find(marker)
    if at >= 0:
        spans.append((at, at + len(marker)))
    kept, position = [], offset
    for start, end in sorted(spans):
        if end <= position:
            continue
        kept.append(log[position : max(position, start)])
        position = max(position, end)
    kept.append(log[position:])
    return "".join(kept), max(offset, len(log))


def status_of(info: Any) -> str:
    return str(getattr(info.status, "value", info.status))


def short(text: str) -> str:
    """The first line, cut to 500 characters: Ray appends whole log tails to its messages."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first[:500]
