"""Start real launchyard servers and agents for benchmarks, and summarise timings."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from launchyard.client import Client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(int(round(q / 100 * (len(ordered) - 1))), len(ordered) - 1)
    return ordered[index]


def fresh_postgres_database(base_url: str) -> str:
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(
        base_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    ) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return base_url.rsplit("/", 1)[0] + "/" + name


@dataclass
class Stack:
    """A server and agents, as real processes, torn down on exit."""

    database_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ly-bench-")))
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    host: str = ""
    key: str = ""

    def __enter__(self) -> Stack:
        port = free_port()
        self.host = f"http://127.0.0.1:{port}"
        args = [
            sys.executable,
            "-m",
            "launchyard",
            "server",
            "--port",
            str(port),
            "--data-dir",
            str(self.tmp / "server"),
        ]
        if self.database_url:
            args += ["--database-url", self.database_url]
        self._spawn(args, "server.log")
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.host}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError((self.tmp / "server.log").read_text())
            time.sleep(0.05)
        self.key = (self.tmp / "server" / "admin-api-key").read_text().strip()
        return self

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "LAUNCHYARD_HOST": self.host,
            "LAUNCHYARD_API_KEY": self.key,
            **self.env,
        }
        with open(self.tmp / log, "ab") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        return proc

    def client(self) -> Client:
        return Client(self.host, self.key, timeout=60)

    def agent(
        self, queue: str, *, jobs: int, gpus: str = "none", name: str = "bench"
    ) -> subprocess.Popen[bytes]:
        proc = self._spawn(
            [
                sys.executable,
                "-m",
                "launchyard",
                "launch-agent",
                "-q",
                queue,
                "-j",
                str(jobs),
                "--gpus",
                gpus,
                "--name",
                name,
                "--state-dir",
                str(self.tmp / f"agent-{name}"),
            ],
            f"{name}.log",
        )
        c = self.client()
        deadline = time.monotonic() + 30
        while not any(
            a["name"] == name and a["state"] == "active" for a in c.list_agents("default")
        ):
            if time.monotonic() > deadline:
                raise RuntimeError((self.tmp / f"{name}.log").read_text())
            time.sleep(0.05)
        c.close()
        return proc

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def transition_time(run: dict, state: str) -> float:  # type: ignore[type-arg]
    from datetime import datetime

    for t in run["transitions"]:
        if t["state"] == state:
            return datetime.fromisoformat(t["at"]).timestamp()
    raise KeyError(state)


def summary_ms(values_s: list[float]) -> str:
    ms = [v * 1000 for v in values_s]
    return (
        f"p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
        f"mean {statistics.fmean(ms):.1f} ms"
    )
