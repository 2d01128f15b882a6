"""`launchyard quickstart`: the first command a new user runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from tests.e2e.conftest import free_port, wait_until


def test_quickstart_once_runs_hello_world(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "launchyard",
            "quickstart",
            "--once",
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    assert "hello from launchyard run" in result.stdout
    assert "run config: {'greeting': 'hello world'}" in result.stdout


def test_quickstart_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "out.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "launchyard",
                "quickstart",
                "--port",
                str(port),
                "--data-dir",
                str(tmp_path),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wait_until(lambda: "press Ctrl-C" in log.read_text(), 60)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0 or proc.returncode in (0, 130)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5)
        except httpx.TransportError:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the quickstart server still answers after Ctrl-C")
    assert "stopped" in log.read_text()
