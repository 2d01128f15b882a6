"""Typed HTTP clients: the only way the CLI (``Client``) and agents (``AgentClient``) talk
to the server.

A server error comes back as the same :mod:`launchyard.errors` class it was
raised as; a server that cannot be reached becomes ServerUnavailableError.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from launchyard.errors import LaunchyardError, ServerUnavailableError, error_from_payload

DEFAULT_HOST = "http://127.0.0.1:8080"


def config_dir() -> Path:
    override = os.environ.get("LAUNCHYARD_CONFIG_DIR")
    return Path(override) if override else Path.home() / ".config" / "launchyard"


@dataclass(frozen=True)
class Credentials:
    host: str
    api_key: str | None

    @classmethod
    def load(cls) -> Credentials:
        """`launchyard login`'s file, overridden by LAUNCHYARD_HOST and LAUNCHYARD_API_KEY."""
        stored: dict[str, Any] = {}
        path = config_dir() / "credentials.json"
        if path.exists():
            stored = json.loads(path.read_text())
        host = os.environ.get("LAUNCHYARD_HOST") or stored.get("host") or DEFAULT_HOST
        key = os.environ.get("LAUNCHYARD_API_KEY") or stored.get("api_key")
        return cls(host=str(host).rstrip("/"), api_key=key)

    def save(self) -> Path:
        folder = config_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "credentials.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"host": self.host, "api_key": self.api_key}, fh)
        return path


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _check(response: httpx.Response) -> Any:
    if response.status_code == 204:
        return None
    try:
        payload = response.json()
    except ValueError:
        payload = response.text
    if response.is_success:
        return payload
    raise error_from_payload(payload, response.status_code)


def _unavailable(host: str, exc: httpx.TransportError) -> LaunchyardError:
    return ServerUnavailableError(
        f"cannot reach the launchyard server at {host} ({type(exc).__name__}); "
        "is `launchyard server` running? Check LAUNCHYARD_HOST or `launchyard login --host`"
    )


class Client:
    """Synchronous client for the CLI, scripts and tests."""

    def __init__(self, host: str, api_key: str | None, *, timeout: float = 30.0) -> None:
        self.host = host.rstrip("/")
        self._http = httpx.Client(base_url=self.host, headers=_headers(api_key), timeout=timeout)

    @classmethod
    def from_env(cls) -> Client:
        creds = Credentials.load()
        return cls(creds.host, creds.api_key)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _unavailable(self.host, exc) from exc
        return _check(response)

    # identity and entities
    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/healthz")
        return result

    def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/api/v1/whoami")
        return result

    def create_entity(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/api/v1/entities", json={"name": name})
        return result

    def add_member(self, entity: str, user: str, role: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/api/v1/entities/{entity}/members", json={"user": user, "role": role}
        )
        return result

    # queues
    def create_queue(self, entity: str, spec: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/api/v1/entities/{entity}/queues", json=spec
        )
        return result

    def update_queue(self, entity: str, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "PATCH", f"/api/v1/entities/{entity}/queues/{name}", json=changes
        )
        return result

    def delete_queue(self, entity: str, name: str) -> None:
        self.request("DELETE", f"/api/v1/entities/{entity}/queues/{name}")

    def list_queues(self, entity: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"/api/v1/entities/{entity}/queues")
        return result

    def get_queue(self, entity: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/api/v1/entities/{entity}/queues/{name}")
        return result

    def parse_template(self, config: Any, variables: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", "/api/v1/templates/parse", json={"config": config, "variables": variables}
        )
        return result

    # runs
    def submit(self, entity: str, request: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/api/v1/entities/{entity}/runs", json=request
        )
        return result

    def submit_many(self, entity: str, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Queue many runs in one call (a sweep): all of them, or none."""
        result: dict[str, Any] = self.request(
            "POST", f"/api/v1/entities/{entity}/runs/batch", json={"runs": requests}
        )
        return list(result["runs"])

    def get_run(self, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/api/v1/runs/{run_id}")
        return result

    def list_runs(self, entity: str, **params: Any) -> dict[str, Any]:
        clean = {k: v for k, v in params.items() if v is not None}
        result: dict[str, Any] = self.request(
            "GET", f"/api/v1/entities/{entity}/runs", params=clean
        )
        return result

    def cancel(self, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/api/v1/runs/{run_id}/cancel")
        return result

    def logs(self, run_id: str, offset: int = 0, wait: float = 0) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "GET",
            f"/api/v1/runs/{run_id}/logs",
            params={"offset": offset, "wait": wait},
            timeout=wait + 30,
        )
        return result

    # jobs
    def list_jobs(self, entity: str, project: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "GET", f"/api/v1/entities/{entity}/projects/{project}/jobs"
        )
        return result

    def get_job(self, entity: str, project: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "GET", f"/api/v1/entities/{entity}/projects/{project}/jobs/{name}"
        )
        return result

    def alias_job(
        self, entity: str, project: str, name: str, version: str, alias: str
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "PUT",
            f"/api/v1/entities/{entity}/projects/{project}/jobs/{name}/aliases/{alias}",
            json={"version": version},
        )
        return result

    # agents
    def list_agents(self, entity: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"/api/v1/entities/{entity}/agents")
        return result

    def list_files(self, run_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"/api/v1/runs/{run_id}/files")
        return result

    def download(self, run_id: str, relpath: str) -> bytes:
        try:
            response = self._http.request("GET", f"/api/v1/runs/{run_id}/files/{relpath}")
        except httpx.TransportError as exc:
            raise _unavailable(self.host, exc) from exc
        if not response.is_success:
            _check(response)
        return response.content

    def drain_agent(self, agent_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/api/v1/agents/{agent_id}/drain")
        return result


class AgentClient:
    """Asynchronous client for the agent protocol (claims, heartbeats, reports, logs)."""

    def __init__(self, host: str, api_key: str | None) -> None:
        self.host = host.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.host,
            headers=_headers(api_key),
            timeout=httpx.Timeout(30.0),
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _unavailable(self.host, exc) from exc
        return _check(response)

    async def register(self, entity: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST", f"/api/v1/entities/{entity}/agents", json=body
        )
        return result

    async def claim(self, agent_id: int, capacity: dict[str, Any], wait_s: float) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST",
            f"/api/v1/agents/{agent_id}/claim",
            json={"capacity": capacity, "wait_s": wait_s},
            timeout=wait_s + 30,
        )
        return result

    async def heartbeat(
        self, agent_id: int, runs: list[dict[str, str]], capacity: dict[str, Any]
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST",
            f"/api/v1/agents/{agent_id}/heartbeat",
            json={"runs": runs, "capacity": capacity},
        )
        return result

    async def report(self, run_id: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST", f"/api/v1/runs/{run_id}/state", json=body
        )
        return result

    async def append_logs(self, run_id: str, body: dict[str, Any]) -> int:
        result: dict[str, Any] = await self.request(
            "POST", f"/api/v1/runs/{run_id}/logs", json=body
        )
        return int(result["log_bytes"])

    async def put_file(self, run_id: str, relpath: str, path: Path, token: str) -> None:
        """Upload one output file of a run with that run's output token."""

        async def chunks() -> AsyncIterator[bytes]:
            with open(path, "rb") as fh:
                while block := fh.read(1 << 20):
                    yield block

        await self.request(
            "PUT",
            f"/api/v1/runs/{run_id}/files/{relpath}",
            content=chunks(),
            headers={"Authorization": f"Bearer {token}"},
            timeout=600,
        )

    async def stop(self, agent_id: int) -> None:
        await self.request("POST", f"/api/v1/agents/{agent_id}/stop")
