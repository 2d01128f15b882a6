"""Real `launchyard server` and `launch-agent` processes, driven through the CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from launchyard.client import Client

LEASE_TTL_S = 4.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Any, timeout_s: float = 20.0, interval_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        time.sleep(interval_s)


class LiveServer:
    def __init__(self, tmp: Path, database_url: str | None = None, **env: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.host = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp / "server"
        self.database_url = database_url
        self.extra_env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.agents: list[subprocess.Popen[bytes]] = []
        self.key = ""
        self._logs: list[Any] = []
        self._clients: dict[str, Client] = {}

    def start(self) -> None:
        args = [
            sys.executable,
            "-m",
            "launchyard",
            "server",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        if self.database_url:
            args += ["--database-url", self.database_url]
        env = {
            **os.environ,
            "LAUNCHYARD_LEASE_TTL_S": str(LEASE_TTL_S),
            "LAUNCHYARD_RESERVE_AFTER_S": "2",
            **self.extra_env,
        }
        log = open(self.tmp / "server.log", "ab")  # noqa: SIM115
        self._logs.append(log)
        self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError((self.tmp / "server.log").read_text())
            try:
                return httpx.get(f"{self.host}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 30)
        self.key = (self.data_dir / "admin-api-key").read_text().strip()

    def env(self, key: str | None = None) -> dict[str, str]:
        return {
            **os.environ,
            "LAUNCHYARD_HOST": self.host,
            "LAUNCHYARD_API_KEY": key if key is not None else self.key,
            "LAUNCHYARD_CONFIG_DIR": str(self.tmp / "cli-config"),
        }

    def client(self, key: str | None = None) -> Client:
        """One client per key, closed with the server."""
        api_key = key if key is not None else self.key
        if api_key not in self._clients:
            self._clients[api_key] = Client(self.host, api_key)
        return self._clients[api_key]

    def cli(
        self,
        *args: str,
        key: str | None = None,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "launchyard", *args],
            env=self.env(key),
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            cwd=self.tmp,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"launchyard {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def start_agent(
        self, *args: str, name: str = "agent-1", log_name: str | None = None
    ) -> subprocess.Popen[bytes]:
        state = self.tmp / f"agent-{name}"
        log = open(self.tmp / (log_name or f"agent-{name}.log"), "ab")  # noqa: SIM115
        self._logs.append(log)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "launchyard",
                "launch-agent",
                "--name",
                name,
                "--state-dir",
                str(state),
                *args,
            ],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.agents.append(proc)
        return proc

    def wait_agent_ready(self, name: str, entity: str = "default") -> None:
        c = self.client()
        wait_until(
            lambda: any(
                a["name"] == name and a["state"] == "active" for a in c.list_agents(entity)
            ),
            30,
        )

    def stop(self) -> None:
        for proc in self.agents:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.agents:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for log in self._logs:
            log.close()
        for client in self._clients.values():
            client.close()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path)
    server.start()
    yield server
    server.stop()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


GPU_QUEUE = """\
name: gpu
resource: local
config:
  gpus: '{{gpus}}'
  env: {QUEUE_NAME: gpu}
variables:
  gpus:
    description: GPUs per run
    schema: {type: integer, default: 1, minimum: 0, maximum: 4}
"""
