"""`launchyard server` and `launchyard quickstart`."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import typer

from launchyard.cli.common import console
from launchyard.client import Client
from launchyard.config import ServerSettings, default_data_dir
from launchyard.errors import LaunchyardError, ServerUnavailableError


def serve(
    host: str = typer.Option("127.0.0.1", "--host", envvar="LAUNCHYARD_SERVER_HOST"),
    port: int = typer.Option(8080, "--port", envvar="LAUNCHYARD_PORT"),
    data_dir: Path = typer.Option(
        None,
        "--data-dir",
        envvar="LAUNCHYARD_DATA_DIR",
        help="Database (SQLite) and the admin key live here.",
    ),
    database_url: str = typer.Option(
        None,
        "--database-url",
        envvar="LAUNCHYARD_DATABASE_URL",
        help="postgresql+psycopg://user:pw@host/db (default SQLite).",
    ),
    lease_ttl_s: float = typer.Option(
        None,
        "--lease-ttl",
        envvar="LAUNCHYARD_LEASE_TTL_S",
        help="Seconds before an unrenewed run lease expires.",
    ),
    reserve_after_s: float = typer.Option(
        None,
        "--reserve-after",
        envvar="LAUNCHYARD_RESERVE_AFTER_S",
        help="Seconds before a blocked run holds a GPU reservation.",
    ),
) -> None:
    """Run the API server (OpenAPI at /openapi.json)."""
    import uvicorn

    from launchyard.server.app import create_app

    overrides: dict[str, Any] = {
        "host": host,
        "port": port,
        "data_dir": data_dir,
        "database_url": database_url,
        "lease_ttl_s": lease_ttl_s,
        "reserve_after_s": reserve_after_s,
    }
    settings = ServerSettings(**{k: v for k, v in overrides.items() if v is not None})
    console.print(
        f"launchyard server on http://{settings.host}:{settings.port} "
        f"(data in {settings.data_dir})",
        highlight=False,
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port))
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port")


def _wait_healthy(c: Client, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LaunchyardError(f"the server exited with code {proc.returncode}")
        try:
            c.health()
            return
        except ServerUnavailableError:
            time.sleep(0.1)
    raise LaunchyardError("the server did not start within 30 s")


HELLO = (
    "import launchyard, os; "
    "print('hello from launchyard run', launchyard.run_id()); "
    "print('run config:', launchyard.run_config()); "
    "print('GPUs given to this run:', repr(os.environ.get('CUDA_VISIBLE_DEVICES')))"
)


def quickstart(
    data_dir: Path = typer.Option(
        None, "--data-dir", help="Default: ~/.local/share/launchyard/quickstart"
    ),
    port: int = typer.Option(8080, "--port"),
    once: bool = typer.Option(False, "--once", help="Stop everything after the hello-world run."),
) -> None:
    """Start a server and an agent, create a queue, launch hello-world, show its logs."""
    from launchyard.cli.runs import follow_logs

    data_dir = data_dir or default_data_dir() / "quickstart"
    port = _free_port(port)
    host = f"http://127.0.0.1:{port}"
    logs_dir = data_dir / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    exe = [sys.executable, "-m", "launchyard"]
    procs: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], log_name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = open(logs_dir / log_name, "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(exe + args, stdout=out, stderr=subprocess.STDOUT, env=env)
        procs.append(proc)
        return proc

    try:
        server = start(
            ["server", "--port", str(port), "--data-dir", str(data_dir / "server")],
            "server.log",
            dict(os.environ),
        )
        _wait_healthy(Client(host, None), server)
        key = (data_dir / "server" / "admin-api-key").read_text().strip()
        env = {**os.environ, "LAUNCHYARD_HOST": host, "LAUNCHYARD_API_KEY": key}
        c = Client(host, key)
        if not any(q["name"] == "quickstart" for q in c.list_queues("default")):
            c.create_queue(
                "default",
                {
                    "name": "quickstart",
                    "resource": "local",
                    "config": "gpus: '{{gpus}}'\nenv:\n  LAUNCHYARD_EXAMPLE: quickstart\n",
                    "variables": {
                        "gpus": {
                            "description": "GPUs for the run",
                            "schema": {"type": "integer", "default": 0, "minimum": 0, "maximum": 8},
                        }
                    },
                },
            )
        start(
            [
                "launch-agent",
                "-q",
                "quickstart",
                "-e",
                "default",
                "-j",
                "2",
                "--name",
                "quickstart",
                "--state-dir",
                str(data_dir / "agent"),
            ],
            "agent.log",
            env,
        )
        run = c.submit(
            "default",
            {
                "queue": "quickstart",
                "project": "quickstart",
                "command": [sys.executable, "-c", HELLO],
                "job_name": "hello-world",
                "config": {"greeting": "hello world"},
            },
        )
        console.print(f"server   {host}  (admin key in {data_dir / 'server' / 'admin-api-key'})")
        console.print(
            f"queue    default/quickstart (local)\nrun      {run['id']}\n--- logs ---",
            highlight=False,
        )
        code = follow_logs(c, run["id"])
        console.print("--- end ---")
        console.print(
            f"try:  export LAUNCHYARD_HOST={host} LAUNCHYARD_API_KEY=$(cat "
            f"{data_dir / 'server' / 'admin-api-key'})\n"
            f"      launchyard runs list; launchyard launch -q quickstart -- echo hi",
            highlight=False,
            markup=False,
        )
        if once:
            raise typer.Exit(code)
        console.print("running; press Ctrl-C to stop the server and the agent")
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in reversed(procs):  # the agent first, then the server
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        console.print("stopped")
