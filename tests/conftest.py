"""Fixtures shared by every tier: databases (SQLite and PostgreSQL) and an in-process server.

Engines that are not on the machine are skipped, unless LAUNCHYARD_TEST_REQUIRE_ALL=1
(as in CI), where a missing engine fails the test instead of hiding it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from launchyard.client import Client
from launchyard.config import ServerSettings
from launchyard.server.app import create_app

POSTGRES_ENV = "LAUNCHYARD_TEST_POSTGRES_URL"


def require(what: str, available: bool, how: str) -> None:
    """Skip (or, in CI, fail) a test whose engine is not on this machine."""
    if available:
        return
    message = f"{what} is not available: {how}"
    if os.environ.get("LAUNCHYARD_TEST_REQUIRE_ALL") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    base = os.environ.get(POSTGRES_ENV)
    require("PostgreSQL", bool(base), f"set {POSTGRES_ENV} (.ci/run starts one)")
    assert base is not None
    import psycopg

    name = f"ly_{uuid.uuid4().hex[:12]}"
    admin_url = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class ServerHarness:
    """An in-process server (real app, real database) and typed clients for it."""

    def __init__(self, test_client: TestClient, data_dir: Path) -> None:
        self.http = test_client
        self.admin_key = (data_dir / "admin-api-key").read_text().strip()
        self.data_dir = data_dir

    def client(self, key: str | None = "admin") -> Client:
        api_key = self.admin_key if key == "admin" else key
        c = Client("http://testserver", api_key)
        c._http.close()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        c._http = _KeyedTestClient(self.http, headers)  # type: ignore[assignment]
        return c


class _KeyedTestClient:
    """A view of one TestClient with its own Authorization header."""

    def __init__(self, inner: TestClient, headers: dict[str, str]) -> None:
        self.inner = inner
        self.headers = headers

    def request(self, method: str, path: str, **kwargs: object) -> object:
        kwargs.pop("timeout", None)
        return self.inner.request(method, path, headers=self.headers, **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        pass


@pytest.fixture
def server_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    started: list[TestClient] = []

    def make(database_url: str | None = None, **settings: object) -> ServerHarness:
        data_dir = tmp_path / f"server{len(started)}"
        app = create_app(
            ServerSettings(data_dir=data_dir, database_url=database_url, **settings)  # type: ignore[arg-type]
        )
        tc = TestClient(app)
        tc.__enter__()
        started.append(tc)
        return ServerHarness(tc, data_dir)

    yield make
    for tc in started:
        tc.__exit__(None, None, None)


@pytest.fixture
def server(server_factory, database_url: str) -> ServerHarness:  # type: ignore[no-untyped-def]
    """The server on each database kind (SQLite and PostgreSQL)."""
    return server_factory(database_url)  # type: ignore[no-any-return]


@pytest.fixture
def sqlite_server(server_factory) -> ServerHarness:  # type: ignore[no-untyped-def]
    """The server on SQLite only, for tests about behaviour, not storage."""
    return server_factory(None)  # type: ignore[no-any-return]
