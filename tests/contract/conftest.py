"""Fixtures for the backend contract suite.

Every test that takes ``backend`` (or ``make_backend``) runs once per name in
``BACKENDS``. To put another backend under the contract, add its name there and
teach ``_build`` how to make one. ``make_backend`` builds further instances on the
same state, as a restarted agent would (adoption).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from launchyard.backends.base import Backend, LaunchSpec

BACKENDS = ["local"]

MakeBackend = Callable[..., Backend]
MakeSpec = Callable[..., LaunchSpec]


def _build(name: str, state: Path, options: dict[str, Any]) -> Backend:
    if name == "local":
        from launchyard.backends.local import LocalBackend

        return LocalBackend(state, **options)
    raise AssertionError(f"no contract fixture for backend {name!r}")


async def _stop_everything(backend: Backend) -> None:
    """Leave no run behind when a test failed halfway."""
    live_handles = getattr(backend, "live_handles", None)
    if live_handles is not None:
        for handle in await live_handles():
            await backend.cancel(handle, grace_s=0)
    await backend.close()


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def make_backend(backend_name: str, tmp_path: Path) -> Iterator[MakeBackend]:
    made: list[Backend] = []

    def make(**options: Any) -> Backend:
        backend = _build(backend_name, tmp_path / "state", options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        asyncio.run(_stop_everything(backend))


@pytest.fixture
def backend(make_backend: MakeBackend) -> Backend:
    return make_backend()


@pytest.fixture
def make_spec() -> MakeSpec:
    """``make_spec(command, **fields)``: a LaunchSpec with a fresh run id."""

    def make(command: list[str], **fields: Any) -> LaunchSpec:
        values: dict[str, Any] = {
            "run_id": f"run{uuid.uuid4().hex[:12]}",
            "attempt": 1,
            "entity": "acme",
            "project": "vision",
            "queue": "default",
            "command": command,
            "config": {},
        }
        values.update(fields)
        return LaunchSpec(**values)

    return make
