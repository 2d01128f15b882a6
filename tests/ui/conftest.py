"""Fixtures for the web UI: a logged-in HTTP client, and a real headless Chromium.

The browser is Debian's ``chromium`` driven by Selenium through Debian's
``chromedriver`` (never a tool's own browser download: there is no network).
Without them the browser tests skip locally and fail in CI (``require``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import ServerHarness, require
from tests.e2e.conftest import LiveServer

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def login(harness: ServerHarness, key: str | None = None) -> Any:
    """Log the harness's TestClient in through the form; returns the client."""
    response = harness.http.post(
        "/ui/login",
        data={"api_key": key or harness.admin_key, "next": "/ui/queues"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return harness.http


@pytest.fixture
def ui(sqlite_server: ServerHarness) -> ServerHarness:
    login(sqlite_server)
    return sqlite_server


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path)
    server.start()
    yield server
    server.stop()


class Browser:
    """A Selenium driver plus the test's screenshot folder."""

    def __init__(self, driver: Any, shots: Path) -> None:
        self.driver = driver
        self.shots = shots

    def screenshot(self, name: str) -> Path:
        """A PNG of the whole page, beyond the window's height (Chromium's DevTools call)."""
        import base64

        path = self.shots / f"{name}.png"
        size = self.driver.execute_script(
            "const e = document.documentElement; return [e.scrollWidth, e.scrollHeight]"
        )
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1},
            },
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    have = os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)
    require(
        "Chromium and chromedriver",
        have and _selenium_installed(),
        "apt-get install -y chromium chromium-driver; pip install selenium",
    )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.implicitly_wait(0)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        yield Browser(driver, shots)
    finally:
        driver.quit()
        artifacts = os.environ.get("LAUNCHYARD_TEST_ARTIFACTS")
        if artifacts:  # CI keeps the screenshots
            shutil.copytree(shots, Path(artifacts) / tmp_path.name, dirs_exist_ok=True)


def _selenium_installed() -> bool:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return True


GPU_VARIABLES = {
    "gpus": {
        "description": "GPUs per run",
        "schema": {"type": "integer", "default": 1, "minimum": 0, "maximum": 4},
    },
    "size": {"schema": {"type": "string", "enum": ["sm", "md", "lg"], "default": "sm"}},
}


def make_queue(c: Any, name: str = "gpu", *, priority: bool = False) -> None:
    c.create_queue(
        "default",
        {
            "name": name,
            "config": "gpus: '{{gpus}}'\nenv: {SIZE: '{{size}}'}\n",
            "variables": GPU_VARIABLES,
            "priority": priority,
        },
    )


class ProtocolAgent:
    """Drives runs through the agent protocol over HTTP, step by step (no processes)."""

    def __init__(self, c: Any, queues: list[str], gpu_ids: list[int] | None = None) -> None:
        self.c = c
        body = {
            "name": "a1",
            "hostname": "host-1",
            "queues": queues,
            "max_jobs": 4,
            "gpu_ids": gpu_ids or [],
        }
        self.id = c.request("POST", "/api/v1/entities/default/agents", json=body)["id"]
        self.tokens: dict[str, str] = {}
        self.offsets: dict[str, int] = {}
        self.seq = 0

    def claim(
        self, free_gpus: int = 4, free_slots: int = 4, holders: dict[str, str] | None = None
    ) -> list[str]:
        self.seq += 1
        capacity = {
            "seq": self.seq,
            "free_gpus": free_gpus,
            "free_slots": free_slots,
            "gpu_holders": holders or {},
        }
        got = self.c.request(
            "POST", f"/api/v1/agents/{self.id}/claim", json={"capacity": capacity, "wait_s": 0}
        )
        for run in got["runs"]:
            self.tokens[run["id"]] = run["lease_token"]
            self.offsets[run["id"]] = 0
        return [r["id"] for r in got["runs"]]

    def report(self, run_id: str, state: str, **extra: Any) -> None:
        body = {"lease_token": self.tokens[run_id], "state": state, **extra}
        self.c.request("POST", f"/api/v1/runs/{run_id}/state", json=body)

    def log(self, run_id: str, text: str) -> None:
        start = self.offsets[run_id]
        end = start + len(text.encode())
        body = {
            "lease_token": self.tokens[run_id],
            "start": start,
            "next_offset": end,
            "text": text,
        }
        self.c.request("POST", f"/api/v1/runs/{run_id}/logs", json=body)
        self.offsets[run_id] = end
