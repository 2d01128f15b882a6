"""The one small interface every backend implements.

An agent turns a claimed run into a :class:`LaunchSpec` and hands it to a
backend. The backend owns everything engine-specific; the agent only ever
calls these methods, so adding an engine means adding one module.

Rules every backend keeps (the contract suite in ``tests/contract`` checks them):

- ``launch`` is idempotent on ``(run_id, attempt)``: calling it again after a
  crash finds the same process/container/job and returns an equal handle.
- ``poll`` never raises because the thing is gone: it reports ``Phase.LOST``.
- ``cancel`` is silent when the thing is already gone.
- Blocking engine SDKs are wrapped inside the backend (``asyncio.to_thread``);
  callers only ``await``.
- Third-party exceptions are translated into :mod:`launchyard.errors` here.

Optional abilities (logs, keep-alive, capacity) have working defaults, so a
backend opts in by overriding them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from launchyard.errors import InvalidInputError


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a backend needs to start one attempt of one run."""

    run_id: str
    attempt: int
    entity: str
    project: str
    queue: str
    command: list[str]
    config: dict[str, Any]
    """The queue's config for this run, already rendered (macros and variables filled)."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment for the run: queue env, the run's env and the ``LAUNCHYARD_*`` variables."""
    run_config: dict[str, Any] = field(default_factory=dict)
    """Written as JSON to the file named by ``LAUNCHYARD_CONFIG_FILE``."""
    image: str | None = None
    gpus: int = 0
    gpu_ids: list[int] = field(default_factory=list)
    """Exact devices assigned by the agent (local and Docker); empty on clusters."""

    @property
    def key(self) -> str:
        """A name unique per attempt, safe for files, labels and DNS."""
        return f"{self.run_id}-{self.attempt}"

    def labels(self) -> dict[str, str]:
        return {
            "launchyard.run-id": self.run_id,
            "launchyard.attempt": str(self.attempt),
            "launchyard.entity": self.entity,
            "launchyard.project": self.project,
            "launchyard.queue": self.queue,
        }


@dataclass(frozen=True)
class Handle:
    """What a backend needs to find a launched attempt again; stored on the run as JSON."""

    backend: str
    run_id: str
    attempt: int
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Handle:
        return cls(
            backend=str(raw["backend"]),
            run_id=str(raw["run_id"]),
            attempt=int(raw["attempt"]),
            data=dict(raw.get("data") or {}),
        )


class Phase(enum.StrEnum):
    PENDING = "pending"  # accepted by the engine, not running yet (pulling, waiting for GPUs)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"  # the engine took it away; the run is requeued
    LOST = "lost"  # the engine no longer knows it

    @property
    def is_terminal(self) -> bool:
        return self not in (Phase.PENDING, Phase.RUNNING)


@dataclass(frozen=True)
class Observation:
    phase: Phase
    exit_code: int | None = None
    reason: str | None = None
    """Something a user can act on: "exit code 3", "OOMKilled", "image pull failed: …"."""


@dataclass(frozen=True)
class LogChunk:
    text: str
    next_offset: int
    """Where the next read starts; opaque to callers, stored by the agent for adoption."""


class Backend:
    """Base class: override ``launch``, ``poll`` and ``cancel``; the rest is opt-in.

    The class methods are used by the server too (queue creation, submission),
    so a backend module must import its engine SDK lazily, inside ``create``
    or the instance methods, never at module level.
    """

    name: ClassVar[str] = "base"
    assigns_gpus: ClassVar[bool] = False
    """True when the agent owns the GPUs and picks device ids (local, docker);
    False when the engine's scheduler places work (kubernetes, slurm, ray)."""

    OPTIONS: ClassVar[tuple[str, ...]] = ()
    """Keys allowed in the agent config's ``backends: {NAME: {...}}`` section."""

    @classmethod
    def create(cls, *, state_dir: Path, lease_ttl_s: float, options: dict[str, Any]) -> Backend:
        """Build the backend an agent uses; ``options`` is the agent config's section for it."""
        raise NotImplementedError

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Refuse agent options this backend does not know, listing the ones it does."""
        unknown = sorted(set(options) - set(cls.OPTIONS))
        if unknown:
            raise InvalidInputError(
                f"unknown {cls.name} backend option(s) {', '.join(unknown)}; "
                f"known: {', '.join(cls.OPTIONS) or 'none'}",
                fields={"options": unknown},
            )

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        """Refuse a queue config this backend cannot run (raise InvalidInputError).

        Called at queue creation on the parsed template (placeholders still
        in it, e.g. ``'{{gpus}}'``) and at submission on the rendered config.
        """

    @classmethod
    def gpu_demand(cls, config: dict[str, Any]) -> int:
        """GPUs one run of this rendered config asks for (scheduled by us if ``assigns_gpus``)."""
        return 0

    def validate_config(self, config: dict[str, Any]) -> None:
        """Refuse a rendered config this backend cannot run (raise InvalidInputError)."""
        self.check_config(config)

    async def launch(self, spec: LaunchSpec) -> Handle:
        raise NotImplementedError

    async def poll(self, handle: Handle) -> Observation:
        raise NotImplementedError

    async def cancel(self, handle: Handle, grace_s: float = 10.0) -> None:
        raise NotImplementedError

    async def read_logs(self, handle: Handle, offset: int) -> LogChunk:
        """New output since ``offset``. Backends without logs return nothing."""
        return LogChunk(text="", next_offset=offset)

    async def keepalive(self, handle: Handle) -> None:
        """Called after each heartbeat the server accepted for this run.

        The local backend uses it as a dead-man's switch: a run whose agent
        stops renewing is killed before the server hands it to anyone else.
        """

    def on_change(self, wake: Callable[[str], None]) -> None:
        """Opt-in: call ``wake(run_id)``, from any thread, when an attempt may have ended.

        The agent then polls that run at once instead of at its next poll interval
        (a freed GPU is handed on sooner). Backends without it are polled as before.
        """

    async def live_handles(self) -> list[Handle]:
        """What this backend still runs for this agent (found by labels/names), for adoption."""
        return []

    async def release(self, handle: Handle) -> None:
        """Forget a finished attempt once its end has been reported (clean up)."""

    async def close(self) -> None:
        """Release clients and connections when the agent stops."""
